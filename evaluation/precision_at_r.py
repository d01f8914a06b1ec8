"""MAP@R, R-precision and precision@1 (Musgrave et al., "A Metric Learning
Reality Check", ECCV 2020), exact and blockwise.

Definitions are pytorch-metric-learning's ``AccuracyCalculator``: a query's
R is the number of other items with its label (In-Shop: gallery items with
its label); its neighbours are ranked by distance, the query itself
excluded by its index. With ``rank_j`` the rank of its j-th closest
same-label item and ``rel`` "is the item at rank i same-label":

- precision@1: is the nearest neighbour same-label;
- R-precision: the share of same-label items among the R nearest;
- MAP@R: ``(1/R) sum_{i<=R} rel(i) * P(i)``, P(i) the precision among the i
  nearest, i.e. ``(1/R) sum_{j: rank_j <= R} j / rank_j``.

A query with R = 0 is left out of every average (pytorch-metric-learning's
"lone" queries); if every query is lone the metrics are NaN, as there.

Tie rule (as ``evaluation.ranking``): an other-label item exactly as far as
a same-label item ranks after it. pytorch-metric-learning takes faiss's
order at ties, so the two agree on tie-free data; on tied data the tests
check this rule against its formulas fed a neighbour list in this order.

Only ``rank_j = j + c_j`` is needed, ``c_j`` the number of other-label
items strictly closer than the j-th same-label item, and only while
``j + c_j <= R``. So a block of queries scored in float32 keeps its R
smallest other-label scores (``torch.topk``), and counts are read from them
by binary search, capped at R. As in ``evaluation.ranking``, an item within
the float32 error bound of a same-label score leaves its count open; only
those pairs are decided in float64 (``_closer_in_window``).
Memory: the block of ``block_size x num_items`` float32 scores, at most
one copy of its open rows with their comparison mask, and ``block_size x
max R`` values; never ``num_items ** 2``.
"""
import math

import torch

from evaluation.ranking import (EXACT_CHUNK_ELEMENTS, INF, _BlockMemory, _SortedLabels, sorted_by_label,
                                sorted_self_columns)
from evaluation.recall import DEFAULT_BLOCK_SIZE
from evaluation.scores import NegativeCosine, SquaredEuclidean, exact_scores, ieee_float32_matmul
from schema.options import EXTRA_METRIC_COLUMNS

METRIC_NAMES = tuple(EXTRA_METRIC_COLUMNS.values())
# A count larger than any R: "not among the R nearest".
INF_COUNT = torch.iinfo(torch.int64).max // 2


def map_at_r(embeddings, labels, block_size=DEFAULT_BLOCK_SIZE):
    """MAP@R of every embedding against all others, by Euclidean distance."""
    return retrieval_metrics(embeddings, labels, block_size)["MAP@R"]


def r_precision(embeddings, labels, block_size=DEFAULT_BLOCK_SIZE):
    """R-precision of every embedding against all others, by Euclidean distance."""
    return retrieval_metrics(embeddings, labels, block_size)["RP"]


def precision_at_1(embeddings, labels, block_size=DEFAULT_BLOCK_SIZE):
    """Precision@1 of every embedding against all others, by Euclidean distance.

    Unlike Recall@1, queries without a same-label partner are left out
    instead of counted as misses.
    """
    return retrieval_metrics(embeddings, labels, block_size)["P@1"]


def retrieval_metrics(embeddings, labels, block_size=DEFAULT_BLOCK_SIZE):
    """``{'MAP@R', 'RP', 'P@1'}`` all against all (CUB, Cars, SOP), in one pass."""
    return _means(_per_query(SquaredEuclidean, embeddings, labels, block_size))


def inshop_retrieval_metrics(query, query_labels, gallery, gallery_labels,
                             block_size=DEFAULT_BLOCK_SIZE, query_self=None):
    """``{'MAP@R', 'RP', 'P@1'}`` of In-Shop's queries against its gallery, by the
    cosine similarity of ``evaluation.recall.inshop_recall_at_k``; ``query_self``
    (per query, the gallery index of its own image, or -1) is excluded by its index."""
    return _means(_per_query(NegativeCosine, gallery, gallery_labels, block_size, query,
                             query_labels, query_self))


def _means(per_query):
    """Averages over the queries with R >= 1, or NaN if there are none."""
    average_precision, r_precisions, first_hits, has_positive = per_query
    count = int(has_positive.sum())
    if count == 0:
        return {name: math.nan for name in METRIC_NAMES}
    values = (average_precision, r_precisions, first_hits.double())
    return {name: float(value[has_positive].sum()) / count
            for name, value in zip(METRIC_NAMES, values)}


def _per_query(score_kind, items, item_labels, block_size, queries=None, query_labels=None, query_self=None):
    """Per query (in sorted-label order): AP@R, R-precision, hit at 1, R >= 1."""
    device = items.device
    (items, item_labels, item_order), (queries, query_labels, query_order), queries_are_items = \
        sorted_by_label(items, item_labels, queries, query_labels)
    with ieee_float32_matmul(), torch.no_grad():
        scores = score_kind(queries, items)
        labels = _SortedLabels(query_labels, item_labels,
                               sorted_self_columns(queries_are_items, query_self, query_order, item_order))
        has_self = (labels.self_columns >= 0).long() if labels.exclude_self else 0
        num_positives = labels.positive_end - labels.positive_start - has_self
        memory = _BlockMemory(min(block_size, len(queries)) * len(items), device)
        results = [_block_precisions(scores, labels, num_positives, slice(start, start + block_size),
                                     memory)
                   for start in range(0, len(queries), block_size)]
    if not results:
        empty = torch.empty(0, dtype=torch.float64, device=device)
        return empty, empty, empty.bool(), empty.bool()
    average_precision, r_precisions, first_hits = (torch.cat(parts) for parts in zip(*results))
    return average_precision, r_precisions, first_hits, num_positives > 0


