"""Whole-number flags of the commands, checked by argparse where they enter.

``type=at_least(1)`` refuses ``--repeats 0``, ``--threads -3`` or
``--steps 1e9`` with argparse's usage line and exit code 2, before any
work; an upper bound keeps a request from asking for more than a machine
can hold (a thread count of a million, a batch of a billion images).
"""
import argparse


def at_least(minimum, maximum=None):
    """An argparse ``type`` for whole numbers from ``minimum`` to ``maximum`` (inclusive, if given)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" to {maximum}" if maximum is not None else " or more"
            raise argparse.ArgumentTypeError(f"{value} is outside {minimum}{upper}")
        return value
    parse.__name__ = "whole number"
    return parse


# Bounds shared by the commands' flags: far above any real use, far below what exhausts a machine.
MAX_THREADS = 1_024
MAX_REPEATS = 1_000
MAX_ITEMS = 100_000_000  # gallery items, table rows, queries
MAX_DIMENSION = 65_536
MAX_SEED = 2 ** 32 - 1  # NumPy's legacy seeding (np.random.seed, which the authors' code and ours call)
MAX_EPOCHS = 10_000
