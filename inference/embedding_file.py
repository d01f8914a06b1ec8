"""Embeddings of images on disk, and their ``.npz`` file.

The file holds plain arrays only (read with ``allow_pickle=False``):
``embeddings`` (float32, n x d), ``paths`` (unicode, relative to ``root``),
``root`` (the folder that was embedded), ``distance`` (how the run ranks:
'euclidean' or 'cosine'), and, when the folder had class sub-folders,
``labels`` (int64, indices into ``classes``) and ``classes``.
"""
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from evaluation.neighbours import DISTANCES
from utils.errors import UserInputError
from utils.io import atomic_write

REQUIRED_ARRAYS = ("embeddings", "paths", "root", "distance")


@dataclass
class EmbeddedImages:
    embeddings: np.ndarray
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


def save_embeddings(embedded, path):
    """Write ``embedded`` to ``path`` (.npz); the folder must exist."""
    arrays = dict(embeddings=np.asarray(embedded.embeddings, dtype=np.float32),
                  paths=np.array([str(p) for p in embedded.paths], dtype=np.str_),
                  root=np.array(str(embedded.root), dtype=np.str_),
                  distance=np.array(embedded.distance, dtype=np.str_))
    if embedded.labels is not None:
        arrays.update(labels=np.asarray(embedded.labels, dtype=np.int64),
                      classes=np.array(embedded.classes, dtype=np.str_))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue(), replace=False)


def load_embeddings(path, flag):
    """Read a file ``save_embeddings`` wrote; anything else is a ``UserInputError`` naming ``flag``.

    Every array is checked before any is used: a damaged or edited file is
    refused whole, never partly searched.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            arrays = {name: data[name] for name in data.files}
    except Exception as error:  # noqa: BLE001 - numpy, zipfile and zlib raise many types for a damaged file
        raise UserInputError(f"{flag} {path} cannot be read as an .npz file ({error or type(error).__name__}); "
                             "give a file that embed.py wrote.") from None
    problem = embedding_file_problem(arrays)
    if problem is not None:
        raise UserInputError(f"{flag} {path} is not an embedding file of embed.py ({problem}); embed the "
                             "images again with embed.py.")
    labels = arrays.get("labels")
    return EmbeddedImages(arrays["embeddings"].astype(np.float32), [str(p) for p in arrays["paths"]],
                          Path(str(arrays["root"])), str(arrays["distance"]),
                          labels.astype(np.int64) if labels is not None else None,
                          [str(name) for name in arrays["classes"]] if labels is not None else None)


def _is_text(array, dimensions):
    return array.ndim == dimensions and array.dtype.kind == "U"


def embedding_file_problem(arrays):
    """What is wrong with the arrays of an embedding file, or ``None``."""
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        return f"it lacks {', '.join(missing)}"
    embeddings, paths = arrays["embeddings"], arrays["paths"]
    if embeddings.ndim != 2 or embeddings.dtype.kind not in "fiu" or 0 in embeddings.shape:
        return f"embeddings must be a non-empty n x d array of numbers, not {embeddings.dtype} of shape " \
               f"{list(embeddings.shape)}"
    if not np.isfinite(embeddings.astype(np.float64)).all():
        return "embeddings hold NaN or infinite values"
    if not _is_text(paths, 1) or len(paths) != len(embeddings):
        return f"paths must be {len(embeddings)} file names, one per embedding"
    if not (_is_text(arrays["root"], 0) and _is_text(arrays["distance"], 0)) \
            or str(arrays["distance"]) not in DISTANCES:
        return f"root must be a folder name and distance one of {', '.join(DISTANCES)}"
    if "labels" in arrays:
        labels, classes = arrays["labels"], arrays.get("classes")
        if classes is None or not _is_text(classes, 1) or labels.ndim != 1 or labels.dtype.kind not in "iu" \
                or len(labels) != len(embeddings) or labels.min() < 0 or labels.max() >= len(classes):
            return "labels must be one class index per embedding, into the class names it holds"
    return None
