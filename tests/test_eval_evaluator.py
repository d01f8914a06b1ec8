"""Embedding extraction, the Evaluator and the metric sets (SPEC 8), with a tiny model."""
import pytest
import torch
from threadpoolctl import threadpool_limits

from evaluation.embeddings import extract_embeddings
from evaluation.evaluator import Evaluator
from evaluation.metric_sets import format_metrics, metric_set
from evaluation.precision_at_r import inshop_retrieval_metrics, retrieval_metrics
from evaluation.clustering import nmi
from evaluation.recall import inshop_recall_at_k, recall_at_k
from utils.errors import UserInputError

IMAGE_SHAPE = (3, 4, 4)


class TinyEmbedder(torch.nn.Module):
    """``model(images, output_option=...) -> (logits, embedding)`` like the backbones."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(48, 8)
        self.classify = torch.nn.Linear(8, 5)
        self.calls = []

    def forward(self, images, output_option="plain"):
        self.calls.append((self.training, torch.is_grad_enabled(), output_option))
        embedding = self.embed(images.flatten(1))
        if output_option == "plain":
            embedding = torch.nn.functional.normalize(embedding, dim=1)
        return self.classify(embedding), embedding


def tiny_loader(num_images, batch_size, seed=0, order=None):
    """Batches ``(images, labels, indices, paths)`` over a fixed in-memory data set."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(num_images, *IMAGE_SHAPE, generator=generator)
    labels = torch.arange(num_images) % 6
    order = torch.arange(num_images) if order is None else order
    return [(images[chunk], labels[chunk], chunk, [f"img_{int(i)}.jpg" for i in chunk])
            for chunk in order.split(batch_size)]


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyEmbedder()


@pytest.fixture(autouse=True)
def one_kmeans_thread():
    """Several OpenMP runtimes (torch, scikit-learn, faiss) spin against each other on small CI
    machines; one thread keeps the tiny k-means fast."""
    with threadpool_limits(limits=1):
        yield


def test_extract_embeddings_runs_in_eval_mode_without_gradients_and_restores_mode(model):
    model.train()
    embeddings, labels, indices = extract_embeddings(model, tiny_loader(10, 4), "cpu")
    assert model.calls == [(False, False, "plain")] * 3
    assert model.training
    assert embeddings.shape == (10, 8) and embeddings.dtype == torch.float32
    assert labels.dtype == torch.int64 and indices.tolist() == list(range(10))
    model.eval()
    extract_embeddings(model, tiny_loader(4, 4), "cpu")
    assert not model.training


def test_extract_embeddings_passes_output_option(model):
    embeddings, _, _ = extract_embeddings(model, tiny_loader(6, 6), "cpu", output_option="norm")
    assert model.calls[-1][2] == "norm"
    assert not torch.allclose(embeddings.norm(dim=1), torch.ones(6))


def test_extract_embeddings_returns_float32_under_autocast(model):
    embeddings, _, _ = extract_embeddings(model, tiny_loader(6, 3), "cpu",
                                          autocast_dtype=torch.bfloat16)
    assert embeddings.dtype == torch.float32


def test_metric_sets_follow_the_paper_protocols():
    assert metric_set("cub").recall_ks == metric_set("cars").recall_ks == (1, 2, 4, 8)
    assert metric_set("demo").recall_ks == (1, 2, 4, 8) and metric_set("demo").with_nmi
    assert metric_set("sop").recall_ks == (1, 10, 100, 1000) and metric_set("sop").with_nmi
    in_shop = metric_set("in_shop")
    assert in_shop.recall_ks == (1, 10, 20, 30, 40)
    assert in_shop.query_gallery and in_shop.with_nmi


def test_unknown_dataset_short_names_the_key():
    with pytest.raises(UserInputError, match="dataset.dataset_short"):
        metric_set("imagenet")


def test_format_metrics_is_one_line_in_percent():
    metrics = {"R@1": 0.70290, "R@2": 0.80314, "R@4": 0.8762, "R@8": 0.927, "NMI": 0.73214}
    assert format_metrics(metrics) == "R@1 70.29 | R@2 80.31 | R@4 87.62 | R@8 92.70 | NMI 73.21"


def test_evaluator_reports_recall_and_nmi_of_the_backbone_embeddings(model):
    loader = tiny_loader(30, 8)
    metrics = Evaluator("cub", "cpu", block_size=7).evaluate(model, loader=loader)
    assert list(metrics) == ["R@1", "R@2", "R@4", "R@8", "NMI"]
    embeddings, labels, _ = extract_embeddings(model, loader, "cpu")
    expected = recall_at_k(embeddings, labels, (1, 2, 4, 8))
    assert [metrics[f"R@{k}"] for k in expected] == list(expected.values())
    assert 0.0 <= metrics["NMI"] <= 1.0


