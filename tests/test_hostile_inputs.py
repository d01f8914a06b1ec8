"""Issue 13: a hostile user's second round. Nothing lost, nothing silently wrong, one sentence."""
import json
import logging

import pytest
import yaml

import train


def only_run_folder(output_dir):
    (folder,) = [path for path in output_dir.iterdir() if path.is_dir()]
    return folder


@pytest.fixture
def stopped_run(tmp_path, write_tiny_config):
    """A 1-step, 1-epoch run of a 2-epoch config, stopped at the epoch boundary by num_epochs: 1."""
    config = write_tiny_config(num_epochs=1, max_iters_per_epoch=1)
    assert train.main(["--config_path", str(config), "--output_dir", str(tmp_path / "runs")]) == 0
    return only_run_folder(tmp_path / "runs")


@pytest.mark.slow
def test_resume_with_another_seed_is_refused_naming_the_key(stopped_run, caplog):
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(stopped_run), "--seed", "7"]) == 2
    assert "train_params.seed 0 -> 7" in caplog.text


@pytest.mark.slow
def test_resume_after_editing_the_run_config_is_refused_naming_the_key(stopped_run, caplog):
    config_path = stopped_run / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["train_params"]["lr"] = 0.5
    config_path.write_text(yaml.safe_dump(raw))
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(stopped_run)]) == 2
    assert "train_params.lr" in caplog.text and "0.5" in caplog.text


@pytest.mark.slow
def test_resume_with_more_epochs_is_applied_recorded_and_logged(stopped_run):
    config_path = stopped_run / "config.yaml"
    raw = yaml.safe_load(config_path.read_text())
    raw["train_params"]["num_epochs"] = 2
    config_path.write_text(yaml.safe_dump(raw))
    assert train.main(["--resume", str(stopped_run)]) == 0
    assert json.loads((stopped_run / "summary.json").read_text())["last_epoch"] == 2
    assert "train_params.num_epochs 1 -> 2" in (stopped_run / "train.log").read_text()
    assert yaml.safe_load(config_path.read_text())["train_params"]["num_epochs"] == 2
    assert train.main(["--resume", str(stopped_run)]) == 0  # the record now says 2


def test_resume_of_a_run_folder_without_config_yaml_says_so(tmp_path, caplog):
    (tmp_path / "last.pth").write_bytes(b"")
    with caplog.at_level(logging.ERROR):
        assert train.main(["--resume", str(tmp_path)]) == 2
    assert "has no config.yaml" in caplog.text and "--config_path is not used with --resume" in caplog.text
