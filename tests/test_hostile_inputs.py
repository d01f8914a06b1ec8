"""Issue 13: a hostile user's second round. Nothing lost, nothing silently wrong, one sentence."""
import json
import logging

import pytest
import yaml

import train


def only_run_folder(output_dir):
    (folder,) = [path for path in output_dir.iterdir() if path.is_dir()]
    return folder


@pytest.fixture
def stopped_run(tmp_path, write_tiny_config):
    """A 1-step, 1-epoch run of a 2-epoch config, stopped at the epoch boundary by num_epochs: 1."""
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1)
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    return only_run_folder(tmp_path / "runs")


@pytest.mark.slow
def test_resume_with_another_seed_is_refused_naming_the_key(stopped_run, caplog):
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(stopped_run), "--seed", "7"]) == 2
    assert "train_params.seed 0 -> 7" in caplog.text


@pytest.mark.slow
def test_resume_after_editing_the_run_config_is_refused_naming_the_key(stopped_run, caplog):
    config_path = stopped_run / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["train_params"]["lr"] = 0.5
    config_path.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(stopped_run)]) == 2
    assert "train_params.lr" in caplog.text and "0.5" in caplog.text


@pytest.mark.slow
def test_resume_with_more_epochs_is_applied_recorded_and_logged(stopped_run):
    config_path = stopped_run / "config.yaml"
    with_more_epochs(stopped_run)
    assert train.main(["--resume", str(stopped_run)]) == 0
    assert json.loads((stopped_run / "summary.json").read_text())["last_epoch"] == 2
    assert "train_params.num_epochs 1 -> 2" in (stopped_run / "train.log").read_text()
    assert yaml.safe_load(config_path.read_text())["train_params"]["num_epochs"] == 2
    assert train.main(["--resume", str(stopped_run)]) == 0  # the record now says 2: finished
    assert not (stopped_run / "environment_resume2.json").exists()


def with_more_epochs(run_folder, num_epochs=2):
    """The run's config.yaml edited to train longer (a change a resume makes exactly)."""
    config_path = run_folder / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["train_params"]["num_epochs"] = num_epochs
    config_path.write_text(yaml.safe_dump(raw))


@pytest.mark.slow
def test_resume_with_another_thread_count_is_refused_unless_allowed_and_then_recorded(stopped_run, caplog):
    with_more_epochs(stopped_run)
    recorded_threads = json.loads((stopped_run / "environment.json").read_text())["cpu_threads"]
    other = str(recorded_threads + 1)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(stopped_run), "--threads", other]) == 2
    assert f"cpu_threads {recorded_threads} -> {other}" in caplog.text and "--allow_different_numbers" in caplog.text
    assert not (stopped_run / "environment_resume1.json").exists()

    assert train.main(["--resume", str(stopped_run), "--threads", other, "--allow_different_numbers"]) == 0
    log = (stopped_run / "train.log").read_text()
    assert "continues at epoch 2, step 1 of 1" in log
    assert f"Resumed with cpu_threads {recorded_threads} -> {other} (--allow_different_numbers): from epoch 2, " \
           "step 1 on the numbers differ" in log
    config_text = (stopped_run / "config.yaml").read_text()
    assert config_text.startswith("# Resumed with --allow_different_numbers at epoch 2, step 1: cpu_threads")
    assert yaml.safe_load(config_text)["train_params"]["threads"] == int(other)
    summary = json.loads((stopped_run / "summary.json").read_text())
    assert summary["resumed_exactly"] is False
    assert summary["differs_from"] == {"epoch": 2, "step": 1,
                                       "changes": f"cpu_threads {recorded_threads} -> {other}"}
    assert json.loads((stopped_run / "environment_resume1.json").read_text())["cpu_threads"] == int(other)


@pytest.mark.slow
def test_resume_with_changes_that_keep_the_numbers_is_recorded_as_exact(stopped_run):
    with_more_epochs(stopped_run)
    assert train.main(["--resume", str(stopped_run), "--set", "logging.tensorboard=0"]) == 0
    assert json.loads((stopped_run / "summary.json").read_text())["resumed_exactly"] is True
    assert not (stopped_run / "config.yaml").read_text().startswith("#")


@pytest.mark.slow
def test_resuming_a_finished_run_says_so_and_changes_nothing(stopped_run, caplog):
    before = {path.name: path.read_bytes() for path in stopped_run.iterdir() if path.is_file()}
    with caplog.at_level(logging.INFO):
        assert train.main(["--resume", str(stopped_run), "--threads", "3"]) == 0
    assert "is finished (all 1 epochs trained, summary.json written); nothing was changed" in caplog.text
    assert {path.name: path.read_bytes() for path in stopped_run.iterdir() if path.is_file()} == before


