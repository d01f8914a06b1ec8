"""Exact K nearest neighbours, blockwise, with the distance evaluation uses.

Recall@K (``evaluation.ranking``) only asks whether a same-label item is
among the K nearest; retrieval (``retrieve.py``, the pictures) and the
k-reciprocal test-time graphs (``evaluation.k_reciprocal``) need the
neighbours themselves. All score with the same ``evaluation.scores``
objects: squared Euclidean distance, or the negative cosine of In-Shop.

A block of queries is scored in float32; every item within twice the row's
float32 error bound of the row's K-th smallest score may belong to the true
K nearest, so exactly those candidates are scored again in float64 and
ranked there, by (exact score, item index). So the neighbours are exact and
ties go to the lower item index. Memory grows with
``block_size * num_items``, never with ``num_items ** 2``.
"""
import torch

from evaluation.scores import NegativeCosine, SquaredEuclidean, exact_scores, ieee_float32_matmul

INF = float("inf")
# Names written into embedding files, so that a search uses the distance of the run.
DISTANCES = {"euclidean": SquaredEuclidean, "cosine": NegativeCosine}
# Scores beyond the K-th that are looked at before a row is compared in full.
WINDOW_MARGIN = 16


def readable_distances(distance, scores):
    """Float64 scores as printed distances: Euclidean distance, or ``1 - cos``."""
    return scores.clamp(min=0.0).sqrt() if distance == "euclidean" else 1.0 + scores


def nearest_neighbours(queries, items, k, distance="euclidean", exclude=None, block_size=512, self_first=False):
    """``(indices, scores)``, each ``(num_queries, k)``: the ``k`` items nearest each query.

    ``scores`` are the exact float64 scores of the distance (squared
    Euclidean, or negative cosine; ``readable_distances`` prints them).
    ``exclude`` optionally gives, per query, one item index that must not be
    returned (the query's own file in the gallery), or -1; or, as a
    ``(num_queries, m)`` matrix padded with -1, up to m of them (a file that
    the gallery holds under several names). With
    ``self_first`` (the queries are the items) each query is its own first
    neighbour, score ``-inf``, also when a duplicate lies at distance 0.
    """
    num_queries = len(queries)
    if exclude is None:
        exclude = torch.full((num_queries, 1), -1, dtype=torch.int64)
    exclude = exclude[:, None] if exclude.dim() == 1 else exclude
    available = len(items) - most_excluded(exclude)
    if k < 1 or k > available:
        raise ValueError(f"k must be between 1 and {available}, got {k}")
    queries, items = queries.float(), items.to(queries.device).float()
    exclude = exclude.to(queries.device)
    indices = torch.empty(num_queries, k, dtype=torch.int64, device=queries.device)
    scores = torch.empty(num_queries, k, dtype=torch.float64, device=queries.device)
    buffer = torch.empty(min(block_size, num_queries) * len(items), device=queries.device)
    with ieee_float32_matmul(), torch.no_grad():
        scorer = DISTANCES[distance](queries, items)
        for start in range(0, num_queries, block_size):
            rows = torch.arange(start, min(start + block_size, num_queries), device=queries.device)
            indices[rows], scores[rows] = _block_neighbours(scorer, rows, k, exclude[rows], buffer, self_first)
    return indices, scores


def most_excluded(exclude):
    """The largest number of items excluded for one query (``exclude``: ``(num_queries, m)``, -1 padded)."""
    return int((exclude >= 0).sum(1).max()) if exclude.numel() else 0


def _block_neighbours(scorer, rows, k, exclude, buffer, self_first):
    """The exact k nearest of the query ``rows``: float32 window, float64 ranking."""
    block = scorer.block(rows, buffer=buffer)
    local = torch.arange(len(rows), device=rows.device)
    excluded_row, slot = (exclude >= 0).nonzero(as_tuple=True)
    block[excluded_row, exclude[excluded_row, slot]] = INF
    if self_first:
        block[local, rows] = -INF
    row, column = _window_pairs(block, k, scorer.error_bounds[rows])
    exact = exact_scores(scorer, rows[row], column)
    if self_first:
        exact[rows[row] == column] = -INF
    indices, scores, _ = k_smallest_per_row(row, column, exact, len(rows), k)
    return indices, scores


