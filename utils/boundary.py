"""The last resort of every command: what escapes ``main`` ends in one sentence, never a traceback.

Every command's ``main(argv)`` is wrapped by ``@command(name)``:

* a ``UserInputError`` (bad input, raised where the value entered) becomes
  its sentence and exit code 2;
* SIGINT that reached the top as ``KeyboardInterrupt`` exits 130 (a command
  that installs its own handlers, as ``train.py`` does, still returns its
  own 128 + signal);
* any other exception is a bug of ours, not of the input: its full
  traceback goes to the run's ``train.log`` when the command had opened one
  (``note_run_log``), else to a new file in the system's temporary folder,
  and the terminal gets one sentence naming that file, exit code 1.

``SystemExit`` passes through untouched: argparse ends a bad flag with its
usage line and exit code 2.
"""
import functools
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from utils.console import LOG_FORMAT, setup_console_logging
from utils.errors import UserInputError

logger = logging.getLogger("boundary")

EXIT_BUG = 1
EXIT_SIGINT = 130
# The exception's own text in the sentence is cut here: the file has all of it.
MESSAGE_LENGTH = 200

_state = {"run_log": None}


def note_run_log(path):
    """The log file of the run the current command writes; a bug's traceback is appended there."""
    _state["run_log"] = Path(path)


def command(name):
    """Decorator of a command's ``main(argv=None) -> exit code``; ``name`` as the user typed it."""
    def decorate(main):
        @functools.wraps(main)
        def guarded(argv=None):
            _state["run_log"] = None
            try:
                refuse_nul_bytes(sys.argv[1:] if argv is None else argv)
                return main(argv)
            except UserInputError as error:
                setup_console_logging()
                logger.error("%s", error)
                return UserInputError.exit_code
            except KeyboardInterrupt:
                setup_console_logging()
                logger.warning("Stopped at once by SIGINT.")
                return EXIT_SIGINT
            except Exception as error:  # noqa: BLE001 - the one place that ends a bug
                setup_console_logging()
                report_bug(name, error)
                return EXIT_BUG
            finally:
                _state["run_log"] = None
        return guarded
    return decorate


def refuse_nul_bytes(argv):
    """No path or value can hold a NUL byte (the OS functions raise ValueError on one): refused as it enters."""
    for position, word in enumerate(argv, start=1):
        if "\x00" in str(word):
            raise UserInputError(f"Argument {position} ({str(word)!r}) holds a NUL byte, which no path or value "
                                 "may contain; remove it.")


def report_bug(name, error):
    """Write ``error``'s traceback to a file and log the one sentence that names it."""
    run_log = _state["run_log"]
    try:
        where = write_traceback(name, error, run_log)
        found = f"the full traceback is in {where}"
    except OSError as write_error:
        found = f"its traceback could not be written ({write_error.strerror or write_error})"
    # The first line only: a loader worker's error carries the worker's whole traceback after it.
    text = " ".join(next((line for line in str(error).splitlines() if line.strip()), "").split())
    if len(text) > MESSAGE_LENGTH:
        text = text[:MESSAGE_LENGTH] + "..."
    sentence = (f"{name} stopped on an unexpected {type(error).__name__}{f' ({text})' if text else ''}, which is "
                f"a bug of this project, not a problem of your input; {found}; please report it with that "
                "file.")
    handler = None
    if run_log is not None and run_log.is_file():
        # Last in the run's log as well, where tools.results reads why a run stopped.
        handler = logging.FileHandler(run_log)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
    try:
        logger.error("%s", sentence)
    finally:
        if handler is not None:
            logging.getLogger().removeHandler(handler)
            handler.close()


def write_traceback(name, error, run_log=None):
    """Append the traceback to ``run_log`` if it exists, else write a new temporary file; its path."""
    text = "".join(traceback.format_exception(error))
    heading = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {name}: traceback of an unexpected error\n"
    if run_log is not None and run_log.is_file():
        with open(run_log, "a", encoding="utf-8") as log:
            log.write(heading + text)
        return run_log
    stem = "".join(character if character.isalnum() else "_" for character in name)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", prefix=f"{stem}_bug_", suffix=".log",
                                     delete=False) as file:
        file.write(heading + text)
    return Path(file.name)


def check_new_outputs(output, paths):
    """``--output`` names new files (``paths``: the output and what is written beside it) in an existing folder.

    Nothing a user made is overwritten: a file already there is refused before any work starts.
    """
    for path in paths:
        if path.exists():
            where = "" if path == output else f": {path}"
            raise UserInputError(f"--output {output}{where} already exists; give a new file name or remove it.")
    if not output.parent.is_dir():
        raise UserInputError(f"--output {output}: the folder {output.parent} does not exist; create it first.")
    return output
