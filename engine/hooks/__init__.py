"""The side concerns of training, one hook each (events: ``engine.hooks.base.Hook``; order: ``engine.build``)."""
from engine.hooks.base import Hook
from engine.hooks.best_weights import BestEpoch, BestWeights
from engine.hooks.checkpoint import Checkpoint
from engine.hooks.epoch_log import EpochLog, format_duration
from engine.hooks.final_test import FinalTest
from engine.hooks.lr_schedule import LrSchedule
from engine.hooks.pictures import Pictures, check_logging_options, draw_test_pictures
from engine.hooks.plots import Plots
from engine.hooks.summary_file import SummaryFile
from engine.hooks.tensorboard import TensorBoard

__all__ = ["BestEpoch", "BestWeights", "Checkpoint", "EpochLog", "FinalTest", "Hook", "LrSchedule", "Pictures",
           "Plots", "SummaryFile", "TensorBoard", "check_logging_options", "draw_test_pictures", "format_duration"]
