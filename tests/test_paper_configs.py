"""The paper's configuration files (SPEC 1 and 7).

Each of the eight files ``config/config_{dataset}_{mode}.yaml`` must keep the
authors' YAML schema (misspelled keys included) and hold the values of
SPEC 7's table. The table below is SPEC's, to 4-5 significant digits; the
files carry the authors' full digits.
"""

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
MODES = ("train", "test")


class PaperConfig(NamedTuple):
    """One column of SPEC 7's table."""

    classes_per_batch: int  # P
    images_per_class: int  # K
    batch_sampler: str
    lr: float
    weight_decay: float
    temperature: float
    mpn_layers: int
    mpn_heads: int
    mpn_cat: int
    loss_terms: frozenset
    train_classes: int
    dataset_short: str
    dataset_path: str
    released_weights: str


PAPER_CONFIGS = {
    "cub": PaperConfig(
        classes_per_batch=6, images_per_class=9, batch_sampler="NumberSampler",
        lr=1.5637e-4, weight_decay=6.0597e-6, temperature=0.2,
        mpn_layers=1, mpn_heads=2, mpn_cat=0,
        loss_terms=frozenset({"lsce", "lsgnn"}), train_classes=100,
        dataset_short="cub", dataset_path="data/CUB_200_2011",
        released_weights="best_weights/0.7029034436191762resnet50_cub.pth",
    ),
    "cars": PaperConfig(
        classes_per_batch=10, images_per_class=7, batch_sampler="no",
        lr=3.6683e-4, weight_decay=2.5519e-9, temperature=0.1111,
        mpn_layers=2, mpn_heads=8, mpn_cat=1,
        loss_terms=frozenset({"lsce", "lsgnn"}), train_classes=98,
        dataset_short="cars", dataset_path="data/CARS",
        released_weights="best_weights/0.8813184110195548resnet50_cars.pth",
    ),
    "sop": PaperConfig(
        classes_per_batch=15, images_per_class=6, batch_sampler="no",
        lr=2.4725e-4, weight_decay=2.7650e-13, temperature=0.6047,
        mpn_layers=1, mpn_heads=8, mpn_cat=0,
        loss_terms=frozenset({"lsce"}), train_classes=11318,
        dataset_short="sop", dataset_path="data/Stanford_Online_Products",
        released_weights="best_weights/0.813824336385574resnet50_sop.pth",
    ),
    "inshop": PaperConfig(
        classes_per_batch=14, images_per_class=4, batch_sampler="no",
        lr=1.1266e-4, weight_decay=1.0555e-7, temperature=0.1859,
        mpn_layers=1, mpn_heads=4, mpn_cat=0,
        loss_terms=frozenset({"lsce", "lsgnn"}), train_classes=3997,
        dataset_short="in_shop", dataset_path="data/In_shop",
        released_weights="best_weights/0.928resnet50_in_shop.pth",
    ),
}

# The authors' schema: every section (and the keys named in SPEC 1) by path.
AUTHORS_SCHEMA = (
    "mode",
    "application",
    "output_paht",
    "models.encoder_params",
    "models.encoder_params.pretrained_path",
    "models.encoder_params.net_type",
    "models.gnn_params",
    "models.gnn_params.gnn",
    "models.gnn_params.classifier",
    "graph_params",
    "dataset",
    "dataset.dataset_path",
    "train_params",
    "train_params.temperatur",
    "train_params.loss_fn",
    "train_params.loss_fn.fns",
    "train_params.is_apex",
    "eval_params",
)

CONFIG_FILES = [(dataset, mode) for dataset in PAPER_CONFIGS for mode in MODES]
CONFIG_IDS = [f"{dataset}_{mode}" for dataset, mode in CONFIG_FILES]
each_config = pytest.mark.parametrize("dataset, mode", CONFIG_FILES, ids=CONFIG_IDS)
each_dataset = pytest.mark.parametrize("dataset", list(PAPER_CONFIGS))


@lru_cache(maxsize=None)
def load_config(dataset, mode):
    with open(CONFIG_DIR / f"config_{dataset}_{mode}.yaml") as config_file:
        return yaml.safe_load(config_file)


def lookup(config, dotted_key):
    value = config
    for key in dotted_key.split("."):
        value = value[key]
    return value


def has_key(config, dotted_key):
    try:
        lookup(config, dotted_key)
    except (KeyError, TypeError):
        return False
    return True


@each_config
def test_config_has_every_section_of_the_authors_schema(dataset, mode):
    config = load_config(dataset, mode)
    missing = [key for key in AUTHORS_SCHEMA if not has_key(config, key)]
    assert missing == []


@each_config
def test_config_keeps_the_authors_misspelled_keys(dataset, mode):
    config = load_config(dataset, mode)
    assert "output_paht" in config and "output_path" not in config
    assert "temperatur" in config["train_params"]
    assert "temperature" not in config["train_params"]


@each_config
def test_mode_matches_the_file_name(dataset, mode):
    assert load_config(dataset, mode)["mode"] == mode


