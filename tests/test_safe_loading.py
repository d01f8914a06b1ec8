"""Issue 19: loading a file never runs code from it.

A crafted ``.pth`` whose unpickling would create a file is refused (exit 2,
one sentence naming the file and what it held) wherever the project reads
one: ``--resume``, ``--bb_path``, ``--gnn_path``, in train and test mode.
And only ``utils/safe_load.py`` may open pickles: the scan below fails on
any other ``torch.load`` or ``pickle`` import.

This file itself loads the payload the unsafe way once, to prove that it
really runs code; that is why the scan allows it here and nowhere else.
"""
import ast
import logging
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import train
from net.weights import read_state_dict
from tests.conftest import tiny_train_config
from run_folder.checkpoint import format_1_numpy_globals, load_checkpoint
from utils.errors import UserInputError
from utils.safe_load import UnsafeFileError, load_torch_file, refused_name

REPO = Path(__file__).resolve().parents[1]
THE_LOADER = Path("utils/safe_load.py")
# Builds and opens malicious files on purpose (see the module docstring).
THIS_TEST = Path("tests/test_safe_loading.py")
SKIPPED_FOLDERS = (Path("tests/fixtures/reference"),)


class CreatesAFile:
    """Unpickling this runs ``touch <marker>``: what a crafted checkpoint could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class PlainObject:
    """A harmless class that is still not data: rebuilding it means importing this module."""


def write_malicious_checkpoint(path, marker):
    """A file shaped like last.pth whose unpickling would create ``marker``."""
    torch.save({"format_version": 2, "epoch": 1, "backbone": {"fc.weight": CreatesAFile(marker)}}, path)
    return path


def test_the_payload_really_runs_code_when_loaded_the_unsafe_way(tmp_path):
    marker = tmp_path / "created_by_the_payload"
    path = write_malicious_checkpoint(tmp_path / "last.pth", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_the_safe_loader_refuses_the_payload_naming_the_file_and_the_function(tmp_path):
    marker = tmp_path / "created_by_the_payload"
    path = write_malicious_checkpoint(tmp_path / "last.pth", marker)
    with pytest.raises(UnsafeFileError) as error:
        load_torch_file(path, "--resume")
    message = str(error.value)
    assert str(path) in message and "--resume" in message and "posix.system" in message
    assert error.value.refused == "posix.system" and "\n" not in message
    assert not marker.exists()


def test_weights_files_are_read_without_running_code(tmp_path):
    marker = tmp_path / "created_by_the_payload"
    torch.save({"fc.weight": CreatesAFile(marker)}, tmp_path / "w.pth")
    with pytest.raises(UserInputError, match="posix.system"):
        read_state_dict(tmp_path / "w.pth", "--bb_path")
    assert not marker.exists()


def test_a_class_that_is_not_data_is_named_in_the_refusal(tmp_path):
    torch.save({"fc.weight": PlainObject()}, tmp_path / "w.pth")
    with pytest.raises(UnsafeFileError) as error:
        load_torch_file(tmp_path / "w.pth", "--gnn_path")
    assert error.value.refused == "tests.test_safe_loading.PlainObject"


def test_refused_name_reads_torch_messages_for_globals_and_classes():
    assert refused_name("Unsupported global: GLOBAL posix.system was not an allowed global") == "posix.system"
    assert refused_name("Trying to load unsupported GLOBAL os.system whose module os is blocked.") == "os.system"
    assert refused_name("Can only build Tensor ... but got <class 'numpy.dtypes.UInt32DType'>") == \
        "numpy.dtypes.UInt32DType"
    assert refused_name("Unsupported operand 149") is None


def test_numpy_types_of_old_checkpoints_are_allowed_only_for_that_load(tmp_path):
    """Converting a format-1 last.pth must not open the door for every other file."""
    torch.save({"weight": np.arange(3, dtype=np.uint32)}, tmp_path / "numpy.pth")
    assert load_torch_file(tmp_path / "numpy.pth", "test", format_1_numpy_globals())["weight"].tolist() == [0, 1, 2]
    with pytest.raises(UnsafeFileError, match="numpy"):
        load_torch_file(tmp_path / "numpy.pth", "--bb_path")


def test_an_old_format_checkpoint_with_a_payload_is_refused_too(tmp_path):
    """The NumPy allowance of the format-1 fallback admits those types, and nothing that runs code."""
    marker = tmp_path / "created_by_the_payload"
    torch.save({"format_version": 1, "rng": {"numpy": np.random.get_state()}, "best": CreatesAFile(marker)},
               tmp_path / "last.pth")
    with pytest.raises(UnsafeFileError, match="posix.system"):
        load_checkpoint(tmp_path / "last.pth")
    assert not marker.exists()


def test_a_damaged_checkpoint_is_still_called_unreadable(tmp_path):
    (tmp_path / "last.pth").write_bytes(b"\x80\x02not a pickle at all")
    with pytest.raises(UserInputError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "last.pth")


# ----------------------------------------------------------------- the CLI
def tiny_config(tmp_path, pattern_tree, mode):
    raw = tiny_train_config(pattern_tree, num_epochs=1, max_iters_per_epoch=1)
    raw["mode"] = mode
    path = tmp_path / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("mode, flag", [("train", "--resume"), ("train", "--bb_path"), ("train", "--gnn_path"),
                                        ("test", "--bb_path"), ("test", "--gnn_path")])
def test_a_malicious_checkpoint_is_refused_by_every_flag_that_reads_one(
        tmp_path, pattern_tree, caplog, mode, flag):
    marker = tmp_path / "created_by_the_payload"
    run = tmp_path / "copied_run"
    run.mkdir()
    checkpoint = write_malicious_checkpoint(run / "last.pth", marker)
    config = tiny_config(tmp_path, pattern_tree, mode)
    (run / "config.yaml").write_text(config.read_text())
    before = checkpoint.read_bytes()
    args = ["--resume", str(run)] if flag == "--resume" else ["--config_path", str(config), flag, str(checkpoint)]
    with caplog.at_level(logging.ERROR):
        assert train.main([*args, "--output_dir", str(tmp_path / "runs")]) == 2
    assert not marker.exists()
    assert checkpoint.read_bytes() == before
    (error,) = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert str(checkpoint) in error and "posix.system" in error and "was not loaded" in error
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the scan
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "joblib", "shelve", "marshal", "cloudpickle"}
UNSAFE_CALLS = {"torch.load", "torch.serialization.load", "torch.jit.load", "torch.hub.load",
                "torch.hub.load_state_dict_from_url", "load_state_dict_from_url", "yaml.load", "yaml.unsafe_load",
                "yaml.full_load", "yaml.load_all", "pd.read_pickle", "pandas.read_pickle"}
UNSAFE_FROM_IMPORTS = {("torch", "load"), ("torch.serialization", "load"), ("torch.hub", "load_state_dict_from_url"),
                       ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load")}


def dotted_name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = dotted_name(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None


def unsafe_uses(source):
    """``[(line, what)]``: every way ``source`` could unpickle a file or run YAML tags."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {alias.name}") for alias in node.names
                      if alias.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                found.append((node.lineno, f"from {node.module} import"))
            found += [(node.lineno, f"from {node.module} import {alias.name}") for alias in node.names
                      if (node.module, alias.name) in UNSAFE_FROM_IMPORTS]
        elif isinstance(node, ast.Call):
            name = dotted_name(node.func)
            if name in UNSAFE_CALLS:
                found.append((node.lineno, name))
            elif name in ("np.load", "numpy.load") and not any(
                    keyword.arg == "allow_pickle" and isinstance(keyword.value, ast.Constant)
                    and keyword.value.value is False for keyword in node.keywords):
                found.append((node.lineno, f"{name} without allow_pickle=False"))
    return sorted(found)


def project_sources():
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0].startswith(".") or any(relative.is_relative_to(folder) for folder in SKIPPED_FOLDERS):
            continue
        yield relative, path.read_text()


def test_the_scan_finds_each_kind_of_unsafe_load():
    source = ("import pickle\nfrom dill import loads\nimport torch\nfrom torch import load\n"
              "torch.load('x')\nyaml.load(text)\nnp.load('a.npz')\nnp.load('b.npz', allow_pickle=False)\n")
    assert [line for line, _ in unsafe_uses(source)] == [1, 2, 4, 5, 6, 7]


def test_only_the_safe_loader_opens_pickles():
    offenders = [f"{relative}:{line}: {what}" for relative, source in project_sources()
                 if relative not in (THE_LOADER, THIS_TEST) for line, what in unsafe_uses(source)]
    assert offenders == []


def test_the_safe_loader_is_the_one_torch_load_and_it_is_weights_only():
    source = (REPO / THE_LOADER).read_text()
    assert sorted(what for _, what in unsafe_uses(source)) == ["import pickle", "torch.jit.load", "torch.load"]
    assert "weights_only=True" in source and "weights_only=False" not in source
