"""Results tables across runs: ``python -m tools.results runs/...``.

Every run folder at or below the paths given is read, at any depth. One
row per run, or with ``--group`` one row per config differing only in
``train_params.seed``: mean and sample standard deviation over its finished
runs. Metrics are in percent. Runs without results (in progress, stopped,
broken) are listed as such, never dropped. The Markdown table on stdout
holds what a reader compares runs by (run, label, status, seed, best epoch,
the test R@1 and NMI, the MPN-refined R@1 of a pseudo_test run, seconds) and
fits a 100-column terminal; ``--csv FILE`` writes every column (dataset,
backbone, selection protocol, best and last epoch with all their metrics,
the test metrics of the best epoch, ...) to a new file, never over an
existing one.
"""
import argparse
import copy
import csv
import glob
import io
import json
import logging
import statistics
import sys
from pathlib import Path

from tools.run_folders import FINISHED, read_run, run_folders_below
from utils.errors import UserInputError
from utils.io import atomic_write_text
from utils.boundary import command
from utils.console import setup_console_logging

logger = logging.getLogger("tools.results")

RUN_COLUMNS = ("run", "label", "status", "dataset", "backbone", "seed", "protocol")
GROUP_COLUMNS = ("label", "dataset", "backbone", "protocol", "seeds", "runs")
# The columns of the printed tables (those with a value in some row); the CSV has them all.
SHOWN_RUN_COLUMNS = ("run", "label", "status", "seed", "best epoch", "R@1", "NMI", "MPN R@1", "time_s")
SHOWN_GROUP_COLUMNS = ("label", "dataset", "backbone", "seeds", "R@1 mean", "NMI mean", "MPN R@1 mean",
                       "time_s mean")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.results", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="Run folders, folders of run folders, or globs of either.")
    parser.add_argument("--group", action="store_true",
                        help="One row per config differing only in seed: mean and standard deviation.")
    parser.add_argument("--csv", metavar="FILE", help="Also write the table to this new CSV file.")
    return parser.parse_args(argv)


def find_run_folders(patterns):
    """Run folders named by ``patterns``: each match and every run folder below it, at any depth."""
    folders = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise UserInputError(f"{pattern} matches no file or folder; pass run folders or the folder "
                                 "that holds them (e.g. runs/).")
        for match in map(Path, matches):
            folders.extend(run_folders_below(match))
    unique = list(dict.fromkeys(folder.resolve() for folder in folders))
    if not unique:
        raise UserInputError(f"No run folder (one holding config.yaml, train.log, metrics.csv or "
                             f"summary.json) in {' '.join(patterns)}.")
    return unique


def per_run_table(runs):
    """``(columns, rows)``: one row per run, metrics in percent."""
    best, last, test = (_keys(runs, attribute) for attribute in ("best", "last", "test_of_best"))
    refined = _keys(runs, "refined")
    columns = [*RUN_COLUMNS, "best epoch", "R@1", "NMI", "MPN R@1", *(f"best {key}" for key in best),
               "last epoch", *(f"last {key}" for key in last), *(f"test of best {key}" for key in test),
               *(f"MPN-refined {key}" for key in refined), "time_s"]
    rows = []
    for run in runs:
        row = {"run": run.path.name, "label": run.label, "status": _status(run), "dataset": run.dataset,
               "backbone": run.backbone, "seed": run.seed, "protocol": run.protocol,
               "best epoch": run.best_epoch, "R@1": run.result.get("R@1"), "NMI": run.result.get("NMI"),
               "MPN R@1": run.refined.get("R@1"), "last epoch": run.last_epoch, "time_s": run.seconds}
        row.update({f"best {key}": value for key, value in run.best.items()})
        row.update({f"last {key}": value for key, value in run.last.items()})
        row.update({f"test of best {key}": value for key, value in run.test_of_best.items()})
        row.update({f"MPN-refined {key}": value for key, value in run.refined.items()})
        rows.append(row)
    return columns, rows


