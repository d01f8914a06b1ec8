"""Recall@K, In-Shop Recall@K and NMI (SPEC 8): the authors' golden values and brute force."""
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from evaluation.clustering import faiss_available, nmi, nmi_backend, nmi_from_clusters, resolve_kmeans_backend
from evaluation import Evaluator, ranking
from evaluation.ranking import _BlockMemory, _count_below, _count_below_torch, same_label_hits
from evaluation.recall import inshop_recall_at_k, recall_at_k
from evaluation.scores import SquaredEuclidean, ieee_float32_matmul
from tests.reference import EVAL_TOL, load
from utils.errors import UserInputError

BLOCK_SIZES = (7, 64, 100_000)  # 7 and 64 put block boundaries inside every class
BACKENDS = ["sklearn", pytest.param("faiss", marks=pytest.mark.skipif(
    not faiss_available(), reason="faiss-cpu is not installed"))]


@pytest.fixture(scope="module")
def golden():
    return load("eval_metrics.pt")


@pytest.fixture
def one_kmeans_thread():
    """torch, scikit-learn and faiss each load an OpenMP runtime; on a small,
    busy CI machine their threads spin against each other and a 600-point
    k-means takes seconds instead of a fraction of one."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(params=["numpy", "torch"])
def counting(request, monkeypatch):
    """Both ways of counting a block: numpy's (CPU) and torch's (GPU, run here on the CPU)."""
    if request.param == "torch":
        monkeypatch.setattr(ranking, "_count_below", lambda block, low, high, column_low, column_high, memory:
                            _count_below_torch(block, low, high, column_low, column_high))


def brute_force_closer_counts(query, query_labels, items, item_labels, kind, exclude_self):
    """Per query: other-label items strictly closer than its closest same-label item (float64)."""
    query, items = query.double(), items.double()
    if kind == "euclidean":
        score = torch.cdist(query, items) ** 2
    else:
        normalise = lambda x: x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)  # noqa: E731
        score = -(normalise(query) @ normalise(items).T)
    if exclude_self:
        score.fill_diagonal_(float("inf"))
    same = query_labels[:, None] == item_labels[None, :]
    best = torch.where(same, score, float("inf")).amin(1)
    counts = ((score < best[:, None]) & ~same).sum(1)
    return torch.where(torch.isfinite(best), counts, torch.iinfo(torch.int64).max)


def brute_force_recall(counts, ks):
    return {k: (counts < k).double().mean().item() for k in ks}


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_recall_at_k_matches_authors_cub_protocol(golden, block_size):
    a = golden["a"]
    recall = recall_at_k(a["X"], a["T"], a["ks"], block_size=block_size)
    assert list(recall) == a["ks"]
    np.testing.assert_allclose(list(recall.values()), a["recall"], **EVAL_TOL["recall"])


@pytest.mark.parametrize("block_size", (61, 100_000))
def test_recall_at_k_matches_authors_sop_protocol_up_to_k_1000(golden, block_size):
    b = golden["b"]
    recall = recall_at_k(b["X"], b["T"], b["ks"], block_size=block_size)
    np.testing.assert_allclose(list(recall.values()), b["recall"], **EVAL_TOL["recall"])


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_inshop_recall_matches_authors_query_gallery_rule(golden, block_size):
    c = golden["c"]
    recall = inshop_recall_at_k(c["query_X"], c["query_T"], c["gallery_X"], c["gallery_T"],
                                c["ks"], block_size=block_size)
    np.testing.assert_allclose(list(recall.values()), c["recall"], **EVAL_TOL["recall"])


def test_nmi_from_stored_kmeans_labels_matches_authors(golden):
    a = golden["a"]
    assert nmi_from_clusters(a["kmeans_labels"], a["T"]) == pytest.approx(
        a["nmi"], abs=EVAL_TOL["nmi_from_saved_kmeans_labels"]["atol"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nmi_with_own_kmeans_is_within_fixture_tolerance(golden, backend, one_kmeans_thread):
    a = golden["a"]
    value = nmi(a["X"], a["T"], seed=0, backend=backend)
    assert value == pytest.approx(a["nmi"], abs=EVAL_TOL["nmi_with_own_kmeans"]["atol"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_nmi_is_deterministic_for_a_seed(golden, backend, one_kmeans_thread):
    a = golden["a"]
    assert nmi(a["X"], a["T"], seed=3, backend=backend) == nmi(a["X"], a["T"], seed=3,
                                                               backend=backend)


def test_nmi_backend_is_faiss_when_importable_else_sklearn(monkeypatch):
    assert nmi_backend() == ("faiss" if faiss_available() else "sklearn")
    monkeypatch.setattr("evaluation.clustering.faiss_available", lambda: False)
    assert nmi_backend() == "sklearn"


@pytest.mark.parametrize("choice, dataset_short, expected", [
    ("paper", "cub", "sklearn"), ("paper", "cars", "sklearn"), ("paper", "demo", "sklearn"),
    ("paper", "sop", "auto"), ("paper", "in_shop", "auto"), ("auto", "cub", "auto"),
    ("sklearn", "sop", "sklearn"),
])
def test_kmeans_choice_resolves_per_dataset(choice, dataset_short, expected):
    """'paper': the authors' scikit-learn on CUB and Cars, a back end that finishes on SOP and In-Shop."""
    expected = nmi_backend() if expected == "auto" else expected
    assert resolve_kmeans_backend(choice, dataset_short) == expected


