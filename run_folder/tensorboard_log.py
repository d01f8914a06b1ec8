"""Optional TensorBoard logging (``logging.tensorboard: 1``): epoch scalars and pictures.

TensorBoard is an optional dependency, imported only when asked for;
``check_tensorboard`` tells the user in one sentence when it is missing,
before any long work starts.
"""
import importlib.util
import numbers

import numpy as np

from utils.errors import UserInputError

TENSORBOARD_FOLDER = "tensorboard"


def check_tensorboard():
    if importlib.util.find_spec("tensorboard") is None:
        raise UserInputError("logging.tensorboard: 1 needs the tensorboard package, which is not installed; "
                             "pip install tensorboard, or set logging.tensorboard to 0.")


class TensorBoardLog:
    """Events under ``<run_dir>/tensorboard``: every numeric metrics.csv column per epoch, and images."""

    def __init__(self, run_dir):
        check_tensorboard()
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_FOLDER))

    def add_row(self, row):
        """The metrics.csv row of one epoch (losses, metrics, lr, images/s, time) at step ``row['epoch']``."""
        for name, value in row.items():
            if name != "epoch" and isinstance(value, numbers.Number):
                self.writer.add_scalar(name, value, row["epoch"])
        self.writer.flush()

    def add_picture(self, tag, image, step):
        """A ``PIL.Image`` (RGB) as an image summary."""
        self.writer.add_image(tag, np.asarray(image), step, dataformats="HWC")
        self.writer.flush()

    def close(self):
        self.writer.close()