def test_resume_of_a_run_folder_without_config_yaml_says_so(tmp_path, caplog):
    (tmp_path / "last.pth").write_bytes(b"")
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(tmp_path)]) == 2
    assert "has no config.yaml" in caplog.text and "--config_path is not used with --resume" in caplog.text


def config_with(tmp_path, text_edit):
    """The tiny demo config as text, edited by ``text_edit(text) -> text``, written to a file."""
    from pathlib import Path
    text = (Path(train.__file__).parent / "config" / "config_demo_train.yaml").read_text()
    path = tmp_path / "edited.yaml"
    path.write_text(text_edit(text))
    return path


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    from schema import load_config
    from utils.errors import UserInputError

    def lr_twice(text):
        lines = text.splitlines()
        at = next(number for number, line in enumerate(lines) if line.strip().startswith("lr:"))
        return "\n".join(lines[:at + 1] + [lines[at].replace("lr:", "lr: 0.5 #")] + lines[at + 1:]) + "\n"

    path = config_with(tmp_path, lr_twice)
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1)
                if text.strip().startswith("lr:"))
    with pytest.raises(UserInputError, match=rf"sets 'lr' twice, at lines {line} and {line + 1}"):
        load_config(path)


def test_a_section_given_twice_is_refused_naming_it(tmp_path):
    from schema import load_config
    from utils.errors import UserInputError
    path = config_with(tmp_path, lambda text: text + "eval_params:\n  batch_size: 8\n")
    with pytest.raises(UserInputError, match="sets 'eval_params' twice"):
        load_config(path)


@pytest.mark.parametrize("key, value", [
    ("train_params.temperatur", "inf"), ("train_params.lr", "inf"), ("train_params.lr", ".nan"),
    ("train_params.lr", "2.0"), ("train_params.weight_decay", "-1.0"),
    ("models.gnn_params.gnn.dropout_1", "1.5"), ("dataset.val_fraction", "7.0"),
    ("train_params.loss_fn.scaling_ce", "-.inf"), ("train_params.loss_fn.soft_temp", ".inf"),
])
def test_float_keys_must_be_finite_and_in_range(tmp_path, key, value):
    from tests.conftest import tiny_train_config
    from schema import load_config
    from utils.errors import UserInputError
    raw = tiny_train_config(tmp_path)
    *parents, leaf = key.split(".")
    node = raw
    for name in parents:
        node = node[name]
    node[leaf] = yaml.safe_load(value) if value.startswith((".", "-.")) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserInputError, match=rf"Key '{key}' .* but must be"):
        load_config(path)


def test_an_integer_key_given_a_fraction_quotes_what_was_written(tmp_path):
    from tests.conftest import tiny_train_config
    from schema import load_config
    from utils.errors import UserInputError
    raw = tiny_train_config(tmp_path)
    raw["dataset"]["num_classes"] = 2.5
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserInputError, match="must be of type int, got 2.5"):
        load_config(path)


def test_an_lr_drop_at_epoch_1_is_refused_before_training(tmp_path, write_tiny_config, caplog):
    config = write_tiny_config(lr_drop_epochs=[1])
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    assert "lr_drop_epochs" in caplog.text and ">= 2" in caplog.text
    assert not (tmp_path / "runs").exists()


def test_a_symlink_loop_in_a_class_folder_counts_each_image_once(dataset_image_tree):
    import os

    from dataset.build import build_dataset
    root = dataset_image_tree([4, 4, 4, 4])
    class_dir = root / "images" / "class_00"
    (class_dir / "sub").mkdir()
    os.symlink("..", class_dir / "sub" / "loop")
    os.symlink(class_dir / "img_000.jpg", class_dir / "sub" / "again.jpg")
    train_set = build_dataset("cub", root, "train", 2, None)
    assert len(train_set) == 8
    assert train_set.labels.count(0) == 4


def high_bit_depth_files(folder):
    import numpy as np
    import PIL.Image
    grey16 = np.full((6, 5), 40000, dtype=np.uint16)
    grey16[0, 0] = 65535
    floats = np.full((6, 5), 0.5, dtype=np.float32)
    files = {}
    for name, pixels in (("grey16.png", grey16), ("grey16.tif", grey16), ("float.tif", floats)):
        PIL.Image.fromarray(pixels).save(folder / name)
        files[name] = folder / name
    return files


def test_16_bit_and_float_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    import numpy as np

    from dataset.image_list import load_rgb
    files = high_bit_depth_files(tmp_path)
    for name in ("grey16.png", "grey16.tif"):
        pixels = np.asarray(load_rgb(files[name]))
        assert pixels.shape == (6, 5, 3)
        assert pixels[1, 1].tolist() == [round(40000 * 255 / 65535)] * 3 and pixels[0, 0].tolist() == [255] * 3
    assert np.asarray(load_rgb(files["float.tif"]))[2, 2].tolist() == [128] * 3


