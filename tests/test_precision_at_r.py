"""MAP@R, R-precision and precision@1 against pytorch-metric-learning's AccuracyCalculator."""
import logging
import math

import pytest
import torch

from evaluation import inshop_retrieval_metrics, map_at_r, precision_at_1, r_precision
from evaluation import retrieval_metrics
from evaluation.precision_at_r import _means, _per_query
from evaluation.scores import SquaredEuclidean, inshop_l2_normalize
from tests.test_evaluation import JitteredSquaredEuclidean

accuracy_calculator = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")

PML_NAMES = {"MAP@R": "mean_average_precision_at_r", "RP": "r_precision", "P@1": "precision_at_1"}
BLOCK_SIZES = (1, 7, 100_000)
# Class sizes: balanced; skewed with lone items; one class much larger than a block.
CLASS_SIZES = {
    "balanced": [6] * 25,
    "skewed": [1, 1, 2, 3, 5, 8, 13, 21, 1, 2],
    "one_large": [60, 2, 3, 1, 4, 2],
}


@pytest.fixture(autouse=True)
def quiet_faiss():
    logging.getLogger("PML").setLevel(logging.WARNING)


def pml_metrics(query, query_labels, reference=None, reference_labels=None, knn_func=None):
    """AccuracyCalculator's three metrics (k = max_bin_count, faiss k-NN unless given)."""
    calculator = accuracy_calculator.AccuracyCalculator(
        include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"),
        knn_func=knn_func)
    values = calculator.get_accuracy(query, query_labels, reference, reference_labels)
    return {ours: values[theirs] for ours, theirs in PML_NAMES.items()}


