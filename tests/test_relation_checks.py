"""Issue 22: relations between keys are checked up front: one sentence, or a warning naming the consequence."""
import logging
from pathlib import Path

import pytest

from net import build_mpn
from recipe import RunRecipe
from schema import load_config
from utils.errors import UserInputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def test_a_crop_larger_than_the_resize_is_refused():
    with pytest.raises(UserInputError, match=r"dataset.crop_size.*260.*resize_size 256.*pad every test image"):
        load_config(CONFIG_DIR / "config_cub_train.yaml", {"dataset.crop_size": 260})


def test_a_crop_equal_to_the_resize_is_fine():
    assert load_config(CONFIG_DIR / "config_demo_train.yaml")["dataset"]["crop_size"] == 24


def test_heads_that_do_not_divide_the_mpn_width_are_refused():
    gnn_params = load_config(CONFIG_DIR / "config_cub_train.yaml")["models"]["gnn_params"]
    gnn_params["gnn"]["num_heads"] = 3
    with pytest.raises(UserInputError, match=r"num_heads is 3, which does not divide the 512 channels.*1, 2, 4, 8"):
        build_mpn(gnn_params, 512)


def test_a_large_embedding_warns_with_the_checkpoint_size(caplog):
    config = load_config(CONFIG_DIR / "config_cub_train.yaml",
                         {"models.encoder_params.red": 1, "models.encoder_params.imagenet_pretrained": 0})
    with caplog.at_level(logging.WARNING, logger="recipe.run_recipe"):
        RunRecipe(config).build_models("cpu")
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "embedding of resnet50 is 2048-d" in warning
    assert "last.pth will take about 0.9" in warning and "set models.encoder_params.red to 4" in warning


def test_the_paper_embedding_gives_no_warning(caplog):
    config = load_config(CONFIG_DIR / "config_demo_train.yaml")
    with caplog.at_level(logging.WARNING, logger="recipe.run_recipe"):
        RunRecipe(config).build_models("cpu")
    assert not caplog.records
