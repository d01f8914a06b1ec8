"""Issue 9: every bad input gets one sentence and exit code 2, and no file of the user changes.

Each test runs ``train.main`` in-process; the errors come before any long
work, so none of them creates a run folder.
"""
import hashlib
import logging
import shutil

import pytest
import torch
import yaml

import train
from tests.conftest import tiny_train_config, write_class_pattern_images


def snapshot(*roots):
    """Path -> (size, mtime, sha256) of every file under ``roots``."""
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file():
                files[path] = (path.stat().st_size, path.stat().st_mtime_ns,
                               hashlib.sha256(path.read_bytes()).hexdigest())
    return files


@pytest.fixture
def user_tree(tmp_path):
    """A private copy of a small dataset, so a test may break it."""
    return write_class_pattern_images(tmp_path / "data", 8, 4)


def write_config(tmp_path, dataset_path, mutate=None):
    raw = tiny_train_config(dataset_path)
    if mutate is not None:
        mutate(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_refused(tmp_path, caplog, args, *patterns, user_files=()):
    """Exit 2, one error line matching every pattern, user files unchanged, no run folder."""
    output_dir = tmp_path / "runs"
    watched = [path for path in user_files if path.exists()]
    before = snapshot(*watched)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert train.main([*args, "--output_dir", str(output_dir)]) == 2
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    message = errors[0]
    assert "\n" not in message and "Traceback" not in message
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    assert snapshot(*watched) == before
    assert not output_dir.exists() or not any(output_dir.iterdir())
    return message


def test_config_file_missing(tmp_path, caplog):
    assert_refused(tmp_path, caplog, ["--config_path", str(tmp_path / "nope.yaml")], "nope.yaml", "does not exist")


def test_config_file_not_yaml(tmp_path, caplog):
    path = tmp_path / "broken.yaml"
    path.write_text("mode: [train\nmodels: {\n")
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "broken.yaml", "not valid YAML", "line",
                   user_files=[path])


def test_config_wrong_type(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree, lambda raw: raw["train_params"].update(num_epochs="ten"))
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "train_params.num_epochs", "int",
                   user_files=[path, user_tree])


def test_config_unknown_key_suggests_the_closest(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree, lambda raw: raw["dataset"].update(num_class=4))
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "dataset.num_class",
                   "did you mean 'dataset.num_classes'", user_files=[path])


def test_config_unknown_value_lists_the_allowed(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree, lambda raw: raw["dataset"].update(trans="GL"))
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "dataset.trans", "GL_orig_RE",
                   user_files=[path])


def test_unknown_net_type_flag(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path), "--net_type", "vgg16"],
                   "models.encoder_params.net_type", "resnet50")


def test_dataset_path_missing(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path), "--dataset_path", str(tmp_path / "absent")],
                   str(tmp_path / "absent"))


def test_dataset_without_images_folder(tmp_path, caplog, user_tree):
    (user_tree / "images").rename(user_tree / "pictures")
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "images", user_files=[user_tree])


def test_hyper_search_on_fewer_classes_than_its_draws_is_refused_before_any_trial(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree, lambda raw: raw.update(mode="hyper_search"))
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "mode hyper_search",
                   "up to 15 classes per batch", "the training split has 4 classes", user_files=[path, user_tree])


def test_fewer_classes_than_num_classes(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree, lambda raw: (raw["dataset"].update(num_classes=6),
                                                          raw["models"]["gnn_params"]["classifier"].update(
                                                              num_classes=6)))
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "dataset.num_classes", "8",
                   user_files=[user_tree])


def test_class_folder_without_images(tmp_path, caplog, user_tree):
    empty = user_tree / "images" / "class_02"
    shutil.rmtree(empty)
    empty.mkdir()
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], str(empty), user_files=[user_tree])


def inshop_config(tmp_path, root):
    def to_inshop(raw):
        raw["dataset"].update(dataset_short="in_shop", num_classes=2)
        raw["models"]["gnn_params"]["classifier"]["num_classes"] = 2
        raw["train_params"].update(num_classes_iter=2, num_elements_class=2)
    return write_config(tmp_path, root, to_inshop)


def test_inshop_partition_file_missing(tmp_path, caplog):
    root = tmp_path / "inshop"
    (root / "Img").mkdir(parents=True)
    assert_refused(tmp_path, caplog, ["--config_path", str(inshop_config(tmp_path, root))],
                   "list_eval_partition.txt")


def test_inshop_partition_file_malformed_names_the_line(tmp_path, caplog):
    root = tmp_path / "inshop"
    (root / "Eval").mkdir(parents=True)
    partition = root / "Eval" / "list_eval_partition.txt"
    partition.write_text("3\nimage_name item_id evaluation_status\n"
                         "img/a.jpg id_00000001 train\nimg/b.jpg id_00000001\nimg/c.jpg id_00000002 query\n")
    assert_refused(tmp_path, caplog, ["--config_path", str(inshop_config(tmp_path, root))],
                   "list_eval_partition.txt", "line 4", user_files=[partition])


def test_weights_file_missing(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path), "--bb_path", str(tmp_path / "none.pth")],
                   "none.pth", "--bb_path")


def test_weights_file_not_a_checkpoint(tmp_path, caplog, user_tree):
    weights = tmp_path / "notes.pth"
    weights.write_text("these are not weights")
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path), "--gnn_path", str(weights)],
                   "notes.pth", "--gnn_path", user_files=[weights])


def test_weights_of_another_architecture_name_the_first_mismatching_key(tmp_path, caplog, user_tree):
    from net import build_backbone
    from schema import load_config
    other = load_config(write_config(tmp_path, user_tree))["models"]["encoder_params"]
    other.update(net_type="resnet34")
    weights = tmp_path / "resnet34.pth"
    torch.save(build_backbone(other, 4)[0].state_dict(), weights)
    path = write_config(tmp_path, user_tree)
    message = assert_refused(tmp_path, caplog, ["--config_path", str(path), "--bb_path", str(weights)],
                             "resnet34.pth", "--bb_path", user_files=[weights])
    assert "layer1.2" in message or "layer" in message


def test_output_folder_not_writable(tmp_path, caplog, user_tree):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = write_config(tmp_path, user_tree)
    before = snapshot(blocker)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(path), "--output_dir", str(blocker / "runs")]) == 2
    assert "--output_dir" in caplog.text and str(blocker / "runs") in caplog.text
    assert snapshot(blocker) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path), "--device", "cuda"], "--device cuda",
                   "--device cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_is_apex_without_apex_or_cuda(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree)
    assert_refused(tmp_path, caplog, ["--config_path", str(path), "--is_apex", "1"], "is_apex",
                   "--device cpu")


def test_batch_larger_than_the_training_split(tmp_path, caplog, user_tree):
    path = write_config(tmp_path, user_tree, lambda raw: raw["train_params"].update(num_elements_class=9))
    assert_refused(tmp_path, caplog, ["--config_path", str(path)], "num_elements_class", user_files=[user_tree])


def test_resume_of_a_folder_without_checkpoint(tmp_path, caplog):
    assert_refused(tmp_path, caplog, ["--resume", str(tmp_path)], "--resume", "last.pth")


def test_resume_of_a_run_that_is_not_training(tmp_path, caplog, user_tree):
    run = tmp_path / "old_run"
    run.mkdir()
    raw = tiny_train_config(user_tree)
    raw["mode"] = "test"
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    (run / "last.pth").write_bytes(b"")
    assert_refused(tmp_path, caplog, ["--resume", str(run)], "only training runs can be resumed",
                   user_files=[run])
