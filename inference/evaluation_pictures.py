"""The pictures drawn after an evaluation, from the embeddings it already computed.

``retrieval_worst.png``: the queries whose nearest same-label item ranks
furthest down; ``retrieval_random.png``: a seeded random sample of queries;
``embedding_map.png``: the embeddings in 2-D (at most MAX_MAP_POINTS, a
seeded sample), coloured by class. The queries are the whole evaluated set
against itself, or In-Shop's queries against its gallery, with the
distance of the evaluation (Euclidean, In-Shop cosine).
"""
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from evaluation.neighbours import first_same_label_ranks, nearest_neighbours, readable_distances
from inference.pictures import draw_embedding_map, draw_retrieval_grid

logger = logging.getLogger(__name__)

PICTURE_ROWS = 8
PICTURE_TOP_K = 8
MAX_MAP_POINTS = 2000
# t-SNE needs a few more points than its perplexity allows for.
MIN_MAP_POINTS = 5
# Characters of a class name that fit under a thumbnail.
MAX_CAPTION = 16


class EmbeddedSet(NamedTuple):
    """Embeddings (CPU float32), labels and image paths of one evaluated split."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    paths: list


class EvaluatedSets(NamedTuple):
    """``queries`` is None when the gallery is searched against itself; ``query_self``: per query,
    the gallery index of its own image or -1 (None: none has one)."""

    gallery: EmbeddedSet
    queries: EmbeddedSet = None
    query_self: torch.Tensor = None

    @property
    def distance(self):
        return "euclidean" if self.queries is None else "cosine"

    def own_items(self, query_indices):
        """Per chosen query, the gallery index it must not match: itself, its own image, or -1."""
        if self.queries is None:
            return query_indices
        if self.query_self is None:
            return torch.full_like(query_indices, -1)
        return self.query_self.cpu()[query_indices]


def embedded_set(split, loader):
    """An ``EmbeddedSet`` on the CPU from an evaluator's ``EmbeddedSplit`` and the loader it embedded."""
    paths = loader.dataset.paths
    return EmbeddedSet(split.embeddings.detach().float().cpu(), split.labels.cpu(),
                       [paths[index] for index in split.indices.tolist()])


def evaluated_sets(last, loaders):
    """``EvaluatedSets`` of an evaluator's ``last`` evaluation and its loaders (the run's eval_loaders entry)."""
    if last.queries is None:
        return EvaluatedSets(embedded_set(last.gallery, loaders["loader"]))
    return EvaluatedSets(embedded_set(last.gallery, loaders["gallery_loader"]),
                         embedded_set(last.queries, loaders["query_loader"]), last.query_self)


def class_folder(path):
    """The folder an image lies in, which names its class in every layout we read (CUB's
    ``001.Black_footed_Albatross``, the demo's digit, an In-Shop item id); cut to fit under a thumbnail."""
    name = Path(path).parent.name
    return name if len(name) <= MAX_CAPTION else name[:MAX_CAPTION - 1] + "~"


def class_names_of(embedded):
    """``{label: class folder}`` from the first image of each label."""
    names = {}
    for label, path in zip(embedded.labels.tolist(), embedded.paths):
        names.setdefault(label, class_folder(path))
    return names


def retrieval_rows(sets, query_indices, top_k):
    """The neighbours of the chosen queries, drawn as a grid."""
    queries = sets.queries or sets.gallery
    chosen = torch.as_tensor(query_indices, dtype=torch.int64)
    neighbours, scores = nearest_neighbours(queries.embeddings[chosen], sets.gallery.embeddings, top_k,
                                            sets.distance, sets.own_items(chosen))
    distances = readable_distances(sets.distance, scores)
    same_label = (sets.gallery.labels[neighbours] == queries.labels[chosen][:, None]).numpy()
    neighbour_paths = [[sets.gallery.paths[index] for index in row] for row in neighbours.tolist()]
    return ([queries.paths[index] for index in chosen.tolist()], neighbour_paths, distances.numpy(), same_label,
            [class_folder(queries.paths[index]) for index in chosen.tolist()])


