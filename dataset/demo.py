"""A small real image dataset for trying the pipeline without any download.

scikit-learn's ``load_digits`` (1,797 handwritten digits of 8x8 pixels,
shipped inside the package) written as ``<root>/images/<digit>/<n>.png``:
RGB, upscaled to 32x32. Digits 0-4 train and 5-9 test (``num_classes`` 5).
"""
import logging
from pathlib import Path

import numpy as np
import PIL.Image
from sklearn.datasets import load_digits

logger = logging.getLogger(__name__)

DEMO_NUM_CLASSES = 5
IMAGE_SIZE = 32
COMPLETE_MARKER = ".demo_complete"
# load_digits grey levels run from 0 to 16.
MAX_GREY_LEVEL = 16


def digit_image(grey_levels):
    """An 8x8 array of grey levels as an upscaled RGB image."""
    pixels = np.round(grey_levels * (255.0 / MAX_GREY_LEVEL)).astype(np.uint8)
    image = PIL.Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), PIL.Image.NEAREST)
    return image.convert("RGB")


def ensure_demo_dataset(root):
    """Build the demo dataset under ``root`` unless a complete one is there; returns ``root``.

    The marker file is written last, so an interrupted build is redone on the
    next call; only our own ``<digit>/<n>.png`` files are (over)written and
    nothing else in the folder is touched.
    """
    root = Path(root)
    marker = root / COMPLETE_MARKER
    if marker.is_file():
        return root
    digits = load_digits()
    for number, (grey_levels, digit) in enumerate(zip(digits.images, digits.target)):
        class_dir = root / "images" / str(digit)
        class_dir.mkdir(parents=True, exist_ok=True)
        digit_image(grey_levels).save(class_dir / f"{number}.png")
    marker.write_text(f"{len(digits.images)} images from sklearn.datasets.load_digits\n")
    logger.info("Wrote the demo dataset (%d digit images) to %s.", len(digits.images), root)
    return root
