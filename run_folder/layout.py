"""The names of a run folder's files, and the writers of its two small records.

A run folder (``runs/<dataset>_<net>_<mode>_<time>/``) holds ``config.yaml``
(the resolved config) and its hidden twin ``.config_recorded.yaml`` (what a
resume is checked against), ``environment.json``, ``train.log``,
``metrics.csv``, ``losses.png``, ``metrics.png``, ``summary.json``,
``last.pth`` (resumable) and the best weights in the authors' naming; a test
run writes ``metrics.json`` instead of the training files. Every module that
reads or writes one of them takes its name from here.
"""
import json
from pathlib import Path

from schema import config_to_yaml
from utils.io import atomic_write_text
from utils.text_files import read_json_object

CONFIG_NAME = "config.yaml"
RECORD_NAME = ".config_recorded.yaml"
ENVIRONMENT_NAME = "environment.json"
LOG_NAME = "train.log"
METRICS_CSV_NAME = "metrics.csv"
SUMMARY_NAME = "summary.json"
TEST_METRICS_NAME = "metrics.json"
CHECKPOINT_NAME = "last.pth"
PICTURES_FOLDER = "pictures"
# A hyper_search folder: one trial_NNN/ run folder per trial, the table of trials and the winner.
TRIALS_NAME = "trials.csv"
BEST_CONFIG_NAME = "best_config.yaml"
# The lock of the one process that writes the folder, and who that is (run_folder.lock).
LOCK_NAME = ".train.lock"
LOCK_OWNER_NAME = ".train.lock.owner"


def name_for_files(text):
    """``text`` usable in a file name on every system: ``timm:vit_small`` becomes ``timm-vit_small``."""
    return text.replace(":", "-")


def best_weight_names(score, config):
    """The authors' file names: ``<R@1>[neck_]<net_type>_<dataset>.pth`` and the MPN twin."""
    neck = "neck_" if config["models"]["encoder_params"]["neck"] else ""
    net_type = name_for_files(config["models"]["encoder_params"]["net_type"])
    dataset = config["dataset"]["dataset_short"]
    return (f"{score}{neck}{net_type}_{dataset}.pth", f"{score}gnn_{neck}{net_type}_{dataset}.pth")


def write_resolved_config(config, run_dir, note=""):
    """``config.yaml`` for the reader and the hidden record a resume is checked against.

    ``note``: comment lines put at the top of config.yaml only (a resume that changed the numbers).
    """
    text = config_to_yaml(config)
    atomic_write_text(Path(run_dir) / CONFIG_NAME, note + text)
    atomic_write_text(Path(run_dir) / RECORD_NAME, text)


def write_json(path, record):
    """A JSON record of the run (summary.json, metrics.json), written atomically."""
    atomic_write_text(path, json.dumps(record, indent=2))


def write_summary(run_dir, summary):
    write_json(Path(run_dir) / SUMMARY_NAME, summary)


def read_summary(run_dir):
    """The run's summary.json as a dict; missing or damaged, a ``UserInputError`` naming it."""
    return read_json_object(Path(run_dir) / SUMMARY_NAME, "run summary")