def k_smallest_per_row(row, column, scores, num_rows, k):
    """``(columns, scores, filled)``, each ``(num_rows, k)``: per row, its ``k`` pairs of
    ``(row, column, score)`` with the smallest (score, column), in that order.

    ``filled`` is False where a row has fewer than k pairs (column 0, score inf there).
    """
    # Stable sorts by column, then score, then row: each row in (score, column) order.
    order = torch.sort(column, stable=True).indices
    order = order[torch.sort(scores[order], stable=True).indices]
    order = order[torch.sort(row[order], stable=True).indices]
    row, column, scores = row[order], column[order], scores[order]
    rank = torch.arange(len(row), device=row.device) - torch.searchsorted(row, row)
    keep = rank < k
    row, rank = row[keep], rank[keep]
    columns = torch.zeros(num_rows, k, dtype=torch.int64, device=row.device)
    smallest = torch.full((num_rows, k), INF, dtype=torch.float64, device=row.device)
    filled = torch.zeros(num_rows, k, dtype=torch.bool, device=row.device)
    columns[row, rank], smallest[row, rank], filled[row, rank] = column[keep], scores[keep], True
    return columns, smallest, filled


def _window_pairs(block, k, error_bounds):
    """``(row, column)`` of every entry within twice the row's error bound of the
    row's k-th smallest score: they hold the exact k nearest.

    Usually the window is a few entries beyond the k-th, so it is read off the
    ``k + WINDOW_MARGIN`` smallest; rows whose window reaches past those are
    compared in full. Excluded entries (``inf``) never enter a window.
    """
    num_smallest = min(block.shape[1], k + WINDOW_MARGIN)
    smallest, columns = block.topk(num_smallest, dim=1, largest=False, sorted=True)
    window_top = smallest[:, k - 1] + 2.0 * error_bounds
    if num_smallest < block.shape[1]:
        fits = smallest[:, -1] > window_top
    else:
        fits = torch.ones_like(window_top, dtype=torch.bool)
    row, position = ((smallest <= window_top[:, None]) & fits[:, None] & (smallest < INF)).nonzero(as_tuple=True)
    wide = (~fits).nonzero(as_tuple=True)[0]
    wide_block = block[wide]
    wide_row, wide_column = ((wide_block <= window_top[wide, None]) & (wide_block < INF)).nonzero(as_tuple=True)
    return torch.cat([row, wide[wide_row]]), torch.cat([columns[row, position], wide_column])


def first_same_label_ranks(queries, query_labels, items=None, item_labels=None, distance="euclidean",
                           block_size=512, query_self=None):
    """Per query, the rank (1 = nearest) of its nearest same-label item.

    Without ``items`` the queries are ranked against each other, a query
    never against itself; with them, ``query_self`` (per query the item
    index of its own image, or -1) is left out the same way. A query
    without any same-label item gets ``num_items + 1``. Float32 scores:
    enough to pick the worst queries for a picture, not a metric.
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
            elif query_self is not None:
                own = torch.as_tensor(query_self, dtype=torch.int64).to(block.device)[rows]
                with_copy = (own >= 0).nonzero(as_tuple=True)[0]
                block[with_copy, own[with_copy]] = INF
                same_label[with_copy, own[with_copy]] = False
            nearest_same = torch.where(same_label, block, INF).amin(1)
            closer_other = ((block < nearest_same[:, None]) & ~same_label).sum(1)
            ranks[rows] = torch.where(torch.isfinite(nearest_same), closer_other + 1, len(items) + 1)
    return ranks