def test_evaluator_in_shop_scores_queries_against_gallery_and_nmi_over_both(model):
    query_loader, gallery_loader = tiny_loader(12, 5, seed=1), tiny_loader(30, 8, seed=2)
    metrics = Evaluator("in_shop", "cpu").evaluate(model, query_loader=query_loader,
                                                  gallery_loader=gallery_loader)
    assert list(metrics) == ["R@1", "R@10", "R@20", "R@30", "R@40", "NMI"]
    query, query_labels, _ = extract_embeddings(model, query_loader, "cpu")
    gallery, gallery_labels, _ = extract_embeddings(model, gallery_loader, "cpu")
    expected = inshop_recall_at_k(query, query_labels, gallery, gallery_labels, (1, 10, 20, 30, 40))
    assert [metrics[name] for name in list(metrics)[:-1]] == list(expected.values())
    assert metrics["NMI"] == nmi(torch.cat([query, gallery]), torch.cat([query_labels, gallery_labels]))


def test_evaluator_does_not_depend_on_loader_order(model):
    in_order = Evaluator("cub", "cpu").evaluate(model, loader=tiny_loader(30, 8))
    shuffled = torch.randperm(30, generator=torch.Generator().manual_seed(5))
    reordered = Evaluator("cub", "cpu").evaluate(model, loader=tiny_loader(30, 8, order=shuffled))
    assert reordered == in_order


def test_evaluator_gather_drops_indices_duplicated_by_sampler_padding(model):
    def gather_two_processes(embeddings, labels, indices):
        # Rank 0 holds the even positions, rank 1 the odd ones plus rank 0's
        # first item again, as DistributedSampler pads uneven shards.
        halves = [torch.arange(0, len(indices), 2),
                  torch.cat([torch.arange(1, len(indices), 2), torch.tensor([0])])]
        order = torch.cat(halves)
        return embeddings[order], labels[order], indices[order]

    plain = Evaluator("cub", "cpu").evaluate(model, loader=tiny_loader(29, 8))
    gathered = Evaluator("cub", "cpu", gather=gather_two_processes).evaluate(
        model, loader=tiny_loader(29, 8))
    assert gathered == plain


def test_evaluator_share_computes_metrics_once_for_all_processes(model):
    computed = []

    def share_from_main(compute):
        computed.append(compute())
        return computed[0]

    evaluator = Evaluator("cub", "cpu", share=share_from_main)
    metrics = evaluator.evaluate(model, loader=tiny_loader(20, 8))
    assert computed == [metrics]


def test_evaluator_in_shop_needs_query_and_gallery_loaders(model):
    with pytest.raises(ValueError, match="query_loader and gallery_loader"):
        Evaluator("in_shop", "cpu").evaluate(model, loader=tiny_loader(4, 4))


def test_extra_metrics_follow_the_paper_set_in_the_order_asked(model):
    loader = tiny_loader(30, 8)
    evaluator = Evaluator("cub", "cpu", block_size=7, extra_metrics=("precision_at_1", "map_at_r"))
    metrics = evaluator.evaluate(model, loader=loader)
    assert list(metrics) == ["R@1", "R@2", "R@4", "R@8", "NMI", "P@1", "MAP@R"]
    embeddings, labels, _ = extract_embeddings(model, loader, "cpu")
    expected = retrieval_metrics(embeddings, labels)
    assert (metrics["P@1"], metrics["MAP@R"]) == (expected["P@1"], expected["MAP@R"])


def test_in_shop_extra_metrics_score_queries_against_gallery(model):
    query_loader, gallery_loader = tiny_loader(12, 5, seed=1), tiny_loader(30, 8, seed=2)
    metrics = Evaluator("in_shop", "cpu", extra_metrics=("r_precision",)).evaluate(
        model, query_loader=query_loader, gallery_loader=gallery_loader)
    query, query_labels, _ = extract_embeddings(model, query_loader, "cpu")
    gallery, gallery_labels, _ = extract_embeddings(model, gallery_loader, "cpu")
    assert metrics["RP"] == inshop_retrieval_metrics(query, query_labels, gallery, gallery_labels)["RP"]


def test_every_extra_metric_column_is_read_as_a_metric_by_the_run_records():
    from run_folder.history import is_metric_column
    from schema.options import EXTRA_METRIC_COLUMNS
    assert all(is_metric_column(f"{split}_{column}") for column in EXTRA_METRIC_COLUMNS.values()
               for split in ("val", "test"))
@pytest.mark.parametrize("config_file, expected", [("config/config_cub_train.yaml", "sklearn"),
                                                   ("config/config_cars_test.yaml", "sklearn")])
def test_paper_configs_score_nmi_with_the_authors_sklearn_kmeans(config_file, expected):
    from engine.components import build_evaluators
    from recipe import RunRecipe
    from schema import load_config
    evaluators = build_evaluators(RunRecipe(load_config(config_file)), torch.device("cpu"))
    assert evaluators["test"].kmeans_backend == expected
