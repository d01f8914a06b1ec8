"""Issue 14: test-time k-reciprocal graphs against a plain re-statement of the authors' sampler.

The re-statement below follows ``KReciprocalSampler.__iter__`` and
``KReciprocalSamplerInshop.__iter__`` of the authors' combine_sampler.py
step by step, one query at a time, on a full n x n distance matrix. Its
only liberties are the tie rule ours documents: distances in float64
(differences first), each row sorted stably (ties by index) with the query
itself first. The random test data have no ties except the duplicates
made on purpose.
"""
import numpy as np
import pytest
import torch

from evaluation import k_reciprocal, k_reciprocal_batches, k_reciprocal_batches_inshop
from evaluation.neighbours import nearest_neighbours


def distance_matrix(queries, items):
    differences = queries[:, None, :].astype(np.float64) - items[None, :, :].astype(np.float64)
    return (differences ** 2).sum(-1)


def sorted_rows(distances, self_first):
    """Every row's items by distance, ties by index; the query first with ``self_first``."""
    distances = distances.copy()
    if self_first:
        np.fill_diagonal(distances, -np.inf)
    return np.argsort(distances, axis=1, kind="stable"), distances


def reciprocal_set(query, forward_order, backward_order, k):
    forward = forward_order[query, :k + 1]
    backward = backward_order[forward, :k + 1]
    return forward[np.where(backward == query)[0]]


def expanded_graph(query, order, distances, backward_order, item_order, k1, size):
    """The authors' loop body for one query: reciprocal set, expansion, sort, cut, padding."""
    reciprocal = reciprocal_set(query, order, backward_order, k1)
    expansion = reciprocal
    half = int(np.around(k1 / 2))
    for candidate in reciprocal:
        candidate_set = reciprocal_set(candidate, item_order, item_order, half)
        if len(np.intersect1d(candidate_set, reciprocal)) > 2 / 3 * len(candidate_set):
            expansion = np.append(expansion, candidate_set)
    expansion = np.unique(expansion)
    graph = expansion[np.argsort(distances[query, expansion], kind="stable")[:size]].tolist()
    position = 0
    while len(graph) < size:
        if order[query, position] not in graph:
            graph.append(order[query, position])
        position += 1
    return graph


def restated_batches(embeddings, size, k1):
    order, distances = sorted_rows(distance_matrix(embeddings, embeddings), self_first=True)
    return np.array([expanded_graph(i, order, distances, order, order, k1, size)
                     for i in range(len(embeddings))])


def restated_batches_inshop(query, gallery, size, k1):
    order, distances = sorted_rows(distance_matrix(query, gallery), self_first=False)
    backward_order, _ = sorted_rows(distance_matrix(gallery, query), self_first=False)
    gallery_order, _ = sorted_rows(distance_matrix(gallery, gallery), self_first=True)
    return np.array([expanded_graph(i, order, distances, backward_order, gallery_order, k1, size - 1)
                     for i in range(len(query))])


def clustered_embeddings(num_items, dim, seed, num_clusters=6):
    """Gaussian clusters, so that reciprocal sets are large and the expansion happens."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim)) * 2.0
    return (centres[rng.integers(num_clusters, size=num_items)]
            + rng.normal(size=(num_items, dim))).astype(np.float32)


@pytest.mark.parametrize("num_items, dim, size, k1, seed", [
    (40, 8, 7, 30, 0), (120, 16, 7, 30, 1), (257, 32, 7, 30, 2), (300, 12, 9, 10, 3),
    (90, 6, 4, 5, 4), (64, 16, 40, 30, 5),
])
def test_batches_equal_the_restated_authors_sampler(num_items, dim, size, k1, seed):
    embeddings = clustered_embeddings(num_items, dim, seed)
    ours = k_reciprocal_batches(torch.from_numpy(embeddings), size, k1=k1, block_size=50)
    expected = restated_batches(embeddings, size, k1)
    assert ours.dtype == torch.int64 and ours.shape == (num_items, size)
    np.testing.assert_array_equal(ours.numpy(), expected)
    assert (ours[:, 0] == torch.arange(num_items)).all()


def test_the_expansion_rule_is_exercised():
    """Guards the test data: some graphs hold items beyond the query's reciprocal set."""
    embeddings = clustered_embeddings(120, 16, 1)
    order, _ = sorted_rows(distance_matrix(embeddings, embeddings), self_first=True)
    graphs = restated_batches(embeddings, 60, 30)
    expanded = [i for i in range(120) if not set(graphs[i]) <= set(order[i, :31])]
    assert expanded


