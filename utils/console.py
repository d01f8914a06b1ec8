"""Console logging of every command: one format, set up once per process."""
import logging
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_console_logging(level=logging.INFO):
    root = logging.getLogger()
    root.setLevel(level)
    if not any(isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
               for handler in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(console)
    # faiss announces at INFO every CPU variant it tries to load.
    logging.getLogger("faiss").setLevel(logging.WARNING)


def quiet_console_of_worker():
    """A worker process among several: warnings and errors still reach the console, but no INFO lines
    and no progress bars (which would interleave with the other workers'); its log files get everything.

    The console handler is bound to the real stderr before ``sys.stderr`` goes to the null device, where
    tqdm bars then write.
    """
    console = logging.StreamHandler(sys.__stderr__)
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    console.setLevel(logging.WARNING)
    logging.getLogger().addHandler(console)
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # for the life of the worker process
