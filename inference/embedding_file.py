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


def read_arrays(path, flag, required, made_by):
    """Every array of the .npz file ``path``; unreadable, or lacking one of ``required``: a ``UserInputError``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise UserInputError(f"{flag} {path} cannot be read as an .npz file ({error}); give a file that "
                             f"{made_by} wrote.") from None
    missing = [name for name in required if name not in arrays]
    if missing or str(arrays.get("distance")) not in DISTANCES:
        raise UserInputError(f"{flag} {path} is not a file of {made_by} (it lacks "
                             f"{', '.join(missing) or 'a known distance'}); make it with {made_by}.")
    return arrays


def items_from_arrays(arrays, embeddings):
    """``EmbeddedImages`` of the arrays ``item_arrays`` wrote, with ``embeddings`` (None for an index's items)."""
    labels = arrays.get("labels")
    return EmbeddedImages(embeddings, [str(p) for p in arrays["paths"]], Path(str(arrays["root"])),
                          str(arrays["distance"]), labels.astype(np.int64) if labels is not None else None,
                          [str(name) for name in arrays["classes"]] if labels is not None else None)


def load_embeddings(path, flag):
    """Read a file ``save_embeddings`` wrote; anything else is a ``UserInputError`` naming ``flag``."""
    arrays = read_arrays(path, flag, REQUIRED_ARRAYS, "embed.py")
    return items_from_arrays(arrays, arrays["embeddings"].astype(np.float32))
