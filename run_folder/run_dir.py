"""The run folder: created fresh for every run, never overwritten (its files: ``run_folder.layout``)."""
import logging
import os
import time
from pathlib import Path

from run_folder.layout import LOG_NAME, name_for_files
from utils.boundary import note_run_log
from utils.console import LOG_FORMAT
from utils.errors import UserInputError



def make_run_dir(output_root, name):
    """A new folder ``<output_root>/<name>_<timestamp>``; a numeric suffix if taken."""
    output_root, name = Path(output_root), name_for_files(name)
    try:
        output_root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"Output folder {output_root} cannot be created ({error.strerror}); pass a "
                             "writable folder with --output_dir.") from None
    if not os.access(output_root, os.W_OK):
        raise UserInputError(f"Output folder {output_root} is not writable; pass a writable folder with "
                             "--output_dir.")
    stem = f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    for attempt in range(1000):
        run_dir = output_root / (stem if attempt == 0 else f"{stem}_{attempt}")
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise UserInputError(f"Could not create a new run folder under {output_root}; clean it up or pass "
                         "another --output_dir.")


def attach_log_file(run_dir):
    """Send every log record of this process to ``<run_dir>/train.log`` as well."""
    handler = logging.FileHandler(Path(run_dir) / LOG_NAME)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    note_run_log(handler.baseFilename)
    return handler


def detach_log_file(handler):
    logging.getLogger().removeHandler(handler)
    handler.close()
