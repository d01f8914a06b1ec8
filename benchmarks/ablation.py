"""The paper's ablation at equal budget: ``python -m benchmarks.ablation``.

Trains each arm over N seeds with ``train.main`` (the real training code,
one run folder per arm and seed, at ``<output>/<arm>/seed<N>/<run folder>/``,
labelled with the arm: ``tools.results <output>`` shows it) and prints one
table: per arm the R@1 and
NMI of the best epoch (mean ± sample std over the seeds), the R@1 of the
last epoch, the best and last epoch (means) and the wall time (the sum of
its runs'). The numbers are those of ``python -m tools.results --group``
over the arm's run folders. The table is also
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
(the demo, about 3 minutes per run on 2 idle cores; ``--jobs 2
--set train_params.threads=1`` runs two at a time) or with
``--config_path config/config_cub_train.yaml`` on a GPU machine.
"""
import argparse
import csv
import io
import logging
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import train
from tools.results import grouped_table
from tools.run_folders import read_run
from utils.errors import UserInputError
from utils.io import atomic_write_text
from run_folder.plots import plot_bars
from utils.boundary import command
from utils.console import quiet_console_of_worker, setup_console_logging

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
    parser.add_argument("--jobs", type=int, default=1,
                        help="Runs at the same time, each in its own process (default 1; give each run "
                             "its threads with --set train_params.threads=N).")
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
    if folder.exists() and not folder.is_dir():
        raise UserInputError(f"--output {folder} is a file, not a folder; name a new folder.")
    if folder.exists() and any(folder.iterdir()):
        raise UserInputError(f"--output {folder} already holds files; name a new folder so that earlier "
                             "results are kept.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"--output {folder} cannot be created ({error.strerror or error}); name a folder "
                             "you can write to.") from None
    return folder


def train_one(config_path, arm, seed, settings, arm_folder):
    """One run of ``train.py`` for ``arm`` and ``seed``; ``(its run folder or None, wall seconds)``.

    A run that fails (exit code 1, a diverged loss) keeps its folder: the
    results table lists it as broken and leaves it out of the means.
    """
    argv = ["--config_path", str(config_path), "--seed", str(seed), "--output_dir", str(arm_folder),
            "--label", arm]
    for setting in [*settings, *ARMS[arm]]:
        argv += ["--set", setting]
    started = time.perf_counter()
    code = train.main(argv)
    seconds = time.perf_counter() - started
    if code == UserInputError.exit_code:
        raise UserInputError(f"Arm {arm}, seed {seed}: train.py refused the run (the reason is logged above); "
                             "fix --config_path or --set and start again.")
    if code != 0:
        logger.warning("Arm %s, seed %d ended with exit code %d; it is left out of the means.", arm, seed, code)
    run_folders = sorted(child for child in Path(arm_folder).iterdir() if child.is_dir())
    return (run_folders[-1] if run_folders else None), seconds


def summarise_arm(arm, run_folders, wall_s, attempted):
    """The arm's row of ``tools.results --group`` (its runs differ only in the seed) as an ``ArmResult``.

    R@1 and NMI are the test metrics of the best epoch: its final test when
    the best epoch was chosen on held-out classes, else the best epoch's own.
    """
    _, groups, _ = grouped_table([read_run(folder) for folder in run_folders])
    (group,) = groups or [{}]
    best = "test of best " if "test of best R@1 mean" in group else "best test_"
    return ArmResult(
        arm=arm, runs=group.get("runs", 0), failed=attempted - group.get("runs", 0),
        r1=_mean_std(group, f"{best}R@1"), nmi=_mean_std(group, f"{best}NMI"),
        last_r1=_mean_std(group, "last test_R@1"), best_epoch=group.get("best epoch mean"),
        last_epoch=group.get("last epoch mean"), wall_s=wall_s)


def _mean_std(group, column):
    return group.get(f"{column} mean"), group.get(f"{column} std")


def run_ablation(config_path, arms, seeds, settings, folder, jobs=1):
    """Every arm over ``seeds`` seeds, one progress bar over arms x seeds; the ``ArmResult`` list."""
    runs = [(arm, seed) for arm in arms for seed in range(seeds)]
    run_folders = {arm: [] for arm in arms}
    wall = dict.fromkeys(arms, 0.0)
    with tqdm(total=len(runs), unit="run", desc="ablation", position=0) as bar:
        for (arm, seed), (run_folder, seconds) in train_all(config_path, runs, settings, folder, jobs):
            wall[arm] += seconds
            if run_folder is not None:
                run_folders[arm].append(run_folder)
            bar.set_postfix(done=f"{arm} seed {seed}", refresh=False)
            bar.update(1)
    return [summarise_arm(arm, sorted(run_folders[arm]), wall[arm], seeds) for arm in arms]


def train_all(config_path, runs, settings, folder, jobs):
    """Yield ``((arm, seed), train_one(...))`` as the runs finish: in this process, or in ``jobs`` processes.

    Separate processes (spawned, so each builds its own torch state) let a
    machine with many cores run several arms at once; each run is still
    ``train.main`` with its own seed, so the numbers do not depend on ``jobs``.
    Their consoles are quiet (warnings and errors only, no progress bars):
    the ablation's one bar shows the progress, each run's log is its
    ``train.log``.
    """
    arguments = {run: (config_path, *run, settings, folder / run[0] / f"seed{run[1]}") for run in runs}
    if jobs == 1:
        for run, args in arguments.items():
            yield run, train_one(*args)
        return
    executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=quiet_console_of_worker)
    try:
        futures = {executor.submit(train_one, *args): run for run, args in arguments.items()}
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


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


@command("benchmarks.ablation")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        raise UserInputError(f"--seeds {args.seeds} --jobs {args.jobs}: both must be at least 1.")
    if not Path(args.config_path).is_file():
        raise UserInputError(f"--config_path {args.config_path} does not exist; pass a train config "
                             "(config/config_<dataset>_train.yaml).")
    folder = output_folder(args.output)
    started = time.perf_counter()
    results = run_ablation(args.config_path, args.arms, args.seeds, args.settings, folder, args.jobs)
    total_s = time.perf_counter() - started
    table = markdown_table(results)
    atomic_write_text(folder / "ablation.csv", csv_text(results))
    plot(results, folder / "ablation.png",
         f"Ablation, {args.seeds} seed(s) per arm, {Path(args.config_path).name}")
    sys.stdout.write(table + f"\n\nTotal wall time {_duration(total_s)}; table in {folder / 'ablation.csv'}, "
                     f"chart in {folder / 'ablation.png'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
