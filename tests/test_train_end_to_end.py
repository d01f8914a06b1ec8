"""SPEC 1, 6, 9: train.py end to end on a generated image tree (resnet18, 32 px, CPU)."""
import csv
import json

import pytest
import torch
import yaml

import train
from net.weights import read_state_dict
from engine.hooks import BestWeights, Hook
from tests.conftest import (StopRequestAt, add_training_hooks, evaluate_best_weights_in_test_mode,
                            interrupted_after_first_epoch)
from run_folder.checkpoint import load_checkpoint
from utils.signals import StopRequest

pytestmark = pytest.mark.slow


def run_folder(output_dir):
    (folder,) = [path for path in output_dir.iterdir() if path.is_dir()]
    return folder


def read_metrics(folder):
    with open(folder / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, pattern_tree):
    """One uninterrupted 3-epoch run with drops at epochs 2 and 3, shared by several tests."""
    from tests.conftest import tiny_train_config
    folder = tmp_path_factory.mktemp("finished")
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    assert train.main(["--config_path", str(config_path), "--output_dir", str(folder / "runs")]) == 0
    return run_folder(folder / "runs")


def test_run_folder_holds_every_output(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    names = {path.name for path in finished_run.iterdir()}
    assert {"config.yaml", "train.log", "metrics.csv", "losses.png", "metrics.png", "last.pth",
            "summary.json"} <= names
    assert set(summary["best_weights"].values()) <= names
    assert summary["best_weights"]["backbone"] == f"{summary['best_metrics']['test_R@1']}resnet18_cub.pth"
    assert summary["best_weights"]["mpn"] == f"{summary['best_metrics']['test_R@1']}gnn_resnet18_cub.pth"
    assert yaml.safe_load((finished_run / "config.yaml").read_text())["dataset"]["dataset_short"] == "cub"


def test_metrics_csv_has_one_row_per_epoch_with_losses_metrics_and_lr(finished_run):
    rows = read_metrics(finished_run)
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert list(rows[0])[:2] == ["epoch", "loss_Total"]
    for column in ("loss_Total", "loss_MPN0", "test_R@1", "test_R@8", "test_NMI", "lr", "time_s", "images_per_s"):
        assert all(row[column] != "" for row in rows), column


def test_schedule_reloads_best_and_divides_lr_at_the_drop_epochs(finished_run):
    rows = read_metrics(finished_run)
    lr = yaml.safe_load((finished_run / "config.yaml").read_text())["train_params"]["lr"]
    assert [float(row["lr"]) for row in rows] == pytest.approx([lr, lr / 10, lr / 10])
    log = (finished_run / "train.log").read_text()
    assert "Epoch 2: reloaded the best weights" in log and "Epoch 3: reloaded the best weights" in log


def test_summary_reports_best_and_last_epoch(finished_run):
    summary = json.loads((finished_run / "summary.json").read_text())
    rows = read_metrics(finished_run)
    assert summary["last_epoch"] == 3
    assert summary["last_metrics"]["test_R@1"] == pytest.approx(float(rows[-1]["test_R@1"]))
    best_row = rows[summary["best_epoch"] - 1]
    assert summary["best_metrics"]["test_R@1"] == pytest.approx(float(best_row["test_R@1"]))


def test_best_weights_load_in_test_mode_and_give_the_same_recall(finished_run, tmp_path):
    summary = json.loads((finished_run / "summary.json").read_text())
    metrics = evaluate_best_weights_in_test_mode(finished_run, tmp_path)
    assert metrics["R@1"] == summary["best_metrics"]["test_R@1"]
    assert metrics["nmi_backend"] == "sklearn"  # eval_params.kmeans: paper on a cub config


def test_resume_after_a_stop_at_an_epoch_boundary_ends_like_the_uninterrupted_run(
        finished_run, write_tiny_config, tmp_path, monkeypatch):
    with interrupted_after_first_epoch(monkeypatch):
        assert train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path)]) == 130
    interrupted = run_folder(tmp_path)
    assert [row["epoch"] for row in read_metrics(interrupted)] == ["1"]
    assert train.main(["--resume", str(interrupted)]) == 0
    assert_same_final_state(interrupted, finished_run)


