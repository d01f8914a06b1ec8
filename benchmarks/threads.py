"""How far the thread count moves a run: ``python -m benchmarks.threads``.

Trains the same config (default: the demo) once per thread count, each in
its own ``train.py`` process (``--threads N``, everything else equal), at
the same time or one after the other (``--parallel``), then prints per
thread count the test R@1 of every epoch's evaluation, the best and the last
epoch, and the first epoch whose R@1 differs from the first thread count's
run. Float sums are reduced in a different order with another thread count,
so the weights differ in their last bits after the first step; training
then amplifies that. ``OMP_WAIT_POLICY=PASSIVE`` is set for the runs: it
changes no number, only keeps waiting threads from spinning on a shared
machine.

Run by hand from the repository root, e.g.
``python -m benchmarks.threads --threads 1 2 4 --parallel``.
"""
import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from utils.boundary import command
from utils.flags import MAX_THREADS, at_least

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), nargs="+", default=[1, 2, 4], help="Thread counts (default 1 2 4).")
    parser.add_argument("--config_path", default=str(REPO_ROOT / "config" / "config_demo_train.yaml"))
    parser.add_argument("--output", help="New folder for the runs (default runs/threads_<time>).")
    parser.add_argument("--parallel", action="store_true", help="Start all runs at once (the numbers do not "
                                                                "depend on it, only the wall time).")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="Config override for every run (repeatable), as in train.py.")
    return parser.parse_args(argv)


def prepare_dataset(config_path):
    """The dataset (the demo's is written on first use) before runs that start together would all write it."""
    from engine.components import ensure_dataset_present
    from schema import load_config
    ensure_dataset_present(load_config(config_path))


def start_run(config_path, threads, folder, settings):
    command = [sys.executable, str(REPO_ROOT / "train.py"), "--config_path", config_path, "--threads", str(threads),
               "--output_dir", str(folder), "--label", f"threads{threads}"]
    for setting in settings:
        command += ["--set", setting]
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads)}
    log = open(folder.parent / f"{folder.name}.console.txt", "w", encoding="utf-8")
    return subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT)


def read_recalls(folder):
    """``{epoch: test R@1 in percent}`` of the one run folder in ``folder``."""
    (run,) = [child for child in folder.iterdir() if child.is_dir()]
    with open(run / "metrics.csv", newline="", encoding="utf-8") as handle:
        return {int(row["epoch"]): 100 * float(row["test_R@1"]) for row in csv.DictReader(handle)}


def table(recalls):
    """Markdown: one row per thread count."""
    reference_threads = next(iter(recalls))
    reference = recalls[reference_threads]
    lines = ["| threads | best R@1 (epoch) | last R@1 | first epoch differing from "
             f"{reference_threads} thread(s) | R@1 per epoch |", "|---|---|---|---|---|"]
    for threads, by_epoch in recalls.items():
        best_epoch = max((epoch for epoch in by_epoch if epoch >= 1), key=lambda epoch: (by_epoch[epoch], -epoch))
        differing = next((epoch for epoch in sorted(by_epoch) if by_epoch[epoch] != reference.get(epoch)), None)
        lines.append(f"| {threads} | {by_epoch[best_epoch]:.2f} ({best_epoch}) | {by_epoch[max(by_epoch)]:.2f} | "
                     f"{'-' if differing is None else differing} | "
                     f"{' '.join(f'{by_epoch[epoch]:.1f}' for epoch in sorted(by_epoch))} |")
    return "\n".join(lines)


@command("benchmarks.threads")
def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output) if args.output else Path("runs") / f"threads_{time.strftime('%Y%m%d-%H%M%S')}"
    if output.exists():
        sys.stderr.write(f"--output {output} exists; name a new folder.\n")
        return 2
    output.mkdir(parents=True)
    prepare_dataset(args.config_path)
    started, codes = time.perf_counter(), {}
    running = []
    for threads in args.threads:
        folder = output / f"threads{threads}"
        folder.mkdir()
        process = start_run(args.config_path, threads, folder, args.settings)
        running.append((threads, process))
        if not args.parallel:
            codes[threads] = process.wait()
    for threads, process in running:
        codes[threads] = process.wait()
    failed = [threads for threads, code in codes.items() if code != 0]
    if failed:
        sys.stderr.write(f"The runs with {failed} thread(s) failed; see {output}/threads<N>.console.txt.\n")
        return 1
    recalls = {threads: read_recalls(output / f"threads{threads}") for threads in args.threads}
    sys.stdout.write(table(recalls) + f"\n\nWall time {time.perf_counter() - started:.0f} s; runs in {output}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
