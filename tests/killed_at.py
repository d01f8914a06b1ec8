"""``train.py`` that SIGKILLs itself at one named moment of its run (tests/test_sigkill_resume.py).

``python tests/killed_at.py --trace FILE -- <train.py arguments>`` runs
train.py to its end and writes every moment it passed to FILE, one JSON
line each: ``[phase, index, what]``. ``--kill-at PHASE INDEX`` runs it
and sends itself SIGKILL at the first moment at or after ``(PHASE, INDEX)``.

A phase is 0 before the first epoch, the epoch's number during an epoch,
and ``num_epochs + 1`` after training (final test, pictures, summary);
``index`` counts the moments within the phase. A resumed run repeats the
moments of the epochs it repeats in the same order, so a moment of one
run names the same point of another.

The moments: a training step; the embedding and the metrics of each
evaluation; the pictures and the plots being drawn; every file write,
killed half-way through writing the temporary file (a torn write) and
again just before its rename into place.
"""
import argparse
import functools
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytest  # noqa: E402

import train  # noqa: E402
from engine.hooks import Hook  # noqa: E402
from engine.hooks import pictures as pictures_hook  # noqa: E402
from engine.hooks import plots as plots_hook  # noqa: E402
from engine.trainer import Trainer  # noqa: E402
from evaluation.evaluator import Evaluator  # noqa: E402
from tests.conftest import add_training_hooks  # noqa: E402
from utils import io  # noqa: E402


class Moments(Hook):
    """Counts the moments of the run by phase; traces them, or kills the process at the target."""

    def __init__(self, target=None, trace=None):
        self.target = target
        self.trace = trace
        self.phase, self.index = 0, 0

    def before_epoch(self, trainer, epoch):
        self.phase, self.index = epoch, 0

    def after_train(self, trainer):
        self.phase, self.index = trainer.options.num_epochs + 1, 0

    def passed(self, what, before_kill=None):
        self.index += 1
        if self.trace is not None:
            with open(self.trace, "a", encoding="utf-8") as trace:
                trace.write(json.dumps([self.phase, self.index, what]) + "\n")
        if self.target is not None and (self.phase, self.index) >= self.target:
            if before_kill is not None:
                before_kill()
            os.kill(os.getpid(), signal.SIGKILL)


def at_each_call(owner, name, moments, what):
    """``owner.name`` passes the moment ``what`` each time it is called, before it runs."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def passing(*args, **kwargs):
        moments.passed(what)
        return original(*args, **kwargs)
    setattr(owner, name, passing)


def at_each_write(moments):
    """Every atomic write passes two moments: half its bytes in the temporary file, and before its rename."""
    write_temporary, move_into_place = io._write_temporary, io._move_into_place

    def torn_write(path, data, durable=True):
        def write_half():
            with open(path.parent / f"{io._temporary_prefix(path)}torn.tmp", "wb") as handle:
                handle.write(data[:len(data) // 2])
        moments.passed(f"writing {path.name}", write_half)
        return write_temporary(path, data, durable)

    def rename(temporary, path, replace, durable=True):
        moments.passed(f"renaming {path.name}")
        return move_into_place(temporary, path, replace, durable)
    io._write_temporary, io._move_into_place = torn_write, rename


def install(moments):
    add_training_hooks(pytest.MonkeyPatch(), first=(moments,))
    at_each_call(Trainer, "training_step", moments, "step")
    at_each_call(Evaluator, "_embed", moments, "embedding")
    at_each_call(Evaluator, "_metrics_of", moments, "metrics")
    at_each_call(pictures_hook, "draw_evaluation_pictures", moments, "pictures")
    at_each_call(plots_hook, "plot_run", moments, "plots")
    at_each_write(moments)


def parse_args(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trace")
    parser.add_argument("--kill-at", nargs=2, type=int, metavar=("PHASE", "INDEX"))
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    args.train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    install(Moments(tuple(arguments.kill_at) if arguments.kill_at else None, arguments.trace))
    sys.exit(train.main(arguments.train_args))
