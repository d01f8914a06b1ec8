"""Issue 28: the last resort of every command, and the five cases that used to escape it.

Bad input is one sentence and exit 2; anything else that escapes a command
is one sentence saying it is a bug and where its traceback went, exit 1.
"""
import importlib
import json
import logging
import math

import numpy as np
import PIL.Image
import pytest
import torch
import yaml

import train
from tests.conftest import tiny_train_config, write_class_pattern_images
from utils.boundary import command, note_run_log
from utils.errors import UserInputError

COMMANDS = ["train", "embed", "retrieve", "dataset.prepare", "tools.results", "tools.plot", "benchmarks.ablation",
            "benchmarks.evaluation", "benchmarks.loader", "benchmarks.mpn", "benchmarks.pseudo_test",
            "benchmarks.train_step"]


def error_lines(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


def test_a_user_error_is_its_sentence_and_exit_2(caplog):
    @command("demo")
    def main(argv=None):
        raise UserInputError("--x 3 is too large; give at most 2.")

    with caplog.at_level(logging.ERROR):
        assert main([]) == 2
    assert error_lines(caplog) == ["--x 3 is too large; give at most 2."]


def test_a_bug_is_one_sentence_naming_a_temporary_file_with_the_traceback(caplog, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    @command("demo.py")
    def main(argv=None):
        return {}["missing"]

    with caplog.at_level(logging.ERROR):
        assert main([]) == 1
    (sentence,) = error_lines(caplog)
    assert "KeyError" in sentence and "a bug of this project" in sentence and "\n" not in sentence
    (written,) = tmp_path.glob("demo_py_bug_*.log")
    assert str(written) in sentence
    text = written.read_text()
    assert "Traceback" in text and 'return {}["missing"]' in text


@pytest.mark.slow
def test_a_bug_in_a_loader_worker_is_one_sentence_without_the_workers_traceback(caplog, tmp_path, monkeypatch,
                                                                                 write_tiny_config):
    """torch's error from a worker holds the worker's traceback: the terminal gets its first line."""
    from dataset import image_list

    def faulty(path):
        raise RuntimeError("a fault in a worker")
    monkeypatch.setattr(image_list, "load_rgb", faulty)
    config = write_tiny_config(mutate=lambda raw: raw["dataset"].update(nb_workers=1))
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 1
    sentence = error_lines(caplog)[-1]
    assert "RuntimeError (Caught RuntimeError in DataLoader worker process 0.)" in sentence
    assert "Traceback" not in caplog.text


def test_a_bug_during_a_run_appends_its_traceback_to_the_runs_log_and_ends_it_with_the_sentence(caplog, tmp_path):
    log = tmp_path / "train.log"
    log.write_text("2026-01-01 00:00:00,000 INFO train: epoch 1\n")

    @command("train.py")
    def main(argv=None):
        note_run_log(log)
        raise ZeroDivisionError("division by zero")

    with caplog.at_level(logging.ERROR):
        assert main([]) == 1
    (sentence,) = error_lines(caplog)
    assert str(log) in sentence
    lines = log.read_text().splitlines()
    assert lines[0].endswith("epoch 1") and any("Traceback" in line for line in lines)
    assert " ERROR " in lines[-1] and "ZeroDivisionError" in lines[-1]


def test_keyboard_interrupt_exits_130_and_argparse_keeps_its_exit_2():
    @command("demo")
    def interrupted(argv=None):
        raise KeyboardInterrupt

    @command("demo")
    def bad_flag(argv=None):
        raise SystemExit(2)

    assert interrupted([]) == 130
    with pytest.raises(SystemExit) as exited:
        bad_flag([])
    assert exited.value.code == 2


@pytest.mark.parametrize("module", COMMANDS)
def test_every_commands_main_is_behind_the_boundary(module):
    main = importlib.import_module(module).main
    assert getattr(main, "__wrapped__", None) is not None, f"{module}.main lacks @command"


def test_train_ends_an_unexpected_error_with_the_sentence_and_the_traceback_in_the_runs_log(
        tmp_path, write_tiny_config, monkeypatch, caplog):
    from engine import build

    def broken_fit(*args, **kwargs):
        raise RuntimeError("an internal fault")

    monkeypatch.setattr(build, "build_trainer", broken_fit)
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    log = (run_dir / "train.log").read_text()
    assert "Traceback" in log and "an internal fault" in log
    assert str(run_dir / "train.log") in error_lines(caplog)[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "RuntimeError" in summary["error"] and "train.log" in summary["error"]


def test_a_bug_in_a_step_marks_the_run_failed_and_keeps_its_checkpoint(tmp_path, write_tiny_config, monkeypatch):
    """In the middle of training: the summary says failed, last.pth still holds the last completed epoch."""
    from engine.hooks import Hook
    from run_folder.checkpoint import load_checkpoint
    from tests.conftest import add_training_hooks

    class FaultInEpoch2(Hook):
        armed = True

        def before_step(self, trainer, epoch, step, steps_per_epoch):
            if epoch == 2 and self.armed:
                raise ZeroDivisionError("a fault in a hook")

    fault = FaultInEpoch2()
    add_training_hooks(monkeypatch, fault)
    config = write_tiny_config(num_epochs=2, lr_drop_epochs=[2], max_iters_per_epoch=1)
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 1
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert load_checkpoint(run_dir / "last.pth")["epoch"] == 1
    fault.armed = False
    assert train.main(["--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["best_weights"]


# --------------------------------------------------------------- the five cases of the issue
@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_outside_numpys_range_is_refused_where_it_enters(tmp_path, write_tiny_config, caplog, seed):
    config = write_tiny_config()
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--seed", seed, "--output_dir", str(tmp_path / "r")]) == 2
    assert "train_params.seed" in error_lines(caplog)[0]
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(write_tiny_config(seed=int(seed))),
                           "--output_dir", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def oversized_image_config(tmp_path, skip):
    """A tiny config whose training classes hold one image of 64 x 64, over a limit of 1,000 pixels."""
    root = write_class_pattern_images(tmp_path / "data", 8, 12)
    oversized = root / "images" / "class_02" / "img_005.png"
    PIL.Image.new("RGB", (64, 64), (10, 20, 30)).save(oversized)
    raw = tiny_train_config(root, num_epochs=1)
    raw["dataset"]["skip_broken_images"] = skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, oversized


@pytest.mark.parametrize("skip", [0, 1])
def test_an_image_over_pils_pixel_limit_is_named_or_skipped_and_counted(tmp_path, monkeypatch, caplog, skip):
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice the limit
    config, oversized = oversized_image_config(tmp_path, skip)
    with caplog.at_level(logging.WARNING):
        code = train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")])
    assert str(oversized) in caplog.text and "decompression bomb" in caplog.text
    if not skip:
        assert code == 2
        return
    assert code == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert "skipped_images" in (run_dir / "metrics.csv").read_text()


def nan_weights(tmp_path, pattern_tree):
    from recipe import RunRecipe
    from schema import load_config
    raw_path = tmp_path / "raw.yaml"
    raw_path.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    backbone, _ = RunRecipe(load_config(raw_path)).build_models(torch.device("cpu"))
    state = backbone.state_dict()
    key = next(key for key, value in state.items() if value.is_floating_point())
    state[key] = state[key].clone().fill_(math.nan)
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    return path, key


def test_nan_weights_in_test_mode_are_refused_at_load_naming_file_and_key(tmp_path, pattern_tree, caplog):
    path, key = nan_weights(tmp_path, pattern_tree)
    raw = tiny_train_config(pattern_tree)
    raw["mode"] = "test"
    config = tmp_path / "test.yaml"
    config.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--bb_path", str(path),
                           "--output_dir", str(tmp_path / "runs")]) == 2
    (sentence,) = error_lines(caplog)
    assert str(path) in sentence and key in sentence and "NaN or infinite" in sentence


def test_inf_anywhere_in_a_checkpoint_is_refused_naming_where(tmp_path):
    from utils.safe_load import load_torch_file
    path = tmp_path / "last.pth"
    torch.save({"format_version": 2, "optimizer": {"state": {0: {"exp_avg": torch.tensor([1.0, math.inf])}}}},
               path)
    with pytest.raises(UserInputError, match=r"'optimizer\.state\.0\.exp_avg'"):
        load_torch_file(path, "--resume")


def test_a_dataset_list_that_is_not_utf8_names_the_file_and_line(tmp_path):
    from dataset.inshop import read_partition
    partition = tmp_path / "Eval" / "list_eval_partition.txt"
    partition.parent.mkdir()
    partition.write_bytes(b"2\nimage_name item_id evaluation_status\nimg/\xe9t\xe9.jpg id_1 train\n")
    with pytest.raises(UserInputError, match=r"list_eval_partition.txt is not UTF-8 text \(line 3"):
        read_partition(tmp_path)


@pytest.mark.parametrize("content", [PIL.Image.new("RGB", (4, 4)), b"\x00\x01\x02 binary", "x"])
def test_an_annotation_file_that_is_not_what_its_name_says_is_one_sentence(tmp_path, content, caplog):
    from dataset import prepare
    listing = tmp_path / "download" / "Ebay_train.txt"
    listing.parent.mkdir()
    if isinstance(content, PIL.Image.Image):
        content.save(listing, format="PNG")
    else:
        listing.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "download" / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n")
    with caplog.at_level(logging.ERROR):
        assert prepare.main(["sop", str(tmp_path / "download"), str(tmp_path / "out")]) == 2
    (sentence,) = error_lines(caplog)
    assert str(listing) in sentence


def test_a_cars_annotation_file_that_is_not_a_mat_file_is_one_sentence(tmp_path, caplog):
    from dataset import prepare
    (tmp_path / "download").mkdir()
    (tmp_path / "download" / "cars_annos.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with caplog.at_level(logging.ERROR):
        assert prepare.main(["cars", str(tmp_path / "download"), str(tmp_path / "out")]) == 2
    assert "cars_annos.mat" in error_lines(caplog)[0]


BOMB = "".join(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}' if level else 'x'] * 9)}]\n"
               for level in range(9))


def test_a_yaml_alias_bomb_is_refused_in_milliseconds(tmp_path, caplog):
    import time
    config = tmp_path / "bomb.yaml"
    config.write_text(BOMB)
    started = time.perf_counter()
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    assert time.perf_counter() - started < 5
    assert "aliases expand" in error_lines(caplog)[0]


def test_a_self_referencing_yaml_alias_is_refused():
    from schema.loading import ExpandsTooFar, safe_load_unique_keys
    with pytest.raises(ExpandsTooFar, match="refers to itself"):
        safe_load_unique_keys("a: &x [1, *x]\n")
    assert safe_load_unique_keys("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_retrieve_top_k_far_larger_than_the_gallery_is_one_sentence(tmp_path, caplog):
    import retrieve
    from inference.embedding_file import EmbeddedImages, save_embeddings
    images = tmp_path / "images"
    paths = [str(images / f"{index}.png") for index in range(3)]
    embedded = EmbeddedImages(np.eye(3, 4, dtype=np.float32), paths, images, "euclidean")
    save_embeddings(embedded, tmp_path / "gallery.npz")
    with caplog.at_level(logging.ERROR):
        assert retrieve.main(["--gallery", str(tmp_path / "gallery.npz"), "--queries", str(tmp_path / "gallery.npz"),
                              "--top_k", str(10**12), "--output", str(tmp_path / "out")]) == 2
    assert "--top_k" in error_lines(caplog)[0]
    assert not (tmp_path / "out").exists()


def test_summary_of_a_run_that_failed_on_a_bug_is_not_needed_for_results(tmp_path):
    """tools.results reads why such a run stopped from the last line of its log: the sentence."""
    from tools.run_folders import read_run
    run_dir = tmp_path / "cub_resnet18_train_20260101-000000"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"mode": "train"}))
    (run_dir / "train.log").write_text("x INFO train: start\n")

    @command("train.py")
    def main(argv=None):
        note_run_log(run_dir / "train.log")
        raise RuntimeError("boom")

    assert main([]) == 1
    run = read_run(run_dir)
    assert run.status != "finished" and "RuntimeError" in run.problem
    assert json.dumps(run.problem)