def test_resume_after_sigterm_mid_epoch_ends_like_the_uninterrupted_run(
        finished_run, write_tiny_config, tmp_path, monkeypatch):
    calls = []
    with monkeypatch.context() as patch:
        add_training_hooks(patch, StopRequestAt(2, 1, calls))
        exit_code = train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path)])
    assert exit_code == 128 + 2 and calls[-1] == (2, 1)
    interrupted = run_folder(tmp_path)
    assert "resume with `python train.py --resume" in (interrupted / "train.log").read_text()
    assert train.main(["--resume", str(interrupted / "last.pth")]) == 0
    assert "(1 epoch(s) completed): continues at epoch 2, step 3 of 5" in (interrupted / "train.log").read_text()
    assert json.loads((interrupted / "summary.json").read_text())["resumed_exactly"] is True
    assert_same_final_state(interrupted, finished_run)


def test_resume_mid_epoch_with_two_workers_ends_like_the_uninterrupted_run_without_workers(
        finished_run, write_tiny_config, tmp_path, monkeypatch):
    """Augmentations follow (seed, epoch, position): neither the workers nor the resume change a bit."""
    def two_workers(raw):
        raw["dataset"]["nb_workers"] = 2

    config = write_tiny_config(mutate=two_workers)
    with monkeypatch.context() as patch:
        add_training_hooks(patch, StopRequestAt(2, 1))
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path)]) == 128 + 2
    interrupted = run_folder(tmp_path)
    assert train.main(["--resume", str(interrupted)]) == 0
    assert_same_final_state(interrupted, finished_run)


def assert_same_final_state(resumed, uninterrupted):
    resumed_state = load_checkpoint(resumed / "last.pth")
    expected_state = load_checkpoint(uninterrupted / "last.pth")
    assert resumed_state["epoch"] == expected_state["epoch"] == 3
    for part in ("backbone", "mpn"):
        for key, value in expected_state[part].items():
            torch.testing.assert_close(resumed_state[part][key], value, rtol=0, atol=0, msg=f"{part}.{key}")
    assert resumed_state["best"] == expected_state["best"]
    for part in ("backbone_file", "mpn_file"):
        resumed_best = read_state_dict(resumed / resumed_state["best"][part], "the resumed run")
        for key, value in read_state_dict(uninterrupted / expected_state["best"][part], "the run").items():
            torch.testing.assert_close(resumed_best[key], value, rtol=0, atol=0, msg=f"{part}.{key}")
    resumed_rows, expected_rows = read_metrics(resumed), read_metrics(uninterrupted)
    for resumed_row, expected_row in zip(resumed_rows, expected_rows, strict=True):
        assert resumed_row["test_R@1"] == expected_row["test_R@1"]
        assert float(resumed_row["loss_Total"]) == pytest.approx(float(expected_row["loss_Total"]), rel=1e-6)


def test_stop_request_sets_on_signal():
    import os
    import signal
    request = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.is_set()
    finally:
        request.uninstall()


def test_val_holds_out_training_classes_for_selection_and_tests_once(write_tiny_config, tmp_path):
    config = write_tiny_config(num_epochs=2, lr_drop_epochs=[2], max_iters_per_epoch=2, num_classes_iter=2,
                               mutate=lambda raw: raw["dataset"].update(val=1, val_fraction=0.5))
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path)]) == 0
    folder = run_folder(tmp_path)
    rows = read_metrics(folder)
    assert "val_R@1" in rows[0] and "test_R@1" not in rows[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["test_metrics_of_best_epoch"]) == {"R@1", "R@2", "R@4", "R@8", "NMI"}
    assert summary["best_weights"]["backbone"].startswith(str(summary["best_metrics"]["val_R@1"]))
    # 4 training classes, half held out: the classifiers have 2 outputs.
    assert read_state_dict(folder / summary["best_weights"]["backbone"], "the test")["fc.bias"].shape == (2,)