def grouped_table(runs):
    """``(columns, rows, unfinished)``: finished runs grouped by their config without the seed."""
    columns, per_run = per_run_table(runs)
    value_columns = columns[len(RUN_COLUMNS):]
    groups = {}
    for run, row in zip(runs, per_run):
        if run.status == FINISHED:
            groups.setdefault(_config_without_seed(run.config), []).append((run, row))
    rows = []
    for members in groups.values():
        first = members[0][0]
        row = {"label": first.label, "dataset": first.dataset, "backbone": first.backbone,
               "protocol": first.protocol, "seeds": ", ".join(str(run.seed) for run, _ in members), "runs": len(members)}
        for column in value_columns:
            values = [member_row[column] for _, member_row in members
                      if isinstance(member_row.get(column), (int, float))]
            if values:
                row[f"{column} mean"] = statistics.fmean(values)
                row[f"{column} std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    grouped_columns = [*GROUP_COLUMNS, *(f"{column} {stat}" for column in value_columns
                                         for stat in ("mean", "std")
                                         if any(f"{column} mean" in row for row in rows))]
    unfinished = [{"run": run.path.name, "status": _status(run)} for run in runs if run.status != FINISHED]
    return grouped_columns, rows, unfinished


def shown_columns(candidates, rows):
    """The ``candidates`` that hold a value in some row (an empty label or NMI column is left out)."""
    return [column for column in candidates if any(row.get(column) not in (None, "") for row in rows)]


def problems(runs):
    """One line per run that has a problem (why it is broken or stopped), for below the table."""
    return "".join(f"\n- {run.path.name}: {run.status}: {run.problem}" for run in runs if run.problem)


def markdown_table(columns, rows):
    """A GitHub Markdown table; numbers rounded, ``mean``/``std`` pairs as ``mean ± std``."""
    shown = [column for column in columns if not column.endswith(" std")]
    header = [column[:-len(" mean")] if column.endswith(" mean") else column for column in shown]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        cells = []
        for column in shown:
            cell = _format(column, row.get(column))
            if column.endswith(" mean") and row.get(column[:-len("mean")] + "std") is not None:
                cell += " ± " + _format(column, row[column[:-len("mean")] + "std"])
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(columns, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


@command("tools.results")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    try:
        if args.csv and Path(args.csv).exists():
            raise UserInputError(f"--csv {args.csv} already exists; name a new file or move that one away.")
        runs = [read_run(folder) for folder in find_run_folders(args.paths)]
        text, table = (grouped_text if args.group else per_run_text)(runs)
        if args.csv:
            atomic_write_text(args.csv, table)
    except UserInputError as error:
        logger.error("%s", error)
        return UserInputError.exit_code
    sys.stdout.write(text + "\n")
    return 0


def per_run_text(runs):
    """``(Markdown for the terminal, CSV of every column)`` of one row per run."""
    columns, rows = per_run_table(runs)
    short = [{**row, "status": run.status} for run, row in zip(runs, rows)]
    text = markdown_table(shown_columns(SHOWN_RUN_COLUMNS, short), short)
    if any(run.problem for run in runs):
        text += "\n" + problems(runs)
    return text, csv_text(columns, rows)


def grouped_text(runs):
    """``(Markdown, CSV)`` of one row per config without the seed, then the runs left out of the means."""
    columns, rows, unfinished = grouped_table(runs)
    shown = shown_columns(SHOWN_GROUP_COLUMNS, rows) + [f"{column[:-len('mean')]}std" for column in
                                                        SHOWN_GROUP_COLUMNS if column.endswith(" mean")]
    text = markdown_table([column for column in columns if column in shown], rows)
    if unfinished:
        text += "\n\nNot in the means:\n\n" + markdown_table(["run", "status"], unfinished)
    return text, csv_text([*columns, "run", "status"], rows + unfinished)


def _keys(runs, attribute):
    """Metric names in the order first seen over the runs."""
    keys = {}
    for run in runs:
        keys.update(dict.fromkeys(getattr(run, attribute)))
    return list(keys)


def _status(run):
    return f"{run.status}: {run.problem}" if run.problem else run.status


def _config_without_seed(config):
    """A hashable key of the whole config except ``train_params.seed``."""
    config = copy.deepcopy(config)
    config.get("train_params", {}).pop("seed", None)
    return json.dumps(config, sort_keys=True, default=str)


def _format(column, value):
    if value is None:
        return ""
    if isinstance(value, float):
        if column.startswith("time_s"):
            return f"{value:.0f}"  # seconds, as the column's name says
        return f"{value:.1f}" if "epoch" in column else f"{value:.2f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
