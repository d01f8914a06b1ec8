"""Issue 28: SIGKILL at 20 moments of a run, resuming each time, loses nothing.

The uninterrupted run is traced (``tests/killed_at.py``): every step, every
evaluation's embedding and metrics, the drawing of pictures and plots, and
each file write, torn half-way and again before its rename. 20 of those
moments are drawn (seeded: the same every run, in the run's order) and a
second run is killed with SIGKILL at each of them in turn, resumed each time
(started again when no epoch had completed). It must end with the same
run folder: the same weights, best weights, metrics.csv, summary and
pictures, bit for bit. Only what measures the clock or the resumes differs.
"""
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from net.weights import read_state_dict
from run_folder.checkpoint import load_checkpoint
from tests.conftest import tiny_train_config, write_class_pattern_images

pytestmark = pytest.mark.slow

KILLS = 20
RUNNER = Path(__file__).resolve().parent / "killed_at.py"
# Columns that measure wall-clock time, and the summary's record of the resumes: they differ by nature.
CLOCK_COLUMNS = ("images_per_s", "time_s")
RESUME_SUMMARY_KEYS = ("resumes", "resumed_exactly", "differs_from")
# Files that only a resume writes, or that grow with each process (the log).
RESUME_FILES = ("train.log",)


def run_killer(runner_args, train_args, cwd):
    completed = subprocess.run([sys.executable, str(RUNNER), *runner_args, "--", *train_args], cwd=cwd,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                               timeout=300)
    return completed.returncode, completed.stderr


def only_folder(output):
    (folder,) = [path for path in output.iterdir() if path.is_dir()] if output.is_dir() else [None]
    return folder


@pytest.fixture(scope="module")
def picture_config(tmp_path_factory):
    """The tiny run with pictures, on images so noisy that its best epoch (2) is neither the first nor the last."""
    where = tmp_path_factory.mktemp("sigkill")
    raw = tiny_train_config(write_class_pattern_images(where / "data", 8, 12, noise=250))
    raw["logging"] = {"pictures": 1}
    path = where / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def traced_run(picture_config, tmp_path_factory):
    """The uninterrupted run and the moments it passed, ``[(phase, index, what)]`` in order."""
    where = tmp_path_factory.mktemp("uninterrupted")
    trace = where / "moments.jsonl"
    code, stderr = run_killer(["--trace", str(trace)],
                              ["--config_path", str(picture_config), "--output_dir", str(where / "runs")], where)
    assert code == 0, stderr
    moments = [tuple(json.loads(line)) for line in trace.read_text().splitlines()]
    return only_folder(where / "runs"), moments


def killed_and_resumed(config, moments, where):
    """The run killed at each of ``moments`` and resumed; its folder and the moments each kill hit."""
    output = where / "runs"
    new_run = ["--config_path", str(config), "--output_dir", str(output)]
    for phase, index, what in moments:
        folder = only_folder(output)
        if folder is not None and (folder / "last.pth").is_file():
            arguments = ["--resume", str(folder)]
        else:  # killed before its first epoch ended: nothing to resume, so the run starts again
            shutil.rmtree(output, ignore_errors=True)
            arguments = new_run
        code, stderr = run_killer(["--kill-at", str(phase), str(index)], arguments, where)
        assert code == -signal.SIGKILL, f"the kill at {phase, index, what} did not land (exit {code}): {stderr}"
    code, stderr = run_killer([], ["--resume", str(only_folder(output))], where)
    assert code == 0, stderr
    return only_folder(output)


def read_rows(folder):
    with open(folder / "metrics.csv", newline="") as handle:
        return [{key: value for key, value in row.items() if key not in CLOCK_COLUMNS}
                for row in csv.DictReader(handle)]


def read_summary(folder):
    summary = json.loads((folder / "summary.json").read_text())
    return {key: value for key, value in summary.items() if key not in RESUME_SUMMARY_KEYS}


def run_files(folder):
    """Every file of the run folder but the log and the records of the resumes (environment_resume*.json)."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*")
                  if path.is_file() and path.name not in RESUME_FILES
                  and not path.name.startswith("environment_resume"))


def assert_same_tensors(resumed, uninterrupted, what):
    assert resumed.keys() == uninterrupted.keys(), what
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), f"{what}: {key}"


def kill_plan(moments, kills, seed=28):
    """``kills`` moments in the run's order: one of each kind (a step, an embedding, the metrics, the
    pictures, the plots, a torn write, a rename), and the rest drawn from all of them."""
    draw = random.Random(seed)
    kinds = sorted({what.split()[0] for _, _, what in moments})
    positions = [draw.choice([position for position, (_, _, what) in enumerate(moments) if what.split()[0] == kind])
                 for kind in kinds]
    positions += draw.choices(range(len(moments)), k=kills - len(positions))
    return [moments[position] for position in sorted(positions)]


def assert_same_run(resumed, uninterrupted):
    assert run_files(resumed) == run_files(uninterrupted)
    resumed_state, expected_state = load_checkpoint(resumed / "last.pth"), load_checkpoint(uninterrupted / "last.pth")
    for part in ("backbone", "mpn"):
        assert_same_tensors(resumed_state[part], expected_state[part], part)
    for name in json.loads((uninterrupted / "summary.json").read_text())["best_weights"].values():
        assert_same_tensors(read_state_dict(resumed / name, "the resumed run"),
                            read_state_dict(uninterrupted / name, "the uninterrupted run"), name)
    assert read_rows(resumed) == read_rows(uninterrupted)
    assert read_summary(resumed) == read_summary(uninterrupted)
    for picture in sorted((uninterrupted / "pictures").rglob("*.png")):
        relative = picture.relative_to(uninterrupted)
        assert (resumed / relative).read_bytes() == picture.read_bytes(), relative


def test_sigkill_at_20_moments_then_resume_ends_bit_for_bit_like_the_uninterrupted_run(
        picture_config, traced_run, tmp_path):
    uninterrupted, moments = traced_run
    assert json.loads((uninterrupted / "summary.json").read_text())["best_epoch"] == 2
    plan = kill_plan(moments, KILLS)
    assert len(plan) == KILLS and {what.split()[0] for *_, what in plan} >= {
        "step", "embedding", "metrics", "pictures", "plots", "writing", "renaming"}
    assert_same_run(killed_and_resumed(picture_config, plan, tmp_path), uninterrupted)


# What the 20 kills found, each its own case: the resume must finish what the kill interrupted.
FOUND = {
    # summary.json was written before the pictures: the resume found the run finished, the pictures half drawn.
    "the first picture": lambda moments: [moment for moment in moments if moment[2] == "pictures"][0],
    # last.pth renamed, metrics.csv not: the last epoch's resume never wrote its row.
    "between last.pth and metrics.csv of the last epoch":
        lambda moments: [moment for moment in moments if moment[2] == "renaming metrics.csv"][-1],
    # last.pth written, epoch 1's best files (replaced by epoch 2's) not yet deleted: they stayed.
    "before the replaced best files are deleted":
        lambda moments: [moment for moment in moments if moment[0] == 2 and moment[2] == "plots"][0],
}


@pytest.mark.parametrize("moment", FOUND)
def test_one_kill_where_the_20_found_a_fault_resumes_to_the_same_run(moment, picture_config, traced_run,
                                                                       tmp_path):
    uninterrupted, moments = traced_run
    assert_same_run(killed_and_resumed(picture_config, [FOUND[moment](moments)], tmp_path), uninterrupted)
