"""Issue 28, a third hostile pass: files damaged in place that still parsed, files whose reading never ends,
and sizes that exhaust the machine. Each is one sentence where it enters, never used and never a hang."""
import contextlib
import logging
import os
import signal
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import index
import retrieve
import train
from dataset.image_list import UnreadableImage, load_rgb
from inference.embedding_file import EmbeddedImages, save_embeddings
from inference.gallery_index import CHECKSUM_ARRAY, load_gallery_index, sidecar_path
from net.weights import read_state_dict
from schema import load_config
from tests.conftest import tiny_train_config
from utils.errors import UserInputError
from utils.text_files import read_text


@contextlib.contextmanager
def at_most_seconds(seconds):
    """Fails the test, instead of hanging the suite, if the block blocks on a read that never ends."""
    def expired(signum, frame):
        raise TimeoutError(f"still reading after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def flipped(data, position, bit=0):
    changed = bytearray(data)
    changed[position] ^= 1 << bit
    return bytes(changed)


# ------------------------------------------------------------------ damaged in place, yet still parsing
def record_offset(path, name_part):
    """Where the bytes of the zip record whose name contains ``name_part`` start."""
    with zipfile.ZipFile(path) as archive:
        info = next(info for info in archive.infolist() if name_part in info.filename)
    with open(path, "rb") as file:
        file.seek(info.header_offset + 26)
        name_length, extra_length = np.frombuffer(file.read(4), dtype="<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length)


@pytest.mark.parametrize("record", ["data.pkl", "data/0"])
def test_a_bit_flipped_in_a_weights_file_is_refused_naming_the_file(tmp_path, record):
    """torch.load checks no CRC: a flip in the pickle changed a number, one in a tensor a weight, silently."""
    path = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.arange(16.0).reshape(4, 4), "fc.bias": torch.zeros(3)}, path)
    position = record_offset(path, record) + 40
    path.write_bytes(flipped(path.read_bytes(), position, bit=3))
    with pytest.raises(UserInputError, match="checksum") as refused:
        read_state_dict(path, "--bb_path")
    assert str(path) in str(refused.value)


@pytest.fixture
def gallery_index_files(tmp_path):
    """An .npz of 40 random 8-d embeddings and the flat index index.py builds of it."""
    rng = np.random.default_rng(0)
    gallery = tmp_path / "gallery.npz"
    save_embeddings(EmbeddedImages(rng.normal(size=(40, 8)).astype(np.float32), [f"{i}.png" for i in range(40)],
                                   tmp_path, "euclidean"), gallery)
    output = tmp_path / "gallery.index"
    assert index.main(["--gallery", str(gallery), "--kind", "flat", "--output", str(output)]) == 0
    return gallery, output


