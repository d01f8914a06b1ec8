"""summary.json, after every other hook has finished: its presence marks the run finished.

``run_folder.resume.is_finished`` reads it, and a resume of a finished run
changes nothing. So it is written last, after the pictures: a run killed
while drawing them has no summary yet, and its resume draws them again.
"""
from run_folder.layout import write_summary

from engine.hooks.base import Hook


class SummaryFile(Hook):
    """Writes ``final_test.summary`` on the main process once it names the best weights."""

    def __init__(self, run_dir, final_test):
        self.run_dir = run_dir
        self.final_test = final_test

    def after_train(self, trainer):
        if "best_weights" in self.final_test.summary:
            write_summary(self.run_dir, self.final_test.summary)