def grid_of(sets, query_indices, top_k, title):
    paths, neighbour_paths, distances, same_label, captions = retrieval_rows(sets, query_indices, top_k)
    return draw_retrieval_grid(paths, neighbour_paths, distances, same_label, title, captions)


def worst_queries(sets, count):
    """The ``count`` queries whose nearest same-label item ranks furthest (ties: lower index first)."""
    if sets.queries is None:
        ranks = first_same_label_ranks(sets.gallery.embeddings, sets.gallery.labels, distance=sets.distance)
    else:
        ranks = first_same_label_ranks(sets.queries.embeddings, sets.queries.labels, sets.gallery.embeddings,
                                       sets.gallery.labels, distance=sets.distance, query_self=sets.query_self)
    order = np.argsort(-ranks.numpy(), kind="stable")
    return order[:count].tolist(), ranks.numpy()


def random_queries(num_queries, count, seed):
    return sorted(np.random.default_rng(seed).choice(num_queries, size=count, replace=False).tolist())


def draw_evaluation_pictures(sets, heading, seed=0, map_method="tsne", rows=PICTURE_ROWS, top_k=PICTURE_TOP_K):
    """``{file name: PIL image}`` of the pictures of one evaluation; ``heading`` names it (e.g. 'epoch 12')."""
    num_queries = len((sets.queries or sets.gallery).paths)
    has_own_item = sets.queries is None or (sets.query_self is not None and bool((sets.query_self >= 0).any()))
    top_k = min(top_k, len(sets.gallery.paths) - int(has_own_item))
    rows = min(rows, num_queries)
    pictures = {}
    if top_k >= 1:
        worst, ranks = worst_queries(sets, rows)
        worst_title = (f"{heading}: worst queries (nearest same-class item at rank "
                       f"{', '.join(str(ranks[index]) for index in worst)})")
        pictures["retrieval_worst.png"] = grid_of(sets, worst, top_k, worst_title)
        pictures["retrieval_random.png"] = grid_of(sets, random_queries(num_queries, rows, seed), top_k,
                                                   f"{heading}: random queries (seed {seed})")
    pictures.update(embedding_map_picture(sets, heading, seed, map_method))
    return pictures


def only_queries_outside_gallery(sets):
    """The queries whose image is not in the gallery too: each image is one point of the map."""
    if sets.query_self is None:
        return sets.queries
    kept = (sets.query_self.cpu() < 0).nonzero(as_tuple=True)[0]
    return EmbeddedSet(sets.queries.embeddings[kept], sets.queries.labels[kept],
                       [sets.queries.paths[index] for index in kept.tolist()])


def embedding_map_picture(sets, heading, seed, map_method):
    """``{'embedding_map.png': image}`` of at most MAX_MAP_POINTS embeddings, or {} for too few."""
    parts = [sets.gallery] + ([only_queries_outside_gallery(sets)] if sets.queries is not None else [])
    embeddings = torch.cat([part.embeddings for part in parts]).numpy()
    labels = torch.cat([part.labels for part in parts]).numpy()
    names = {label: name for part in parts for label, name in class_names_of(part).items()}
    if len(embeddings) < MIN_MAP_POINTS:
        logger.info("No embedding map: %d points are too few.", len(embeddings))
        return {}
    if len(embeddings) > MAX_MAP_POINTS:
        chosen = np.sort(np.random.default_rng(seed).choice(len(embeddings), MAX_MAP_POINTS, replace=False))
        embeddings, labels = embeddings[chosen], labels[chosen]
    title = f"{heading}: {len(embeddings)} test embeddings by {'UMAP' if map_method == 'umap' else 't-SNE'}"
    return {"embedding_map.png": draw_embedding_map(embeddings, labels, map_method, seed, title, names)}
