"""`python -m tools.results` on run folders of short training runs; MLRC selection end to end."""
import csv
import json
import shutil
import statistics

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

import train
from engine.hooks import Hook
from tests.conftest import add_training_hooks
from net.weights import read_state_dict
from tools import results
from tools.run_folders import BROKEN, FINISHED, IN_PROGRESS, read_run

pytestmark = pytest.mark.slow

EXTRA = ["map_at_r", "r_precision", "precision_at_1"]


def write_noise_tree(root, num_classes, images_per_class, size=32):
    """Images of pure noise: retrieval is near chance, so seeds give different metrics."""
    rng = np.random.default_rng(0)
    for class_index in range(num_classes):
        for image_index in range(images_per_class):
            path = root / "images" / f"class_{class_index:02d}" / f"img_{image_index:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return root


def train_run(config_path, output_dir, seed):
    """``train.main`` for one seed; returns its exit code and its run folder."""
    before = set(output_dir.iterdir()) if output_dir.exists() else set()
    code = train.main(["--config_path", str(config_path), "--output_dir", str(output_dir),
                       "--seed", str(seed)])
    (folder,) = set(output_dir.iterdir()) - before
    return code, folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Seeds 0 and 1 of one MLRC config (fold 1, extra metrics), a run that diverged in
    epoch 2, a copy of a run without its summary (in progress) and one whose summary is
    damaged."""
    from tests.conftest import tiny_train_config
    base = tmp_path_factory.mktemp("results")
    root = write_noise_tree(base / "data", 16, 6)  # 8 training classes, 8 test
    raw = tiny_train_config(root, num_epochs=2, lr_drop_epochs=[2], max_iters_per_epoch=2)
    raw["dataset"].update(num_classes=8, val=1, val_protocol="mlrc", val_fold=1)
    raw["models"]["gnn_params"]["classifier"]["num_classes"] = 8
    raw["eval_params"]["metrics"] = EXTRA
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    output = base / "runs"
    folders = {}
    for seed in (0, 1):
        code, folders[seed] = train_run(config, output, seed)
        assert code == 0
    class PoisonThirdStep(Hook):
        """The third step's weights hold NaN, so its loss does: the real divergence path stops the run in epoch 2."""

        steps = 0

        def before_step(self, trainer, epoch, step, steps_per_epoch):
            self.steps += 1
            if self.steps == 3:
                with torch.no_grad():
                    trainer.backbone.conv1.weight.fill_(float("nan"))

    with pytest.MonkeyPatch.context() as patch:
        add_training_hooks(patch, PoisonThirdStep())
        code, folders["diverged"] = train_run(config, output, 2)
        assert code == train.EXIT_DIVERGED
    folders["in_progress"] = output / "copy_in_progress"
    shutil.copytree(folders[0], folders["in_progress"], ignore=shutil.ignore_patterns("*.pth", "*.png"))
    (folders["in_progress"] / "summary.json").unlink()
    (folders["in_progress"] / "train.log").write_text("2026-01-01 00:00:00 INFO engine.trainer: Epoch 2 val: R@1 50.00\n")
    folders["damaged"] = output / "copy_damaged"
    shutil.copytree(folders[0], folders["damaged"], ignore=shutil.ignore_patterns("*.pth", "*.png"))
    (folders["damaged"] / "summary.json").write_text('{"best_epoch": 2, "best_met')
    return output, folders


def summary_of(folder):
    return json.loads((folder / "summary.json").read_text())


def test_mlrc_selects_on_the_held_out_fold_and_tests_once_with_extra_metrics(runs):
    _, folders = runs
    folder = folders[0]
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"val_R@1", "val_MAP@R", "val_RP", "val_P@1"} <= set(rows[0])
    assert not any(column.startswith("test_") for column in rows[0])
    summary = summary_of(folder)
    assert list(summary["test_metrics_of_best_epoch"]) == ["R@1", "R@2", "R@4", "R@8", "NMI", "MAP@R", "RP",
                                                           "P@1"]
    assert "val_MAP@R" in summary["best_metrics"] and "val_MAP@R" in summary["last_metrics"]
    assert "MAP@R" in (folder / "train.log").read_text()
    # Fold 1 of 8 training classes (2 of them) is held out: the classifier has 6 outputs.
    weights = read_state_dict(folder / summary["best_weights"]["backbone"], "test")
    assert weights["fc.bias"].shape == (6,)


