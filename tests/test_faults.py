"""Issue 9: nothing is lost. A kill during a checkpoint write, SIGTERM, a NaN loss, broken images.

The process tests start ``train.py`` through a small driver script that
patches one function (to stall a write or slow the steps) and then calls
``train.main``; the production code has no test hooks.
"""
import csv
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import train
from engine.hooks import Hook
from tests.conftest import add_training_hooks, tiny_train_config, write_class_pattern_images
from run_folder.checkpoint import load_checkpoint
from utils.errors import UserInputError

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

DRIVER_PREFIX = """
import os, sys, time, pathlib
sys.path.insert(0, {repo!r})
marker = pathlib.Path({marker!r})
"""

STALL_SECOND_CHECKPOINT_RENAME = """
import utils.io
real_replace = os.replace
renames = []
def stalling_replace(source, target):
    if pathlib.Path(target).name == "last.pth":
        renames.append(target)
        if len(renames) == 2:  # the checkpoint after epoch 2: its bytes are written, the rename is not
            marker.write_text("stalled")
            time.sleep(600)
    return real_replace(source, target)
utils.io.os.replace = stalling_replace
"""

SLOW_STEPS = """
from engine import build
from engine.hooks import Hook
class SlowSteps(Hook):
    def before_step(self, trainer, epoch, step, steps_per_epoch):
        if step:
            marker.write_text("stepping")
            time.sleep(0.3)
real_build_hooks = build.build_hooks
def build_hooks_with_slow_steps(*args, **kwargs):
    hooks, final_test = real_build_hooks(*args, **kwargs)
    return [*hooks, SlowSteps()], final_test
build.build_hooks = build_hooks_with_slow_steps
"""

DRIVER_SUFFIX = """
import train
sys.exit(train.main(sys.argv[1:]))
"""


def start_driver(tmp_path, patch, args):
    marker = tmp_path / "marker"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER_PREFIX.format(repo=str(REPO), marker=str(marker)) + patch + DRIVER_SUFFIX)
    process = subprocess.Popen([sys.executable, str(driver), *args], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, marker


def wait_for(condition, process, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended early ({process.returncode}): {process.stderr.read()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise AssertionError("timed out waiting for the run")


def only_run_folder(output_dir):
    (folder,) = [path for path in Path(output_dir).iterdir() if path.is_dir()]
    return folder


def epochs_in_metrics(folder):
    with open(folder / "metrics.csv") as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_checkpoint_and_resume_completes(
        tmp_path, write_tiny_config):
    config = write_tiny_config()
    output_dir = tmp_path / "runs"
    process, marker = start_driver(tmp_path, STALL_SECOND_CHECKPOINT_RENAME,
                                   ["--config_path", str(config), "--output_dir", str(output_dir)])
    wait_for(marker.exists, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    folder = only_run_folder(output_dir)
    checkpoint = load_checkpoint(folder / "last.pth")
    assert checkpoint["epoch"] == 1
    assert train.main(["--resume", str(folder)]) == 0
    assert load_checkpoint(folder / "last.pth")["epoch"] == 3
    assert epochs_in_metrics(folder) == ["1", "2", "3"]


def test_sigterm_finishes_the_step_saves_and_says_how_to_resume(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=2)
    output_dir = tmp_path / "runs"
    process, marker = start_driver(tmp_path, SLOW_STEPS,
                                   ["--config_path", str(config), "--output_dir", str(output_dir)])
    wait_for(marker.exists, process)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "resume with `python train.py --resume" in stderr
    folder = only_run_folder(output_dir)
    assert load_checkpoint(folder / "last.pth")["resume_step"] >= 1
    assert train.main(["--resume", str(folder)]) == 0
    assert epochs_in_metrics(folder) == ["1", "2"]


def test_nan_loss_stops_naming_epoch_and_iteration_and_keeps_the_last_checkpoint(
        tmp_path, write_tiny_config, monkeypatch, caplog):
    class PoisonedWeights(Hook):
        """From step 2 of epoch 2 on, the backbone's first convolution holds NaN: the loss becomes NaN."""

        def before_step(self, trainer, epoch, step, steps_per_epoch):
            if (epoch, step) == (2, 1):
                with torch.no_grad():
                    trainer.backbone.conv1.weight.fill_(float("nan"))

    add_training_hooks(monkeypatch, PoisonedWeights())
    with caplog.at_level(logging.ERROR):
        exit_code = train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path)])
    assert exit_code == train.EXIT_DIVERGED
    assert "epoch 2, iteration 2" in caplog.text
    folder = only_run_folder(tmp_path)
    assert load_checkpoint(folder / "last.pth")["epoch"] == 1


def broken_image_config(tmp_path, skip):
    root = write_class_pattern_images(tmp_path / "data", 8, 12)
    broken = root / "images" / "class_01" / "img_003.png"
    broken.write_bytes(broken.read_bytes()[:60])
    raw = tiny_train_config(root, num_epochs=1)
    raw["dataset"]["skip_broken_images"] = skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, broken


def test_broken_image_stops_training_naming_the_file(tmp_path, caplog):
    config, broken = broken_image_config(tmp_path, skip=0)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    assert str(broken) in caplog.text and "skip_broken_images" in caplog.text


def test_broken_image_is_skipped_and_counted_when_asked(tmp_path, caplog):
    config, broken = broken_image_config(tmp_path, skip=1)
    with caplog.at_level(logging.WARNING):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    assert str(broken) in caplog.text
    folder = only_run_folder(tmp_path / "runs")
    with open(folder / "metrics.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert int(row["skipped_images"]) >= 1
    assert json.loads((folder / "summary.json").read_text())["last_epoch"] == 1


def test_new_run_never_reuses_an_existing_folder(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1)
    for _ in range(2):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path)]) == 0
    assert len([path for path in tmp_path.iterdir() if path.is_dir()]) == 2


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from utils import io
    target = tmp_path / "result.json"
    target.write_text("old")

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", failing_replace)
    with pytest.raises(UserInputError, match="disk full"):
        io.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["result.json"]



