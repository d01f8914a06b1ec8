"""The paper's ablation at equal budget: ``python -m benchmarks.ablation``.

Trains each arm over N seeds with ``train.main`` (the real training code,
one run folder per arm and seed) and prints one table: per arm the R@1 and
NMI of the best epoch (mean ± sample std over the seeds), the R@1 of the
last epoch, the best and last epoch and the wall time. The table is also
written as ``ablation.csv`` and ``ablation.png`` (bars with std error bars)
in the output folder. Every arm runs the same config, so the same epochs and
iterations; an arm only sets the keys it names, after the user's ``--set``.

Arms (those the config switches allow):
  lsgnn_lsce  the full method: backbone and MPN, both with label-smoothed CE
  lsce        the backbone loss alone (no MPN term)
  no_res1     MPN without the residual around attention (gnn.res1: 0)
  no_mlp      MPN without the feed-forward block (gnn.mlp: 0; the authors'
              identity branch around it stays)
  no_norm     MPN without its LayerNorms (gnn.norm1: 0, gnn.norm2: 0)

Run by hand from the repository root, e.g.
``python -m benchmarks.ablation --seeds 3 --set train_params.threads=1``
(the demo, about 3 minutes per run on 2 idle cores) or with
``--config_path config/config_cub_train.yaml`` on a GPU machine.
"""
import argparse
import csv
import io
import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import train
from utils.errors import UserInputError
from utils.io import atomic_write_text
from utils.plots import plot_bars
from utils.run_dir import setup_console_logging

logger = logging.getLogger("benchmarks.ablation")

FULL_METHOD = "train_params.loss_fn.fns=lsgnn_lsce"
# Arm name -> the --set overrides it adds to every run of it.
ARMS = {
    "lsgnn_lsce": [FULL_METHOD],
    "lsce": ["train_params.loss_fn.fns=lsce"],
    "no_res1": [FULL_METHOD, "models.gnn_params.gnn.res1=0"],
    "no_mlp": [FULL_METHOD, "models.gnn_params.gnn.mlp=0"],
    "no_norm": [FULL_METHOD, "models.gnn_params.gnn.norm1=0", "models.gnn_params.gnn.norm2=0"],
}
TABLE_COLUMNS = ("arm", "runs", "R@1", "NMI", "last R@1", "best epoch", "last epoch", "wall time")
CSV_COLUMNS = ("arm", "runs", "failed", "R@1_mean", "R@1_std", "NMI_mean", "NMI_std", "last_R@1_mean",
               "last_R@1_std", "best_epoch_mean", "last_epoch", "wall_s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--config_path", default=str(train.REPO_ROOT / train.DEFAULT_CONFIG),
                        help="Train config every arm starts from (default: the demo).")
    parser.add_argument("--seeds", type=int, default=3, help="Seeds per arm: 0 .. N-1 (default 3).")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM",
                        help=f"Arms to run (default all: {', '.join(ARMS)}).")
    parser.add_argument("--output", help="New folder for the run folders and the table "
                                         "(default runs/ablation_<time>).")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="Config override for every run (repeatable), as in train.py.")
    return parser.parse_args(argv)


@dataclass
class ArmResult:
    """One arm over its seeds; metrics in percent, ``None`` where no run finished."""

    arm: str
    runs: int
    failed: int
    r1: tuple
    nmi: tuple
    last_r1: tuple
    best_epoch: float
    last_epoch: float
    wall_s: float


def output_folder(path):
    """A new, empty folder: an ablation never writes over earlier results."""
    folder = Path(path) if path else Path("runs") / f"ablation_{time.strftime('%Y%m%d-%H%M%S')}"
    if folder.exists() and any(folder.iterdir()):
        raise UserInputError(f"--output {folder} already holds files; name a new folder so that earlier "
                             "results are kept.")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def train_one(config_path, arm, seed, settings, arm_folder):
    """One run of ``train.py`` for ``arm`` and ``seed``; ``(run folder or None, wall seconds)``."""
    argv = ["--config_path", str(config_path), "--seed", str(seed), "--output_dir", str(arm_folder)]
    for setting in [*settings, *ARMS[arm]]:
        argv += ["--set", setting]
    started = time.perf_counter()
    code = train.main(argv)
    seconds = time.perf_counter() - started
    if code == UserInputError.exit_code:
        raise UserInputError(f"Arm {arm}, seed {seed}: train.py refused the run (the reason is logged above); "
                             "fix --config_path or --set and start again.")
    run_folders = sorted(child for child in Path(arm_folder).iterdir() if child.is_dir())
    if code != 0 or not run_folders:
        logger.warning("Arm %s, seed %d ended with exit code %d; it is left out of the means.", arm, seed, code)
        return None, seconds
    return run_folders[-1], seconds


