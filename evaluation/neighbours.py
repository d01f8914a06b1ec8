"""Exact k nearest neighbours by squared Euclidean distance, blockwise.

The float32 block products of ``evaluation.scores`` give, per query, the
k-th smallest score; every item within twice the row's float32 error bound
of it may belong to the true k nearest, so exactly those items are scored
again in float64 (differences first) and ranked there. Memory grows with
``block_size * num_items``, never with ``num_items ** 2``.

Order: by exact distance, ties by item index; with ``self_first`` (queries
are the items) each query is its own first neighbour, also when a
duplicate embedding lies at distance 0.
"""
import torch

from evaluation.scores import SquaredEuclidean, ieee_float32_matmul

# Float64 re-scoring of candidate pairs works in chunks of this many vector elements.
EXACT_CHUNK_ELEMENTS = 1 << 18
INF = float("inf")
# Scores beyond the k-th that are looked at before a row is compared in full.
WINDOW_MARGIN = 16


def nearest_neighbours(queries, items, k, block_size, self_first=False):
    """``(indices, distances)``: the ``k`` nearest items of every query.

    ``indices`` is a LongTensor ``[num_queries, k]``, ``distances`` the
    float64 squared distances (``-inf`` for the query itself with
    ``self_first``). ``k`` must not exceed ``len(items)``.
    """
    if k > len(items):
        raise ValueError(f"k = {k} nearest neighbours asked of {len(items)} items")
    queries, items = queries.float(), items.to(queries.device).float()
    scores = SquaredEuclidean(queries, items)
    indices = torch.empty(len(queries), k, dtype=torch.int64, device=queries.device)
    distances = torch.empty(len(queries), k, dtype=torch.float64, device=queries.device)
    buffer = torch.empty(min(block_size, len(queries)) * len(items), device=queries.device)
    with ieee_float32_matmul(), torch.no_grad():
        for start in range(0, len(queries), block_size):
            rows = torch.arange(start, min(start + block_size, len(queries)), device=queries.device)
            indices[rows], distances[rows] = _block_neighbours(scores, rows, k, buffer, self_first)
    return indices, distances


def _block_neighbours(scores, rows, k, buffer, self_first):
    """The exact k nearest of the query ``rows``: float32 window, float64 ranking."""
    block = scores.block(rows, buffer=buffer)
    if self_first:
        block[torch.arange(len(rows), device=rows.device), rows] = -INF
    row, column = _window_pairs(block, k, scores.error_bounds[rows])
    exact = exact_squared_distances(scores, rows[row], column)
    if self_first:
        exact[rows[row] == column] = -INF
    # Stable sorts by index, then distance, then row: each row in (distance, index) order.
    order = torch.sort(column, stable=True).indices
    order = order[torch.sort(exact[order], stable=True).indices]
    order = order[torch.sort(row[order], stable=True).indices]
    row, column, exact = row[order], column[order], exact[order]
    row_starts = torch.searchsorted(row, torch.arange(len(rows), device=row.device))
    rank = torch.arange(len(row), device=row.device) - row_starts[row]
    keep = rank < k
    indices = torch.empty(len(rows), k, dtype=torch.int64, device=rows.device)
    distances = torch.empty(len(rows), k, dtype=torch.float64, device=rows.device)
    indices[row[keep], rank[keep]] = column[keep]
    distances[row[keep], rank[keep]] = exact[keep]
    return indices, distances


def _window_pairs(block, k, error_bounds):
    """``(row, column)`` of every entry within twice the row's error bound of the
    row's k-th smallest score: they hold the exact k nearest.

    Usually the window is a few entries beyond the k-th, so it is read off the
    ``k + WINDOW_MARGIN`` smallest; rows whose window reaches past those are
    compared in full.
    """
    num_smallest = min(block.shape[1], k + WINDOW_MARGIN)
    smallest, columns = block.topk(num_smallest, dim=1, largest=False, sorted=True)
    window_top = smallest[:, k - 1] + 2.0 * error_bounds
    fits = smallest[:, -1] > window_top if num_smallest < block.shape[1] else torch.ones_like(window_top,
                                                                                               dtype=torch.bool)
    row, position = ((smallest <= window_top[:, None]) & fits[:, None]).nonzero(as_tuple=True)
    wide = (~fits).nonzero(as_tuple=True)[0]
    wide_row, wide_column = (block[wide] <= window_top[wide, None]).nonzero(as_tuple=True)
    return torch.cat([row, wide[wide_row]]), torch.cat([columns[row, position], wide_column])


def exact_squared_distances(scores, query_index, item_index):
    """Float64 squared distances of the pairs (``scores.exact``), chunk by chunk."""
    chunk = max(1, EXACT_CHUNK_ELEMENTS // max(1, scores.dim))
    pieces = [scores.exact(query_index[start:start + chunk], item_index[start:start + chunk])
              for start in range(0, len(query_index), chunk)]
    return (torch.cat(pieces) if pieces
            else torch.empty(0, dtype=torch.float64, device=query_index.device))
