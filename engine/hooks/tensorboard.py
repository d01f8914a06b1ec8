"""TensorBoard: every metrics.csv row as scalars (and the pictures, through ``Pictures``); closed at the end."""
from run_folder.tensorboard_log import TensorBoardLog

from engine.hooks.base import Hook


class TensorBoard(Hook):
    def __init__(self, run_dir):
        self.log = TensorBoardLog(run_dir)

    def after_epoch(self, trainer, epoch, row):
        self.log.add_row(row)

    def after_train(self, trainer):
        self.log.close()
