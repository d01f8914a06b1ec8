"""The resumable checkpoint: last.pth and metrics.csv after every epoch, and last.pth when a stop cuts an epoch."""
from run_folder.checkpoint import save_checkpoint
from run_folder.layout import CHECKPOINT_NAME, METRICS_CSV_NAME
from utils.io import write_together

from engine.hooks.base import Hook


class Checkpoint(Hook):
    """Writes the trainer's state (with every hook's) on the main process."""

    def __init__(self, run_dir):
        self.run_dir = run_dir

    def before_train(self, trainer):
        """A resumed run writes metrics.csv again from last.pth's history: a kill between the renames of
        the two files leaves metrics.csv one epoch behind, and the run's last epoch would never rewrite it."""
        if trainer.history.rows:
            trainer.history.write_csv(self.run_dir / METRICS_CSV_NAME)

    def after_epoch(self, trainer, epoch, row):
        # last.pth and metrics.csv must agree: both are renamed into place only once both were written.
        with write_together():
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, trainer.state_dict())
            trainer.history.write_csv(self.run_dir / METRICS_CSV_NAME)

    def on_interrupt(self, trainer, epoch, steps_done, partial_sums):
        """A checkpoint in the middle of ``epoch``: the resume repeats its remaining steps exactly."""
        state = trainer.state_dict()
        state.update(epoch=epoch - 1, resume_step=steps_done, partial_sums=partial_sums)
        save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
