"""The authors' learning-rate schedule: an optional linear warm-up, and drops that reload the best weights."""
import logging

from engine.hooks.base import Hook

logger = logging.getLogger(__name__)


class LrSchedule(Hook):
    """``lr_drop_epochs``: at each, reload the best weights and set lr to lr/10 (times each group's ``lr_scale``).

    The optimiser state is kept. A resumed run skips the drop for an epoch
    that was already under way (its lr is in the optimiser state).
    ``warmup_epochs``: the lr rises linearly, every step, from lr/steps to lr.
    """

    def __init__(self, lr, lr_drop_epochs, warmup_epochs, best_weights):
        self.lr = lr
        self.lr_drop_epochs = lr_drop_epochs
        self.warmup_epochs = warmup_epochs
        self.best_weights = best_weights

    def before_epoch(self, trainer, epoch):
        if epoch not in self.lr_drop_epochs or trainer.resume_step:
            return
        new_lr = self.lr / 10.0
        for group in trainer.optimizer.param_groups:
            group["lr"] = new_lr * group["lr_scale"]
        best = self.best_weights.best
        if best.backbone_file is None:
            logger.info("Epoch %d: no best epoch yet to reload, lr set to %.4g", epoch, new_lr)
            return
        self.best_weights.reload(trainer, [(trainer.backbone, best.backbone_file), (trainer.mpn, best.mpn_file)])
        logger.info("Epoch %d: reloaded the best weights (epoch %d, R@1 %.2f), lr set to %.4g",
                    epoch, best.epoch, 100 * best.score, new_lr)

    def before_step(self, trainer, epoch, step, steps_per_epoch):
        """``warmup_epochs * steps_per_epoch`` steps (rounded); the last of them runs at the full lr.

        Later steps leave the lr to the drops; the config makes the warm-up
        end before the first drop.
        """
        warmup_steps = round(self.warmup_epochs * steps_per_epoch)
        steps_before = (epoch - 1) * steps_per_epoch + step
        if steps_before >= warmup_steps:
            return
        factor = (steps_before + 1) / warmup_steps
        for group in trainer.optimizer.param_groups:
            group["lr"] = self.lr * group["lr_scale"] * factor
