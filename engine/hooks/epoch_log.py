"""One log line per epoch: losses, lr, time, images/s, the selection R@1, the best so far and the run's ETA."""
import logging
import time

from run_folder.plots import legend_name

from engine.hooks.base import Hook

logger = logging.getLogger(__name__)


def format_duration(seconds):
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class EpochLog(Hook):
    """The ETA is the mean time of the epochs trained in this process times the epochs left."""

    def __init__(self, num_epochs, best_weights):
        self.num_epochs = num_epochs
        self.best_weights = best_weights
        self.epoch_seconds = []

    def after_epoch(self, trainer, epoch, row):
        if epoch >= 1:
            self.epoch_seconds.append(row["time_s"])
        logger.info("%s", self.line(row, trainer.selection_split))

    def line(self, row, split):
        score = row[f"{split}_R@1"]
        head = f"Epoch {row['epoch']}/{self.num_epochs} in {format_duration(row['time_s'])}"
        if row["epoch"] == 0:
            return f"{head} (before training): {split} R@1 {100 * score:.2f}"
        loss_columns = [name for name in row if name.startswith("loss_") and name != "loss_Total"]
        terms = ", ".join(f"{legend_name(name, loss_columns)} {row[name]:.3f}" for name in loss_columns)
        remaining_s = (self.num_epochs - row["epoch"]) * sum(self.epoch_seconds) / len(self.epoch_seconds)
        eta = (f"run done in about {format_duration(remaining_s)} (at "
               f"{time.strftime('%H:%M', time.localtime(time.time() + remaining_s))})" if remaining_s else "run done")
        best = self.best_weights.best
        return (f"{head}: loss {row['loss_Total']:.3f} ({terms}), lr {row['lr']:.4g}, "
                f"{row['images_per_s']:.1f} images/s | {split} R@1 {100 * score:.2f}, best "
                f"{100 * best.score:.2f} (epoch {best.epoch}) | {eta}")
