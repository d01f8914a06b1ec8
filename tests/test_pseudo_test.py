"""Issue 14, mode pseudo_test: config, the batched MPN, refinement and the Evaluator.

The k-reciprocal graphs themselves are checked in tests/test_k_reciprocal.py.
"""
import json
from pathlib import Path

import pytest
import torch
import yaml
from threadpoolctl import threadpool_limits

import train
from engine.components import build_refinement_options
from evaluation.evaluator import Evaluator
from evaluation.k_reciprocal import k_reciprocal_batches, k_reciprocal_batches_inshop
from evaluation.refinement import RefinementOptions, all_against_all_graphs, query_gallery_graphs, refine_first_nodes
from net import build_mpn
from schema import SCHEMA, load_config
from utils.errors import UserInputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

# The authors' two pseudo configs, as in their repository's config/ (trailing spaces removed).
AUTHORS_CUB_TEST_PSEUDO = """mode: "pseudo_test"
application: "DML"
output_paht: "."

models:
  encoder_params:
    pretrained_path: "best_weights/0.7079675894665767resnet50_cub.pth"
    net_type: "resnet50"
    neck: 0
    last_stride: 0
    red: 4
    bn_inception:
      embed: 0
      sz_embedding: 512

  gnn_params:
    pretrained_path: "best_weights/0.7079675894665767gnn_resnet50_cub.pth"
    red: 1
    cat: 0
    every: 0
    gnn:
      num_layers: 1
      aggregator: "add"
      num_heads: 2
      attention: "dot"
      mlp: 1
      dropout_mlp: 0.1
      norm1: 1
      norm2: 1
      res1: 1
      res2: 1
      dropout_1: 0.1
      dropout_2: 0.1
      mult_attr: 0
    classifier:
      neck: 1
      num_classes: 100
      dropout_p: 0.4
      use_batchnorm: 0

graph_params:
  sim_type: "correlation"
  thresh: "no" #0
  set_negative: "hard"

dataset:
  dataset_path: "data/CUB_200_2011"
  dataset_short: "cub"
  num_classes: 100
  number_aug: 2
  magnitude: 27
  trans: "GL_orig_RE"
  sampling: "no"
  bssampling: "no"
  val: 0
  nb_workers: 4

train_params:
  num_classes_iter: 1
  num_elements_class: 7
  lr: 0.0001563663718906821
  weight_decay: 6.059722614369727e-06
  num_epochs: 70
  is_apex: 0
  temperatur: 0.2
  output_train_enc: "plain"
  output_train_gnn: "plain"
  loss_fn:
    fns: "lsgnn_lsce" #ce/focalce can be used instead of lsce and lsgnn/focalgnn instead of gnn, rest can be added by ce_gnn_center...
    scaling_ce: 1
    scaling_gnn: 1
    scaling_center: 0.5
    scaling_triplet: 1
    scaling_of: 1
    scaling_of_pre: 1
    scaling_distill: 1
    soft_temp: 1
    feats: "no"
    preds: "no"

eval_params:
  cat: 0
  output_test_enc: "plain"
  output_test_gnn: "plain"


"""
AUTHORS_CARS_TEST_PSEUDO = """mode: "pseudo"
application: "DML"
output_paht: "."

models:
  encoder_params:
    pretrained_path: "best_weights/0.8861117951243536resnet50_cars.pth"
    net_type: "resnet50"
    neck: 0
    last_stride: 0
    red: 4
    bn_inception:
      embed: 1
      sz_embedding: 512

  gnn_params:
    pretrained_path: "best_weights/0.8861117951243536gnn_resnet50_cars.pth"
    red: 1
    cat: 0
    every: 0
    gnn:
      num_layers: 1
      aggregator: "add"
      num_heads: 4
      attention: "dot"
      mlp: 1
      dropout_mlp: 0.1
      norm1: 1
      norm2: 1
      res1: 1
      res2: 1
      dropout_1: 0.1
      dropout_2: 0.1
      mult_attr: 0
    classifier:
      neck: 1
      num_classes: 98
      dropout_p: 0.4
      use_batchnorm: 0

graph_params:
  sim_type: "correlation"
  thresh: "no" #0
  set_negative: "hard"

dataset:
  dataset_path: "data/CARS"
  dataset_short: "cars"
  num_classes: 98
  trans: "GL_orig_RE"
  sampling: "no"
  bssampling: "no"
  val: 0
  nb_workers: 4

train_params:
  num_classes_iter: 10
  num_elements_class: 7
  lr: 0.00036683239911604993
  weight_decay: 2.551918610962277e-09
  num_epochs: 70
  is_apex: 0
  temperatur: 0.1111111111111
  output_train_enc: "plain"
  output_train_gnn: "plain"
  loss_fn:
    fns: "lsce_lsgnn"
    scaling_ce: 1
    scaling_gnn: 1
    scaling_center: 0.5
    scaling_triplet: 1
    scaling_of: 1
    scaling_of_pre: 1
    scaling_distill: 1
    soft_temp: 10
    preds: "no"
    feats: "no"

eval_params:
  output_test_enc: "plain"
  output_test_gnn: "plain"
  cat: 0
"""


