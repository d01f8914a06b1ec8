"""Issue 7: the default command trains the embedded demo; here one short epoch of it."""
import csv
import json
from pathlib import Path

import pytest
import yaml

import train

pytestmark = pytest.mark.slow
DEMO_CONFIG = Path(__file__).resolve().parents[1] / train.DEFAULT_CONFIG


def test_demo_config_runs_one_short_epoch_with_every_output(tmp_path):
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["dataset"]["dataset_path"] = str(tmp_path / "demo_digits")
    raw["train_params"].update(num_epochs=1, max_iters_per_epoch=3)
    config = tmp_path / "demo.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0

    assert len(list((tmp_path / "demo_digits" / "images").iterdir())) == 10
    (folder,) = list((tmp_path / "runs").iterdir())
    with open(folder / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert rows[0]["loss_Total"] == "" and float(rows[1]["loss_Total"]) > 0
    for column in ("test_R@1", "test_R@2", "test_R@4", "test_R@8", "test_NMI"):
        assert 0 <= float(rows[1][column]) <= 1
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["best_epoch"] == 1
    for name in ("config.yaml", "train.log", "losses.png", "metrics.png", "last.pth",
                 *summary["best_weights"].values()):
        assert (folder / name).is_file(), name
