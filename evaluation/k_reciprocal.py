"""Test-time graphs of k-reciprocal neighbours (the authors' ``pseudo_test``).

Every query gets a small graph: its k-reciprocal nearest neighbours (k1),
expanded by the k1/2-reciprocal sets of those neighbours that share more
than 2/3 of their members with it, sorted by distance to the query, cut to
the graph size and padded with the query's plain nearest neighbours. This is
the authors' ``KReciprocalSampler`` (and ``KReciprocalSamplerInshop``),
computed from tables of exact nearest neighbours (``evaluation.neighbours``)
instead of an n x n distance matrix and its full argsort, with every step a
tensor operation over all queries of a chunk instead of a Python loop.

Distances are squared Euclidean, as theirs. Ties (equal distances) are
broken by item index, and an item is its own first neighbour (the authors'
unstable argsort breaks ties arbitrarily).
"""
import torch

from evaluation.neighbours import exact_scores, nearest_neighbours
from evaluation.scores import SquaredEuclidean

# Queries whose graphs are built together (bounds the (chunk, k1, k1/2) tables).
QUERY_CHUNK = 2048
# Expansion overlap rule: a candidate's k1/2-reciprocal set joins when more
# than this share of it lies in the query's k1-reciprocal set.
OVERLAP_SHARE = 2 / 3
INF = float("inf")


def half_k(k1):
    """The authors' ``int(np.around(k1 / 2))``: both round halves to even."""
    return int(round(k1 / 2))


def k_reciprocal_batches(embeddings, batch_size, k1=30, block_size=512):
    """``LongTensor[n, batch_size]``: row i is item i's graph, item i first.

    Items of the test set against each other (CUB, Cars, SOP), the authors'
    ``KReciprocalSampler`` with ``bs = batch_size``.
    """
    num_items = len(embeddings)
    _check_enough_items(num_items, batch_size, "test set")
    table = nearest_neighbours(embeddings, embeddings, min(num_items, max(k1 + 1, batch_size)),
                               block_size=block_size, self_first=True)
    forward = table[0][:, :k1 + 1]
    half = _half_reciprocal_sets(table[0], k1)
    return _graphs(table, forward, _reciprocal(forward, forward), half,
                   SquaredEuclidean(embeddings.float(), embeddings.float()), batch_size)


def k_reciprocal_batches_inshop(query, gallery, batch_size, k1=30, block_size=512):
    """``LongTensor[num_query, batch_size - 1]`` of gallery indices: query i's graph
    is query i followed by these gallery items (``KReciprocalSamplerInshop``).

    Query i and gallery item g are k1-reciprocal when each is among the
    other's k1 + 1 nearest of the other set; the expansion uses the gallery
    items' k1/2-reciprocal sets within the gallery.
    """
    size = batch_size - 1
    _check_enough_items(len(gallery), size, "gallery")
    gallery = gallery.to(query.device)
    table = nearest_neighbours(query, gallery, min(len(gallery), max(k1 + 1, size)), block_size=block_size)
    forward = table[0][:, :k1 + 1]
    backward, _ = nearest_neighbours(gallery, query, min(len(query), k1 + 1), block_size=block_size)
    gallery_table, _ = nearest_neighbours(gallery, gallery, min(len(gallery), half_k(k1) + 1),
                                          block_size=block_size, self_first=True)
    half = _half_reciprocal_sets(gallery_table, k1)
    return _graphs(table, forward, _reciprocal(forward, backward), half,
                   SquaredEuclidean(query.float(), gallery.float()), size)


def _check_enough_items(num_items, size, what):
    if num_items < size:
        raise ValueError(f"graphs of {size} items need at least {size} items in the {what}, "
                         f"which has {num_items}")


def _reciprocal(forward, backward):
    """``bool[num_queries, k]``: is query i among the ``backward`` neighbours of ``forward[i, a]``?"""
    queries = torch.arange(len(forward), device=forward.device)
    return torch.cat([
        (backward[forward[rows]] == queries[rows, None, None]).any(-1)
        for rows in torch.arange(len(forward), device=forward.device).split(QUERY_CHUNK)
    ]) if len(forward) else torch.zeros_like(forward, dtype=torch.bool)


