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
import contextlib
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import PIL.Image
from filelock import FileLock, Timeout
from sklearn.datasets import load_digits
from tqdm import tqdm

from utils.errors import UserInputError
from utils.io import atomic_write, atomic_write_text, sync_to_disk
from utils.text_files import read_json_object

logger = logging.getLogger(__name__)

DEMO_NUM_CLASSES = 5
IMAGE_SIZE = 32
DIGIT_SIZES = (24, 32)
NOISE_STD = 8.0
MIN_CONTRAST = 90
MANIFEST = ".demo_manifest.json"
# What demos built before the manifest existed left instead.
LEGACY_MARKER = ".demo_complete"
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


def demo_images():
    """``{relative path: PNG bytes}`` of the whole demo, in image order (about a second)."""
    digits = load_digits()
    images = {}
    for number, (grey_levels, digit) in enumerate(zip(digits.images, digits.target)):
        buffer = io.BytesIO()
        digit_image(grey_levels, seed=number).save(buffer, format="PNG")
        images[f"images/{digit}/{number}.png"] = buffer.getvalue()
    return images


def files_under(root):
    """Relative paths (``/``-separated) of every file and link below ``root``, links not followed."""
    found = []
    for folder, folders, names in os.walk(root):
        relative = Path(folder).relative_to(root)
        found.extend((relative / name).as_posix() for name in names)
        found.extend((relative / name).as_posix() for name in folders if (Path(folder) / name).is_symlink())
    return found


def read_manifest(root):
    """``(complete, {relative path: sha256})`` of the manifest in ``root``, or None without one."""
    if not (root / MANIFEST).exists():
        return None
    try:
        manifest = read_json_object(root / MANIFEST, "demo manifest")
        return bool(manifest["complete"]), dict(manifest["files"])
    except (UserInputError, KeyError, TypeError, ValueError):
        return False, None


def not_ours(root, manifest):
    """The first file under ``root`` the demo did not write (or that changed since), or None."""
    _, hashes = manifest
    if hashes is None:
        return MANIFEST
    for relative in sorted(files_under(root)):
        if relative == MANIFEST or is_stale_temporary(relative):
            continue
        path = root / relative
        if relative not in hashes or path.is_symlink() or sha256(path.read_bytes()) != hashes[relative]:
            return relative
    return None


def is_stale_temporary(relative):
    """A temporary file a killed demo build left (``utils.io`` removes them when it writes again)."""
    name = Path(relative).name
    return name.startswith(".") and name.endswith(".tmp")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def refuse(root, reason):
    raise UserInputError(
        f"The demo dataset is only written into an empty folder or one holding the demo, but "
        f"dataset.dataset_path {root} {reason}; for your own images use a config of their dataset "
        f"(e.g. --config_path config/config_cub_train.yaml), else give the demo an empty folder.")


def ensure_demo_dataset(root):
    """Build the demo dataset under ``root`` unless a complete one is there; returns ``root``.

    Writes only into an empty (or missing) folder, or into one holding a demo
    it wrote itself, which the manifest proves file by file (SHA-256). The
    manifest is written first (marked incomplete), so an interrupted build
    is finished on the next call; an existing file is never replaced.
    Anything else is refused with one sentence, so a mistyped
    ``--dataset_path`` never fills a user's dataset with digits. Runs started
    together (``benchmarks.ablation --jobs``) take turns through a lock beside
    the folder: the first writes the demo, the others find it complete.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        refuse(root, "is a file")
    with taking_turns(root):
        return build_unless_complete(root)


@contextlib.contextmanager
def taking_turns(root):
    """Holds the lock ``.<folder name>.lock`` beside ``root`` (waiting for another process that holds it)."""
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root.parent / f".{root.name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.info("Waiting for another process that is writing the demo dataset to %s.", root)
            lock.acquire()
    except OSError:  # a read-only place: nobody writes there, a complete demo is only read
        yield
        return
    try:
        yield
    finally:
        lock.release()


def build_unless_complete(root):
    """``ensure_demo_dataset`` once its lock is held."""
    manifest = read_manifest(root) if root.is_dir() else None
    if manifest is None and (root / LEGACY_MARKER).is_file():
        refuse(root, "holds a demo of an older version without a manifest (delete that folder to rebuild it)")
    if manifest is None and root.is_dir() and any(root.iterdir()):
        refuse(root, "holds files the demo did not write")
    if manifest is not None:
        unexpected = not_ours(root, manifest)
        if unexpected is not None:
            refuse(root, f"holds {unexpected}, which the demo did not write (or which changed since)")
        complete, hashes = manifest
        if complete and all((root / relative).is_file() for relative in hashes):
            return root
    write_demo(root)
    return root


def write_demo(root):
    """Manifest (incomplete), the missing images, then the manifest marked complete."""
    images = demo_images()
    hashes = {relative: sha256(data) for relative, data in images.items()}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / MANIFEST, json.dumps({"complete": False, "files": hashes}))
    for relative, data in tqdm(images.items(), desc="Writing the demo dataset", unit="image", disable=None):
        path = root / relative
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, replace=False, durable=False)
    sync_to_disk()  # the images are on the disk before the manifest says so
    atomic_write_text(root / MANIFEST, json.dumps({"complete": True, "files": hashes}))
    logger.info("Wrote the demo dataset (%d digit images) to %s.", len(images), root)
