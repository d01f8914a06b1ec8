"""Issue 8: torchrun with several processes (gloo on the CPU, also on a machine with GPUs)."""
import csv
import json
import re
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

import train
from tests.conftest import evaluate_best_weights_in_test_mode, run_torchrun
from utils.safe_load import load_torch_file

pytestmark = pytest.mark.slow


def torchrun(args, cwd, nproc=2):
    """Gloo processes on the CPU, also on a machine with GPUs."""
    return run_torchrun(["--device", "cpu", *args], cwd, nproc)


@pytest.mark.parametrize("options", [{}, {"graph_scope": "global"}], ids=["local_graph", "global_graph"])
def test_two_processes_train_evaluate_like_one_and_write_one_set_of_outputs(tmp_path, write_tiny_config, options):
    config = write_tiny_config(num_epochs=2, lr_drop_epochs=[2], **options)
    result = torchrun(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = list((tmp_path / "runs").iterdir())
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert "torchrun: 2 process(es), gloo" in (folder / "train.log").read_text()
    summary = json.loads((folder / "summary.json").read_text())

    single_metrics = evaluate_best_weights_in_test_mode(folder, tmp_path / "single")
    assert single_metrics["R@1"] == summary["best_metrics"]["test_R@1"]
    assert single_metrics["NMI"] == pytest.approx(summary["best_metrics"]["test_NMI"], abs=1e-12)


def test_one_process_under_torchrun_trains_in_a_group_of_one(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=1, lr_drop_epochs=[2])
    result = torchrun(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")], cwd=tmp_path,
                      nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = list((tmp_path / "runs").iterdir())
    assert "torchrun: 1 process(es), gloo" in (folder / "train.log").read_text()
    assert json.loads((folder / "summary.json").read_text())["best_weights"]


def test_sync_bn_on_the_cpu_is_refused_with_one_sentence(tmp_path, write_tiny_config):
    result = torchrun(["--config_path", str(write_tiny_config(sync_bn=1)), "--output_dir", str(tmp_path / "runs")],
                      cwd=tmp_path)
    assert result.returncode != 0
    assert "train_params.sync_bn is 1 but SyncBatchNorm needs CUDA GPUs" in result.stderr
    # torchrun reports its workers' exit code (and prints its own traceback for the launcher).
    assert re.search(r"exitcode\s*:\s*2", result.stderr)
    assert not (tmp_path / "runs").exists()


def test_test_mode_under_two_processes_equals_one_process(tmp_path, write_tiny_config):
    from net import build_backbone
    from schema import load_config
    config_path = write_tiny_config()
    encoder = load_config(config_path)["models"]["encoder_params"]
    torch.manual_seed(0)
    weights = tmp_path / "backbone.pth"
    torch.save(build_backbone(encoder, 4)[0].state_dict(), weights)
    raw = yaml.safe_load(config_path.read_text())
    raw["mode"] = "test"
    test_config = tmp_path / "test.yaml"
    test_config.write_text(yaml.safe_dump(raw))
    args = ["--config_path", str(test_config), "--bb_path", str(weights)]
    result = torchrun([*args, "--output_dir", str(tmp_path / "ddp")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert train.main([*args, "--output_dir", str(tmp_path / "single")]) == 0
    (ddp,), (single,) = list((tmp_path / "ddp").iterdir()), list((tmp_path / "single").iterdir())
    assert json.loads((ddp / "metrics.json").read_text()) == json.loads((single / "metrics.json").read_text())


def global_graph_worker(rank, world_size, init_file, feats, out_dir):
    import torch.distributed as dist

    from net import build_mpn
    from tests.reference import load, materialize
    from utils.distributed import Distributed
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    fixture = load("gnn_cub.pt")
    mpn = build_mpn(fixture["config"]["gnn_params"], 512)
    mpn.load_state_dict(materialize(fixture["state_dict"]))
    mpn.eval()
    rows = feats.shape[0] // world_size
    local = feats[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
    distributed = Distributed(rank, world_size, rank)
    graph = distributed.gather_with_grad(local)
    logits, _ = mpn(graph)
    local_logits = distributed.local_rows(logits[-1])
    local_logits.sum().backward()
    torch.save({"logits": local_logits.detach(), "grad": local.grad},
               Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_global_graph_scope_equals_one_process_fed_the_concatenated_batch(tmp_path):
    from net import build_mpn
    from tests.reference import load, materialize
    fixture = load("gnn_cub.pt")
    feats = fixture["feats"]
    mp.spawn(global_graph_worker, args=(2, str(tmp_path / "init"), feats, str(tmp_path)), nprocs=2)

    mpn = build_mpn(fixture["config"]["gnn_params"], 512)
    mpn.load_state_dict(materialize(fixture["state_dict"]))
    mpn.eval()
    whole = feats.clone().requires_grad_(True)
    logits, _ = mpn(whole)
    logits[-1].sum().backward()
    rows = feats.shape[0] // 2
    for rank in range(2):
        part = load_torch_file(tmp_path / f"rank{rank}.pt", "the test's worker")
        torch.testing.assert_close(part["logits"], logits[-1][rank * rows:(rank + 1) * rows].detach(),
                                   rtol=1e-5, atol=1e-5)
        # Same sums in another order: float32 round-off, far below the gradients (up to ~1e2).
        torch.testing.assert_close(part["grad"], whole.grad[rank * rows:(rank + 1) * rows], rtol=1e-3, atol=1e-4)


def test_a_bad_dataset_path_under_two_processes_is_one_sentence_and_exit_code_2_from_each_rank(tmp_path):
    from tests.conftest import tiny_train_config
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(tmp_path / "missing")))
    result = torchrun(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.stderr.count("The dataset folder") == 1, result.stderr[-3000:]
    # torchrun's launcher still prints its own ChildFailedError summary, listing each rank's exit code.
    assert len(re.findall(r"exitcode\s*:\s*2", result.stderr)) == 2


@pytest.mark.slow
def test_a_rank_that_dies_mid_epoch_stops_the_others_within_a_minute_with_one_sentence_and_the_run_resumes(
        tmp_path):
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import tiny_train_config, write_class_pattern_images
    root = write_class_pattern_images(tmp_path / "data", 8, 12)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(root, num_epochs=2)))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(Path(__file__).parent / "dying_rank.py"), "--config_path", str(config),
                             "--output_dir", str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert time.monotonic() - started < 120  # start-up and epoch 1 included; the stop itself takes seconds
    assert result.returncode != 0
    assert "unexpected" not in result.stderr, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    last_line = (run_dir / "train.log").read_text().splitlines()[-1]
    # Rank 0 either met the dead peer in a collective (the sentence) or got torchrun's SIGTERM first.
    assert "so rank 0 stops too" in last_line or "SIGTERM" in last_line, last_line
    resumed = run_torchrun(["--resume", str(run_dir)], cwd=tmp_path, nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "summary.json").read_text())["last_epoch"] == 2


def test_a_run_resumed_into_its_end_under_two_processes_embeds_its_epochs_again_for_the_same_pictures(
        tmp_path, write_tiny_config):
    """Re-embedding the best and the last epoch is a collective: every rank takes part, none hangs."""
    import shutil
    config = write_tiny_config(num_epochs=2, lr_drop_epochs=[2],
                               mutate=lambda raw: raw.update(logging={"pictures": 1}))
    result = torchrun(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = list((tmp_path / "runs").iterdir())
    drawn = {path.relative_to(folder): path.read_bytes() for path in (folder / "pictures").rglob("*.png")}
    assert len(drawn) == 6
    # What a kill while drawing the pictures leaves: every epoch trained, no summary.json yet.
    (folder / "summary.json").unlink()
    shutil.rmtree(folder / "pictures")
    result = torchrun(["--resume", str(folder)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {path.relative_to(folder): path.read_bytes() for path in (folder / "pictures").rglob("*.png")} == drawn
    assert json.loads((folder / "summary.json").read_text())["best_weights"]
