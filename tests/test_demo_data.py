"""The demo dataset: real digit images in the folder layout, built once."""
import PIL.Image
import pytest

from dataset.build import build_dataset
from dataset.demo import COMPLETE_MARKER, DEMO_NUM_CLASSES, IMAGE_SIZE, ensure_demo_dataset


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


def test_incomplete_folder_is_rebuilt_keeping_files_that_are_not_ours(tmp_path):
    user_file = tmp_path / "images" / "3" / "notes.txt"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("mine")
    (tmp_path / "images" / "3" / "3.png").write_bytes(b"half a png")  # digits.images[3] is a 3
    ensure_demo_dataset(tmp_path)
    assert user_file.read_text() == "mine"
    assert (tmp_path / COMPLETE_MARKER).is_file()
    assert len(list((tmp_path / "images").rglob("*.png"))) == 1797
    with PIL.Image.open(tmp_path / "images" / "3" / "3.png") as image:
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)


def test_images_are_deterministic_and_vary_in_colour(demo_root, tmp_path):
    from dataset.demo import digit_image
    from sklearn.datasets import load_digits
    grey_levels = load_digits().images[0]
    assert digit_image(grey_levels, 0).tobytes() == digit_image(grey_levels, 0).tobytes()
    assert digit_image(grey_levels, 0).tobytes() != digit_image(grey_levels, 1).tobytes()
