"""Embeddings of images on disk, and their ``.npz`` file.

The file holds plain arrays only (read with ``allow_pickle=False``):
``embeddings`` (float32, n x d), ``paths`` (unicode, relative to ``root``),
``root`` (the folder that was embedded), ``distance`` (how the run ranks:
'euclidean' or 'cosine'), and, when the folder had class sub-folders,
``labels`` (int64, indices into ``classes``) and ``classes``.
"""
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from evaluation.neighbours import DISTANCES
from utils.archives import check_zip_records
from utils.errors import UserInputError
from utils.io import atomic_write

REQUIRED_ARRAYS = ("embeddings", "paths", "root", "distance")


@dataclass
class EmbeddedImages:
    """Images and their embeddings; ``embeddings`` is None for the items of a gallery index, which holds them."""

    embeddings: Optional[np.ndarray]
    paths: list
    root: Path
    distance: str
    labels: Optional[np.ndarray] = None
    classes: Optional[list] = None

    def absolute_paths(self):
        return [str(self.root / path) for path in self.paths]

    def class_names(self):
        """Class name of every image, or None when there are no labels."""
        if self.labels is None:
            return None
        return [self.classes[label] for label in self.labels]


def item_arrays(embedded):
    """The arrays of everything but the embeddings: paths, root, distance, labels and classes."""
    arrays = dict(paths=np.array([str(p) for p in embedded.paths], dtype=np.str_),
                  root=np.array(str(embedded.root), dtype=np.str_),
                  distance=np.array(embedded.distance, dtype=np.str_))
    if embedded.labels is not None:
        arrays.update(labels=np.asarray(embedded.labels, dtype=np.int64),
                      classes=np.array(embedded.classes, dtype=np.str_))
    return arrays


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_embeddings(embedded, path):
    """Write ``embedded`` to ``path`` (.npz); the folder must exist."""
    arrays = dict(embeddings=np.asarray(embedded.embeddings, dtype=np.float32), **item_arrays(embedded))
    atomic_write(path, npz_bytes(arrays), replace=False)


def read_arrays(path, flag, required, made_by, problem_of=None):
    """Every array of the .npz file ``path``, checked whole before any is used.

    Unreadable, lacking one of ``required``, or with items that do not fit
    together (``item_problem``, and ``problem_of(arrays)`` for what the caller
    adds): a ``UserInputError``; a damaged or edited file is never partly used.
    """
    if not Path(path).is_file():  # a pipe or a device may block or never end
        raise UserInputError(f"{flag} {path} is not a file (missing, or a folder, pipe or device); give the .npz "
                             f"file of {made_by}.")
    try:
        check_zip_records(path)  # NumPy stops where a (damaged) header says, before any checksum is compared
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            arrays = {name: data[name] for name in data.files}
    except Exception as error:  # noqa: BLE001 - numpy, zipfile and zlib raise many types for a damaged file
        raise UserInputError(f"{flag} {path} cannot be read as an .npz file ({error or type(error).__name__}); "
                             f"give a file that {made_by} wrote.") from None
    missing = [name for name in required if name not in arrays]
    problem = (f"it lacks {', '.join(missing)}" if missing else
               item_problem(arrays) or (problem_of(arrays) if problem_of is not None else None))
    if problem is not None:
        raise UserInputError(f"{flag} {path} is not a file of {made_by} ({problem}); make it again with "
                             f"{made_by}.")
    return arrays


def items_from_arrays(arrays, embeddings):
    """``EmbeddedImages`` of the arrays ``item_arrays`` wrote, with ``embeddings`` (None for an index's items)."""
    labels = arrays.get("labels")
    return EmbeddedImages(embeddings, [str(p) for p in arrays["paths"]], Path(str(arrays["root"])),
                          str(arrays["distance"]), labels.astype(np.int64) if labels is not None else None,
                          [str(name) for name in arrays["classes"]] if labels is not None else None)


def load_embeddings(path, flag):
    """Read a file ``save_embeddings`` wrote; anything else is a ``UserInputError`` naming ``flag``."""
    arrays = read_arrays(path, flag, REQUIRED_ARRAYS, "embed.py", embeddings_problem)
    return items_from_arrays(arrays, arrays["embeddings"].astype(np.float32))


def _is_text(array, dimensions):
    return array.ndim == dimensions and array.dtype.kind == "U"


def item_problem(arrays):
    """What is wrong with the items' arrays (paths, root, distance, labels and classes), or ``None``."""
    paths = arrays["paths"]
    if not _is_text(paths, 1):
        return "paths must be a list of file names"
    if not (_is_text(arrays["root"], 0) and _is_text(arrays["distance"], 0)) \
            or str(arrays["distance"]) not in DISTANCES:
        return f"root must be a folder name and distance one of {', '.join(DISTANCES)}"
    if "labels" in arrays:
        labels, classes = arrays["labels"], arrays.get("classes")
        if classes is None or not _is_text(classes, 1) or labels.ndim != 1 or labels.dtype.kind not in "iu" \
                or len(labels) != len(paths) or (len(labels) and (labels.min() < 0 or labels.max() >= len(classes))):
            return "labels must be one class index per item, into the class names it holds"
    return None


def embeddings_problem(arrays):
    """What is wrong with an embedding file's ``embeddings`` beside its items, or ``None``."""
    embeddings = arrays["embeddings"]
    if embeddings.ndim != 2 or embeddings.dtype.kind not in "fiu" or 0 in embeddings.shape:
        return (f"embeddings must be a non-empty n x d array of numbers, not {embeddings.dtype} of shape "
                f"{list(embeddings.shape)}")
    if not np.isfinite(embeddings.astype(np.float64)).all():
        return "embeddings hold NaN or infinite values"
    if len(arrays["paths"]) != len(embeddings):
        return f"paths must be {len(embeddings)} file names, one per embedding"
    return None
