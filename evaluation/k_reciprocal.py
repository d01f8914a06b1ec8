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

from evaluation.neighbours import k_smallest_per_row, nearest_neighbours
from evaluation.scores import SquaredEuclidean, exact_scores

# Queries whose graphs are built together (bounds the (chunk, k1, k1/2) tables).
QUERY_CHUNK = 2048
# Bound on the (chunk, items) map of table places: fewer queries per chunk for many items.
POSITION_MAP_ELEMENTS = 2 ** 24
# Expansion overlap rule: a candidate's k1/2-reciprocal set joins when more
# than this share of it lies in the query's k1-reciprocal set.
OVERLAP_SHARE = 2 / 3
# Ranks of the entries that may fill a graph, in the order they fill it.
IN_TABLE, BEYOND_TABLE, PADDING, NOT_TAKEN = range(4)


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


def k_reciprocal_batches_inshop(query, gallery, batch_size, k1=30, block_size=512, query_self=None):
    """``LongTensor[num_query, batch_size - 1]`` of gallery indices: query i's graph
    is query i followed by these gallery items (``KReciprocalSamplerInshop``).

    Query i and gallery item g are k1-reciprocal when each is among the
    other's k1 + 1 nearest of the other set; the expansion uses the gallery
    items' k1/2-reciprocal sets within the gallery. ``query_self`` (per
    query, the gallery index of its own image, or -1) is in no query's graph
    and no query's neighbour, nor the query its copy's.
    """
    size = batch_size - 1
    own, copy_of = _own_copies(query_self, len(query), len(gallery), query.device)
    has_copy = int((own >= 0).any())
    _check_enough_items(len(gallery) - has_copy, size, "gallery")
    gallery = gallery.to(query.device)
    table = nearest_neighbours(query, gallery, min(len(gallery) - has_copy, max(k1 + 1, size)), exclude=own,
                               block_size=block_size)
    forward = table[0][:, :k1 + 1]
    backward, _ = nearest_neighbours(gallery, query, min(len(query) - has_copy, k1 + 1), exclude=copy_of,
                                     block_size=block_size)
    gallery_table, _ = nearest_neighbours(gallery, gallery, min(len(gallery), half_k(k1) + 1),
                                          block_size=block_size, self_first=True)
    half = _half_reciprocal_sets(gallery_table, k1)
    return _graphs(table, forward, _reciprocal(forward, backward), half,
                   SquaredEuclidean(query.float(), gallery.float()), size, own)


def _own_copies(query_self, num_queries, num_gallery, device):
    """``(own, copy_of)``: per query its gallery copy, per gallery item the query it copies (-1: none)."""
    own = torch.full((num_queries,), -1, dtype=torch.int64, device=device)
    copy_of = torch.full((num_gallery,), -1, dtype=torch.int64, device=device)
    if query_self is not None:
        own = torch.as_tensor(query_self, dtype=torch.int64).to(device)
        has_copy = (own >= 0).nonzero(as_tuple=True)[0]
        copy_of[own[has_copy]] = has_copy
    return own, copy_of


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