def test_kmeans_faiss_without_faiss_is_a_user_error(monkeypatch):
    monkeypatch.setattr("evaluation.clustering.faiss_available", lambda: False)
    with pytest.raises(UserInputError, match="eval_params.kmeans"):
        resolve_kmeans_backend("faiss", "sop")


def test_evaluator_runs_and_logs_its_kmeans_back_end(monkeypatch, caplog):
    used = []

    def recorded_nmi(embeddings, labels, seed=0, backend=None):
        used.append(backend)
        return 0.5
    monkeypatch.setattr("evaluation.evaluator.nmi", recorded_nmi)
    evaluator = Evaluator("cub", "cpu", kmeans_backend="sklearn")
    embeddings = torch.nn.functional.normalize(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)))
    with caplog.at_level("INFO"):
        evaluator.all_against_all_metrics(embeddings, torch.arange(8) % 2)
    assert used == ["sklearn"] and "NMI: k-means by sklearn" in caplog.text


def test_query_is_excluded_by_index_not_by_first_sorted_column():
    # Items 0 and 1 are the same point with different labels.
    embeddings = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    labels = torch.tensor([0, 1, 0, 1])
    # The authors' rule: sort each row (stably here), drop column 0, look at the next K.
    distances = torch.cdist(embeddings, embeddings)
    dropped_first_column = torch.sort(distances, dim=1, stable=True).indices[:, 1:]
    assert labels[dropped_first_column[1, 0]] == labels[1]  # query 1 "finds" itself at rank 1
    # Excluding by index, query 1's nearest other item is item 0 (label 0): a miss at K = 1, 2.
    hits = same_label_hits(SquaredEuclidean, embeddings, labels, (1, 2, 3), block_size=2)
    assert hits.tolist() == [[False, True, True], [False, False, True],
                             [True, True, True], [False, True, True]]


def test_same_label_duplicate_of_the_query_is_a_hit():
    embeddings = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [3.0, 0.0]])
    labels = torch.tensor([4, 4, 9, 9])
    recall = recall_at_k(embeddings, labels, (1,), block_size=1)
    # Queries 0 and 1: a same-label item at distance 0; ties with item 2 favour the hit.
    # Query 2: items 0 and 1 (other label) sit at 0, item 3 is farther: a miss.
    # Query 3: items 0, 1, 2 are equally close, item 2 is same-label: a hit.
    assert recall == {1: 0.75}


def test_ties_with_other_label_items_favour_the_same_label_item():
    embeddings = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 1, 0, 1])
    hits = same_label_hits(SquaredEuclidean, embeddings, labels, (1,), block_size=4)
    assert hits[0].item() is True


def test_query_without_same_label_partner_is_a_miss_at_every_k():
    embeddings = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 1, 1, 2])
    recall = recall_at_k(embeddings, labels, (1, 4, 100))
    assert recall[100] == pytest.approx(4 / 5)