@each_config
def test_batch_is_p_classes_by_k_images(dataset, mode):
    train_params = load_config(dataset, mode)["train_params"]
    expected = PAPER_CONFIGS[dataset]
    assert train_params["num_classes_iter"] == expected.classes_per_batch
    assert train_params["num_elements_class"] == expected.images_per_class


@each_config
def test_only_cub_draws_p_with_the_number_sampler(dataset, mode):
    bssampling = load_config(dataset, mode)["dataset"]["bssampling"]
    assert bssampling == PAPER_CONFIGS[dataset].batch_sampler


@each_config
def test_hyperparameters_load_as_floats_not_strings(dataset, mode):
    """PyYAML reads `1e-4` (no dot) as a string; the files must spell floats so they parse."""
    train_params = load_config(dataset, mode)["train_params"]
    for key in ("lr", "weight_decay", "temperatur"):
        assert isinstance(train_params[key], float), key


@each_config
def test_learning_rate_and_weight_decay_match_spec(dataset, mode):
    train_params = load_config(dataset, mode)["train_params"]
    expected = PAPER_CONFIGS[dataset]
    assert train_params["lr"] == pytest.approx(expected.lr, rel=1e-3)
    assert train_params["weight_decay"] == pytest.approx(expected.weight_decay, rel=1e-3)


@each_config
def test_temperature_matches_spec(dataset, mode):
    temperature = load_config(dataset, mode)["train_params"]["temperatur"]
    assert temperature == pytest.approx(PAPER_CONFIGS[dataset].temperature, rel=1e-3)


@each_config
def test_training_runs_70_epochs(dataset, mode):
    assert load_config(dataset, mode)["train_params"]["num_epochs"] == 70


@each_config
def test_mpn_layers_heads_and_cat_match_spec(dataset, mode):
    gnn_params = load_config(dataset, mode)["models"]["gnn_params"]
    expected = PAPER_CONFIGS[dataset]
    assert gnn_params["gnn"]["num_layers"] == expected.mpn_layers
    assert gnn_params["gnn"]["num_heads"] == expected.mpn_heads
    assert gnn_params["cat"] == expected.mpn_cat


@each_config
def test_loss_terms_match_spec(dataset, mode):
    fns = load_config(dataset, mode)["train_params"]["loss_fn"]["fns"]
    assert frozenset(fns.split("_")) == PAPER_CONFIGS[dataset].loss_terms


@each_config
def test_loss_terms_are_weighted_one_to_one(dataset, mode):
    loss_fn = load_config(dataset, mode)["train_params"]["loss_fn"]
    assert loss_fn["scaling_ce"] == 1
    assert loss_fn["scaling_gnn"] == 1


@each_config
def test_train_classes_match_spec(dataset, mode):
    config = load_config(dataset, mode)
    train_classes = PAPER_CONFIGS[dataset].train_classes
    assert config["dataset"]["num_classes"] == train_classes
    assert config["models"]["gnn_params"]["classifier"]["num_classes"] == train_classes


@each_config
def test_dataset_name_and_default_path_match_spec(dataset, mode):
    dataset_section = load_config(dataset, mode)["dataset"]
    expected = PAPER_CONFIGS[dataset]
    assert dataset_section["dataset_short"] == expected.dataset_short
    assert dataset_section["dataset_path"] == expected.dataset_path


@each_config
def test_data_uses_gl_orig_re_transforms_and_4_workers(dataset, mode):
    dataset_section = load_config(dataset, mode)["dataset"]
    assert dataset_section["trans"] == "GL_orig_RE"
    assert dataset_section["nb_workers"] == 4


@each_config
def test_backbone_is_resnet50_with_512d_embedding_and_no_neck(dataset, mode):
    encoder_params = load_config(dataset, mode)["models"]["encoder_params"]
    assert encoder_params["net_type"] == "resnet50"
    assert encoder_params["red"] == 4
    assert encoder_params["neck"] == 0


@each_config
def test_mpn_keeps_the_embedding_width_with_dropout_01(dataset, mode):
    gnn_params = load_config(dataset, mode)["models"]["gnn_params"]
    assert gnn_params["red"] == 1
    for key in ("dropout_1", "dropout_2", "dropout_mlp"):
        assert gnn_params["gnn"][key] == pytest.approx(0.1), key


@each_config
def test_mpn_classifier_has_a_neck(dataset, mode):
    assert load_config(dataset, mode)["models"]["gnn_params"]["classifier"]["neck"] == 1


@each_dataset
def test_test_config_loads_the_released_backbone_weights(dataset):
    encoder_params = load_config(dataset, "test")["models"]["encoder_params"]
    assert encoder_params["pretrained_path"] == PAPER_CONFIGS[dataset].released_weights


@each_dataset
def test_train_config_starts_from_imagenet_weights(dataset):
    encoder_params = load_config(dataset, "train")["models"]["encoder_params"]
    assert encoder_params["pretrained_path"] == "no"


@each_config
def test_precision_is_what_the_authors_ran(dataset, mode):
    """Their train.py always overwrote is_apex, so every paper run was Apex O1 mixed precision."""
    assert load_config(dataset, mode)["train_params"]["is_apex"] == "authors"
