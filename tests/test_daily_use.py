"""Issue 22, end to end: the demo run from another folder with overrides, as a researcher uses it daily.

One short run (2 epochs of 3 steps) of `train.py` with its default config,
started in an empty folder; the tests read what it left there.
"""
import contextlib
import csv
import io
import json
import re

import pytest
import yaml

import train
from tests.test_provenance import EXPECTED_KEYS

pytestmark = pytest.mark.slow
ARGS = ["--set", "train_params.num_epochs=2", "--set", "train_params.max_iters_per_epoch=3",
        "--set", "train_params.lr_drop_epochs=[2]", "--set", "train_params.eval_before_training=0", "--threads", "1"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``(folder the run started in, its run folder, what it wrote to stderr)``."""
    folder = tmp_path_factory.mktemp("elsewhere")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            assert train.main(ARGS) == 0
    (run_dir,) = list((folder / "runs").iterdir())
    return folder, run_dir, stderr.getvalue()


def test_the_default_config_is_found_and_relative_paths_resolve_from_the_current_folder(demo_run):
    folder, run_dir, _ = demo_run
    assert run_dir.name.startswith("demo_resnet18_train_")
    assert (folder / "data" / "demo_digits" / "images").is_dir()


def test_overrides_are_applied_and_recorded_in_the_config(demo_run):
    _, run_dir, _ = demo_run
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["train_params"]["num_epochs"] == 2 and config["train_params"]["lr_drop_epochs"] == [2]
    assert config["train_params"]["threads"] == 1
    with open(run_dir / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def test_the_run_folder_records_its_environment(demo_run):
    folder, run_dir, _ = demo_run
    environment = json.loads((run_dir / "environment.json").read_text())
    assert set(environment) == EXPECTED_KEYS
    assert environment["command_line"].startswith("python train.py --set train_params.num_epochs=2")
    assert environment["working_directory"] == str(folder)
    assert environment["cpu_threads"] == 1 and environment["device"] == "cpu"
    # The back end this config's evaluation uses (the demo is scored like CUB: the authors' scikit-learn),
    # the one the log names, not the default of other configs (faiss where installed).
    assert environment["nmi_backend"] == "sklearn"
    assert "NMI: k-means by sklearn" in (run_dir / "train.log").read_text()


def test_the_thread_count_is_logged_in_one_line(demo_run):
    _, run_dir, _ = demo_run
    lines = [line for line in (run_dir / "train.log").read_text().splitlines() if "CPU threads:" in line]
    assert len(lines) == 1 and "CPU threads: 1 (train_params.threads / --threads)" in lines[0]


def test_every_recall_in_the_log_is_in_percent(demo_run):
    _, run_dir, _ = demo_run
    with open(run_dir / "metrics.csv") as handle:
        percents = {f"{100 * float(row['test_R@1']):.2f}" for row in csv.DictReader(handle)}
    log = (run_dir / "train.log").read_text()
    logged = re.findall(r"R@1 (\d+\.\d+)", log)
    assert len(logged) >= 4 and set(logged) <= percents, (logged, percents)
    assert "new best test R@1" in log


def test_each_epoch_ends_with_a_one_line_summary_and_the_run_eta(demo_run):
    _, run_dir, _ = demo_run
    summaries = [line for line in (run_dir / "train.log").read_text().splitlines() if ": Epoch 1/2 in" in line]
    (summary,) = summaries
    assert re.search(r"loss \d+\.\d{3} \(backbone \d+\.\d{3}, MPN \d+\.\d{3}\), lr [0-9.e-]+, \d+\.\d images/s "
                     r"\| test R@1 \d+\.\d\d, best \d+\.\d\d \(epoch 1\) "
                     r"\| run done in about \d+ s \(at \d\d:\d\d\)", summary), summary


def test_the_epoch_progress_bar_reaches_100_percent(demo_run):
    _, _, stderr = demo_run
    for epoch in (1, 2):
        last = stderr.split(f"epoch {epoch}/2:")[-1]
        assert last.lstrip().startswith("100%") and "3/3" in last.split("\r")[0]


def test_the_plots_are_written(demo_run):
    _, run_dir, _ = demo_run
    assert (run_dir / "metrics.png").stat().st_size > 10_000 and (run_dir / "losses.png").is_file()