def test_hyper_search_runs_trials_and_writes_the_best_config(tmp_path):
    from tests.conftest import tiny_train_config, write_class_pattern_images
    from schema import load_config
    # The authors' search space draws up to 15 classes x 9 images per batch.
    root = write_class_pattern_images(tmp_path / "data", 32, 10)
    raw = tiny_train_config(root, max_iters_per_epoch=1)
    raw["mode"] = "hyper_search"
    raw["hyper_search"] = {"num_trials": 2, "num_epochs": 1}
    raw["dataset"]["num_classes"] = raw["models"]["gnn_params"]["classifier"]["num_classes"] = 16
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    folder = run_folder(tmp_path / "runs")
    with open(folder / "trials.csv") as handle:
        trials = list(csv.DictReader(handle))
    assert [trial["trial"] for trial in trials] == ["1", "2"]
    for trial in trials:
        assert 1e-5 <= float(trial["train_params.lr"]) <= 1e-3
        assert 6 <= int(trial["train_params.num_classes_iter"]) <= 15
        assert int(trial["models.gnn_params.gnn.num_heads"]) in (1, 2, 4, 8)
    best = load_config(folder / "best_config.yaml")
    assert best["mode"] == "train" and best["train_params"]["num_epochs"] == 1
    assert (folder / "trial_001" / "metrics.csv").is_file()


def test_is_apex_on_an_explicit_cpu_trains_with_bfloat16_autocast(write_tiny_config, tmp_path, caplog):
    import logging
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=2)
    with caplog.at_level(logging.INFO):
        assert train.main(["--config_path", str(config), "--is_apex", "1", "--device", "cpu",
                           "--output_dir", str(tmp_path)]) == 0
    assert "Precision: autocast-bfloat16" in caplog.text
    rows = read_metrics(run_folder(tmp_path))
    assert float(rows[0]["loss_Total"]) > 0


def tensor_elements(value):
    if isinstance(value, torch.Tensor):
        return value.numel()
    if isinstance(value, dict):
        return sum(tensor_elements(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_elements(item) for item in value)
    return 0


def test_last_pth_names_the_best_weights_files_instead_of_holding_a_copy(finished_run):
    state = load_checkpoint(finished_run / "last.pth")
    summary = json.loads((finished_run / "summary.json").read_text())
    assert state["best"] == {"score": summary["best_metrics"]["test_R@1"], "epoch": summary["best_epoch"],
                             "metrics": summary["best_metrics"], "backbone_file": summary["best_weights"]["backbone"],
                             "mpn_file": summary["best_weights"]["mpn"]}
    assert sorted(path.name for path in finished_run.glob("*.pth")) == sorted(["last.pth",
                                                                               *summary["best_weights"].values()])
    # The weights and RAdam's two moments per parameter: about 3x the parameters (it was 4x with the best copy).
    parameters = tensor_elements(state["backbone"]) + tensor_elements(state["mpn"])
    assert tensor_elements(state) < 3.1 * parameters


def rewrite_as_format_1(folder):
    """Rewrite the run's last.pth as format 1 did: the NumPy RNG state as ``np.random.get_state()`` returns
    it and the best weights inside the checkpoint (format-1 runs wrote their files only at the end)."""
    import numpy as np
    state = load_checkpoint(folder / "last.pth")
    numpy_state = state["rng"]["numpy"]
    state["rng"]["numpy"] = (numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32),
                             numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    best = state["best"]
    weights = {part: read_state_dict(folder / best[f"{part}_file"], "the test") for part in ("backbone", "mpn")}
    for part in ("backbone", "mpn"):
        (folder / best[f"{part}_file"]).unlink()
    state["best"] = {"score": best["score"], "epoch": best["epoch"], "metrics": best["metrics"], **weights}
    state["format_version"] = 1
    torch.save(state, folder / "last.pth")
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(folder / "last.pth")


def test_a_format_1_checkpoint_is_converted_once_and_resumes_like_the_uninterrupted_run(
        finished_run, write_tiny_config, tmp_path, monkeypatch, caplog):
    import logging
    with interrupted_after_first_epoch(monkeypatch):
        assert train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path)]) == 130
    interrupted = run_folder(tmp_path)
    rewrite_as_format_1(interrupted)
    with caplog.at_level(logging.INFO):
        assert train.main(["--resume", str(interrupted)]) == 0
    assert caplog.text.count("is a format-1 checkpoint") == 1
    assert_same_final_state(interrupted, finished_run)


