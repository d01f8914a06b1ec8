"""Run folders read as data: what one run was, how far it got and what it scored.

Only text files are read (``config.yaml`` as data, its aliases bounded,
``summary.json``, ``metrics.csv``, the last line of ``train.log``); nothing is
unpickled and nothing is written. Files a run folder may hold besides
(weights, plots, ``environment.json``, ...) are ignored.
"""
import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from run_folder.history import is_metric_column
from run_folder.layout import CONFIG_NAME, LOG_NAME, METRICS_CSV_NAME, SUMMARY_NAME, TEST_METRICS_NAME
from schema.loading import DuplicateKey, ExpandsTooFar, safe_load_unique_keys
from utils.errors import UserInputError
from utils.text_files import read_json_object

RUN_FILES = (CONFIG_NAME, LOG_NAME, METRICS_CSV_NAME, SUMMARY_NAME)
FINISHED, IN_PROGRESS, STOPPED, BROKEN = "finished", "in progress", "stopped", "broken"
# train.py logs this when SIGINT/SIGTERM stopped the run (resumable).
STOPPED_MARK = "Stopped at epoch"
# train.py writes summary.json with this status for a run that stopped on an error.
FAILED_MARK = "failed"
TEST_MODES = ("test", "pseudo_test")
# The two sets of metrics in a pseudo_test run's metrics.json (engine.test_modes.run_pseudo_test).
PSEUDO_TEST_BACKBONE, PSEUDO_TEST_REFINED = "backbone", "mpn_refined"
# Characters of a logged error kept as the reason a run is broken.
PROBLEM_LENGTH = 120


@dataclass
class Run:
    """One run folder. Metrics are in percent, keyed as in metrics.csv
    (``val_R@1``); ``test_of_best`` keys are the bare names (``R@1``)."""

    path: Path
    status: str
    problem: str = ""
    config: dict = field(default_factory=dict)
    best_epoch: int = None
    best: dict = field(default_factory=dict)
    last_epoch: int = None
    last: dict = field(default_factory=dict)
    test_of_best: dict = field(default_factory=dict)
    refined: dict = field(default_factory=dict)
    seconds: float = None

    @property
    def label(self):
        return self.config.get("label") or ""

    @property
    def result(self):
        """The run's test metrics (bare names): of the best epoch, or of a test run's one evaluation."""
        if self.test_of_best:
            return self.test_of_best
        metrics = self.best if self.best else self.last
        return {key.removeprefix("test_"): value for key, value in metrics.items() if key.startswith("test_")}

    @property
    def dataset(self):
        """``dataset_short``; a table run also names its table, so runs on different tables are told apart."""
        dataset = self.config.get("dataset", {})
        name = dataset.get("dataset_short", "")
        return f"table {Path(str(dataset['table'])).name}" if name == "table" and dataset.get("table") else name

    @property
    def backbone(self):
        return self.config.get("models", {}).get("encoder_params", {}).get("net_type", "")

    @property
    def seed(self):
        return self.config.get("train_params", {}).get("seed")

    @property
    def protocol(self):
        """How the best epoch was chosen: on the test set (the paper's) or held-out classes."""
        dataset = self.config.get("dataset", {})
        if not self.config:
            return ""
        if self.config.get("mode", "train") != "train":
            return self.config.get("mode", "")
        if not dataset.get("val"):
            return "select on test"
        if dataset.get("val_protocol") == "mlrc":
            return f"mlrc fold {dataset.get('val_fold')}"
        return f"val {dataset.get('val_fraction')}"


def looks_like_run(folder):
    return any((Path(folder) / name).is_file() for name in RUN_FILES)


def run_folders_below(folder):
    """Every run folder at or below ``folder``, at any depth (an ablation's ``<arm>/seed<N>/<run>``,
    a random search's trials), in path order; links to folders are not followed."""
    found = []
    for root, children, _files in os.walk(folder):
        children.sort()
        if looks_like_run(root):
            found.append(Path(root))
    return found


def read_run(folder):
    """A ``Run``; a folder that cannot be read is a ``broken`` run saying why."""
    folder = Path(folder)
    try:
        return _read_run(folder)
    except RunUnreadable as error:
        return Run(folder, BROKEN, problem=str(error))


class RunUnreadable(Exception):
    """A file of the run folder is missing or not what train.py writes."""


