"""Exact, blockwise "is a same-label item among the K nearest?" for every query.

Recall@K needs no list of neighbours: a query is a hit at K iff fewer than K
other-label items are strictly closer than its closest same-label item.
Tie rule: an other-label item exactly as close as the closest same-label
item does not count, i.e. ties are broken in favour of the same-label item.
(The authors' unstable ``np.argsort`` breaks such ties arbitrarily; the
golden fixtures have none.) A query without any same-label item other than
itself is a miss at every K.

Queries are scored one block at a time, so memory grows with
``block_size * num_items``, never with ``num_items ** 2``. Queries and items
are sorted by label, so a block's same-label items form one narrow band.
For each query the float32 scores give the other-label items surely closer
and those possibly closer (within the float32 error bound of
``evaluation.scores``). Only where that uncertainty changes a hit at one of
the requested K are the items in the uncertain window re-scored in float64.

When the queries are the items and the score is symmetric, each pair is
scored once: blocks hold whole classes (so each block's same-label items lie
in its own diagonal tile), block ``i`` scores columns ``i..n`` and counts
both for its rows and for the later queries of those columns, whose
thresholds are known because blocks run from last to first.
"""
import numpy as np
import torch

from evaluation.scores import exact_scores, ieee_float32_matmul

# Float64 re-scoring works through the candidate pairs in chunks of this many
# vector elements (512 KiB per operand): small enough to stay in cache.
EXACT_CHUNK_ELEMENTS = 1 << 16
INF = float("inf")
# Narrow integer sums of boolean masks stay exact over at most this many terms.
UINT8_MAX, UINT16_MAX = 255, 65_535
# Scores counted per step on CPU (1 MiB of float32): they stay in cache.
CACHED_BLOCK_ELEMENTS = 1 << 18


def sorted_by_label(items, item_labels, queries=None, query_labels=None):
    """Items and queries in stable label order (float32, on the items' device), with the orders that undo it.

    ``((items, labels, order), (queries, labels, order), queries_are_items)``; without
    ``queries`` every item is a query and the two are the same tensors.
    """
    device = items.device
    item_labels, item_order = torch.sort(item_labels.to(device), stable=True)
    items = items.float()[item_order]
    if queries is None:
        return (items, item_labels, item_order), (items, item_labels, item_order), True
    query_labels, query_order = torch.sort(query_labels.to(device), stable=True)
    queries = queries.to(device).float()[query_order]
    return (items, item_labels, item_order), (queries, query_labels, query_order), False


def same_label_hits(score_kind, items, item_labels, ks, block_size, queries=None,
                    query_labels=None, query_self=None):
    """``(num_queries, len(ks))`` bool: is query i a hit at ``ks[j]``?

    ``score_kind`` is ``SquaredEuclidean`` or ``NegativeCosine`` (lower
    scores are closer). Without ``queries``, every item is a query against
    all other items and never counts itself: it is excluded by its index, so
    a duplicated embedding cannot take its place. With ``queries``,
    ``query_self`` optionally gives per query the index of the item that is
    the query's own image (or -1), excluded the same way.
    """
    device = items.device
    (items, item_labels, item_order), (queries, query_labels, query_order), queries_are_items = \
        sorted_by_label(items, item_labels, queries, query_labels)
    ks = torch.as_tensor(list(ks), device=device)

    with ieee_float32_matmul(), torch.no_grad():
        scores = score_kind(queries, items)
        labels = _SortedLabels(query_labels, item_labels,
                               sorted_self_columns(queries_are_items, query_self, query_order, item_order))
        memory = _BlockMemory(min(block_size, len(queries)) * len(items), device)
        class_blocks = _class_aligned_blocks(labels, block_size)
        if queries_are_items and scores.symmetric and class_blocks is not None:
            window = _count_closer_each_pair_once(scores, labels, class_blocks, memory)
        else:
            window = _count_closer_row_by_row(scores, labels, block_size, memory)
        has_positive, low, high, surely_closer, possibly_closer = window
        hits = possibly_closer[:, None] < ks
        undecided = (hits != (surely_closer[:, None] < ks)).any(1).nonzero(as_tuple=True)[0]
        if len(undecided):
            closer = _exact_closer_counts(scores, labels, undecided, low[undecided],
                                          high[undecided], block_size, memory)
            hits[undecided] = closer[:, None] < ks
        hits &= has_positive[:, None]
    in_query_order = torch.empty_like(hits)
    in_query_order[query_order] = hits
    return in_query_order


