"""K nearest neighbours with a faiss flat index, for users who ask for it (``retrieve.py --faiss``),
and the pieces a faiss gallery index (``inference.gallery_index``) shares with it.

Same distances as ``evaluation.neighbours`` but computed by faiss in
float32, so near-ties may come in another order than the exact search.
faiss is optional (``pip install faiss-cpu``) and imported only here.
"""
import importlib

import numpy as np
import torch

from evaluation.neighbours import readable_distances
from evaluation.scores import inshop_l2_normalize
from utils.errors import UserInputError


def faiss_module(needed_by="--faiss", instead="leave out --faiss for the exact search"):
    """The faiss package, or one sentence saying how to install it."""
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise UserInputError(f"{needed_by} needs the faiss package, which is not installed; "
                             f"pip install faiss-cpu, or {instead}.") from None


def prepared_vectors(vectors, distance):
    """Contiguous float32 vectors as faiss takes them: L2-normalised for the cosine (inner product on the sphere)."""
    vectors = torch.as_tensor(vectors).float().cpu()
    if distance == "cosine":
        vectors = inshop_l2_normalize(vectors)
    return np.ascontiguousarray(vectors.numpy())


def flat_index(dimension, distance):
    """An exact faiss index of the distance: squared L2, or the inner product (cosine on normalised vectors)."""
    faiss = faiss_module()
    return faiss.IndexFlatIP(dimension) if distance == "cosine" else faiss.IndexFlatL2(dimension)


def drop_excluded(values, found, k, distance, exclude):
    """``(indices, distances)`` of the first ``k`` results per row that are neither excluded nor missing.

    ``values``/``found`` are what a faiss search returned for more than
    ``k`` neighbours (missing ones have index -1); ``exclude`` is
    ``(num_queries, m)``, -1 padded. Every row must keep ``k`` results.
    """
    exclude = np.asarray(exclude)
    exclude = exclude[:, None] if exclude.ndim == 1 else exclude
    # Padding (-1) can only equal a missing result, which is dropped anyway.
    keep = (found >= 0) & ~(found[:, :, None] == exclude[:, None, :]).any(2)
    rows = [np.flatnonzero(row)[:k] for row in keep]
    indices = np.stack([found[i, row] for i, row in enumerate(rows)]).astype(np.int64)
    scores = np.stack([values[i, row] for i, row in enumerate(rows)]).astype(np.float64)
    scores = -scores if distance == "cosine" else scores
    return torch.from_numpy(indices), readable_distances(distance, torch.from_numpy(scores))


def faiss_nearest_neighbours(queries, items, k, distance="euclidean", exclude=None):
    """``(indices, distances)`` as ``nearest_neighbours`` returns them, from a flat faiss index.

    As many extra neighbours are asked for as a query has excluded items
    (``exclude``: per query one index or -1, or a -1 padded matrix), so that
    they can be dropped.
    """
    index = flat_index(items.shape[1], distance)
    index.add(prepared_vectors(items, distance))
    if exclude is None:
        exclude = torch.full((len(queries), 1), -1, dtype=torch.int64)
    exclude = (exclude[:, None] if exclude.dim() == 1 else exclude).cpu().numpy()
    asked = min(k + int((exclude >= 0).sum(1).max(initial=0)), len(items))
    values, found = index.search(prepared_vectors(queries, distance), asked)
    return drop_excluded(values, found, k, distance, exclude)