def _read_run(folder):
    config = _read_config(folder / CONFIG_NAME)
    rows = _read_rows(folder / METRICS_CSV_NAME)
    summary = _read_json(folder / SUMMARY_NAME)
    failure = summary.get("error", "") if summary is not None and summary.get("status") == FAILED_MARK else None
    if failure is not None:
        summary = None  # only says why the run stopped; its epochs are in metrics.csv
    run = Run(folder, FINISHED if summary is not None else IN_PROGRESS, config=config)
    run.seconds = _total_seconds(rows)
    if config.get("mode", "train") in TEST_MODES:
        return _test_mode_run(run, folder)
    if rows:
        run.last_epoch, run.last = _epoch(rows[-1]), _metrics(rows[-1])
        run.best_epoch, run.best = _best_row(rows, _selection_split(config))
    if summary is not None:
        run.best_epoch = summary.get("best_epoch", run.best_epoch)
        if "best_metrics" in summary:
            run.best = _percent(summary["best_metrics"])
        run.test_of_best = _percent(summary.get("test_metrics_of_best_epoch", {}))
    elif failure is not None:
        run.status, run.problem = BROKEN, str(failure).split(";")[0][:PROBLEM_LENGTH]
    else:
        run.status, run.problem = _unfinished_status(folder / LOG_NAME)
    return run


def _test_mode_run(run, folder):
    """``mode: test`` evaluates once into metrics.json, shown as its last metrics; ``pseudo_test``'s
    metrics.json holds the backbone's metrics (its last), the MPN-refined ones and the seconds of each stage."""
    metrics = _read_json(folder / TEST_METRICS_NAME)
    if metrics is None:
        run.status, run.problem = _unfinished_status(folder / LOG_NAME)
        return run
    run.status = FINISHED
    if isinstance(metrics.get(PSEUDO_TEST_BACKBONE), dict):
        run.refined = _percent(metrics.get(PSEUDO_TEST_REFINED) or {})
        seconds = [_number(value) for value in (metrics.get("seconds") or {}).values()]
        run.seconds = sum(value for value in seconds if value is not None) or None
        metrics = metrics[PSEUDO_TEST_BACKBONE]
    run.last = _percent({f"test_{name}": value for name, value in metrics.items()})
    return run


def _read_config(path):
    if not path.is_file():
        raise RunUnreadable("no config.yaml")
    try:
        config = safe_load_unique_keys(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, DuplicateKey, ExpandsTooFar, UnicodeDecodeError, OSError) as error:
        raise RunUnreadable(f"config.yaml unreadable ({type(error).__name__})") from None
    if not isinstance(config, dict):
        raise RunUnreadable("config.yaml is not a mapping")
    return config


def _read_json(path):
    """The parsed dict, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        return read_json_object(path, "record")
    except UserInputError:
        raise RunUnreadable(f"{path.name} unreadable") from None


def _read_rows(path):
    if not path.is_file():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (csv.Error, UnicodeDecodeError, OSError):
        raise RunUnreadable("metrics.csv unreadable") from None
    if rows and "epoch" not in rows[0]:
        raise RunUnreadable("metrics.csv has no epoch column")
    return [row for row in rows if _epoch(row) is not None]


def _selection_split(config):
    dataset = config.get("dataset", {})
    return "val" if dataset.get("val") else "test"


def _best_row(rows, split):
    """The trainer's rule: the first epoch >= 1 with the highest selection R@1."""
    best_epoch, best, best_score = None, {}, -math.inf
    for row in rows:
        score = _number(row.get(f"{split}_R@1"))
        if _epoch(row) >= 1 and score is not None and score > best_score:
            best_epoch, best, best_score = _epoch(row), _metrics(row), score
    return best_epoch, best


def _metrics(row):
    numbers = {key: _number(value) for key, value in row.items() if key and is_metric_column(key)}
    return _percent({key: value for key, value in numbers.items() if value is not None})


def _percent(metrics):
    """Metrics in percent. train.py writes fractions; files already in percent
    (any value above 1, or a ``units: percent`` entry) are kept as they are."""
    numbers = {key: _number(value) for key, value in metrics.items() if key != "units"}
    numbers = {key: value for key, value in numbers.items() if value is not None}
    already_percent = metrics.get("units") == "percent" or any(value > 1.0 for value in numbers.values())
    return {key: value if already_percent else 100.0 * value for key, value in numbers.items()}


def _number(value):
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _epoch(row):
    number = _number(row.get("epoch"))
    return int(number) if number is not None else None


def _total_seconds(rows):
    """Sum of the epochs' ``time_s`` (training and evaluation), or None."""
    times = [_number(row.get("time_s")) for row in rows]
    times = [value for value in times if value is not None]
    return sum(times) if times else None


def _unfinished_status(log_path):
    """``(status, problem)`` of a run without results, from the last line of its log."""
    last_line = _last_line(log_path)
    if STOPPED_MARK in last_line:
        return STOPPED, "resume with train.py --resume"
    if " ERROR " in last_line or " CRITICAL " in last_line:
        message = last_line.split(": ", 1)[-1]
        return BROKEN, message.split(";")[0][:PROBLEM_LENGTH]
    return IN_PROGRESS, ""


def _last_line(path):
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line.strip()), "")