def _half_reciprocal_sets(item_table, k1):
    """``(ids, member)``: every item's k1/2 + 1 nearest items (itself first) and which
    of them are k1/2-reciprocal with it (the authors' ``cand_reciprocal``)."""
    ids = item_table[:, :half_k(k1) + 1]
    return ids, _reciprocal(ids, ids)


def _graphs(table, forward, reciprocal, half, scores, size):
    """``[num_queries, size]`` item indices, chunk of queries by chunk."""
    return torch.cat([
        _chunk_graphs(rows, table, forward[rows], reciprocal[rows], half, scores, size)
        for rows in torch.arange(len(forward), device=forward.device).split(QUERY_CHUNK)
    ])


def _chunk_graphs(rows, table, forward, reciprocal, half, scores, size):
    """Graphs of the queries ``rows``: expansion sorted by distance, cut, then padding."""
    expansion = _expansion(forward, reciprocal, half, num_items=len(half[0]))
    distances = _distances_to_query(rows, expansion, table, scores)
    # ``expansion`` is sorted by index along each row: a stable sort gives (distance, index) order.
    order = torch.sort(distances, dim=1, stable=True).indices
    closest = expansion.gather(1, order)[:, :size]
    num_taken = (expansion < len(half[0])).sum(1).clamp(max=size)
    taken = torch.arange(closest.shape[1], device=rows.device) < num_taken[:, None]
    nearest = table[0][rows, :size]
    in_graph = ((nearest[:, :, None] == closest[:, None, :]) & taken[:, None, :]).any(-1)
    padding = ~in_graph & (torch.cumsum(~in_graph, 1) <= (size - num_taken)[:, None])
    candidates, chosen = torch.cat([closest, nearest], 1), torch.cat([taken, padding], 1)
    first_chosen = torch.sort((~chosen).to(torch.int8), dim=1, stable=True).indices[:, :size]
    return candidates.gather(1, first_chosen)


def _expansion(forward, reciprocal, half, num_items):
    """Per query, the sorted distinct items of its k-reciprocal expansion; ``num_items``
    (larger than every index) fills the rest of the row.

    A k1-reciprocal neighbour c adds its k1/2-reciprocal set when more than
    2/3 of that set is k1-reciprocal with the query.
    """
    half_ids, half_member = half
    reciprocal_ids = torch.where(reciprocal, forward, -1).sort(1).values
    candidate_ids, candidate_member = half_ids[forward], half_member[forward]
    in_reciprocal = _is_in(candidate_ids.flatten(1), reciprocal_ids).view(candidate_ids.shape)
    overlap = (in_reciprocal & candidate_member).sum(-1)
    set_size = candidate_member.sum(-1)
    expands = reciprocal & (overlap.double() > OVERLAP_SHARE * set_size.double())
    joins = candidate_member & expands[:, :, None]
    ids = torch.cat([torch.where(reciprocal, forward, num_items),
                     torch.where(joins, candidate_ids, num_items).flatten(1)], 1).sort(1).values
    repeated = torch.zeros_like(ids, dtype=torch.bool)
    repeated[:, 1:] = ids[:, 1:] == ids[:, :-1]
    return torch.where(repeated, num_items, ids).sort(1).values


def _is_in(values, sorted_sets):
    """``values[i, j] in sorted_sets[i]`` for every entry (rows of ``sorted_sets`` ascending)."""
    position = torch.searchsorted(sorted_sets, values).clamp(max=sorted_sets.shape[1] - 1)
    return sorted_sets.gather(1, position) == values


def _distances_to_query(rows, expansion, table, scores):
    """Float64 squared distance of each expansion item to its query (inf for fill):
    from the neighbour table where it holds the item, else computed."""
    table_ids, table_order = table[0][rows].sort(1)
    table_distances = table[1][rows].gather(1, table_order)
    num_items = scores.items.shape[0]
    valid = expansion < num_items
    in_table = _is_in(expansion, table_ids) & valid
    position = torch.searchsorted(table_ids, expansion).clamp(max=table_ids.shape[1] - 1)
    distances = torch.where(in_table, table_distances.gather(1, position), INF)
    row, column = (valid & ~in_table).nonzero(as_tuple=True)
    distances[row, column] = exact_scores(scores, rows[row], expansion[row, column])
    return distances

