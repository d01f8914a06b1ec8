"""A small real image dataset for trying the pipeline without any download.

scikit-learn's ``load_digits`` (1,797 handwritten digits of 8x8 pixels,
shipped inside the package) written as ``<root>/images/<digit>/<n>.png``:
digits 0-4 train and 5-9 test (``num_classes`` 5), zero-shot as in the paper.

Each digit is drawn at a random size and position, in a random ink colour on
a random background, with pixel noise (all seeded by the image number, so
every build is identical). Plain 8x8 digits are so easy that even an
untrained network retrieves them almost perfectly; with these nuisances the
embedding has to learn invariances on digits 0-4 that carry over to 5-9,
which is what metric learning is about, and R@1 visibly rises with training.
"""
import logging
from pathlib import Path

import numpy as np
import PIL.Image
from sklearn.datasets import load_digits

logger = logging.getLogger(__name__)

DEMO_NUM_CLASSES = 5
IMAGE_SIZE = 32
DIGIT_SIZES = (24, 32)
NOISE_STD = 8.0
MIN_CONTRAST = 90
COMPLETE_MARKER = ".demo_complete"
# load_digits grey levels run from 0 to 16.
MAX_GREY_LEVEL = 16


def random_colours(rng):
    """Background and ink colours that differ by at least MIN_CONTRAST in mean brightness."""
    while True:
        background, ink = rng.integers(0, 256, size=(2, 3))
        if abs(background.mean() - ink.mean()) >= MIN_CONTRAST:
            return background, ink


def digit_image(grey_levels, seed):
    """One 8x8 digit drawn on a 32x32 RGB canvas with random size, place and colours."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
    ink_share = PIL.Image.fromarray(np.uint8(grey_levels * (255.0 / MAX_GREY_LEVEL)))
    ink_share = np.asarray(ink_share.resize((size, size), PIL.Image.BILINEAR), dtype=np.float64) / 255.0
    top, left = rng.integers(0, IMAGE_SIZE - size + 1, size=2)
    coverage = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 1))
    coverage[top:top + size, left:left + size, 0] = ink_share
    background, ink = random_colours(rng)
    pixels = (1 - coverage) * background + coverage * ink
    pixels += rng.normal(0, NOISE_STD, size=pixels.shape)
    return PIL.Image.fromarray(np.uint8(np.clip(np.round(pixels), 0, 255)), mode="RGB")


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
        digit_image(grey_levels, seed=number).save(class_dir / f"{number}.png")
    marker.write_text(f"{len(digits.images)} images from sklearn.datasets.load_digits\n")
    logger.info("Wrote the demo dataset (%d digit images) to %s.", len(digits.images), root)
    return root
