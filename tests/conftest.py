"""Shared pytest fixtures. Fixtures of the data tests start with ``dataset_``."""
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


def write_image(path, colour=(200, 100, 50), size=(12, 10)):
    """A small single-colour RGB image; the format follows the suffix (.jpg, .png)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[...] = colour
    PIL.Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def dataset_write_image():
    """``write_image(path, colour=(r, g, b), size=(w, h))`` -> path."""
    return write_image


@pytest.fixture
def dataset_image_tree(tmp_path):
    """``make_tree(images_per_class)``: ``<tmp>/data/images/class_XX/*`` with JPEGs and PNGs.

    Returns the dataset root; class ``i`` holds ``images_per_class[i]`` images.
    """
    def make_tree(images_per_class):
        root = tmp_path / "data"
        for class_index, count in enumerate(images_per_class):
            for image_index in range(count):
                suffix = ".jpg" if image_index % 2 == 0 else ".png"
                write_image(root / "images" / f"class_{class_index:02d}" / f"img_{image_index:03d}{suffix}",
                            colour=(10 * class_index, 5 * image_index, 100))
        return root
    return make_tree