@pytest.mark.parametrize("block_size", (1, 5, 33, 1000))
def test_recall_at_k_equals_brute_force_with_many_exact_ties(block_size, counting):
    generator = torch.Generator().manual_seed(1)
    # Coordinates in {-1, 0, 1} in 4 dims: many points coincide, many distances tie.
    embeddings = torch.randint(-1, 2, (150, 4), generator=generator).float()
    labels = torch.randint(0, 12, (150,), generator=generator)
    ks = (1, 2, 3, 5, 8, 20, 149, 200)
    counts = brute_force_closer_counts(embeddings, labels, embeddings, labels, "euclidean", True)
    hits = same_label_hits(SquaredEuclidean, embeddings, labels, ks, block_size)
    assert torch.equal(hits, counts[:, None] < torch.tensor(ks))
    assert recall_at_k(embeddings, labels, ks, block_size) == pytest.approx(
        brute_force_recall(counts, ks), abs=0)


@pytest.mark.parametrize("block_size", (3, 64, 1000))
def test_recall_at_k_equals_brute_force_on_random_vectors(block_size, counting):
    generator = torch.Generator().manual_seed(2)
    embeddings = 3.0 * torch.randn(400, 32, generator=generator) + 1.0
    labels = torch.randint(0, 40, (400,), generator=generator)
    ks = (1, 2, 4, 8, 10, 100)
    counts = brute_force_closer_counts(embeddings, labels, embeddings, labels, "euclidean", True)
    assert recall_at_k(embeddings, labels, ks, block_size) == pytest.approx(
        brute_force_recall(counts, ks), abs=0)


@pytest.mark.parametrize("block_size", (4, 50, 1000))
def test_inshop_recall_equals_brute_force_with_ties(block_size, counting):
    generator = torch.Generator().manual_seed(3)
    query = torch.randint(-1, 2, (90, 3), generator=generator).float()
    gallery = torch.randint(-1, 2, (200, 3), generator=generator).float()
    # Some query labels have no gallery item: those queries miss at every K.
    query_labels = torch.randint(0, 25, (90,), generator=generator)
    gallery_labels = torch.randint(0, 22, (200,), generator=generator)
    ks = (1, 5, 10, 50, 500)
    counts = brute_force_closer_counts(query, query_labels, gallery, gallery_labels, "cosine",
                                       False)
    recall = inshop_recall_at_k(query, query_labels, gallery, gallery_labels, ks, block_size)
    assert recall == pytest.approx(brute_force_recall(counts, ks), abs=0)


@pytest.mark.parametrize("negative_offset, expected_hit", ((0.999, False), (1.001, True)))
def test_near_ties_float32_cannot_separate_are_decided_exactly(negative_offset, expected_hit):
    # Far from the origin ||x||^2 ~ 1e6: float32 sees squared distances only in
    # steps of ~0.06, so 0.998 and 1.0 look equal; the exact re-check decides.
    centre = torch.full((8,), 1000.0 / 8 ** 0.5)
    unit = torch.eye(8)
    embeddings = torch.stack([centre, centre + unit[0], centre + negative_offset * unit[1]])
    labels = torch.tensor([0, 0, 1])
    scores = SquaredEuclidean(embeddings, embeddings)
    float32_gap = (scores.block(slice(0, 1))[0, 1] - scores.block(slice(0, 1))[0, 2]).abs()
    assert float32_gap <= scores.error_bounds[0]
    hits = same_label_hits(SquaredEuclidean, embeddings, labels, (1,), block_size=8)
    assert hits[0].item() is expected_hit


class JitteredSquaredEuclidean(SquaredEuclidean):
    """Scores off by up to their stated error bound, differently at every call:
    most counts are left open and must be decided in float64."""

    def __init__(self, queries, items):
        super().__init__(queries, items)
        self.error_bounds = torch.full((len(queries),), 0.5)
        self.generator = torch.Generator().manual_seed(0)

    def block(self, rows, columns=slice(None), buffer=None):
        scores = super().block(rows, columns, buffer)
        return scores.add_(torch.rand(scores.shape, generator=self.generator) - 0.5)


class SwappedPositives(SquaredEuclidean):
    """Float32 scores within a bound of 1.5 that put the query's farther
    same-label item first (query 0 sorted first; see the test below)."""

    OFFSETS = torch.tensor([[0.0, 1.2, -1.2, 0.0],
                            [1.2, 0.0, 0.0, 0.0],
                            [-1.2, 0.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 0.0]])

    def __init__(self, *args):
        super().__init__(*args)
        self.error_bounds = torch.full((len(self.queries),), 1.5)

    def block(self, rows, columns=slice(None), buffer=None):
        scores = super().block(rows, columns, buffer)
        return scores.add_(self.OFFSETS[rows][:, columns])


