"""Issue 28: SIGKILL at random moments, resuming each time, loses nothing.

train.py runs in a subprocess and is killed with SIGKILL after a random
delay (seeded: the same moments every run), which lands in start-up, a
step, an evaluation or a checkpoint write; each time the run is resumed
(started again when no epoch had completed). The final weights, best
weights and metrics equal those of an uninterrupted run. The number of
kills is ``RELIABILITY_SIGKILLS`` (default 3 in CI; the issue's 20 by hand:
``RELIABILITY_SIGKILLS=20 pytest tests/test_sigkill_resume.py``).
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_train_config
from tests.test_train_end_to_end import assert_same_final_state, finished_run, run_folder  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
KILLS = int(os.environ.get("RELIABILITY_SIGKILLS", "3"))
# Start-up takes a few seconds and each epoch of the tiny run about one: kills spread over all of them.
DELAY_S = (2.0, 9.0)


def start(args, cwd):
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), *args], cwd=cwd,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def test_sigkill_at_random_moments_then_resume_ends_like_the_uninterrupted_run(finished_run, pattern_tree, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    output = tmp_path / "runs"
    moments = random.Random(0)
    new_run = ["--config_path", str(config), "--output_dir", str(output)]
    process, kills = start(new_run, tmp_path), 0
    while kills < KILLS:
        time.sleep(moments.uniform(*DELAY_S))
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        kills += 1
        folder = run_folder(output) if output.is_dir() and any(output.iterdir()) else None
        if folder is not None and (folder / "last.pth").is_file():
            process = start(["--resume", str(folder)], tmp_path)
        else:  # killed before its first epoch ended: nothing to resume, start again
            shutil.rmtree(output, ignore_errors=True)
            process = start(new_run, tmp_path)
    assert process.wait(timeout=300) == 0
    assert kills >= min(KILLS, 1)
    assert_same_final_state(run_folder(output), finished_run)
