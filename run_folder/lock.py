"""One writer per run folder: the process that trains or resumes it holds its lock.

The lock is an OS lock (``filelock``: ``flock`` on POSIX, ``msvcrt`` on
Windows) on ``.train.lock``; the OS releases it when its process dies,
SIGKILL and power cut included, so a killed run never leaves its folder
locked. Beside it, ``.train.lock.owner`` says who holds it (PID, host,
command, since when), so that a second resume, or a resume of a run that
another process is training, is refused with one sentence naming that
process. The owner file is only information: the lock decides.
"""
import json
import os
import socket
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout

from run_folder.layout import LOCK_NAME, LOCK_OWNER_NAME
from utils.errors import UserInputError
from utils.io import atomic_write_text
from utils.text_files import read_json_object


class RunFolderLock:
    """``hold(run_dir)`` takes the folder's lock (refusing if another process holds it); ``release()``."""

    def __init__(self):
        self.run_dir = None
        self._lock = None

    def hold(self, run_dir):
        """Take the lock of ``run_dir`` now, without waiting; a no-op when this object holds it already."""
        run_dir = Path(run_dir)
        if self.run_dir == run_dir:
            return
        lock = FileLock(run_dir / LOCK_NAME, thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UserInputError(f"The run folder {run_dir} is being written by {describe_owner(run_dir)}; two "
                                 "processes must never write one run folder: wait for that one to end (or stop "
                                 "it), then resume.") from None
        except OSError as error:
            raise UserInputError(f"The run folder {run_dir} cannot be locked ({error.strerror or error}); make it "
                                 "writable.") from None
        self.release()
        self.run_dir, self._lock = run_dir, lock
        atomic_write_text(run_dir / LOCK_OWNER_NAME, json.dumps(owner_record()))

    def release(self):
        if self._lock is None:
            return
        (self.run_dir / LOCK_OWNER_NAME).unlink(missing_ok=True)
        self._lock.release()
        self.run_dir = self._lock = None


def owner_record():
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def describe_owner(run_dir):
    """'process 1234 on host h (python train.py ..., since ...)', or what is known of it."""
    try:
        owner = read_json_object(Path(run_dir) / LOCK_OWNER_NAME, "lock record")
        return (f"process {int(owner['pid'])} on {owner['host']} ({owner['command']}, since "
                f"{owner['since']})")
    except (UserInputError, ValueError, KeyError, TypeError):
        return "another process (which has not yet said which)"
