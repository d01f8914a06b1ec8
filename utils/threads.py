"""How many CPU threads torch uses, chosen once at start-up and said in the log.

OpenMP threads spin while they wait for work, so a process with more
threads than free cores slows down far more than it speeds up: on a busy
2-core machine a ResNet-18 step of the demo took 9.45 s with torch's default
of 2 threads and 0.83 s with 1. The count is therefore chosen on purpose:

1. ``train_params.threads`` (``--threads N``) when set;
2. else ``OMP_NUM_THREADS`` when the environment sets it (the variable that
   every OpenMP program honours, so a shared machine can cap all of them);
3. else the cores this process may use (its CPU affinity), shared between the
   processes torchrun starts on this machine, minus one core per data-loader
   worker, at least 1 and at most ``MAX_AUTO_THREADS`` (beyond that the small
   CPU-side work of a GPU run gains nothing).

Data-loader workers use one thread each: torch's worker loop sets that
itself (``torch.set_num_threads(1)``), and they decode and augment one image
at a time; so each worker takes one core from the main process's share.
"""
import logging
import os
from dataclasses import dataclass

import torch

from utils.errors import UserInputError

logger = logging.getLogger(__name__)

MAX_AUTO_THREADS = 8


def available_cores():
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadChoice:
    """The intra-op threads of this process, the loader workers beside it, and why."""

    threads: int
    workers: int
    reason: str
    processes_on_machine: int = 1


def choose_threads(requested, num_workers, processes_on_machine=1, environ=None):
    """The thread count by the rules of the module docstring."""
    if requested is not None:
        return ThreadChoice(requested, num_workers, "train_params.threads / --threads", processes_on_machine)
    environ = os.environ if environ is None else environ
    from_environment = environ.get("OMP_NUM_THREADS", "").strip()
    if from_environment:
        if not from_environment.isdigit() or int(from_environment) < 1:
            raise UserInputError(f"OMP_NUM_THREADS is {from_environment!r}; set it to a positive whole "
                                 "number, unset it, or pass --threads N.")
        return ThreadChoice(int(from_environment), num_workers, "OMP_NUM_THREADS", processes_on_machine)
    cores = cores_per_process(processes_on_machine)
    threads = max(1, min(cores - num_workers, MAX_AUTO_THREADS))
    return ThreadChoice(threads, num_workers, f"{cores} core(s) minus {num_workers} data-loader worker(s), "
                        f"at most {MAX_AUTO_THREADS}", processes_on_machine)


def cores_per_process(processes_on_machine):
    return max(1, available_cores() // max(1, processes_on_machine))


def apply_threads(choice):
    """Set torch's intra-op (and, while still possible, inter-op) thread count."""
    torch.set_num_threads(choice.threads)
    if torch.get_num_interop_threads() != choice.threads:
        try:
            torch.set_num_interop_threads(choice.threads)
        except RuntimeError:
            # torch allows this once per process, before any parallel work;
            # a second run in the same process keeps the first setting.
            pass


def log_threads(choice):
    """One line saying the choice; a warning when threads and workers outnumber the cores."""
    logger.info("CPU threads: %d (%s); %d data-loader worker(s) with 1 thread each",
                choice.threads, choice.reason, choice.workers)
    cores = cores_per_process(choice.processes_on_machine)
    if choice.threads + choice.workers > cores:
        logger.warning("CPU threads: %d threads + %d data-loader workers exceed the %d core(s) this process has, "
                       "so threads wait for each other and every step slows down; lower --threads or "
                       "dataset.nb_workers.", choice.threads, choice.workers, cores)
