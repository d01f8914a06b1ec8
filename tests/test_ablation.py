"""Issue 18: `python -m benchmarks.ablation` trains arms x seeds with train.py and writes one table."""
import csv
import json
import logging

import matplotlib.image
import pytest
import yaml

from benchmarks import ablation


@pytest.mark.slow
def test_two_tiny_arms_over_two_seeds_write_their_table(tmp_path, write_tiny_config, capsys):
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=2, eval_before_training=0)
    output = tmp_path / "ablation"
    assert ablation.main(["--config_path", str(config), "--seeds", "2", "--arms", "lsgnn_lsce", "lsce",
                          "--output", str(output), "--set", "train_params.threads=1"]) == 0

    for arm, fns in (("lsgnn_lsce", "lsgnn_lsce"), ("lsce", "lsce")):
        run_folders = sorted((output / arm).glob("seed*/*"))
        assert len(run_folders) == 2
        seeds = [yaml.safe_load((folder / "config.yaml").read_text())["train_params"] for folder in run_folders]
        assert [params["seed"] for params in seeds] == [0, 1]
        assert {params["loss_fn"]["fns"] for params in seeds} == {fns}
        assert {params["num_epochs"] for params in seeds} == {1}  # equal budget: the config's own
        assert {yaml.safe_load((folder / "config.yaml").read_text())["label"] for folder in run_folders} == {arm}
    with open(output / "ablation.csv") as handle:
        rows = {row["arm"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["lsgnn_lsce", "lsce"]
    for arm, row in rows.items():
        finals = [json.loads(path.read_text())["best_metrics"]
                  for path in sorted((output / arm).glob("seed*/*/summary.json"))]
        r1 = [100 * metrics["test_R@1"] for metrics in finals]
        assert row["runs"] == "2" and row["failed"] == "0"
        assert float(row["R@1_mean"]) == pytest.approx(sum(r1) / 2)
        assert float(row["R@1_std"]) == pytest.approx(abs(r1[0] - r1[1]) / 2 ** 0.5)
        assert 0 <= float(row["NMI_mean"]) <= 100 and row["last_epoch"] == "1.0" and float(row["wall_s"]) > 0
    assert matplotlib.image.imread(output / "ablation.png").shape[2] in (3, 4)
    table = capsys.readouterr().out
    assert "| arm | runs | R@1 | NMI |" in table and "| lsce | 2 |" in table and " ± " in table


@pytest.mark.slow
def test_with_two_jobs_the_console_has_one_progress_line_and_each_log_stays_in_its_run_folder(
        tmp_path, write_tiny_config, capfd):
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1, eval_before_training=0)
    output = tmp_path / "ablation"
    assert ablation.main(["--config_path", str(config), "--seeds", "1", "--arms", "lsgnn_lsce", "lsce",
                          "--output", str(output), "--jobs", "2", "--set", "train_params.threads=1"]) == 0
    console = capfd.readouterr().err
    assert "ablation" in console and "2/2" in console
    assert "epoch 1/1" not in console and " INFO train" not in console and "Epoch 1 test" not in console
    for arm in ("lsgnn_lsce", "lsce"):
        (run_folder,) = (output / arm).glob("seed0/*")
        log = (run_folder / "train.log").read_text()
        assert "Epoch 1 test" in log and "Best epoch 1" in log


def test_the_arms_differ_only_in_their_own_keys():
    assert ablation.ARMS["lsce"] == ["train_params.loss_fn.fns=lsce"]
    for arm, switches in (("no_res1", ["res1"]), ("no_mlp", ["mlp"]), ("no_norm", ["norm1", "norm2"])):
        assert ablation.ARMS[arm] == [ablation.FULL_METHOD, *(f"models.gnn_params.gnn.{key}=0" for key in switches)]


def test_an_output_folder_with_files_is_refused_before_any_training(tmp_path, write_tiny_config, caplog):
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "ablation.csv").write_text("keep me")
    with caplog.at_level(logging.ERROR):
        assert ablation.main(["--config_path", str(write_tiny_config()), "--output", str(tmp_path / "earlier")]) == 2
    assert (tmp_path / "earlier" / "ablation.csv").read_text() == "keep me"
    assert list((tmp_path / "earlier").iterdir()) == [tmp_path / "earlier" / "ablation.csv"]
    assert any("already holds files" in record.getMessage() for record in caplog.records)


def test_a_config_train_py_refuses_stops_the_ablation_with_exit_code_2(tmp_path, write_tiny_config):
    output = tmp_path / "ablation"
    assert ablation.main(["--config_path", str(write_tiny_config()), "--seeds", "1", "--arms", "lsce",
                          "--output", str(output), "--set", "train_params.lrr=0.1"]) == 2
    assert not (output / "ablation.csv").exists()


@pytest.mark.slow
def test_runs_in_separate_processes_give_the_numbers_of_one_process(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1, eval_before_training=0)
    tables = []
    for jobs in (1, 2):
        output = tmp_path / f"jobs{jobs}"
        assert ablation.main(["--config_path", str(config), "--seeds", "2", "--arms", "lsce", "--jobs", str(jobs),
                              "--output", str(output), "--set", "train_params.threads=1"]) == 0
        with open(output / "ablation.csv") as handle:
            tables.append([{key: value for key, value in row.items() if key != "wall_s"}
                           for row in csv.DictReader(handle)])
    assert tables[0] == tables[1]
