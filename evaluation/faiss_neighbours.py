"""K nearest neighbours with a faiss flat index, for users who ask for it (``retrieve.py --faiss``).

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


def _faiss():
    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise UserInputError("--faiss needs the faiss package, which is not installed; "
                             "pip install faiss-cpu, or leave out --faiss for the exact search.") from None


def faiss_nearest_neighbours(queries, items, k, distance="euclidean", exclude=None):
    """``(indices, distances)`` as ``nearest_neighbours`` returns them, from a flat faiss index.

    One extra neighbour is asked for, so that the excluded item (``exclude``,
    per query, or -1) can be dropped.
    """
    faiss = _faiss()
    queries, items = queries.float().cpu(), items.float().cpu()
    if distance == "cosine":
        queries, items = inshop_l2_normalize(queries), inshop_l2_normalize(items)
        index = faiss.IndexFlatIP(items.shape[1])
    else:
        index = faiss.IndexFlatL2(items.shape[1])
    index.add(np.ascontiguousarray(items.numpy()))
    asked = min(k + 1, len(items))
    values, found = index.search(np.ascontiguousarray(queries.numpy()), asked)
    if exclude is None:
        exclude = torch.full((len(queries),), -1, dtype=torch.int64)
    keep = found != exclude.cpu().numpy()[:, None]
    rows = [np.flatnonzero(row)[:k] for row in keep]
    indices = np.stack([found[i, row] for i, row in enumerate(rows)])
    scores = np.stack([values[i, row] for i, row in enumerate(rows)]).astype(np.float64)
    scores = -scores if distance == "cosine" else scores
    return torch.from_numpy(indices.astype(np.int64)), readable_distances(distance, torch.from_numpy(scores))