def test_a_bit_flipped_in_a_gallery_index_is_refused_naming_it(gallery_index_files, tmp_path, caplog):
    """faiss read it and searched with one vector changed."""
    gallery, output = gallery_index_files
    output.write_bytes(flipped(output.read_bytes(), len(output.read_bytes()) // 2))
    with caplog.at_level(logging.ERROR):
        assert retrieve.main(["--gallery", str(output), "--queries", str(gallery), "--top_k", "2",
                              "--output", str(tmp_path / "out")]) == 2
    assert f"{output} is damaged" in caplog.text and not (tmp_path / "out").exists()


def rewrite_sidecar(output, **changes):
    with np.load(sidecar_path(output), allow_pickle=False) as loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    arrays.update(changes)
    np.savez(sidecar_path(output), **arrays)


@pytest.mark.parametrize("parameters", ['{"kind": "ivf", "nlist": 0, "nprobe": 1}', '{"kind": "flat", "x": 1}',
                                        '{"kind": "hnsw"}', "[1]", "not json"])
def test_an_index_sidecar_with_damaged_parameters_is_refused(gallery_index_files, parameters):
    """Found as a TypeError (a bug report) from IndexParameters(**...)."""
    _, output = gallery_index_files
    rewrite_sidecar(output, parameters=np.array(parameters))
    with pytest.raises(UserInputError, match="does not hold the parameters"):
        load_gallery_index(output, "--gallery")


def test_an_index_without_a_checksum_is_read_with_a_warning(gallery_index_files, caplog):
    """Indexes written before the checksum still load: rebuilding a million items takes minutes."""
    _, output = gallery_index_files
    with np.load(sidecar_path(output), allow_pickle=False) as loaded:
        arrays = {name: loaded[name] for name in loaded.files if name != CHECKSUM_ARRAY}
    np.savez(sidecar_path(output), **arrays)
    with caplog.at_level(logging.WARNING):
        assert load_gallery_index(output, "--gallery").index.ntotal == 40
    assert "without a checksum" in caplog.text


# ------------------------------------------------------------------ files whose reading never ends
@pytest.fixture
def pipe(tmp_path):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_a_pipe_among_the_images_is_an_unreadable_image_not_a_hang(pipe):
    with at_most_seconds(20), pytest.raises(UnreadableImage, match="not a regular file"):
        load_rgb(pipe)


def test_a_pipe_given_as_a_text_file_is_refused_without_reading_it(pipe):
    with at_most_seconds(20), pytest.raises(UserInputError, match="not a regular file"):
        read_text(pipe, "dataset list")


def test_a_pipe_or_device_given_as_the_gallery_of_index_py_is_refused(pipe, tmp_path, caplog):
    """index.py --gallery <a pipe> waited forever for a writer."""
    for gallery in (pipe, Path("/dev/zero")):
        with at_most_seconds(20), caplog.at_level(logging.ERROR):
            assert index.main(["--gallery", str(gallery), "--kind", "flat",
                               "--output", str(tmp_path / "out.index")]) == 2
        assert f"--gallery {gallery} is not a file" in caplog.text


# ------------------------------------------------------------------ sizes that exhaust the machine
@pytest.mark.parametrize("key, value", [("models.gnn_params.gnn.num_layers", 65), ("dataset.nb_workers", 257),
                                        ("dataset.crop_size", 4097), ("dataset.resize_size", 4097),
                                        ("models.encoder_params.bn_inception.sz_embedding", 65537),
                                        ("models.encoder_params.sz_embedding", 100_000_000)])
def test_a_size_far_beyond_any_setting_is_refused_where_it_enters(pattern_tree, tmp_path, key, value):
    """100000 MPN layers or loader workers, or a 10^6 px crop, ran until the machine gave out."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    with pytest.raises(UserInputError, match=f"'{key}'.* must be at most"):
        load_config(config, {key: value})


@pytest.mark.parametrize("key, value, expected", [
    ("models.gnn_params.red", 1_000_000, "models.gnn_params.red 1000000 leaves the MPN no channel"),
    ("models.encoder_params.net_type", "bn_inception", "dataset.crop_size 24 is a size bn_inception cannot take"),
    ("models.encoder_params.net_type", "densenet121", "dataset.crop_size 24 is a size densenet121 cannot take"),
])
def test_a_model_that_cannot_be_built_for_the_config_is_one_sentence_before_training(write_tiny_config, tmp_path,
                                                                                      caplog, key, value,
                                                                                      expected):
    """Found as a ZeroDivisionError and as torch's size errors in the first step, both reported as bugs."""
    config = write_tiny_config()
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs"),
                           "--set", f"{key}={value}"]) == 2
    assert expected in caplog.text


def test_a_reduction_that_leaves_the_backbone_no_channel_is_refused(pattern_tree, tmp_path):
    from recipe import RunRecipe
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    recipe = RunRecipe(load_config(config, {"models.encoder_params.net_type": "resnet50",
                                            "models.encoder_params.red": 4096,
                                            "models.encoder_params.imagenet_pretrained": 0}))
    with pytest.raises(UserInputError, match="red 4096 leaves resnet50 no embedding channel of its 2048"):
        recipe.build_backbone()


def test_the_crop_size_check_leaves_the_backbone_as_it_was(pattern_tree, tmp_path):
    """It runs one image in eval mode: no BatchNorm statistic moves, no random number is drawn (a run is
    bit for bit what it was before the check) and the training mode comes back."""
    from net import build_backbone
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config(pattern_tree)))
    encoder = load_config(config)["models"]["encoder_params"]
    torch.manual_seed(0)
    unchecked, _ = build_backbone(encoder, 4)
    draw_after_unchecked = torch.rand(3)
    torch.manual_seed(0)
    checked, _ = build_backbone(encoder, 4, crop_size=24)
    assert torch.equal(torch.rand(3), draw_after_unchecked)
    assert checked.training
    for (name, value), (_, expected) in zip(checked.state_dict().items(), unchecked.state_dict().items()):
        assert torch.equal(value, expected), name


# ------------------------------------------------------------------ nesting beyond the recursion limit
DEEP = "[" * 100_000 + "]" * 100_000


def test_a_config_nested_100000_levels_deep_is_refused_naming_it(tmp_path, caplog):
    """PyYAML composes recursively: a RecursionError, reported as a bug."""
    config = tmp_path / "deep.yaml"
    config.write_text(f"mode: {DEEP}\n")
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 2
    assert f"Config file {config} is refused: it nests" in caplog.text


def test_a_set_value_nested_100000_levels_deep_is_refused(tmp_path, write_tiny_config, caplog):
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path / "runs"),
                           "--set", f"mode={DEEP}"]) == 2
    assert "--set mode=...: the value" in caplog.text and not (tmp_path / "runs").exists()


def test_a_set_value_with_an_alias_bomb_is_refused(tmp_path, write_tiny_config, caplog):
    bomb = "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
           "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    with caplog.at_level(logging.ERROR):
        assert train.main(["--config_path", str(write_tiny_config()), "--output_dir", str(tmp_path / "runs"),
                           "--set", f"train_params.lr_drop_epochs={bomb}"]) == 2
    assert "--set train_params.lr_drop_epochs=...: the value" in caplog.text