def test_each_run_is_read_with_its_status(runs):
    _, folders = runs
    statuses = {name: read_run(folder).status for name, folder in folders.items()}
    assert statuses == {0: FINISHED, 1: FINISHED, "diverged": BROKEN, "in_progress": IN_PROGRESS,
                        "damaged": BROKEN}
    assert "loss became" in read_run(folders["diverged"]).problem
    assert read_run(folders["damaged"]).problem == "summary.json unreadable"


def test_one_row_per_run_with_best_last_and_test_of_best_in_percent(runs, capsys):
    output, folders = runs
    assert results.main([str(output)]) == 0
    text = capsys.readouterr().out
    table, _, problems = text.partition("\n\n")
    table = table.splitlines()
    assert len(table) == 2 + len(folders)
    columns, rows = results.per_run_table([read_run(folder) for folder in folders.values()])
    by_name = {row["run"]: row for row in rows}
    finished = by_name[folders[1].name]
    summary = summary_of(folders[1])
    assert (finished["seed"], finished["protocol"], finished["dataset"]) == (1, "mlrc fold 1", "cub")
    assert finished["best epoch"] == summary["best_epoch"] and finished["last epoch"] == 2
    assert finished["best val_MAP@R"] == pytest.approx(100 * summary["best_metrics"]["val_MAP@R"])
    assert finished["last val_P@1"] == pytest.approx(100 * summary["last_metrics"]["val_P@1"])
    assert finished["test of best RP"] == pytest.approx(100 * summary["test_metrics_of_best_epoch"]["RP"])
    assert finished["time_s"] > 0
    # The copy without summary gets its best epoch from metrics.csv by the trainer's rule.
    in_progress = by_name["copy_in_progress"]
    assert (in_progress["status"], in_progress["best epoch"]) == (IN_PROGRESS, summary_of(folders[0])["best_epoch"])
    assert by_name[folders["diverged"].name]["last epoch"] == 1
    assert any(line.startswith(f"| {folders['diverged'].name} | broken |") for line in table)
    assert f"- {folders['diverged'].name}: broken: The loss became" in problems
    assert in_progress["status"] == IN_PROGRESS and "- copy_damaged: broken: summary.json unreadable" in problems


def test_group_gives_mean_and_std_over_seeds_and_lists_the_unfinished(runs, capsys, tmp_path):
    output, folders = runs
    csv_path = tmp_path / "grouped.csv"
    assert results.main([str(output / "*"), "--group", "--csv", str(csv_path)]) == 0
    text = capsys.readouterr().out
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    grouped = [row for row in rows if row["runs"]]
    assert len(grouped) == 1 and (grouped[0]["runs"], grouped[0]["seeds"]) == ("2", "0, 1")
    values = [100 * summary_of(folders[seed])["test_metrics_of_best_epoch"]["MAP@R"] for seed in (0, 1)]
    assert float(grouped[0]["test of best MAP@R mean"]) == pytest.approx(statistics.fmean(values))
    assert float(grouped[0]["test of best MAP@R std"]) == pytest.approx(statistics.stdev(values))
    unfinished = {row["run"]: row["status"] for row in rows if not row["runs"]}
    assert set(unfinished) == {folders["diverged"].name, "copy_in_progress", "copy_damaged"}
    assert "Not in the means" in text and "copy_damaged | broken" in text
    assert statistics.stdev(values) > 0
    recalls = [100 * summary_of(folders[seed])["test_metrics_of_best_epoch"]["R@1"] for seed in (0, 1)]
    assert f"| cub | resnet18 | 0, 1 | {statistics.fmean(recalls):.2f} ± {statistics.stdev(recalls):.2f} |" in text


def test_existing_csv_and_paths_without_runs_are_refused(runs, tmp_path, capsys):
    output, _ = runs
    existing = tmp_path / "table.csv"
    existing.write_text("mine")
    assert results.main([str(output), "--csv", str(existing)]) == 2
    assert existing.read_text() == "mine"
    assert results.main([str(tmp_path / "nothing_here")]) == 2
    (tmp_path / "empty").mkdir()
    assert results.main([str(tmp_path / "empty")]) == 2