@pytest.mark.parametrize("seed", [0, 1])
def test_duplicate_embeddings_give_the_restated_graphs_with_the_query_first(seed):
    embeddings = clustered_embeddings(80, 8, seed)
    rng = np.random.default_rng(seed)
    copies = rng.choice(80, size=20, replace=False)
    embeddings[copies[10:]] = embeddings[copies[:10]]
    ours = k_reciprocal_batches(torch.from_numpy(embeddings), 7, block_size=32)
    np.testing.assert_array_equal(ours.numpy(), restated_batches(embeddings, 7, 30))
    for original, copy in zip(copies[:10], copies[10:]):
        assert ours[original, :2].tolist() == [original, copy]
        assert ours[copy, :2].tolist() == [copy, original]


@pytest.mark.parametrize("num_query, num_gallery, size, k1, seed", [
    (30, 50, 4, 30, 0), (100, 140, 4, 30, 1), (70, 40, 8, 10, 2), (45, 60, 3, 20, 3),
])
def test_inshop_batches_equal_the_restated_authors_sampler(num_query, num_gallery, size, k1, seed):
    both = clustered_embeddings(num_query + num_gallery, 12, seed)
    query, gallery = both[:num_query], both[num_query:]
    ours = k_reciprocal_batches_inshop(torch.from_numpy(query), torch.from_numpy(gallery), size,
                                       k1=k1, block_size=16)
    assert ours.shape == (num_query, size - 1)
    np.testing.assert_array_equal(ours.numpy(), restated_batches_inshop(query, gallery, size, k1))


@pytest.mark.parametrize("map_elements", [100, 1000])
def test_graphs_built_a_few_queries_at_a_time_are_the_same(monkeypatch, map_elements):
    """Small item maps: many chunks share one map, which must be left all zero after each."""
    monkeypatch.setattr(k_reciprocal, "POSITION_MAP_ELEMENTS", map_elements)
    embeddings = clustered_embeddings(300, 12, 3)
    ours = k_reciprocal_batches(torch.from_numpy(embeddings), 9, k1=10, block_size=50)
    np.testing.assert_array_equal(ours.numpy(), restated_batches(embeddings, 9, 10))
    query, gallery = embeddings[:100], embeddings[100:]
    np.testing.assert_array_equal(
        k_reciprocal_batches_inshop(torch.from_numpy(query), torch.from_numpy(gallery), 8, k1=10).numpy(),
        restated_batches_inshop(query, gallery, 8, 10))


def test_expansion_items_beyond_the_neighbour_table_are_ordered_by_distance():
    """Guards the test data: with k1 = 10 some graphs take expansion items beyond a
    query's 11 nearest, whose order comes from their computed distances."""
    embeddings = clustered_embeddings(300, 12, 3)
    order, _ = sorted_rows(distance_matrix(embeddings, embeddings), self_first=True)
    graphs = restated_batches(embeddings, 9, 10)
    beyond = [i for i in range(300) if not set(graphs[i]) <= set(order[i, :11])]
    assert beyond
    np.testing.assert_array_equal(k_reciprocal_batches(torch.from_numpy(embeddings), 9, k1=10).numpy(), graphs)


def test_nearest_neighbours_are_exact_where_float32_cannot_tell():
    """Items 1e-7 apart at distance ~1e4 look equal in float32; float64 ranks them."""
    base = torch.zeros(1, 4, dtype=torch.float64)
    items = torch.tensor([[100.0, 0, 0, 0], [100.0, 1e-4, 0, 0], [100.0, 0, 1e-5, 0], [300.0, 0, 0, 0]])
    indices, distances = nearest_neighbours(base.float(), items, 3, block_size=8)
    assert indices.tolist() == [[0, 2, 1]]
    assert distances[0, 1] < distances[0, 2]


def test_nearest_neighbours_rank_a_wide_float32_window_exactly():
    """40 items at float32-equal distances: more than the top k + WINDOW_MARGIN scores to re-rank."""
    offsets = torch.randperm(40, generator=torch.Generator().manual_seed(0)).double() + 1
    items = torch.zeros(40, 3, dtype=torch.float64)
    items[:, 0], items[:, 1] = 100.0, 1e-3 * offsets
    indices, _ = nearest_neighbours(torch.zeros(2, 3), items.float(), 5, block_size=1)
    assert indices.tolist() == [torch.argsort(offsets)[:5].tolist()] * 2


def test_too_few_items_for_a_graph_is_refused():
    with pytest.raises(ValueError, match="at least 7 items"):
        k_reciprocal_batches(torch.randn(5, 4), 7)
