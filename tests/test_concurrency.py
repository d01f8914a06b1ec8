"""Issue 28: two processes never write one run folder; a killed one never leaves it locked."""
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from run_folder.layout import LOCK_OWNER_NAME
from run_folder.lock import RunFolderLock
from utils.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from run_folder.lock import RunFolderLock
lock = RunFolderLock()
lock.hold(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def start_holder(folder):
    """A process that holds ``folder``'s lock until killed; returns it once it holds the lock."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def kill(process):
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def test_a_held_folder_is_refused_naming_the_holders_pid(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(UserInputError, match=f"being written by process {holder.pid} on "):
            RunFolderLock().hold(tmp_path)
    finally:
        kill(holder)


def test_a_sigkilled_holder_leaves_no_lock_behind(tmp_path):
    holder = start_holder(tmp_path)
    kill(holder)
    assert (tmp_path / LOCK_OWNER_NAME).exists()  # the dead process's note stays; the OS lock went with it
    lock = RunFolderLock()
    lock.hold(tmp_path)
    assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_OWNER_NAME).read_text()
    lock.release()
    assert not (tmp_path / LOCK_OWNER_NAME).exists()


def digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(folder).rglob("*")) if path.is_file() and path.name != LOCK_OWNER_NAME}


@pytest.fixture
def stopped_run(tmp_path, write_tiny_config):
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1)
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    return folder


@pytest.mark.slow
def test_a_resume_of_a_folder_another_process_holds_is_refused_and_changes_nothing(stopped_run, caplog):
    holder = start_holder(stopped_run)
    try:
        before = digests(stopped_run)
        with caplog.at_level(logging.ERROR):
            assert train.main(["--resume", str(stopped_run)]) == 2
        assert f"process {holder.pid}" in caplog.text and "two processes must never write" in caplog.text
        assert digests(stopped_run) == before
    finally:
        kill(holder)
    assert train.main(["--resume", str(stopped_run)]) == 0  # the killed holder left nothing stuck


@pytest.mark.slow
def test_a_resume_while_train_py_is_training_that_run_is_refused_naming_it(stopped_run, caplog):
    """A real second process: train.py resumes the run for 30 more epochs; a resume beside it is refused."""
    import yaml
    config_path = stopped_run / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["train_params"]["num_epochs"] = 30
    config_path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, str(REPO_ROOT / "train.py"), "--resume", str(stopped_run)],
                             cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (stopped_run / LOCK_OWNER_NAME).exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        with caplog.at_level(logging.ERROR):
            assert train.main(["--resume", str(stopped_run)]) == 2
        assert f"process {first.pid}" in caplog.text
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) in (128 + signal.SIGTERM, -signal.SIGTERM)  # handled, or before the handler


STARTER = """
import sys, time
from pathlib import Path
import run_folder.run_dir as run_dir
run_dir.time.strftime = lambda pattern: "20260101-000000"  # both start in the same second
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
print(run_dir.make_run_dir(sys.argv[1], "cub_resnet18_train"), flush=True)
"""


def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path):
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path / "runs"), str(go)], cwd=REPO_ROOT,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    time.sleep(1.0)  # both are waiting
    go.touch()
    folders = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(folders) == 2
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == [
        "cub_resnet18_train_20260101-000000", "cub_resnet18_train_20260101-000000_1"]


BUILD_DEMO = """
import sys
from dataset.demo import ensure_demo_dataset
ensure_demo_dataset(sys.argv[1])
"""


def test_two_demo_runs_started_together_take_turns_writing_the_demo(tmp_path):
    """One of them stopped with 'images/1/346.png already exists' (or lost a temporary file to the other)."""
    root = tmp_path / "data" / "demo_digits"
    builders = [subprocess.Popen([sys.executable, "-c", BUILD_DEMO, str(root)], cwd=REPO_ROOT,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(builder.wait(timeout=300), builder.stderr.read()) for builder in builders]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert len(list((root / "images").rglob("*.png"))) == 1797


def test_a_write_removes_the_temporaries_of_dead_writers_only(tmp_path):
    """A temporary of a live process is a file being written, not a leftover of a kill."""
    from utils import io
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    dead_writers = tmp_path / f".out.npz.{int(finished.stdout)}.a1.tmp"
    live_writer = tmp_path / f".out.npz.{os.getppid()}.b2.tmp"
    for temporary in (dead_writers, live_writer):
        temporary.write_bytes(b"partial")
    io.atomic_write(tmp_path / "out.npz", b"whole")
    assert not dead_writers.exists() and live_writer.exists()