def read_result(run_folder):
    """Test metrics (percent, bare names) of the best and of the last epoch of one finished run.

    With held-out classes (``dataset.val: 1``) the best epoch's test metrics
    are those of its final test; otherwise the best epoch was chosen on the
    test set itself, as in the paper.
    """
    summary = json.loads((Path(run_folder) / "summary.json").read_text())
    best = summary.get("test_metrics_of_best_epoch") or _test_metrics(summary["best_metrics"])
    return {"best": {key: 100.0 * value for key, value in best.items()},
            "last": {key: 100.0 * value for key, value in _test_metrics(summary["last_metrics"]).items()},
            "best_epoch": summary["best_epoch"], "last_epoch": summary["last_epoch"]}


def _test_metrics(metrics):
    return {key[len("test_"):]: value for key, value in metrics.items() if key.startswith("test_")}


def summarise_arm(arm, run_folders, wall_s, attempted):
    """Mean and std over the arm's finished runs of the test metrics of the best and last epoch."""
    results = [read_result(folder) for folder in run_folders]
    return ArmResult(
        arm=arm, runs=len(results), failed=attempted - len(results),
        r1=_mean_std([result["best"].get("R@1") for result in results]),
        nmi=_mean_std([result["best"].get("NMI") for result in results]),
        last_r1=_mean_std([result["last"].get("R@1") for result in results]),
        best_epoch=_mean([result["best_epoch"] for result in results]),
        last_epoch=_mean([result["last_epoch"] for result in results]),
        wall_s=wall_s)


def _mean_std(values):
    values = [value for value in values if value is not None]
    if not values:
        return (None, None)
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)


def _mean(values):
    values = [value for value in values if value is not None]
    return statistics.fmean(values) if values else None


def run_ablation(config_path, arms, seeds, settings, folder):
    """Every arm over ``seeds`` seeds, one progress bar over arms x seeds; the ``ArmResult`` list."""
    finished = {arm: [] for arm in arms}
    wall = dict.fromkeys(arms, 0.0)
    jobs = [(arm, seed) for arm in arms for seed in range(seeds)]
    with tqdm(jobs, unit="run", desc="ablation", position=0) as bar:
        for arm, seed in bar:
            bar.set_postfix(arm=arm, seed=seed, refresh=True)
            run_folder, seconds = train_one(config_path, arm, seed, settings, folder / arm / f"seed{seed}")
            wall[arm] += seconds
            if run_folder is not None:
                finished[arm].append(run_folder)
    return [summarise_arm(arm, finished[arm], wall[arm], seeds) for arm in arms]


def markdown_table(results):
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for result in results:
        runs = f"{result.runs}" + (f" ({result.failed} failed)" if result.failed else "")
        cells = [result.arm, runs, _pm(result.r1), _pm(result.nmi), _pm(result.last_r1),
                 _number(result.best_epoch, 1), _number(result.last_epoch, 0), _duration(result.wall_s)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(results):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for result in results:
        writer.writerow(["" if value is None else value for value in (
            result.arm, result.runs, result.failed, *result.r1, *result.nmi, *result.last_r1, result.best_epoch,
            result.last_epoch, round(result.wall_s, 1))])
    return buffer.getvalue()


def plot(results, path, title):
    """Bars of R@1 and NMI of the best epoch per arm, std over seeds as error bars."""
    arms = [result.arm for result in results]
    panels = {"R@1 (best epoch)": [result.r1 for result in results],
              "NMI (best epoch)": [result.nmi for result in results]}
    plot_bars(arms, panels, path, title)


def _pm(mean_std):
    mean, std = mean_std
    if mean is None:
        return "-"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def _number(value, digits):
    return "-" if value is None else f"{value:.{digits}f}"


def _duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s"


def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    try:
        if args.seeds < 1:
            raise UserInputError(f"--seeds {args.seeds}: give at least 1 seed per arm.")
        if not Path(args.config_path).is_file():
            raise UserInputError(f"--config_path {args.config_path} does not exist; pass a train config "
                                 "(config/config_<dataset>_train.yaml).")
        folder = output_folder(args.output)
        started = time.perf_counter()
        results = run_ablation(args.config_path, args.arms, args.seeds, args.settings, folder)
        total_s = time.perf_counter() - started
        table = markdown_table(results)
        atomic_write_text(folder / "ablation.csv", csv_text(results))
        plot(results, folder / "ablation.png",
             f"Ablation, {args.seeds} seed(s) per arm, {Path(args.config_path).name}")
    except UserInputError as error:
        logger.error("%s", error)
        return UserInputError.exit_code
    sys.stdout.write(table + f"\n\nTotal wall time {_duration(total_s)}; table in {folder / 'ablation.csv'}, "
                     f"chart in {folder / 'ablation.png'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
