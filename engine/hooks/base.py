"""The events a hook may answer, in the order the Trainer calls them.

``before_train`` once; per epoch ``before_epoch``, per step
``before_step``, then ``after_evaluation`` (the selection metrics of the
epoch, prefixed by their split) and ``after_epoch`` (its metrics.csv row,
already in the trainer's history); ``on_interrupt`` when a stop request
ends an epoch early; ``after_train`` once at the end. A hook with state
that a resume needs returns it from ``state_dict`` (merged into last.pth
under its own keys) and reads it back in ``load_state_dict``.
"""


class Hook:
    """Every event does nothing: a hook overrides those it needs."""

    def before_train(self, trainer):
        pass

    def before_epoch(self, trainer, epoch):
        pass

    def before_step(self, trainer, epoch, step, steps_per_epoch):
        pass

    def after_evaluation(self, trainer, epoch, metrics):
        pass

    def after_epoch(self, trainer, epoch, row):
        pass

    def on_interrupt(self, trainer, epoch, steps_done, partial_sums):
        pass

    def after_train(self, trainer):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, trainer, checkpoint):
        pass