def _block_precisions(scores, labels, num_positives, rows, memory):
    """AP@R, R-precision and hit at 1 of the queries ``rows``."""
    block = scores.block(rows, buffer=memory.scores)
    r = num_positives[rows]
    positive_columns, is_positive = _positive_columns(labels, rows, len(block))
    positive_scores = torch.where(is_positive, block.gather(1, positive_columns), INF)
    _hide_same_label(block, labels, rows)
    nearest_others = _smallest(block, int(r.max().item()) if len(r) else 0)
    errors = 2.0 * scores.error_bounds[rows, None]
    low, high = positive_scores - errors, positive_scores + errors
    # Other-label scores below ``low`` / up to ``high``, exact while under len(nearest_others) >= R.
    surely = torch.searchsorted(nearest_others, low.contiguous(), right=False)
    possibly = torch.searchsorted(nearest_others, high.contiguous(), right=True)
    closer = torch.where(is_positive, surely, INF_COUNT)
    is_open = is_positive & (surely != possibly) & (surely < r[:, None])
    if is_open.any():
        row, position = is_open.nonzero(as_tuple=True)
        closer[row, position] += _closer_in_window(scores, block, rows.start, row,
                                                   positive_columns[row, position],
                                                   low[row, position], high[row, position])
    return _precisions(closer, r)


def _positive_columns(labels, rows, num_rows):
    """Item columns of each query's same-label items (padded), and which are real.

    The query's own image is excluded by its index (queries are the items, or ``query_self``).
    """
    starts, ends = labels.positive_start[rows], labels.positive_end[rows]
    width = int((ends - starts).max().item()) if num_rows else 0
    columns = starts[:, None] + torch.arange(width, device=starts.device)
    is_positive = columns < ends[:, None]
    if labels.exclude_self:
        is_positive &= columns != labels.self_columns[rows][:, None]
    last_column = len(labels.item_labels) - 1
    return columns.clamp(max=max(last_column, 0)), is_positive


def _hide_same_label(block, labels, rows):
    """In place, every same-label entry (the query included) becomes inf."""
    band_start = labels.positive_start[rows].min().item()
    band_stop = max(labels.positive_end[rows].max().item(), band_start)
    band = block[:, band_start:band_stop]
    band.masked_fill_(labels.same_label_mask(rows, band_start, band_stop), INF)


def _smallest(block, count):
    """The ``count`` smallest scores of each row, ascending (inf pads short rows)."""
    count = min(count, block.shape[1])
    return torch.topk(block, count, dim=1, largest=False, sorted=True).values.contiguous()


def _closer_in_window(scores, block, first_row, row, positive_column, low, high):
    """For each open (query, same-label item) pair: the other-label items of
    ``block`` scored in ``[low, high]`` that are strictly closer in float64.

    ``block`` holds rows ``first_row + row`` with same-label entries at inf;
    the counts come from this one float32 scoring, as the counts below
    ``low`` do (mixing two scorings could count an item twice or never).
    Ties in float64 favour the same-label item.
    """
    open_rows, entry_row = torch.unique(row, return_inverse=True)
    row_low = torch.full((len(open_rows),), INF, device=block.device).scatter_reduce(
        0, entry_row, low, reduce="amin")
    row_high = torch.full((len(open_rows),), -INF, device=block.device).scatter_reduce(
        0, entry_row, high, reduce="amax")
    window = block[open_rows]
    pair_row, pair_column = ((window >= row_low[:, None]) & (window <= row_high[:, None])).nonzero(
        as_tuple=True)
    pair_float32 = window[pair_row, pair_column]
    pair_exact = exact_scores(scores, first_row + open_rows[pair_row], pair_column, EXACT_CHUNK_ELEMENTS)
    positive_exact = exact_scores(scores, first_row + row, positive_column, EXACT_CHUNK_ELEMENTS)
    # Each entry against every window item of its row (pairs are in row order).
    pair_start = torch.searchsorted(pair_row, entry_row, right=False)
    pair_count = torch.searchsorted(pair_row, entry_row, right=True) - pair_start
    entry = torch.repeat_interleave(torch.arange(len(row), device=block.device), pair_count)
    offset = torch.cumsum(pair_count, 0) - pair_count
    pair = pair_start[entry] + torch.arange(len(entry), device=block.device) - offset[entry]
    is_closer = ((pair_float32[pair] >= low[entry]) & (pair_float32[pair] <= high[entry])
                 & (pair_exact[pair] < positive_exact[entry]))
    return torch.bincount(entry[is_closer], minlength=len(row))


def _precisions(closer, r):
    """AP@R, R-precision and hit at 1 from the ``c_j`` (any order) and R."""
    closer = torch.sort(closer, dim=1).values
    j = torch.arange(1, closer.shape[1] + 1, device=closer.device)
    rank = j + closer
    among_r = rank <= r[:, None]
    reciprocal = torch.where(among_r, j.double() / rank.double(), 0.0)
    per_r = r.clamp(min=1).double()
    first_hit = closer[:, 0] == 0 if closer.shape[1] else torch.zeros_like(r, dtype=torch.bool)
    return reciprocal.sum(1) / per_r, among_r.sum(1).double() / per_r, first_hit & (r > 0)
