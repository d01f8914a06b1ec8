"""Issue 31: `python -m tools.results` finds every run folder below a path, shows labels and
pseudo_test runs, prints seconds, and its default table fits a 100-column terminal.

The run folders are written by hand in the formats train.py writes (fast, no training).
"""
import csv
import json

import pytest
import yaml

from tools import results
from tools.run_folders import FINISHED, read_run

RUN_NAME = "demo_resnet18_train_20261204-120000"


def write_training_run(folder, label=None, seed=0, r1=0.7054):
    folder.mkdir(parents=True)
    config = {"mode": "train", "label": label, "dataset": {"dataset_short": "demo", "val": 0},
              "models": {"encoder_params": {"net_type": "resnet18"}}, "train_params": {"seed": seed}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    with open(folder / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["epoch", "loss_Total", "test_R@1", "test_R@2", "test_R@4", "test_R@8",
                                         "test_NMI", "lr", "time_s"])
        writer.writeheader()
        writer.writerow({"epoch": 1, "loss_Total": 2.0, "test_R@1": r1 - 0.1, "test_R@2": 0.8, "test_R@4": 0.9,
                         "test_R@8": 0.95, "test_NMI": 0.5, "lr": 0.001, "time_s": 60.4})
        writer.writerow({"epoch": 2, "loss_Total": 1.0, "test_R@1": r1, "test_R@2": 0.8, "test_R@4": 0.9,
                         "test_R@8": 0.95, "test_NMI": 0.6, "lr": 0.001, "time_s": 7.6})
    best = {"test_R@1": r1, "test_R@2": 0.8, "test_R@4": 0.9, "test_R@8": 0.95, "test_NMI": 0.6}
    (folder / "summary.json").write_text(json.dumps({"best_epoch": 2, "best_metrics": best, "last_epoch": 2,
                                                     "last_metrics": best}))
    return folder


def write_pseudo_test_run(folder):
    folder.mkdir(parents=True)
    config = {"mode": "pseudo_test", "dataset": {"dataset_short": "demo"},
              "models": {"encoder_params": {"net_type": "resnet18"}}, "train_params": {"seed": 0}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "train.log").write_text("2026-12-04 12:00:00 INFO engine.test_modes: Test, MPN-refined: R@1 48.21\n")
    metrics = {"backbone": {"R@1": 0.7054, "NMI": 0.61}, "mpn_refined": {"R@1": 0.4821, "NMI": 0.5},
               "seconds": {"embedding": 3.0, "graphs": 1.5, "refinement": 0.5}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_run_folders_at_any_depth_are_found_and_labels_tell_the_arms_apart(tmp_path, capsys):
    ablation = tmp_path / "runs" / "ablation_20261204-120000"
    for arm, r1 in (("lsgnn_lsce", 0.7054), ("lsce", 0.6612)):
        write_training_run(ablation / arm / "seed0" / RUN_NAME, label=arm, r1=r1)
    assert results.main([str(ablation)]) == 0
    table = capsys.readouterr().out
    assert f"| {RUN_NAME} | lsce | finished | 0 | 2 | 66.12 |" in table
    assert f"| {RUN_NAME} | lsgnn_lsce | finished | 0 | 2 | 70.54 |" in table
    assert results.main([str(tmp_path / "runs")]) == 0  # two levels further up
    assert capsys.readouterr().out == table


def test_a_finished_pseudo_test_run_shows_its_backbone_and_refined_metrics(tmp_path, capsys):
    run = read_run(write_pseudo_test_run(tmp_path / "demo_resnet18_pseudo_test_20261204-120000"))
    assert run.status == FINISHED
    assert (run.result["R@1"], run.refined["R@1"], run.seconds) == pytest.approx((70.54, 48.21, 5.0))
    assert results.main([str(tmp_path)]) == 0
    header, _, row = capsys.readouterr().out.splitlines()
    assert header.split(" | ")[-3:] == ["NMI", "MPN R@1", "time_s |"]
    # No label and no best epoch in any row: those columns are left out.
    assert row == "| demo_resnet18_pseudo_test_20261204-120000 | finished | 0 | 70.54 | 61.00 | 48.21 | 5 |"


def test_the_default_table_fits_100_columns_and_the_csv_holds_every_column(tmp_path, capsys):
    for seed in (0, 1):
        write_training_run(tmp_path / "runs" / f"{RUN_NAME[:-1]}{seed}", label="lsgnn_lsce", seed=seed)
    write_pseudo_test_run(tmp_path / "runs" / "demo_resnet18_pseudo_test_20261204-120000")
    csv_path = tmp_path / "all.csv"
    assert results.main([str(tmp_path / "runs"), "--csv", str(csv_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 100, lines
    assert lines[3].startswith(f"| {RUN_NAME[:-1]}0 |") and lines[3].endswith("|  | 68 |"), \
        "time_s is whole seconds: 60.4 + 7.6"
    with open(csv_path) as handle:
        columns = next(csv.reader(handle))
    assert {"dataset", "backbone", "protocol", "best test_R@8", "last test_NMI", "MPN-refined NMI",
            "time_s"} <= set(columns)
    assert results.main([str(tmp_path / "runs"), "--group"]) == 0
    grouped = capsys.readouterr().out.splitlines()
    assert max(map(len, grouped)) <= 100, grouped
    assert grouped[0].startswith("| label | dataset | backbone | seeds | R@1 | NMI |")
    assert "| lsgnn_lsce | demo | resnet18 | 0, 1 | 70.54 ± 0.00 |" in grouped[3]