class _BlockMemory:
    """Flat buffers every block reuses: its float32 scores and, on CPU, its
    comparison mask. A freshly allocated block is paged in again 4 KiB at a
    time, which at CUB size costs about a sixth of the whole evaluation."""

    def __init__(self, num_elements, device):
        self.scores = torch.empty(num_elements, device=device)
        self.mask = np.empty(num_elements, dtype=bool) if device.type == "cpu" else None

    def mask_like(self, values):
        return self.mask[:values.size].reshape(values.shape)


def sorted_self_columns(queries_are_items, query_self, query_order, item_order):
    """Per sorted query, the sorted item column of its own image (-1: none); None when no query has one.

    ``query_self`` indexes the items in their given order, for the queries in theirs.
    """
    if queries_are_items:
        return torch.arange(len(item_order), device=item_order.device)
    if query_self is None:
        return None
    query_self = torch.as_tensor(query_self, dtype=torch.int64).to(item_order.device)[query_order]
    if not (query_self >= 0).any():
        return None
    sorted_column = torch.empty_like(item_order)
    sorted_column[item_order] = torch.arange(len(item_order), device=item_order.device)
    return torch.where(query_self >= 0, sorted_column[query_self.clamp(min=0)], -1)


class _SortedLabels:
    """Labels of queries and items, both sorted: query i's same-label items
    are the item columns ``positive_start[i]:positive_end[i]``; ``self_columns``
    (or None) the column of query i's own image, -1 for none."""

    def __init__(self, query_labels, item_labels, self_columns=None):
        self.query_labels, self.item_labels = query_labels, item_labels
        self.positive_start = torch.searchsorted(item_labels, query_labels, right=False)
        self.positive_end = torch.searchsorted(item_labels, query_labels, right=True)
        self.self_columns = self_columns

    @property
    def exclude_self(self):
        return self.self_columns is not None

    def own_columns(self, queries):
        """``(rows, columns)``: the positions in ``queries`` that have their own image, and its column."""
        own = self.self_columns[queries]
        rows = (own >= 0).nonzero(as_tuple=True)[0]
        return rows, own[rows]

    def same_label_mask(self, rows, column_start, column_stop):
        """Same-label entries (self included) of ``block[rows, column_start:column_stop]``."""
        columns = self.item_labels[column_start:column_stop]
        return self.query_labels[rows, None] == columns[None, :]

    def hide_self_in(self, scores, row_start, column_start):
        """In place, the query's own score in ``scores[rows, columns]`` becomes inf
        (the rows start at query ``row_start``, the columns at item ``column_start``)."""
        if self.exclude_self:
            rows, columns = self.own_columns(torch.arange(row_start, row_start + len(scores),
                                                          device=self.self_columns.device))
            columns = columns - column_start
            inside = (columns >= 0) & (columns < scores.shape[1])
            scores[rows[inside], columns[inside]] = INF


def _class_aligned_blocks(labels, block_size):
    """Query blocks of at most ``block_size`` that never split a class, or None
    when some class is larger than ``block_size``."""
    _, class_sizes = torch.unique_consecutive(labels.query_labels, return_counts=True)
    if len(class_sizes) == 0 or class_sizes.max().item() > block_size:
        return None
    class_ends = torch.cumsum(class_sizes, 0).tolist()
    blocks, start = [], 0
    while start < len(labels.query_labels):
        stop_index = int(np.searchsorted(class_ends, start + block_size, side="right")) - 1
        blocks.append((start, class_ends[stop_index]))
        start = class_ends[stop_index]
    return blocks


def _count_closer_row_by_row(scores, labels, block_size, memory):
    """Every query block against all items; the rows hold their own same-label items."""
    num_queries = len(labels.query_labels)
    best_positive = torch.empty(num_queries, device=labels.query_labels.device)
    surely_closer = torch.empty(num_queries, dtype=torch.int64, device=best_positive.device)
    possibly_closer = torch.empty_like(surely_closer)
    no_columns = best_positive[:0]
    for start in range(0, num_queries, block_size):
        rows = slice(start, min(start + block_size, num_queries))
        block = scores.block(rows, buffer=memory.scores)
        band_start = labels.positive_start[rows].min().item()
        band_stop = max(labels.positive_end[rows].max().item(), band_start)
        best_positive[rows] = _take_same_label(block[:, band_start:band_stop], labels, rows,
                                               band_start)
        _, low, high = _window(best_positive[rows], scores.error_bounds[rows])
        surely_closer[rows], possibly_closer[rows], _, _ = _count_below(
            block, low, high, no_columns, no_columns, memory)
    has_positive, low, high = _window(best_positive, scores.error_bounds)
    return has_positive, low, high, surely_closer, possibly_closer