def labelled_clusters(class_sizes, dim=16, seed=0):
    """Items around one random centre per class, in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.repeat_interleave(torch.arange(len(class_sizes)), torch.tensor(class_sizes))
    labels = labels[torch.randperm(len(labels), generator=generator)]
    centres = 0.7 * torch.randn(len(class_sizes), dim, generator=generator)
    return torch.randn(len(labels), dim, generator=generator) + centres[labels], labels


def assert_metrics_close(ours, reference):
    assert ours.keys() == reference.keys()
    for name in ours:
        assert ours[name] == pytest.approx(reference[name], abs=1e-6), name


class RuleOrderedKNN:
    """A k-NN for AccuracyCalculator that orders by exact (float64) distance and,
    at equal distance, puts same-label items first: our documented tie rule."""

    def __init__(self, query_labels, reference_labels, cosine=False):
        self.query_labels, self.reference_labels, self.cosine = query_labels, reference_labels, cosine

    def __call__(self, query, k, reference, ref_includes_query=False):
        query, reference = query.double(), reference.double()
        if self.cosine:
            distance = -(inshop_l2_normalize(query) @ inshop_l2_normalize(reference).T)
        else:
            distance = ((query[:, None, :] - reference[None, :, :]) ** 2).sum(2)
        other_label = self.query_labels[:, None] != self.reference_labels[None, :]
        if ref_includes_query:
            distance.fill_diagonal_(math.inf)
        # Sort by distance, then label (same first), then index: all stable sorts.
        order = torch.argsort(other_label.long(), dim=1, stable=True)
        order = order.gather(1, torch.argsort(distance.gather(1, order), dim=1, stable=True))
        return distance.gather(1, order)[:, :k].float(), order[:, :k]


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("distribution", CLASS_SIZES)
def test_all_against_all_equals_accuracy_calculator(distribution, block_size):
    embeddings, labels = labelled_clusters(CLASS_SIZES[distribution])
    assert_metrics_close(retrieval_metrics(embeddings, labels, block_size),
                         pml_metrics(embeddings, labels))


def test_named_functions_are_the_three_metrics():
    embeddings, labels = labelled_clusters(CLASS_SIZES["skewed"], seed=1)
    metrics = retrieval_metrics(embeddings, labels)
    assert (map_at_r(embeddings, labels), r_precision(embeddings, labels),
            precision_at_1(embeddings, labels)) == (metrics["MAP@R"], metrics["RP"], metrics["P@1"])


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_same_label_duplicates_equal_accuracy_calculator(block_size):
    # Every third item is repeated once inside its class, the query's copy included:
    # the query is excluded by index, its copy is a same-label neighbour at distance 0.
    embeddings, labels = labelled_clusters(CLASS_SIZES["balanced"], seed=2)
    repeated = torch.arange(0, len(labels), 3)
    embeddings, labels = torch.cat([embeddings, embeddings[repeated]]), torch.cat([labels, labels[repeated]])
    assert_metrics_close(retrieval_metrics(embeddings, labels, block_size),
                         pml_metrics(embeddings, labels))


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_exact_ties_follow_the_same_label_first_rule(block_size):
    # Coordinates in {-1, 0, 1}: many items coincide across labels, many distances tie.
    generator = torch.Generator().manual_seed(3)
    embeddings = torch.randint(-1, 2, (160, 4), generator=generator).float()
    labels = torch.randint(0, 12, (160,), generator=generator)
    rule = RuleOrderedKNN(labels, labels)
    assert_metrics_close(retrieval_metrics(embeddings, labels, block_size),
                         pml_metrics(embeddings, labels, knn_func=rule))


def test_a_tie_with_an_other_label_item_ranks_it_second():
    # Query 0: its same-label item and an other-label item both at distance 1.
    embeddings = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    metrics = _means(_per_query(SquaredEuclidean, embeddings[:3], labels[:3], 8))
    # Queries 0 and 1 (R = 1) rank their partner first; query 2 is lone and left out.
    assert metrics == {"MAP@R": 1.0, "RP": 1.0, "P@1": 1.0}


def test_lone_queries_are_left_out_and_all_lone_is_nan():
    embeddings, labels = labelled_clusters([1, 1, 1, 4], seed=4)
    ours = retrieval_metrics(embeddings, labels)
    only_class_3 = labels == 3
    assert ours == retrieval_metrics(embeddings[only_class_3], labels[only_class_3])
    all_lone = retrieval_metrics(embeddings[:3] * 0 + torch.arange(3.0)[:, None], torch.arange(3))
    assert all(math.isnan(value) for value in all_lone.values())


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_inshop_equals_accuracy_calculator_query_reference_form(block_size):
    generator = torch.Generator().manual_seed(5)
    # Some query labels have no gallery item: PML leaves those queries out.
    query_labels = torch.randint(0, 25, (70,), generator=generator)
    gallery_labels = torch.randint(0, 22, (150,), generator=generator)
    centres = torch.randn(25, 12, generator=generator)
    query = torch.randn(70, 12, generator=generator) + centres[query_labels]
    gallery = torch.randn(150, 12, generator=generator) + centres[gallery_labels]
    ours = inshop_retrieval_metrics(query, query_labels, gallery, gallery_labels, block_size)
    # Cosine order = Euclidean order of the normalised vectors.
    reference = pml_metrics(inshop_l2_normalize(query), query_labels, inshop_l2_normalize(gallery),
                            gallery_labels)
    assert_metrics_close(ours, reference)


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_inshop_exact_ties_follow_the_same_label_first_rule(block_size):
    generator = torch.Generator().manual_seed(6)
    query = torch.randint(-1, 2, (60, 3), generator=generator).float()
    gallery = torch.randint(-1, 2, (120, 3), generator=generator).float()
    query_labels = torch.randint(0, 15, (60,), generator=generator)
    gallery_labels = torch.randint(0, 12, (120,), generator=generator)
    rule = RuleOrderedKNN(query_labels, gallery_labels, cosine=True)
    ours = inshop_retrieval_metrics(query, query_labels, gallery, gallery_labels, block_size)
    assert_metrics_close(ours, pml_metrics(query, query_labels, gallery, gallery_labels, knn_func=rule))


@pytest.mark.parametrize("block_size", (4, 1000))
def test_counts_left_open_by_float32_are_decided_exactly(block_size):
    # Integer coordinates: squared distances are integers, so jitter of +-0.5
    # makes float32 unable to order many pairs; float64 decides them.
    generator = torch.Generator().manual_seed(7)
    embeddings = torch.randint(-2, 3, (120, 3), generator=generator).float()
    labels = torch.randint(0, 10, (120,), generator=generator)
    ours = _means(_per_query(JitteredSquaredEuclidean, embeddings, labels, block_size))
    assert_metrics_close(ours, pml_metrics(embeddings, labels, knn_func=RuleOrderedKNN(labels, labels)))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_metrics_on_gpu_equal_cpu_with_ties():
    generator = torch.Generator().manual_seed(8)
    embeddings = torch.randint(-1, 2, (300, 4), generator=generator).float()
    labels = torch.randint(0, 20, (300,), generator=generator)
    on_gpu = retrieval_metrics(embeddings.cuda(), labels.cuda(), block_size=64)
    assert on_gpu == pytest.approx(retrieval_metrics(embeddings, labels, block_size=64), abs=1e-12)
    query, gallery = embeddings[:100], embeddings[100:]
    on_gpu = inshop_retrieval_metrics(query.cuda(), labels[:100].cuda(), gallery.cuda(), labels[100:].cuda())
    assert on_gpu == pytest.approx(inshop_retrieval_metrics(query, labels[:100], gallery, labels[100:]),
                                   abs=1e-12)
