"""SPEC 1: the authors' YAML schema, validated once, with one sentence per mistake."""
from pathlib import Path

import pytest
import yaml

from schema import SCHEMA, iter_options, load_config
from utils.errors import UserInputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def write_config(tmp_path, mutate):
    raw = yaml.safe_load((CONFIG_DIR / "config_cub_train.yaml").read_text())
    mutate(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda path: path.name)
def test_every_config_file_loads_and_validates(path):
    config = load_config(path)
    assert config["mode"] in ("train", "test", "pseudo_test", "hyper_search")
    assert config["models"]["gnn_params"]["classifier"]["num_classes"] == config["dataset"]["num_classes"]


def test_authors_misspelled_keys_are_accepted():
    config = load_config(CONFIG_DIR / "config_cub_train.yaml")
    assert config["train_params"]["temperatur"] == pytest.approx(0.2)
    assert config["output_paht"] == "."


def test_defaults_fill_keys_the_authors_files_lack():
    config = load_config(CONFIG_DIR / "config_cub_train.yaml")
    assert config["train_params"]["lr_drop_epochs"] == [31, 51]
    assert config["models"]["encoder_params"]["imagenet_pretrained"] == 1
    assert config["dataset"]["crop_size"] == 227 and config["dataset"]["resize_size"] == 256


def test_each_override_replaces_only_its_own_key():
    config = load_config(CONFIG_DIR / "config_cub_train.yaml",
                         {"models.encoder_params.pretrained_path": "bb.pth"})
    assert config["models"]["encoder_params"]["pretrained_path"] == "bb.pth"
    assert config["models"]["gnn_params"]["pretrained_path"] == "no"


def test_unknown_key_suggests_the_closest(tmp_path):
    path = write_config(tmp_path, lambda raw: raw["train_params"].update(temperature=0.2))
    with pytest.raises(UserInputError, match=r"'train_params.temperature'.*did you mean 'train_params.temperatur'"):
        load_config(path)


def test_unknown_value_lists_the_allowed_ones(tmp_path):
    path = write_config(tmp_path, lambda raw: raw["models"]["encoder_params"].update(net_type="resnet51"))
    with pytest.raises(UserInputError, match=r"models.encoder_params.net_type.*'resnet51'.*resnet50"):
        load_config(path)


def test_wrong_type_names_key_and_type(tmp_path):
    path = write_config(tmp_path, lambda raw: raw["train_params"].update(num_epochs="many"))
    with pytest.raises(UserInputError, match=r"train_params.num_epochs.*int"):
        load_config(path)


def test_missing_required_key_is_named(tmp_path):
    path = write_config(tmp_path, lambda raw: raw["train_params"].pop("lr"))
    with pytest.raises(UserInputError, match=r"'train_params.lr' is missing"):
        load_config(path)


def test_unknown_loss_term_is_named(tmp_path):
    path = write_config(tmp_path, lambda raw: raw["train_params"]["loss_fn"].update(fns="lsce_triplet"))
    with pytest.raises(UserInputError, match=r"fns.*'triplet'"):
        load_config(path)


def test_float_written_without_dot_is_read_as_a_number(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text((CONFIG_DIR / "config_cub_train.yaml").read_text().replace(
        "lr: 0.0001563663718906821", "lr: 1e-4"))
    assert load_config(path)["train_params"]["lr"] == pytest.approx(1e-4)


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: [train\n")
    with pytest.raises(UserInputError, match="not valid YAML"):
        load_config(bad)


def test_every_option_has_a_doc():
    options = list(iter_options(SCHEMA))
    assert len(options) > 60
    assert all(option.doc for _, option in options)


def test_crop_scale_must_be_an_ordered_share(tmp_path):
    path = write_config(tmp_path, lambda raw: raw["dataset"].update(crop_scale=[0.9, 0.2]))
    with pytest.raises(UserInputError, match=r"dataset.crop_scale"):
        load_config(path)


def test_extra_metrics_default_to_none_and_unknown_or_repeated_ones_are_refused(tmp_path):
    assert load_config(write_config(tmp_path, lambda raw: None))["eval_params"]["metrics"] == []
    path = write_config(tmp_path, lambda raw: raw["eval_params"].update(metrics=["map_at_r", "mAP"]))
    with pytest.raises(UserInputError, match=r"eval_params.metrics.*'mAP'.*map_at_r, r_precision"):
        load_config(path)
    path = write_config(tmp_path, lambda raw: raw["eval_params"].update(metrics=["map_at_r", "map_at_r"]))
    with pytest.raises(UserInputError, match=r"eval_params.metrics.*twice"):
        load_config(path)
