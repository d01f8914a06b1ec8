"""Issue 22: every run folder records what produced it in environment.json."""
import json
import subprocess

import torch

from run_folder import provenance
from run_folder.provenance import environment_record, git_state, write_environment

EXPECTED_KEYS = {"command_line", "working_directory", "git_commit", "git_dirty", "python", "torch", "torchvision",
                 "numpy", "scikit-learn", "faiss", "cuda", "cudnn", "device", "device_name", "processes",
                 "cpu_threads", "cpu_interop_threads", "nmi_backend", "platform"}


def test_the_record_holds_every_field(tmp_path):
    record = environment_record(["python", "train.py", "--set", "train_params.lr=0.1 x"], tmp_path, "cpu", 2,
                                "sklearn")
    assert set(record) == EXPECTED_KEYS
    assert record["command_line"] == "python train.py --set 'train_params.lr=0.1 x'"
    assert torch.__version__.startswith(record["torch"]) and record["torchvision"]
    assert record["cpu_threads"] == 2 and record["nmi_backend"] == "sklearn" and record["device"] == "cpu"
    assert record["numpy"] and record["scikit-learn"] and record["python"].count(".") == 2


def test_git_commit_and_dirty_flag(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"],
                   check=True)
    commit, dirty = git_state(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / "a.txt").write_text("b")
    assert git_state(tmp_path) == (commit, True)


def test_no_git_or_no_repository_gives_null(tmp_path, monkeypatch):
    assert git_state(tmp_path) == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert git_state(tmp_path) == (None, None)


def test_a_missing_library_is_null():
    assert provenance.library_version(("surely-not-installed-dist",)) is None


def test_a_resumed_run_keeps_the_first_record(tmp_path):
    write_environment(tmp_path, {"run": 1})
    write_environment(tmp_path, {"run": 2})
    assert json.loads((tmp_path / "environment.json").read_text()) == {"run": 1}
    assert json.loads((tmp_path / "environment_resume1.json").read_text()) == {"run": 2}
