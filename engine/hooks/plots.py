"""losses.png and metrics.png of the run so far, redrawn after every epoch (``run_folder.plots``)."""
from run_folder.history import is_metric_column
from run_folder.plots import plot_run, schedule_events

from engine.hooks.base import Hook


class Plots(Hook):
    def __init__(self, run_dir, dataset_name, net_type, lr_drop_epochs, best_weights):
        self.run_dir = run_dir
        self.dataset_name = dataset_name
        self.net_type = net_type
        self.lr_drop_epochs = lr_drop_epochs
        self.best_weights = best_weights

    def before_train(self, trainer):
        """A resumed run draws them again: a kill before they were redrawn left them an epoch behind."""
        if trainer.history.rows:
            self.draw(trainer)

    def after_epoch(self, trainer, epoch, row):
        self.draw(trainer)

    def draw(self, trainer):
        rows = trainer.history.rows
        columns = trainer.history.columns()
        split = trainer.selection_split
        title = f"{self.dataset_name}, {self.net_type}\n{self.run_dir.name}"
        plot_run(self.run_dir, rows, [c for c in columns if c.startswith("loss_")],
                 [c for c in columns if is_metric_column(c)], title, split, selection_column=f"{split}_R@1",
                 best_epoch=self.best_weights.best.epoch,
                 events=schedule_events(self.lr_drop_epochs, [row["epoch"] for row in rows]))
