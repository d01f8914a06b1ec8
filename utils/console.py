"""Console logging of every command: one format, set up once per process."""
import logging

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
