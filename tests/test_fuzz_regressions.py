"""Issue 28: each fault the fuzzer (tests/test_fuzz_*.py) found, as a plain test of its smallest case."""
import logging

import pytest
import torch

import train
from dataset import prepare
from tests.test_fuzz_files import finished_run  # noqa: F401 - fixture: a 1-epoch tiny run folder
from utils.safe_load import load_torch_file


@pytest.mark.slow
@pytest.mark.parametrize("key, value", [("backbone", torch.zeros(0)), ("optimizer", "x"), ("epoch", [1]),
                                        ("partial_sums", {"Total": torch.ones(3)}), ("rng", {}),
                                        ("best", {"score": 1.0})])
def test_a_checkpoint_with_an_entry_of_the_wrong_content_is_refused_naming_it(finished_run, tmp_path, caplog, key,
                                                                              value):
    """Found as TypeError, AttributeError and ValueError from deep in the trainer's restore."""
    import shutil
    run = tmp_path / finished_run.name
    shutil.copytree(finished_run, run)
    state = load_torch_file(run / "last.pth", "the test")
    state[key] = value
    torch.save(state, run / "last.pth")
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(run)]) == 2
    assert f"holds a damaged training state ('{key}'" in caplog.text


@pytest.mark.parametrize("content", [b"", b"MATL", b"\x00" * 200])
def test_a_cars_annotation_file_truncated_or_empty_is_one_sentence(tmp_path, caplog, content):
    """Found as scipy's MatReadError and IndexError."""
    (tmp_path / "download").mkdir()
    (tmp_path / "download" / "cars_annos.mat").write_bytes(content)
    with caplog.at_level(logging.ERROR):
        assert prepare.main(["cars", str(tmp_path / "download"), str(tmp_path / "out")]) == 2
    assert "cars_annos.mat is malformed" in caplog.text


def test_a_section_given_as_a_number_with_an_override_into_it_is_one_sentence(tmp_path, caplog):
    """Found as TypeError ('int' object does not support item assignment) while merging --set."""
    config = tmp_path / "config.yaml"
    config.write_text("mode: train\ntrain_params: 5\n")
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--set", "train_params.lr=0.1",
                           "--output_dir", str(tmp_path / "runs")]) == 2
    assert "Key 'train_params'" in caplog.text and "must be a section" in caplog.text


@pytest.mark.parametrize("module, argv", [
    ("retrieve", ["--gallery", "g.npz", "--queries", "q.npz", "--top_k", "1", "--output", "\x00"]),
    ("embed", ["--run", "r\x00", "--images", "i", "--output", "o.npz"]),
    ("tools.results", ["runs\x00"])])
def test_a_nul_byte_in_any_argument_is_one_sentence(module, argv, caplog):
    """Found (long profile) as ValueError: embedded null byte, from retrieve.py --output."""
    import importlib
    with caplog.at_level(logging.ERROR):
        assert importlib.import_module(module).main(argv) == 2
    assert "holds a NUL byte" in caplog.text


def test_ablation_output_that_is_a_file_is_one_sentence(tmp_path, caplog):
    """Found (long profile) as NotADirectoryError from benchmarks.ablation --output."""
    from benchmarks import ablation
    mine = tmp_path / "mine.yaml"
    mine.write_text("keep me\n")
    with caplog.at_level(logging.ERROR):
        assert ablation.main(["--output", str(mine), "--seeds", "1"]) == 2
    assert "is a file, not a folder" in caplog.text and mine.read_text() == "keep me\n"


def test_a_thread_count_beyond_any_machine_is_refused_where_it_enters(tmp_path, write_tiny_config, caplog):
    """Found (long profile) as ValueError (Overflow when unpacking long) from torch.set_num_threads."""
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(write_tiny_config()), "--threads", "2147483648",
                           "--output_dir", str(tmp_path / "runs")]) == 2
    assert "train_params.threads" in caplog.text and "at most 1024" in caplog.text


@pytest.mark.parametrize("module, argv", [
    ("benchmarks.index", ["--threads", "2147483648"]),  # found as an OverflowError inside faiss (exit 1)
    ("index", ["--gallery", "g.npz", "--kind", "flat", "--output", "o.index", "--threads", "2147483648"]),
    ("benchmarks.table_reader", ["--rows", "0"]),
    ("export", ["--run", "r", "--format", "onnx", "--output", "m.onnx", "--check_images", "-1"]),
])
def test_whole_number_flags_of_the_deploy_commands_are_bounded_where_they_enter(module, argv, capsys):
    import importlib
    with pytest.raises(SystemExit) as exited:
        importlib.import_module(module).main(argv)
    assert exited.value.code == 2 and "is outside" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_prepare_table_with_a_seed_outside_numpys_range_is_refused_as_it_enters(tmp_path, pattern_tree, seed):
    """Found by the long profile once the fuzzer drew the table subcommand's flags: NumPy's ValueError, exit 1."""
    with pytest.raises(SystemExit) as exited:
        prepare.main(["table", str(pattern_tree / "images"), str(tmp_path / "table.csv"), "--seed", seed])
    assert exited.value.code == 2 and not (tmp_path / "table.csv").exists()


def test_a_table_with_a_nul_byte_in_a_path_is_refused_naming_the_line(tmp_path, pattern_tree, caplog):
    """Found by the table fuzzer's long profile: 'embedded null byte', a ValueError of the OS, as a bug."""
    import yaml

    from tests.test_fuzz_files import valid_table
    from tests.test_table import table_config
    table = tmp_path / "table.csv"
    table.write_bytes(valid_table(pattern_tree).replace(b"img_004.png", b"img_0\x004.png", 1))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(table_config(pattern_tree, table)))
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    assert f"{table}" in caplog.text and "line 6" in caplog.text and "NUL byte" in caplog.text


def test_an_npz_whose_header_was_damaged_into_a_smaller_shape_is_refused(tmp_path):
    """Found by the long profile of the damaged-in-place property: NumPy read (4, 412) of a (4, 512) array and
    stopped before the end of the record, where the zip reader would have compared its checksum."""
    import numpy as np

    from inference.embedding_file import read_arrays
    from utils.errors import UserInputError
    path = tmp_path / "gallery.npz"
    np.savez(path, embeddings=np.ones((4, 512), dtype=np.float32))
    path.write_bytes(path.read_bytes().replace(b"(4, 512)", b"(4, 412)", 1))
    with pytest.raises(UserInputError, match="does not match its stored checksum"):
        read_arrays(path, "--gallery", ("embeddings",), "embed.py")