def _count_closer_each_pair_once(scores, labels, class_blocks, memory):
    """Symmetric scores, queries = items: block ``[start, stop)`` scores columns
    ``start..n`` only; blocks run from last to first (see the module docstring)."""
    num_queries = len(labels.query_labels)
    best_positive = torch.empty(num_queries, device=labels.query_labels.device)
    low, high = torch.empty_like(best_positive), torch.empty_like(best_positive)
    surely_closer = torch.zeros(num_queries, dtype=torch.int64, device=best_positive.device)
    possibly_closer = torch.zeros_like(surely_closer)
    for start, stop in reversed(class_blocks):
        rows, later = slice(start, stop), slice(stop, num_queries)
        block = scores.block(rows, slice(start, num_queries), memory.scores)
        # Whole classes per block: the rows' same-label items are all in the diagonal tile.
        best_positive[rows] = _take_same_label(block[:, :stop - start], labels, rows, start)
        _, low[rows], high[rows] = _window(best_positive[rows], scores.error_bounds[rows])
        row_low, row_high, column_low, column_high = _count_below(
            block, low[rows], high[rows], low[later], high[later], memory)
        surely_closer[rows] += row_low
        possibly_closer[rows] += row_high
        surely_closer[later] += column_low
        possibly_closer[later] += column_high
    return torch.isfinite(best_positive), low, high, surely_closer, possibly_closer


def _take_same_label(band, labels, rows, band_start):
    """Closest same-label score of each row (the query itself excluded), or inf;
    then, in place, every same-label entry of ``band`` (the query included) becomes inf."""
    is_same_label = labels.same_label_mask(rows, band_start, band_start + band.shape[1])
    labels.hide_self_in(band, rows.start, band_start)
    best_positive = _row_minimum(torch.where(is_same_label, band, INF))
    band.masked_fill_(is_same_label, INF)
    return best_positive


def _window(best_positive, error_bounds):
    """The scores ``[low, high]`` whose order against the closest same-label item
    float32 cannot tell (empty, -inf, without one). Both the entry and the
    closest same-label score carry float32 error, hence twice the bound."""
    has_positive = torch.isfinite(best_positive)
    low = torch.where(has_positive, best_positive - 2.0 * error_bounds, -INF)
    high = torch.where(has_positive, best_positive + 2.0 * error_bounds, -INF)
    return has_positive, low, high


def _row_minimum(values):
    if values.shape[1] == 0:
        return torch.full((len(values),), INF, dtype=values.dtype, device=values.device)
    return values.amin(1)


def _count_below(block, low, high, column_low, column_high, memory):
    """Per row, entries ``< low`` and ``<= high``; per trailing column, the same
    against ``column_low`` / ``column_high`` (the columns' own queries)."""
    if block.device.type == "cpu":
        values = block.numpy()
        counts = _count_below_numpy(values, low.numpy(), high.numpy(), column_low.numpy(),
                                    column_high.numpy(), memory.mask_like(values))
        return tuple(torch.from_numpy(count) for count in counts)
    return _count_below_torch(block, low, high, column_low, column_high)


def _count_below_torch(block, low, high, column_low, column_high):
    """``_count_below`` in torch operations, for blocks on a GPU."""
    block_tail = block[:, block.shape[1] - len(column_low):]
    return ((block < low[:, None]).sum(1), (block <= high[:, None]).sum(1),
            (block_tail < column_low).sum(0), (block_tail <= column_high).sum(0))