def test_a_new_best_epoch_replaces_the_best_files_and_a_drop_reloads_them_from_disk(
        write_tiny_config, tmp_path, monkeypatch):
    recall_of_epoch = iter([0.5, 0.25, 0.75])  # epochs 1, 2, 3 (no evaluation before training)
    files_after_epoch, reloads, weights_before = {}, {}, {}
    monkeypatch.setattr("evaluation.evaluator.Evaluator.evaluate",
                        lambda *args, **kwargs: {"R@1": next(recall_of_epoch)})

    class RecordBefore(Hook):
        def before_epoch(self, trainer, epoch):
            weights_before[epoch] = {key: value.clone() for key, value in trainer.backbone.state_dict().items()}

    class RecordAfter(Hook):
        def before_epoch(self, trainer, epoch):
            best = next(hook for hook in trainer.hooks if isinstance(hook, BestWeights)).best
            if best.backbone_file is None:
                return
            best_file = read_state_dict(trainer.run_dir / best.backbone_file, "the test")
            after = trainer.backbone.state_dict()
            reloads[epoch] = (all(torch.equal(after[key], value) for key, value in best_file.items()),
                              all(torch.equal(after[key], value) for key, value in weights_before[epoch].items()))

        def after_epoch(self, trainer, epoch, row):
            files_after_epoch[epoch] = sorted(path.name for path in trainer.run_dir.glob("*.pth")
                                              if path.name != "last.pth")

    add_training_hooks(monkeypatch, RecordAfter(), first=[RecordBefore()])
    assert train.main(["--config_path", str(write_tiny_config(max_iters_per_epoch=1)),
                       "--output_dir", str(tmp_path)]) == 0
    assert files_after_epoch == {1: ["0.5gnn_resnet18_cub.pth", "0.5resnet18_cub.pth"],
                                 2: ["0.5gnn_resnet18_cub.pth", "0.5resnet18_cub.pth"],
                                 3: ["0.75gnn_resnet18_cub.pth", "0.75resnet18_cub.pth"]}
    # Epoch 3 starts from epoch 1's file (epoch 2 was worse): the weights equal it and changed.
    assert reloads[3] == (True, False)


def test_resume_without_the_best_weights_files_says_which_file_to_copy_back(write_tiny_config, tmp_path, caplog):
    import logging
    assert train.main(["--config_path", str(write_tiny_config(num_epochs=1, max_iters_per_epoch=1)),
                       "--output_dir", str(tmp_path)]) == 0
    folder = run_folder(tmp_path)
    missing = json.loads((folder / "summary.json").read_text())["best_weights"]["mpn"]
    (folder / missing).unlink()
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(folder), "--set", "train_params.num_epochs=2"]) == 2
    assert f"names the best weights file {missing}, which is not in the run folder" in caplog.text
def test_is_apex_authors_on_the_cpu_trains_float32_and_records_it(write_tiny_config, tmp_path, caplog):
    import logging
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1, is_apex="authors")
    with caplog.at_level(logging.INFO):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path)]) == 0
    assert "is_apex: authors -> 0: float32 on cpu" in caplog.text
    assert "Precision: float32" in caplog.text
    folder = run_folder(tmp_path)
    assert "is_apex: authors -> 0" in (folder / "train.log").read_text()
    assert yaml.safe_load((folder / "config.yaml").read_text())["train_params"]["is_apex"] == 0
