"""SIGINT / SIGTERM: finish the current step (or evaluation batch), save, then stop.

The first signal only raises a flag that the training loop checks after
every step, and the embedding loop after every batch; training then writes
a resumable checkpoint (or keeps the one of the last completed epoch) and
every mode exits with a message saying what was kept, code 128 + signal.
A second SIGINT stops at once.
"""
import logging
import signal
import threading

logger = logging.getLogger(__name__)


class RunInterrupted(RuntimeError):
    """A stop was requested; the message says what was kept."""

    @classmethod
    def at(cls, where, kept):
        """``Stopped <where>; <kept>.``: the one form of every stop message (tools.results reads it)."""
        return cls(f"Stopped {where}; {kept}.")


class StopRequest:
    def __init__(self):
        self._event = threading.Event()
        self._previous = {}
        self.signum = signal.SIGINT

    @property
    def exit_code(self):
        """The shell's convention for a process stopped by a signal: 128 + its number."""
        return 128 + int(self.signum)

    def is_set(self):
        return self._event.is_set()

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self._event.set()
        logger.warning("Received %s: finishing the current step, then saving a resumable checkpoint",
                       signal.Signals(signum).name)