def _count_below_numpy(values, low, high, column_low, column_high, mask):
    """``_count_below`` on CPU. Torch's integer sums of boolean masks are several
    times slower than numpy's comparisons into the reused ``mask`` followed by
    sums in the narrowest integer type that cannot overflow. A few rows at a
    time, so that the four comparisons of an entry find it in cache."""
    tail = values.shape[1] - len(column_low)
    row_below_low, row_up_to_high = np.empty((2, len(values)), dtype=np.int64)
    column_below_low, column_up_to_high = np.zeros((2, len(column_low)), dtype=np.int64)
    step = max(1, CACHED_BLOCK_ELEMENTS // max(1, values.shape[1]))
    for start in range(0, len(values), step):
        rows = slice(start, start + step)
        chunk, chunk_mask = values[rows], mask[rows]
        np.less(chunk, low[rows, None], out=chunk_mask)
        row_below_low[rows] = _row_counts(chunk_mask)
        np.less_equal(chunk, high[rows, None], out=chunk_mask)
        row_up_to_high[rows] = _row_counts(chunk_mask)
        chunk, chunk_mask = chunk[:, tail:], chunk_mask[:, tail:]
        np.less(chunk, column_low, out=chunk_mask)
        column_below_low += _column_counts(chunk_mask)
        np.less_equal(chunk, column_high, out=chunk_mask)
        column_up_to_high += _column_counts(chunk_mask)
    return row_below_low, row_up_to_high, column_below_low, column_up_to_high


def _row_counts(mask):
    """True entries per row: uint16 sums over at most 65,535 columns at a time."""
    as_bytes, counts = mask.view(np.uint8), np.zeros(len(mask), dtype=np.int64)
    for start in range(0, mask.shape[1], UINT16_MAX):
        counts += np.add.reduce(as_bytes[:, start:start + UINT16_MAX], axis=1, dtype=np.uint16)
    return counts


def _column_counts(mask):
    """True entries per column: uint8 sums over at most 255 rows at a time."""
    as_bytes, counts = mask.view(np.uint8), np.zeros(mask.shape[1], dtype=np.int64)
    for start in range(0, len(mask), UINT8_MAX):
        counts += np.add.reduce(as_bytes[start:start + UINT8_MAX], axis=0, dtype=np.uint8)
    return counts


def _exact_closer_counts(scores, labels, queries, low, high, block_size, memory):
    """Other-label items exactly closer than the closest same-label item, for ``queries``.

    The rows are scored again: below ``low`` an item is surely closer, and the
    items scoring in ``[low, high]`` are compared in float64. The count comes
    from this scoring alone; mixing it with another float32 scoring of the
    same pairs could count an item twice or never.
    """
    closer = torch.empty(len(queries), dtype=torch.int64, device=queries.device)
    for start in range(0, len(queries), block_size):
        rows = slice(start, start + block_size)
        block_queries = queries[rows]
        block = scores.block(block_queries, buffer=memory.scores)
        if labels.exclude_self:
            block[labels.own_columns(block_queries)] = INF
        best_positive = _exact_closest_same_label(scores, labels, block_queries, block)
        surely_closer = (block < low[rows, None]).sum(1)
        row, column = ((block >= low[rows, None]) & (block <= high[rows, None])).nonzero(
            as_tuple=True)
        other_label = labels.query_labels[block_queries[row]] != labels.item_labels[column]
        row, column = row[other_label], column[other_label]
        is_closer = exact_scores(scores, block_queries[row], column, EXACT_CHUNK_ELEMENTS) < best_positive[row]
        closer[rows] = surely_closer + torch.bincount(row[is_closer], minlength=len(block))
    return closer


def _exact_closest_same_label(scores, labels, queries, block):
    """Float64 score of the closest same-label item (not the query itself) of
    ``queries``, whose float32 scores are the rows of ``block``.

    Each float32 score is within its row's error bound of the exact one, so an
    item scoring more than twice the bound above the row's smallest cannot be
    the closest; only the others are scored in float64.
    """
    starts, ends = labels.positive_start[queries], labels.positive_end[queries]
    row = torch.repeat_interleave(torch.arange(len(queries), device=queries.device), ends - starts)
    first_of_row = torch.cumsum(ends - starts, 0) - (ends - starts)
    column = starts[row] + torch.arange(len(row), device=row.device) - first_of_row[row]
    if labels.exclude_self:
        not_self = column != labels.self_columns[queries][row]
        row, column = row[not_self], column[not_self]
    approximate = block[row, column]
    nearest = torch.full((len(queries),), INF, device=block.device).scatter_reduce(
        0, row, approximate, reduce="amin")
    may_be_closest = approximate <= nearest[row] + 2.0 * scores.error_bounds[queries][row]
    row, column = row[may_be_closest], column[may_be_closest]
    best_positive = torch.full((len(queries),), INF, dtype=torch.float64, device=queries.device)
    return best_positive.scatter_reduce(0, row, exact_scores(scores, queries[row], column, EXACT_CHUNK_ELEMENTS),
                                        reduce="amin")