def _graphs(table, forward, reciprocal, half, scores, size, own=None):
    """``[num_queries, size]`` item indices, chunk of queries by chunk; ``own`` (per query an
    item index or -1) is kept out of the query's graph.

    Each chunk marks its queries' table places in a (chunk, items) map, so
    a chunk holds at most ``POSITION_MAP_ELEMENTS`` queries times items.
    """
    table_ids, num_items = table[0], len(half[0])
    chunk = max(1, min(QUERY_CHUNK, POSITION_MAP_ELEMENTS // max(1, num_items)))
    place_dtype = torch.int16 if table_ids.shape[1] < torch.iinfo(torch.int16).max else torch.int32
    places = torch.zeros(min(chunk, len(table_ids)), num_items, dtype=place_dtype, device=table_ids.device)
    return torch.cat([
        _chunk_graphs(rows, table_ids[rows], forward[rows], reciprocal[rows], half, scores, size,
                      places[:len(rows)], None if own is None else own[rows])
        for rows in torch.arange(len(forward), device=forward.device).split(chunk)
    ])


def _chunk_graphs(rows, table_ids, forward, reciprocal, half, scores, size, places, own=None):
    """Graphs of the queries ``rows``: expansion sorted by distance, cut, then padding.

    A query's table row holds its nearest items in (distance, index) order,
    so the expansion's items in the table come first, in table order, and
    only those beyond the table (rare) need their distances. Items of the
    table's first ``size`` outside the expansion pad the graph. ``places``
    is an all-zero (len(rows), items) map, left all zero.
    """
    num_items = len(half[0])
    # places[i, item] = 1 + the item's place in query i's table row, 0 if absent.
    numbers = torch.arange(1, table_ids.shape[1] + 1, dtype=places.dtype, device=rows.device)
    places.scatter_(1, table_ids, numbers.expand_as(table_ids))
    in_expansion, beyond_row, beyond_item = _expansion(table_ids, forward, reciprocal, half, places)
    places.scatter_(1, table_ids, 0)
    if own is not None:  # the table already lacks the query's own copy; the expansion may bring it back
        kept = beyond_item != own[beyond_row]
        beyond_row, beyond_item = beyond_row[kept], beyond_item[kept]
    beyond_ids, beyond_valid = _nearest_beyond_table(rows, beyond_row, beyond_item, scores, size, num_items)
    candidates = torch.cat([table_ids, beyond_ids, table_ids[:, :size]], 1)
    # Groups in the order they fill a graph; NOT_TAKEN entries never do (there are enough others).
    group = torch.cat([torch.where(in_expansion, IN_TABLE, NOT_TAKEN),
                       torch.where(beyond_valid, BEYOND_TABLE, NOT_TAKEN),
                       torch.where(in_expansion[:, :size], NOT_TAKEN, PADDING)], 1)
    first = torch.sort(group, dim=1, stable=True).indices[:, :size]
    return candidates.gather(1, first)


def _expansion(table_ids, forward, reciprocal, half, places):
    """The k-reciprocal expansion of each query: ``(in_expansion, beyond_row, beyond_item)``,
    which table entries belong to it and the (query row, item) pairs of those beyond the
    table (may repeat). ``places`` maps (query row, item) to 1 + its table place, or 0.

    A k1-reciprocal neighbour c adds its k1/2-reciprocal set when more than
    2/3 of that set is k1-reciprocal with the query.
    """
    half_ids, half_member = half
    num_queries, num_forward = forward.shape
    members = half_member[forward] & reciprocal[:, :, None]
    member_ids = half_ids[forward]
    place = places.gather(1, member_ids.view(num_queries, -1)).view(member_ids.shape).long() - 1
    in_table = place >= 0
    reciprocal_place = reciprocal.gather(1, place.clamp(0, num_forward - 1).view(num_queries, -1))
    in_reciprocal = in_table & (place < num_forward) & reciprocal_place.view(member_ids.shape)
    overlap, set_size = (in_reciprocal & members).sum(-1), members.sum(-1)
    expands = reciprocal & (overlap.double() > OVERLAP_SHARE * set_size.double())
    joins = members & expands[:, :, None]
    num_places = table_ids.shape[1]
    # The extra last column takes the marks of the entries that mark nothing.
    marked = torch.zeros(num_queries, num_places + 1, dtype=torch.bool, device=forward.device)
    marked[:, :num_forward] = reciprocal
    marked.scatter_(1, torch.where(joins & in_table, place, num_places).view(num_queries, -1), True)
    beyond_row, beyond_candidate, beyond_slot = (joins & ~in_table).nonzero(as_tuple=True)
    return marked[:, :num_places], beyond_row, member_ids[beyond_row, beyond_candidate, beyond_slot]


def _nearest_beyond_table(rows, beyond_row, beyond_item, scores, size, num_items):
    """``(ids, valid)``, each ``[len(rows), size]``: per query, the nearest ``size`` of its
    expansion items beyond its table, by (float64 distance, index)."""
    stride = num_items + 1
    pairs = torch.unique(beyond_row * stride + beyond_item)  # sorted by row, then item
    row, item = pairs // stride, pairs % stride
    ids, _, valid = k_smallest_per_row(row, item, exact_scores(scores, rows[row], item), len(rows), size)
    return ids, valid