@pytest.mark.parametrize("failing_file", ["last.pth", "metrics.csv"])
def test_full_disk_at_epoch_two_is_one_sentence_and_leaves_checkpoint_and_metrics_agreeing(
        tmp_path, write_tiny_config, monkeypatch, caplog, failing_file):
    import errno
    import tempfile

    from utils import io
    real_mkstemp = tempfile.mkstemp
    writes = []

    def full_disk_on_second_write(*args, prefix="", **kwargs):
        if prefix.startswith(f".{failing_file}."):  # then the writer's PID
            writes.append(prefix)
            if len(writes) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*args, prefix=prefix, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", full_disk_on_second_write)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path)]) == 2
    assert "No space left on device" in caplog.text and failing_file in caplog.text
    folder = only_run_folder(tmp_path)
    assert load_checkpoint(folder / "last.pth")["epoch"] == 1
    assert epochs_in_metrics(folder) == ["1"]
    assert not list(folder.glob(".*.tmp"))
    monkeypatch.setattr(io.tempfile, "mkstemp", real_mkstemp)
    assert train.main(["--resume", str(folder)]) == 0
    assert epochs_in_metrics(folder) == ["1", "2", "3"]


def test_a_run_that_fails_before_completing_an_epoch_says_so_in_its_log_and_summary(tmp_path):
    config, broken = broken_image_config(tmp_path, skip=0)
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    folder = only_run_folder(tmp_path / "runs")
    last_line = (folder / "train.log").read_text().strip().splitlines()[-1]
    assert "ERROR" in last_line and str(broken) in last_line
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and str(broken) in summary["error"]


SLOW_EVALUATION = """
import evaluation.evaluator
real_extract = evaluation.evaluator.extract_embeddings
calls = []
def slow_batches(loader):
    for count, batch in enumerate(loader, start=1):
        marker.write_text(str(count))
        yield batch
        time.sleep(1)
def slow_extract(model, loader, *args):
    calls.append(1)
    return real_extract(model, slow_batches(loader) if len(calls) >= {slow_from_call} else loader, *args)
evaluation.evaluator.extract_embeddings = slow_extract
"""


def small_eval_batches(raw):
    """48 test images in 12 batches of 4: an evaluation of at least 12 s with the driver's 1 s per batch."""
    raw["eval_params"]["batch_size"] = 4


def test_sigint_during_evaluation_stops_within_a_batch_keeping_the_last_epoch(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=3, mutate=small_eval_batches)
    output_dir = tmp_path / "runs"
    process, marker = start_driver(tmp_path, SLOW_EVALUATION.replace("{slow_from_call}", "2"),
                                   ["--config_path", str(config), "--output_dir", str(output_dir)])
    wait_for(marker.exists, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert int(marker.read_text()) <= 3  # of 12 batches: it stopped within the batch under way
    assert process.returncode == 128 + signal.SIGINT
    assert "Stopped during the evaluation of epoch 2" in stderr and "Traceback" not in stderr
    folder = only_run_folder(output_dir)
    assert load_checkpoint(folder / "last.pth")["epoch"] == 1
    assert epochs_in_metrics(folder) == ["1"]


def test_sigint_in_test_mode_says_what_was_kept_and_exits_130(tmp_path, write_tiny_config):
    def test_mode(raw):
        raw["mode"] = "test"
        small_eval_batches(raw)

    output_dir = tmp_path / "runs"
    process, marker = start_driver(tmp_path, SLOW_EVALUATION.replace("{slow_from_call}", "1"),
                                   ["--config_path", str(write_tiny_config(mutate=test_mode)),
                                    "--output_dir", str(output_dir)])
    wait_for(marker.exists, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert int(marker.read_text()) <= 3
    assert process.returncode == 128 + signal.SIGINT
    assert "Stopped during the test evaluation" in stderr and "Traceback" not in stderr
    assert not (only_run_folder(output_dir) / "metrics.json").exists()
