"""Nearest gallery images of each query image, and their ``neighbours.csv``.

Exact search with ``evaluation.neighbours`` (the evaluation's distance),
only when asked a faiss flat index, or the faiss index ``index.py`` built.
A query whose file is also in the gallery (the same file, however its path
is spelled: ``inference.same_file``) never gets itself as a neighbour.
"""
import csv
import io
from typing import NamedTuple, Optional

import numpy as np
import torch

from evaluation.faiss_neighbours import faiss_nearest_neighbours
from evaluation.neighbours import most_excluded, nearest_neighbours, readable_distances
from inference.gallery_index import GalleryIndex
from inference.same_file import own_gallery_indices
from utils.errors import UserInputError
from utils.io import atomic_write_text


class Retrieval(NamedTuple):
    """``indices[i, r]``: gallery index of query i's neighbour of rank r+1; ``same_label`` when both have labels."""

    indices: np.ndarray
    distances: np.ndarray
    same_label: Optional[np.ndarray]


def check_search(queries, gallery, dimension, top_k, exclude):
    """Same distance on both sides, and ``top_k`` neighbours available for every query besides its own file."""
    if queries.distance != gallery.distance:
        raise UserInputError(f"The queries were embedded for the {queries.distance} distance and the gallery for "
                             f"the {gallery.distance} distance; embed both with the same run.")
    if queries.embeddings.shape[1] != dimension:
        raise UserInputError(f"The queries have {queries.embeddings.shape[1]}-d embeddings and the gallery "
                             f"{dimension}-d ones; embed both with the same run.")
    excluded = most_excluded(torch.from_numpy(exclude))
    available = len(gallery.paths) - excluded
    besides = " besides a query's own file" if excluded else ""
    if available < 1:
        raise UserInputError(f"The gallery holds no image{besides}, so a query has no neighbour to find; give a "
                             "gallery of other images.")
    if top_k < 1 or top_k > available:
        raise UserInputError(f"--top_k {top_k} must be between 1 and the gallery's {available} images{besides}; "
                             f"give --top_k between 1 and {available}.")


def retrieve(queries, gallery, top_k, use_faiss=False, block_size=512):
    """The ``top_k`` nearest gallery images of every query.

    ``gallery``: ``EmbeddedImages`` (searched exactly, or with ``use_faiss``
    by a flat faiss index) or a ``GalleryIndex`` (searched by its index).
    """
    indexed = isinstance(gallery, GalleryIndex)
    items = gallery.items if indexed else gallery
    exclude = own_gallery_indices(queries.absolute_paths(), items.absolute_paths())
    check_search(queries, items, gallery.dimension if indexed else items.embeddings.shape[1], top_k, exclude)
    query_vectors = torch.from_numpy(queries.embeddings)
    if indexed:
        indices, distances = gallery.search(query_vectors, top_k, exclude)
    elif use_faiss:
        indices, distances = faiss_nearest_neighbours(query_vectors, torch.from_numpy(items.embeddings), top_k,
                                                      items.distance, torch.from_numpy(exclude))
    else:
        indices, scores = nearest_neighbours(query_vectors, torch.from_numpy(items.embeddings), top_k,
                                             items.distance, torch.from_numpy(exclude), block_size)
        distances = readable_distances(items.distance, scores)
    indices, distances = indices.cpu().numpy(), distances.cpu().numpy()
    return Retrieval(indices, distances, same_label_matrix(queries, items, indices))


def same_label_matrix(queries, gallery, indices):
    """Whether each neighbour has the query's class (compared by class name), or None without labels."""
    query_classes, gallery_classes = queries.class_names(), gallery.class_names()
    if query_classes is None or gallery_classes is None:
        return None
    gallery_classes = np.array(gallery_classes, dtype=np.str_)
    return gallery_classes[indices] == np.array(query_classes, dtype=np.str_)[:, None]


def write_neighbours_csv(path, queries, gallery, retrieval):
    """One row per (query, rank): query, rank, neighbour, distance[, same_label]; absolute paths."""
    header = ["query", "rank", "neighbour", "distance"]
    if retrieval.same_label is not None:
        header.append("same_label")
    gallery_paths = gallery.absolute_paths()
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    for query_index, query_path in enumerate(queries.absolute_paths()):
        for rank, gallery_index in enumerate(retrieval.indices[query_index]):
            row = [query_path, rank + 1, gallery_paths[gallery_index],
                   f"{retrieval.distances[query_index, rank]:.6g}"]
            if retrieval.same_label is not None:
                row.append(int(retrieval.same_label[query_index, rank]))
            writer.writerow(row)
    atomic_write_text(path, buffer.getvalue(), replace=False)