def test_a_float_image_out_of_range_is_refused_naming_the_file(tmp_path):
    import numpy as np
    import PIL.Image

    from dataset.image_list import ImageListDataset
    from utils.errors import UserInputError
    path = tmp_path / "hdr.tif"
    PIL.Image.fromarray(np.full((4, 4), 7.5, dtype=np.float32)).save(path)
    with pytest.raises(UserInputError, match=r"hdr.tif cannot be read \(a float image with values outside 0..1"):
        ImageListDataset([path], [0], None)[0]


def search_config(tmp_path, images_per_class, num_trials):
    from tests.conftest import tiny_train_config, write_class_pattern_images
    root = write_class_pattern_images(tmp_path / "data", 32, images_per_class)
    raw = tiny_train_config(root, max_iters_per_epoch=1)
    raw["mode"] = "hyper_search"
    raw["hyper_search"] = {"num_trials": num_trials, "num_epochs": 1}
    raw["dataset"]["num_classes"] = raw["models"]["gnn_params"]["classifier"]["num_classes"] = 16
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_hyper_search_checks_every_draw_before_the_first_trial(tmp_path, caplog):
    # Seed 0 draws P x K = 12 x 3 first (fits 16 x 3 images), then 10 x 6 (does not).
    config = search_config(tmp_path, images_per_class=3, num_trials=3)
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    assert "trial 2 of 3 would draw P x K = 10 x 6" in caplog.text
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_sigint_in_hyper_search_says_which_trials_were_kept_and_exits_130(tmp_path, monkeypatch, caplog):
    import csv

    from engine.hooks import Hook
    from tests.conftest import add_training_hooks

    class StopInTrialTwo(Hook):
        def before_step(self, trainer, epoch, step, steps_per_epoch):
            if trainer.run_dir.name == "trial_002":
                trainer.stop_request._event.set()

    add_training_hooks(monkeypatch, StopInTrialTwo())
    config = search_config(tmp_path, images_per_class=10, num_trials=3)
    with caplog.at_level(logging.WARNING):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 130
    assert "Stopped in trial 2/3" in caplog.text and "lists the 1 finished trial(s)" in caplog.text
    folder = only_run_folder(tmp_path / "runs")
    with open(folder / "trials.csv") as handle:
        assert [row["trial"] for row in csv.DictReader(handle)] == ["1"]
    assert (folder / "best_config.yaml").is_file()


def test_bb_path_given_a_runs_last_pth_says_it_is_resumable_and_which_file_to_pass(tmp_path):
    import torch

    from net.weights import read_state_dict
    from run_folder.checkpoint import capture_rng_state, save_checkpoint
    from utils.errors import UserInputError
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "last.pth", {"epoch": 1, "backbone": {"fc.bias": torch.zeros(2)}, "rng": capture_rng_state()})
    with pytest.raises(UserInputError, match=r"is a resumable training checkpoint, not weights; give the best "
                                             r"weights of that run .*summary.json.* or continue the run with --resume"):
        read_state_dict(run / "last.pth", "--bb_path")


def test_atomic_writes_respect_the_umask_and_remove_stale_temporaries(tmp_path):
    import os
    import stat

    from utils import io
    stale = tmp_path / ".last.pth.k9x2.tmp"
    stale.write_bytes(b"left by kill -9")
    other = tmp_path / ".metrics.csv.a1.tmp"
    other.write_bytes(b"another file's")
    io.atomic_write(tmp_path / "last.pth", b"new")
    assert not stale.exists() and other.exists()
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "last.pth").stat().st_mode) == 0o666 & ~mask


def test_atomic_write_can_refuse_to_replace(tmp_path):
    from utils import io
    from utils.errors import UserInputError
    target = tmp_path / "mine.png"
    target.write_bytes(b"user")
    with pytest.raises(UserInputError, match="already exists and is not replaced"):
        io.atomic_write(target, b"demo", replace=False)
    assert target.read_bytes() == b"user" and [path.name for path in tmp_path.iterdir()] == ["mine.png"]


def test_resume_differences_ignore_keys_added_to_the_schema_later_at_their_default():
    from run_folder.resume import differences
    recorded = {"train_params": {"lr": 0.1}}
    current = {"train_params": {"lr": 0.1, "eval_before_training": 0}}
    assert differences(recorded, current) == []
    assert differences(recorded, {"train_params": {"lr": 0.1, "eval_before_training": 1}}) == [
        ("train_params.eval_before_training", None, 1)]
