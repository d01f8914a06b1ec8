"""After training: the test set with the best weights (when selecting on held-out classes), and the summary."""
import logging

from evaluation import format_metrics
from run_folder.history import is_metric_column
from run_folder.resume import resume_summary

from engine.hooks.base import Hook

logger = logging.getLogger(__name__)


class FinalTest(Hook):
    """``summary``: the best and the last epoch, and the best weights' files (``SummaryFile`` writes it).

    ``tested`` is ``(epoch, evaluation, loaders)`` of the final test, for the pictures.
    """

    def __init__(self, best_weights):
        self.best_weights = best_weights
        self.summary = None
        self.tested = None

    def after_train(self, trainer):
        best = self.best_weights.best
        last_row = trainer.history.rows[-1] if trainer.history.rows else {}
        summary = {"best_epoch": best.epoch, "best_metrics": best.metrics, "last_epoch": trainer.epoch,
                   "last_metrics": {key: value for key, value in last_row.items() if is_metric_column(key)},
                   **resume_summary(trainer.resumes)}
        if "val" in trainer.evaluators and best.backbone_file is not None:
            self.best_weights.reload(trainer, [(trainer.backbone, best.backbone_file)])
            test_metrics = trainer.evaluate("test", "the final test evaluation")
            summary["test_metrics_of_best_epoch"] = test_metrics
            self.tested = (best.epoch, trainer.evaluators["test"].last, trainer.data.eval_loaders["test"])
            logger.info("Test set, weights of epoch %d: %s", best.epoch, format_metrics(test_metrics))
        if best.backbone_file is not None:
            summary["best_weights"] = {"backbone": best.backbone_file, "mpn": best.mpn_file}
        logger.info("Best epoch %d: %s", best.epoch, format_metrics(best.metrics) or "no metrics")
        logger.info("Last epoch %d: %s", trainer.epoch, format_metrics(summary["last_metrics"]) or "no metrics")
        self.summary = summary
