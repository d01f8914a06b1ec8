"""Issue 22: `--set KEY.PATH=VALUE`, `--mode` and `--threads` on the command line, validated like the file."""
import json
import logging
from pathlib import Path

import pytest
import yaml

import train
from schema import load_config
from utils.errors import UserInputError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
DEMO = str(CONFIG_DIR / "config_demo_train.yaml")


def overrides(*argv):
    return train.config_overrides(train.parse_args(list(argv)))


def test_set_values_are_read_as_yaml():
    assert overrides("--set", "train_params.lr=0.001", "--set", "train_params.lr_drop_epochs=[3, 5]",
                     "--set", "models.encoder_params.imagenet_weights=null", "--set", "dataset.dataset_path=d/x") == {
        "train_params.lr": 0.001, "train_params.lr_drop_epochs": [3, 5],
        "models.encoder_params.imagenet_weights": None, "dataset.dataset_path": "d/x"}


def test_mode_and_threads_flags_set_their_keys():
    assert overrides("--mode", "test", "--threads", "2") == {"mode": "test", "train_params.threads": 2}


def test_set_comes_after_the_other_flags():
    assert overrides("--seed", "3", "--set", "train_params.seed=4") == {"train_params.seed": 4}


def test_overrides_reach_the_validated_config():
    config = load_config(DEMO, overrides("--mode", "test", "--set", "train_params.lr=0.001",
                                         "--set", "mode=train", "--threads", "1"))
    assert config["mode"] == "train" and config["train_params"]["lr"] == 0.001
    assert config["train_params"]["threads"] == 1


@pytest.mark.parametrize("setting, message", [
    ("train_params.lrr=0.1", "Unknown key 'train_params.lrr' on the command line; did you mean 'train_params.lr'?"),
    ("train_param.lr=0.1", "Unknown key 'train_param.lr' on the command line; did you mean 'train_params'?"),
    ("train_params.lr.x=1", "'train_params.lr' has no keys below it"),
    ("train_params=1", "Key 'train_params' on the command line is a section"),
    ("train_params.lr=fast", "Key 'train_params.lr' in the command line must be of type float"),
    ("mode=tset", "Key 'mode' in the command line has the unknown value 'tset'"),
])
def test_a_bad_override_is_refused_with_the_closest_name(setting, message):
    with pytest.raises(UserInputError) as error:
        load_config(DEMO, overrides("--set", setting))
    assert message in str(error.value)


@pytest.mark.parametrize("setting", ["train_params.lr", "=3"])
def test_a_setting_without_key_and_value_is_one_sentence(setting):
    with pytest.raises(UserInputError, match="is not KEY.PATH=VALUE"):
        overrides("--set", setting)


def test_a_setting_with_broken_yaml_is_one_sentence():
    with pytest.raises(UserInputError, match="not valid YAML"):
        overrides("--set", "train_params.lr_drop_epochs=[3, 5")


def test_a_typo_exits_with_code_2_before_any_run_folder(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        assert train.main(["--set", "train_params.num_epoch=1", "--output_dir", str(tmp_path / "runs")]) == 2
    assert "did you mean 'train_params.num_epochs'?" in caplog.text
    assert not (tmp_path / "runs").exists()


def test_the_default_config_is_found_beside_train_py(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert Path(train.parse_args([]).config_path) == train.REPO_ROOT / train.DEFAULT_CONFIG
    assert Path(train.parse_args([]).config_path).is_file()


def test_mode_test_on_the_command_line_evaluates_once_and_records_it(write_tiny_config, tmp_path):
    config_path = write_tiny_config()
    output_dir = tmp_path / "runs"
    assert train.main(["--config_path", str(config_path), "--mode", "test", "--output_dir", str(output_dir)]) == 0
    (run_dir,) = list(output_dir.iterdir())
    assert run_dir.name.startswith("cub_resnet18_test_")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["mode"] == "test"
    assert set(json.loads((run_dir / "metrics.json").read_text())) == {"R@1", "R@2", "R@4", "R@8", "NMI", "nmi_backend"}
    assert "--mode test" in json.loads((run_dir / "environment.json").read_text())["command_line"]
