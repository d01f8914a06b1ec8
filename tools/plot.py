"""``python -m tools.plot RUN... [--output FILE.png]``: several runs' curves in one figure.

Each RUN is a run folder of ``train.py``; it is read as data only
(``metrics.csv``; ``summary.json`` for the best epoch when the run has
finished; ``config.yaml``, read as data with its aliases bounded, for the dataset),
never imported or unpickled. One panel per metric (in percent)
and one for the total training loss; each run keeps its colour in every
panel, its best epoch marked with a star.
"""
import argparse
import csv
import logging
import math
import sys
from pathlib import Path

import yaml

from utils.errors import UserInputError
from run_folder.history import is_metric_column
from run_folder.layout import CONFIG_NAME, METRICS_CSV_NAME, SUMMARY_NAME
from run_folder.plots import plot_runs
from schema.loading import DuplicateKey, ExpandsTooFar, safe_load_unique_keys
from utils.boundary import check_new_outputs, command
from utils.console import setup_console_logging
from utils.text_files import read_json_object

logger = logging.getLogger("tools.plot")

DEFAULT_OUTPUT = "runs_compared.png"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.plot", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run folders (each holds metrics.csv).")
    parser.add_argument("--output", help=f"The PNG file to write, a new one (default: {DEFAULT_OUTPUT} in this "
                                         "folder, or the first of runs_compared_1.png, ... that is free).")
    return parser.parse_args(argv)


def read_rows(run_dir):
    """The rows of ``metrics.csv`` with numbers as numbers ('' stays missing)."""
    path = Path(run_dir) / METRICS_CSV_NAME
    if not path.is_file():
        raise UserInputError(f"{run_dir} has no metrics.csv; pass training run folders written by train.py "
                             "(the folders in runs/).")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [checked_row(row, path, line) for line, row in enumerate(csv.DictReader(handle), start=2)]
    except (csv.Error, UnicodeDecodeError, OSError) as error:
        raise UserInputError(f"{path} is not a readable CSV file ({type(error).__name__}); it is damaged, "
                             "leave that run out.") from None
    if not rows:
        raise UserInputError(f"{path} holds no epoch rows yet; wait for the run's first epoch to finish.")
    return rows


def checked_row(row, path, line):
    """``{column: finite number or None}`` with a whole ``epoch``, or a sentence naming the line."""
    def damaged(problem):
        return UserInputError(f"{path} is damaged at line {line} ({problem}); leave that run out.")

    if None in row:
        raise damaged("more values than columns")
    numbers = {key: _number(value) for key, value in row.items()}
    for key, value in numbers.items():
        if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
            raise damaged(f"{key} is {row[key]!r}, not a finite number")
    if not isinstance(numbers.get("epoch"), int):
        raise damaged(f"epoch is {row.get('epoch')!r}, not a whole number")
    return numbers


def best_epoch(run_dir, rows):
    """The best epoch of ``summary.json``, or of the selection R@1 for a run still going."""
    summary = Path(run_dir) / SUMMARY_NAME
    if summary.is_file():
        try:
            best = read_json_object(summary, "run summary").get("best_epoch")
        except UserInputError:
            best = "damaged"
        if best is not None and (isinstance(best, bool) or not isinstance(best, int)):
            raise UserInputError(f"{summary} is damaged (no whole best_epoch in a JSON object); leave that run "
                                 "out.")
        return best
    columns = [column for column in rows[0] if is_metric_column(column) and column.endswith("_R@1")]
    if not columns:
        return None
    selection = "val_R@1" if "val_R@1" in columns else columns[0]
    trained = [row for row in rows if row["epoch"] >= 1 and row.get(selection) is not None]
    return max(trained, key=lambda row: row[selection])["epoch"] if trained else None


def dataset_of(run_dir):
    """``dataset.dataset_short`` of the run's resolved config, or None."""
    path = Path(run_dir) / CONFIG_NAME
    try:
        config = safe_load_unique_keys(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (yaml.YAMLError, DuplicateKey, ExpandsTooFar, UnicodeDecodeError, OSError):
        return None
    dataset = config.get("dataset") if isinstance(config, dict) else None
    name = dataset.get("dataset_short") if isinstance(dataset, dict) else None
    return name if isinstance(name, str) else None


def _number(value):
    if value in (None, ""):
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


def first_free(name):
    """``name`` in this folder, or ``<stem>_1<suffix>``, ``_2``, ... if taken: a plot never replaces a file."""
    path, number = Path(name), 0
    while path.exists():
        number += 1
        path = Path(f"{Path(name).stem}_{number}{Path(name).suffix}")
    return path


@command("tools.plot")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    runs, datasets = [], []
    for run in args.runs:
        rows = read_rows(run)
        runs.append((Path(run).resolve().name, rows, best_epoch(run, rows)))
        datasets.append(dataset_of(run))
    output = check_new_outputs(Path(args.output), [Path(args.output)]) if args.output else first_free(DEFAULT_OUTPUT)
    named = sorted({dataset for dataset in datasets if dataset})
    plot_runs(runs, output, title=f"{len(runs)} runs" + (f" on {', '.join(named)}" if named else ""))
    logger.info("Wrote %s (%d runs)", output, len(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
