"""The demo dataset: real digit images in the folder layout, built once."""
import json

import PIL.Image
import pytest

from dataset.build import build_dataset
from dataset.demo import DEMO_NUM_CLASSES, IMAGE_SIZE, MANIFEST, ensure_demo_dataset
from utils.errors import UserInputError


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return ensure_demo_dataset(tmp_path_factory.mktemp("demo"))


def test_layout_is_one_folder_per_digit_of_rgb_pngs(demo_root):
    class_folders = sorted(path.name for path in (demo_root / "images").iterdir())
    assert class_folders == [str(digit) for digit in range(10)]
    image_path = next((demo_root / "images" / "7").glob("*.png"))
    with PIL.Image.open(image_path) as image:
        assert image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_digits_0_to_4_train_and_5_to_9_test(demo_root):
    train = build_dataset("demo", demo_root, "train", DEMO_NUM_CLASSES, None)
    test = build_dataset("demo", demo_root, "test", DEMO_NUM_CLASSES, None)
    assert {path.split("/")[-2] for path in train.paths} == {"0", "1", "2", "3", "4"}
    assert {path.split("/")[-2] for path in test.paths} == {"5", "6", "7", "8", "9"}
    assert len(train) + len(test) == 1797 and train.num_classes == test.num_classes == 5


def test_second_call_rewrites_nothing(demo_root):
    before = {path: path.stat().st_mtime_ns for path in demo_root.rglob("*")}
    assert ensure_demo_dataset(demo_root) == demo_root
    assert {path: path.stat().st_mtime_ns for path in demo_root.rglob("*")} == before


def test_a_folder_of_user_images_is_refused_and_left_as_it_was(tmp_path):
    user_image = tmp_path / "images" / "3" / "3.png"  # named like a demo image (digits.images[3] is a 3)
    user_image.parent.mkdir(parents=True)
    user_image.write_bytes(b"the user's photo")
    with pytest.raises(UserInputError, match="only written into an empty folder"):
        ensure_demo_dataset(tmp_path)
    assert user_image.read_bytes() == b"the user's photo"
    assert [path.relative_to(tmp_path).as_posix() for path in sorted(tmp_path.rglob("*"))] == \
        ["images", "images/3", "images/3/3.png"]


def test_a_file_added_to_a_complete_demo_is_refused(tmp_path):
    ensure_demo_dataset(tmp_path)
    (tmp_path / "images" / "0" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(UserInputError, match="holiday.jpg"):
        ensure_demo_dataset(tmp_path)


def test_a_changed_demo_image_is_refused_not_replaced(tmp_path):
    ensure_demo_dataset(tmp_path)
    changed = tmp_path / "images" / "3" / "3.png"
    changed.write_bytes(b"edited")
    with pytest.raises(UserInputError, match="3/3.png"):
        ensure_demo_dataset(tmp_path)
    assert changed.read_bytes() == b"edited"


def test_an_interrupted_build_is_finished_from_its_manifest(tmp_path):
    ensure_demo_dataset(tmp_path)
    missing = tmp_path / "images" / "9" / "9.png"
    missing.unlink()
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    ensure_demo_dataset(tmp_path)
    assert json.loads((tmp_path / MANIFEST).read_text())["complete"] is True
    assert len(list((tmp_path / "images").rglob("*.png"))) == 1797
    with PIL.Image.open(missing) as image:
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_train_py_with_the_demo_config_and_a_user_dataset_exits_2(tmp_path, caplog):
    import train
    user_image = tmp_path / "cub" / "images" / "001.Albatross" / "a.jpg"
    user_image.parent.mkdir(parents=True)
    user_image.write_bytes(b"bird")
    assert train.main(["--dataset_path", str(tmp_path / "cub"), "--output_dir", str(tmp_path / "runs")]) == 2
    assert "only written into an empty folder" in caplog.text
    assert sorted(path.name for path in (tmp_path / "cub").rglob("*")) == ["001.Albatross", "a.jpg", "images"]


def test_images_are_deterministic_and_vary_in_colour(demo_root, tmp_path):
    from dataset.demo import digit_image
    from sklearn.datasets import load_digits
    grey_levels = load_digits().images[0]
    assert digit_image(grey_levels, 0).tobytes() == digit_image(grey_levels, 0).tobytes()
    assert digit_image(grey_levels, 0).tobytes() != digit_image(grey_levels, 1).tobytes()


def test_images_skip_their_fsyncs_and_are_synced_once_before_the_manifest_says_complete(tmp_path, monkeypatch):
    import os

    import utils.io
    events = []
    real_fsync = os.fsync
    monkeypatch.setattr(utils.io.os, "fsync", lambda descriptor: events.append("fsync") or real_fsync(descriptor))
    monkeypatch.setattr(utils.io.os, "sync", lambda: events.append("sync"))
    real_write = utils.io.atomic_write

    def recording_write(path, data, replace=True, durable=True):
        if path.name == MANIFEST:
            events.append(("manifest", json.loads(data)["complete"]))
        real_write(path, data, replace, durable)

    monkeypatch.setattr("dataset.demo.atomic_write_text",
                        lambda path, text, replace=True: recording_write(path, text.encode(), replace))
    ensure_demo_dataset(tmp_path / "demo")
    # Only the two manifest writes fsync (file and folder each); the 1,797 images wait for one sync.
    assert [event for event in events if event != "fsync"] == [("manifest", False), "sync", ("manifest", True)]
    assert events.count("fsync") == 4
