"""Exact K nearest neighbours, blockwise, with the distance evaluation uses.

Recall@K (``evaluation.ranking``) only asks whether a same-label item is
among the K nearest; retrieval needs the neighbours themselves. Both score
with the same ``evaluation.scores`` objects: squared Euclidean distance, or
the negative cosine of In-Shop. A block of queries is scored in float32;
every item whose float32 score is within twice the error bound of the K-th
smallest may belong to the K nearest, and only those candidates are scored
again in float64 and sorted by (exact score, item index). So the neighbours
are exact, and ties go to the lower item index.

Memory grows with ``block_size * num_items``, never with ``num_items ** 2``.
"""
import torch

from evaluation.metric_sets import metric_set
from evaluation.scores import NegativeCosine, SquaredEuclidean, ieee_float32_matmul

INF = float("inf")
# Names written into embedding files, so that a search uses the distance of the run.
DISTANCES = {"euclidean": SquaredEuclidean, "cosine": NegativeCosine}


def distance_name(dataset_short):
    """The distance the evaluation of ``dataset_short`` ranks by: 'cosine' for In-Shop, else 'euclidean'."""
    return "cosine" if metric_set(dataset_short).query_gallery else "euclidean"


def readable_distances(distance, scores):
    """Float64 scores as printed distances: Euclidean distance, or ``1 - cos``."""
    return scores.clamp(min=0.0).sqrt() if distance == "euclidean" else 1.0 + scores


def nearest_neighbours(queries, items, k, distance="euclidean", exclude=None, block_size=512):
    """``(indices, distances)``, each ``(num_queries, k)``: the ``k`` items nearest each query.

    ``exclude`` optionally gives, per query, one item index that must not
    be returned (the query's own file in the gallery), or -1. Distances are
    float64 (see ``readable_distances``). Needs ``k`` items besides the
    excluded one.
    """
    score_kind = DISTANCES[distance]
    num_queries = len(queries)
    if exclude is None:
        exclude = torch.full((num_queries,), -1, dtype=torch.int64)
    available = len(items) - int((exclude >= 0).any())
    if k < 1 or k > available:
        raise ValueError(f"k must be between 1 and {available}, got {k}")
    queries, items = queries.float(), items.float().to(queries.device)
    exclude = exclude.to(queries.device)
    indices = torch.empty(num_queries, k, dtype=torch.int64, device=queries.device)
    scores = torch.empty(num_queries, k, dtype=torch.float64, device=queries.device)
    with ieee_float32_matmul(), torch.no_grad():
        scorer = score_kind(queries, items)
        for start in range(0, num_queries, block_size):
            rows = slice(start, min(start + block_size, num_queries))
            indices[rows], scores[rows] = _block_neighbours(scorer, rows, k, exclude[rows])
    return indices, readable_distances(distance, scores)


def _block_neighbours(scorer, rows, k, exclude):
    """Exact neighbours of the queries ``rows``: float32 candidates, float64 order."""
    block = scorer.block(rows)
    has_excluded = exclude >= 0
    block[has_excluded.nonzero(as_tuple=True)[0], exclude[has_excluded]] = INF
    kth_smallest = block.kthvalue(k, dim=1).values
    # An item among the exact k nearest scores at most kth + 2 bounds in float32.
    threshold = kth_smallest + 2.0 * scorer.error_bounds[rows]
    row, column = (block <= threshold[:, None]).nonzero(as_tuple=True)
    exact = scorer.exact(row + rows.start, column)
    # Sort by row, then exact score, then item index (the order of nonzero's output).
    order = torch.argsort(exact, stable=True)
    order = order[torch.argsort(row[order], stable=True)]
    row, column, exact = row[order], column[order], exact[order]
    first_of_row = torch.searchsorted(row, torch.arange(len(block), device=row.device))
    taken = first_of_row[:, None] + torch.arange(k, device=row.device)
    return column[taken], exact[taken]


def first_same_label_ranks(queries, query_labels, items=None, item_labels=None, distance="euclidean",
                           block_size=512):
    """Per query, the rank (1 = nearest) of its nearest same-label item.

    Without ``items`` the queries are ranked against each other, a query
    never against itself. A query without any same-label item gets
    ``num_items + 1``. Float32 scores: enough to pick the worst queries for
    a picture, not a metric.
    """
    queries = queries.float()
    all_against_all = items is None
    items, item_labels = (queries, query_labels) if all_against_all else (items.float(), item_labels)
    query_labels, item_labels = query_labels.to(queries.device), item_labels.to(queries.device)
    ranks = torch.empty(len(queries), dtype=torch.int64, device=queries.device)
    with ieee_float32_matmul(), torch.no_grad():
        scorer = DISTANCES[distance](queries, items)
        for start in range(0, len(queries), block_size):
            rows = slice(start, min(start + block_size, len(queries)))
            block = scorer.block(rows)
            same_label = query_labels[rows, None] == item_labels[None, :]
            if all_against_all:
                diagonal = torch.arange(len(block), device=block.device)
                block[diagonal, diagonal + rows.start] = INF
                same_label[diagonal, diagonal + rows.start] = False
            nearest_same = torch.where(same_label, block, INF).amin(1)
            closer_other = ((block < nearest_same[:, None]) & ~same_label).sum(1)
            ranks[rows] = torch.where(torch.isfinite(nearest_same), closer_other + 1, len(items) + 1)
    return ranks