def defaults(schema):
    return {key: defaults(value) if isinstance(value, dict) else value.default for key, value in schema.items()}


def gnn_params(**gnn):
    params = defaults(SCHEMA)["models"]["gnn_params"]
    params["classifier"]["num_classes"] = 5
    for key, value in gnn.items():
        (params if key in ("cat", "every") else params["gnn"])[key] = value
    return params


def write_text(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --- configuration -------------------------------------------------------------

def test_authors_cub_pseudo_config_loads_as_it_is(tmp_path):
    config = load_config(write_text(tmp_path, AUTHORS_CUB_TEST_PSEUDO))
    assert config["mode"] == "pseudo_test"
    assert config["models"]["gnn_params"]["pretrained_path"] == "best_weights/0.7079675894665767gnn_resnet50_cub.pth"
    assert config["eval_params"]["k1"] == 30 and config["eval_params"]["graph_size"] is None
    assert build_refinement_options(config).size(query_gallery=False) == 7


def test_authors_cars_mode_pseudo_is_refused_saying_it_trains_and_what_to_write(tmp_path):
    with pytest.raises(UserInputError, match=r"'pseudo', which in the authors' code trains.*write mode: pseudo_test"):
        load_config(write_text(tmp_path, AUTHORS_CARS_TEST_PSEUDO))
    fixed = AUTHORS_CARS_TEST_PSEUDO.replace('mode: "pseudo"', 'mode: "pseudo_test"')
    assert load_config(write_text(tmp_path, fixed))["models"]["gnn_params"]["gnn"]["num_heads"] == 4


def test_mode_pseudo_from_the_command_line_is_refused_too(tmp_path, caplog):
    path = write_text(tmp_path, AUTHORS_CARS_TEST_PSEUDO)
    assert train.main(["--config_path", str(path), "--output_dir", str(tmp_path / "runs")]) == UserInputError.exit_code
    assert "write mode: pseudo_test" in caplog.text
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dataset", ["cub", "cars", "sop", "inshop"])
def test_our_pseudo_configs_are_the_test_configs_plus_the_mpn(dataset):
    pseudo = load_config(CONFIG_DIR / f"config_{dataset}_test_pseudo.yaml")
    test = load_config(CONFIG_DIR / f"config_{dataset}_test.yaml")
    assert pseudo["mode"] == "pseudo_test"
    assert pseudo["models"]["gnn_params"]["pretrained_path"].endswith(f"gnn_resnet50_{test['dataset']['dataset_short']}.pth")
    assert pseudo["dataset"] == test["dataset"]
    assert pseudo["eval_params"]["graph_size"] == (4 if dataset == "inshop" else 7)
    assert pseudo["eval_params"]["k1"] == 30
    if dataset in ("cub", "cars"):  # the authors' pseudo files name their own weights and MPN
        authors = yaml.safe_load(AUTHORS_CUB_TEST_PSEUDO if dataset == "cub" else AUTHORS_CARS_TEST_PSEUDO)
        for key in ("pretrained_path",):
            assert pseudo["models"]["encoder_params"][key] == authors["models"]["encoder_params"][key]
        assert pseudo["models"]["gnn_params"]["pretrained_path"] == authors["models"]["gnn_params"]["pretrained_path"]
        for key, value in authors["models"]["gnn_params"]["gnn"].items():
            assert pseudo["models"]["gnn_params"]["gnn"][key] == value, key
    else:
        assert pseudo["models"]["gnn_params"]["gnn"] == test["models"]["gnn_params"]["gnn"]


# --- the MPN on a batch of graphs ------------------------------------------------

@pytest.mark.parametrize("gnn", [
    dict(), dict(aggregator="mean", num_layers=2), dict(aggregator="max", mult_attr=1),
    dict(num_layers=2, cat=1), dict(num_layers=2, every=1, num_heads=4), dict(mult_attr=1, num_layers=2),
], ids=str)
@pytest.mark.parametrize("output_option", ["plain", "norm", "neck"])
def test_a_batch_of_graphs_gives_what_each_graph_gives_alone(gnn, output_option):
    torch.manual_seed(0)
    mpn = build_mpn(gnn_params(**gnn), 64).eval()
    graphs = torch.randn(11, 7, 64)
    batch_logits, batch_features = mpn(graphs, output_option=output_option)
    for index, graph in enumerate(graphs):
        logits, features = mpn(graph, output_option=output_option)
        assert len(batch_features) == len(features)
        for batched, alone in zip(batch_logits + batch_features, logits + features):
            # Equal up to float32 rounding: the matrix products block differently.
            torch.testing.assert_close(batched[index], alone, rtol=1e-5, atol=1e-6)


# --- refinement --------------------------------------------------------------------

FIRST_NODE_CONFIGS = [
    dict(), dict(num_layers=2), dict(num_layers=3, cat=1), dict(num_layers=2, every=1, num_heads=4),
    dict(aggregator="mean", mult_attr=1), dict(aggregator="max", num_layers=2, mult_attr=1),
    dict(aggregator="max", mult_attr=1), dict(attention=0, num_layers=2), dict(mlp=0, res1=0),
    dict(res2=0, norm1=0), dict(norm2=0, num_layers=2, cat=1), dict(res1=0, res2=0, norm1=0, norm2=0),
]


@pytest.mark.parametrize("gnn", FIRST_NODE_CONFIGS, ids=str)
@pytest.mark.parametrize("output_option", ["plain", "norm", "neck"])
def test_first_node_features_are_row_0_of_the_full_forward(gnn, output_option):
    """The first-node path (per-item maps gathered, last layer on row 0) against every row computed."""
    torch.manual_seed(0)
    mpn = build_mpn(gnn_params(**gnn), 32).eval()
    for bottleneck in mpn.bottleneck:  # eval-mode statistics that change the features
        bottleneck.running_mean.normal_()
        bottleneck.running_var.uniform_(0.5, 2.0)
    items = torch.randn(30, 32) * 3
    graphs = torch.randint(0, 30, (13, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, full = mpn(items[graphs], output_option=output_option)
        first = mpn.first_node_features(items, mpn.item_projections(items), graphs, output_option)
    assert len(first) == len(full)
    for row_0, alone in zip(first, full):
        assert row_0.shape == alone[:, 0].shape
        torch.testing.assert_close(row_0, alone[:, 0], rtol=1e-5, atol=1e-5)


def test_first_node_features_under_autocast_keep_float32_attention_scores():
    """Large-norm inputs: the scores overflow float16 unless computed in float32, as in the forward."""
    torch.manual_seed(0)
    mpn = build_mpn(gnn_params(num_layers=2), 64).eval()
    items = torch.randn(20, 64) * 1e3
    graphs = torch.randint(0, 20, (9, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        _, full = mpn(items[graphs])
        first = mpn.first_node_features(items, mpn.item_projections(items), graphs)
    assert torch.isfinite(first[0]).all()
    torch.testing.assert_close(first[0].float(), full[0][:, 0].float(), rtol=0, atol=2e-2)


@pytest.fixture
def mpn():
    torch.manual_seed(0)
    return build_mpn(gnn_params(num_layers=2, every=1), 16)


@pytest.mark.parametrize("concatenate", [False, True])
def test_refinement_is_the_first_row_of_each_graph_through_the_mpn(mpn, concatenate):
    nodes = torch.randn(40, 16)
    graphs = k_reciprocal_batches(nodes, 5, k1=6)
    options = RefinementOptions(graphs_per_chunk=3, concatenate=concatenate, output_option="norm")
    mpn.train()
    refined = refine_first_nodes(mpn, nodes, graphs, options)
    assert mpn.training
    mpn.eval()
    for item in (0, 17, 39):
        _, features = mpn(nodes[graphs[item]], output_option="norm")
        expected = torch.cat(features, 1)[0] if concatenate else features[-1][0]
        torch.testing.assert_close(refined[item], expected, rtol=1e-5, atol=1e-6)
    assert refined.shape == (40, 32 if concatenate else 16)
    unchunked = refine_first_nodes(mpn, nodes, graphs, RefinementOptions(concatenate=concatenate, output_option="norm"))
    torch.testing.assert_close(refined, unchunked, rtol=1e-5, atol=1e-6)


def test_graph_sizes_default_to_the_authors_hard_coded_ones():
    embeddings = torch.randn(30, 8)
    assert all_against_all_graphs(embeddings, RefinementOptions(), 16).shape == (30, 7)
    graphs = query_gallery_graphs(embeddings[:10], embeddings[10:], RefinementOptions(), 16)
    assert graphs.shape == (10, 4)
    assert graphs[:, 0].tolist() == list(range(10))
    expected = k_reciprocal_batches_inshop(embeddings[:10], embeddings[10:], 4) + 10
    assert torch.equal(graphs[:, 1:], expected)
    assert all_against_all_graphs(embeddings, RefinementOptions(graph_size=9, k1=4), 16).shape == (30, 9)


def test_graphs_larger_than_the_test_set_are_refused_naming_the_key():
    embeddings = torch.randn(6, 8)
    with pytest.raises(UserInputError, match=r"eval_params.graph_size asks for graphs of 7 test set items.*has 6"):
        all_against_all_graphs(embeddings, RefinementOptions(), 16)
    with pytest.raises(UserInputError, match=r"graphs of 3 gallery items but the gallery has 2.*at most 2 \+ 1"):
        query_gallery_graphs(embeddings[:4], embeddings[4:], RefinementOptions(), 16)


# --- the Evaluator ---------------------------------------------------------------

class Embedder(torch.nn.Module):
    """``model(images, output_option=...) -> (logits, embedding)`` like the backbones."""

    def __init__(self, dim=16):
        super().__init__()
        self.embed = torch.nn.Linear(12, dim)

    def forward(self, images, output_option="plain"):
        embedding = self.embed(images.flatten(1))
        return embedding, embedding


def loader(num_images, num_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % num_classes
    images = torch.randn(num_classes, 12, generator=generator)[labels] + 0.5 * torch.randn(
        num_images, 12, generator=generator)
    return [(images[chunk], labels[chunk], chunk, [f"{int(i)}.jpg" for i in chunk])
            for chunk in torch.arange(num_images).split(16)]


@pytest.fixture(autouse=True)
def one_kmeans_thread():
    with threadpool_limits(limits=1):
        yield


def test_evaluator_reports_backbone_and_refined_metrics_with_seconds(mpn, caplog):
    caplog.set_level("INFO")
    torch.manual_seed(0)
    model = Embedder()
    evaluator = Evaluator("cub", "cpu", block_size=16)
    test_loader = loader(60, 6, 0)
    result = evaluator.evaluate_refined(model, mpn, RefinementOptions(), loader=test_loader)
    assert result["backbone"] == evaluator.evaluate(model, loader=test_loader)
    assert set(result["mpn_refined"]) == {"R@1", "R@2", "R@4", "R@8", "NMI"}
    assert result["mpn_refined"] != result["backbone"]
    assert set(result["seconds"]) == {"embedding", "backbone_metrics", "graphs", "refinement", "refined_metrics"}
    assert "MPN-refined (60 graphs of 7)" in caplog.text
    # The pictures of a pseudo_test run show both: the backbone's embeddings and the refined ones.
    assert evaluator.last_refined.gallery.embeddings.shape == evaluator.last.gallery.embeddings.shape
    assert not torch.equal(evaluator.last_refined.gallery.embeddings, evaluator.last.gallery.embeddings)
    assert torch.equal(evaluator.last_refined.gallery.indices, evaluator.last.gallery.indices)


def test_inshop_evaluator_refines_the_queries_with_gallery_graphs(mpn):
    torch.manual_seed(0)
    model = Embedder()
    evaluator = Evaluator("in_shop", "cpu", block_size=16)
    query_loader, gallery_loader = loader(24, 6, 1), loader(36, 6, 1)
    result = evaluator.evaluate_refined(model, mpn, RefinementOptions(), query_loader=query_loader,
                                        gallery_loader=gallery_loader)
    assert result["backbone"] == evaluator.evaluate(model, query_loader=query_loader, gallery_loader=gallery_loader)
    query = torch.cat([model(batch[0])[1] for batch in query_loader]).detach()
    gallery = torch.cat([model(batch[0])[1] for batch in gallery_loader]).detach()
    graphs = query_gallery_graphs(query, gallery, RefinementOptions(), 16)
    refined = refine_first_nodes(mpn, torch.cat([query, gallery]), graphs, RefinementOptions())
    labels = torch.arange(24) % 6, torch.arange(36) % 6
    assert result["mpn_refined"] == evaluator.query_gallery_metrics(refined, labels[0], gallery, labels[1])


# --- end to end ----------------------------------------------------------------------

@pytest.mark.slow
def test_pseudo_test_of_a_run_folder_finds_its_best_weights_and_writes_metrics_and_pictures(write_tiny_config,
                                                                                           tmp_path, caplog):
    config_path = write_tiny_config(num_epochs=2, lr_drop_epochs=[2])
    assert train.main(["--config_path", str(config_path), "--output_dir", str(tmp_path / "train")]) == 0
    (run,) = (tmp_path / "train").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    with caplog.at_level("ERROR"):
        assert train.main(["--run", str(run)]) == UserInputError.exit_code
    assert "add --mode pseudo_test" in caplog.text
    assert train.main(["--run", str(run), "--mode", "pseudo_test", "--set", "eval_params.graph_size=5",
                       "--set", "eval_params.k1=10", "--set", "logging.pictures=1",
                       "--output_dir", str(tmp_path / "test")]) == 0
    (test_run,) = (tmp_path / "test").iterdir()
    assert test_run.name.startswith("cub_resnet18_pseudo_test_")
    config = yaml.safe_load((test_run / "config.yaml").read_text())
    weights = summary["best_weights"]
    assert config["models"]["encoder_params"]["pretrained_path"] == str(run / weights["backbone"])
    assert config["models"]["gnn_params"]["pretrained_path"] == str(run / weights["mpn"])
    metrics = json.loads((test_run / "metrics.json").read_text())
    assert metrics["backbone"]["R@1"] == summary["best_metrics"]["test_R@1"]
    assert set(metrics["mpn_refined"]) == set(metrics["backbone"]) == {"R@1", "R@2", "R@4", "R@8", "NMI"}
    assert all(seconds >= 0 for seconds in metrics["seconds"].values())
    log = (test_run / "train.log").read_text()
    assert "Test, backbone only: R@1" in log and "Test, MPN-refined: R@1" in log
    pictures = {"retrieval_worst.png", "retrieval_random.png", "embedding_map.png"}
    assert pictures <= {path.name for path in (test_run / "pictures").iterdir()}
    assert pictures == {path.name for path in (test_run / "pictures" / "mpn_refined").iterdir()}