@pytest.mark.parametrize("block_size", (2, 8))  # row by row, each pair once
def test_exact_check_finds_the_closest_same_label_item_float32_ranked_second(block_size, counting):
    # Query at 0; same-label items at squared distances 4 and 6, scored 5.2 and
    # 4.8 in "float32"; another label at 5 lies in the uncertain window. Exactly,
    # the query is a hit: its closest same-label item (4) beats the other label (5).
    embeddings = torch.tensor([[0.0, 0, 0], [2, 0, 0], [1, 2, 0], [1, 1, 2]])
    labels = torch.tensor([0, 0, 1, 0])
    counts = brute_force_closer_counts(embeddings, labels, embeddings, labels, "euclidean", True)
    assert counts[0] == 0
    hits = same_label_hits(SwappedPositives, embeddings, labels, (1,), block_size)
    assert torch.equal(hits[:, 0], counts < 1)


@pytest.mark.parametrize("block_size", (4, 16, 1000))
def test_counts_stay_exact_when_float32_scores_differ_between_passes(block_size, counting):
    # Integer coordinates: every squared distance is an integer, so many items
    # sit one error window below the closest same-label item, where two
    # scorings of one pair can fall on either side of the window's edge.
    generator = torch.Generator().manual_seed(4)
    embeddings = torch.randint(-2, 3, (120, 3), generator=generator).float()
    labels = torch.randint(0, 10, (120,), generator=generator)
    ks = (1, 2, 3, 5, 8, 13, 21)
    counts = brute_force_closer_counts(embeddings, labels, embeddings, labels, "euclidean", True)
    hits = same_label_hits(JitteredSquaredEuclidean, embeddings, labels, ks, block_size)
    assert torch.equal(hits, counts[:, None] < torch.tensor(ks))


def loop_counts(lines, thresholds, strict):
    """Entries of each line below (or up to) its threshold, one Python comparison at a time."""
    def is_below(value, threshold):
        return value < threshold if strict else value <= threshold
    return torch.tensor([sum(1 for value in line if is_below(value, threshold))
                         for line, threshold in zip(lines, thresholds.tolist())], dtype=torch.int64)


@pytest.mark.parametrize("rows, columns, tail", [
    (600, 7, 5),         # more rows than a uint8 column sum can hold
    (3, 70_000, 69_990),  # more columns than a uint16 row sum can hold
    (1, 1, 0),
])
def test_numpy_and_torch_counts_equal_plain_comparisons(rows, columns, tail):
    # Small integers: many entries equal their threshold (< and <= must differ),
    # and thresholds of 9 count whole rows and columns (the sums' overflow limits).
    generator = torch.Generator().manual_seed(1)
    integers = lambda *shape: torch.randint(0, 4, shape, generator=generator).float()  # noqa: E731
    block, low, column_low = integers(rows, columns), integers(rows), integers(tail)
    low[0], column_low[:1] = 9.0, 9.0
    high, column_high = low + integers(rows) % 2, column_low + integers(tail) % 2
    rows_as_lists, tail_columns = block.tolist(), block[:, columns - tail:].T.tolist()
    expected = (loop_counts(rows_as_lists, low, strict=True), loop_counts(rows_as_lists, high, strict=False),
                loop_counts(tail_columns, column_low, strict=True),
                loop_counts(tail_columns, column_high, strict=False))
    counts = _count_below(block.clone(), low, high, column_low, column_high,
                          _BlockMemory(block.numel(), block.device))
    gpu_counts = _count_below_torch(block, low, high, column_low, column_high)  # the GPU path, here on CPU
    for count, gpu_count, expected_count in zip(counts, gpu_counts, expected):
        assert torch.equal(count, expected_count)
        assert torch.equal(gpu_count, expected_count)


def test_embeddings_on_other_precisions_are_scored_in_float32(golden):
    a = golden["a"]
    recall = recall_at_k(a["X"].double(), a["T"], a["ks"], block_size=64)
    np.testing.assert_allclose(list(recall.values()), a["recall"], **EVAL_TOL["recall"])


def test_float32_matmul_precision_is_restored_after_scoring():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        with ieee_float32_matmul():
            assert torch.get_float32_matmul_precision() == "highest"
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_recall_on_gpu_equals_cpu(golden):
    b = golden["b"]
    on_gpu = recall_at_k(b["X"].cuda(), b["T"].cuda(), b["ks"], block_size=256)
    np.testing.assert_allclose(list(on_gpu.values()), b["recall"], **EVAL_TOL["recall"])
