"""The training loop of SPEC 6: epochs of steps, and hooks for everything around them.

``Trainer.fit`` runs the epochs; an epoch is its steps (forward, loss,
backward, optimiser step, meters), then the evaluation that selects the
best epoch, then the epoch's row of metrics.csv. Everything else (the lr
schedule, the best weights, last.pth, the log line, plots, pictures,
TensorBoard, the final test) is a hook (``engine.hooks``), called at named
events in the order ``engine.build.build_hooks`` fixes. The Trainer holds
the state that a resume restores; each hook adds its own through
``state_dict``.
"""
import logging
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from evaluation import format_metrics
from run_folder.checkpoint import capture_rng_state, resume_command, restore_rng_state
from run_folder.history import History
from run_folder.layout import CHECKPOINT_NAME
from run_folder.resume import RESUMES_KEY
from utils.distributed import unwrap
from utils.signals import RunInterrupted

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RunInterrupted):
    """A stop was requested (SIGINT/SIGTERM); a resumable checkpoint was written or kept."""


@dataclass(frozen=True)
class LoopOptions:
    """The ``train_params`` and encoder keys the loop itself reads."""

    num_epochs: int
    max_iters_per_epoch: int
    output_train_enc: str
    output_train_gnn: str
    graph_scope: str
    grad_clip: float
    channels_last: bool
    eval_before_training: bool

    @classmethod
    def from_config(cls, config):
        train_params = config["train_params"]
        return cls(num_epochs=train_params["num_epochs"], max_iters_per_epoch=train_params["max_iters_per_epoch"],
                   output_train_enc=train_params["output_train_enc"],
                   output_train_gnn=train_params["output_train_gnn"], graph_scope=train_params["graph_scope"],
                   grad_clip=train_params["grad_clip"],
                   channels_last=bool(config["models"]["encoder_params"]["channels_last"]),
                   eval_before_training=bool(train_params["eval_before_training"]))


class Trainer:
    """Epochs and steps, and the state they change; ``hooks`` do the rest (see ``engine.hooks.Hook``)."""

    def __init__(self, backbone, mpn, optimizer, loss_fn, precision, device, options, run_dir, data=None,
                 evaluators=None, hooks=(), stop_request=None, distributed=None):
        self.backbone = backbone
        self.mpn = mpn
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.precision = precision
        self.device = device
        self.options = options
        self.run_dir = run_dir
        self.data = data
        self.evaluators = evaluators or {}
        self.hooks = list(hooks)
        self.stop_request = stop_request
        self.distributed = distributed
        self.is_main = distributed is None or distributed.is_main
        # Model selection (best epoch, schedule reloads) uses held-out classes when there are some.
        self.selection_split = "val" if "val" in self.evaluators else "test"
        self.epoch = 0
        self.resume_step = 0
        self.partial_sums = {}
        self.history = History()
        # One record per resume of this run (run_folder.resume), kept in last.pth.
        self.resumes = []

    def call(self, event, *args):
        """Every hook's ``event``, in the order of ``hooks``."""
        for hook in self.hooks:
            getattr(hook, event)(self, *args)

    # ------------------------------------------------------------------ loop
    def fit(self):
        """Train the remaining epochs of ``options.num_epochs``."""
        self.call("before_train")
        if self.epoch == 0 and not self.history.rows and self.options.eval_before_training:
            self.close_epoch(0, {}, time.perf_counter())
        for epoch in range(self.epoch + 1, self.options.num_epochs + 1):
            started = time.perf_counter()
            self.call("before_epoch", epoch)
            train_stats = self.train_one_epoch(epoch)
            self.close_epoch(epoch, train_stats, started)
        self.call("after_train")

    def train_one_epoch(self, epoch):
        self.backbone.train()
        self.mpn.train()
        self.data.set_epoch(epoch)
        meter = EpochMeter(self.partial_sums)
        steps_done, self.resume_step, self.partial_sums = self.resume_step, 0, {}
        total_steps = self.steps_per_epoch()
        self.data.skip_batches(steps_done)
        # Updated after each step (not by iterating the bar), so it reaches total_steps/total_steps.
        bar = tqdm(total=total_steps, initial=steps_done, disable=not self.is_main, unit="step",
                   desc=f"epoch {epoch}/{self.options.num_epochs}", dynamic_ncols=True)
        for step, (images, labels, *_rest) in enumerate(self.data.train_loader, start=steps_done):
            self.call("before_step", epoch, step, total_steps)
            loss, terms = self.training_step(images, labels, epoch, step)
            meter.update(loss, terms, len(labels))
            bar.set_postfix(loss=f"{float(loss):.3f}", img_s=f"{meter.images_per_second():.1f}", refresh=False)
            bar.update(1)
            if self.stop_requested():
                self.call("on_interrupt", epoch, step + 1, meter.sums)
                raise TrainingInterrupted.at(f"at epoch {epoch}, iteration {step + 1}", resume_command(self.run_dir))
            if step + 1 >= total_steps:
                break
        bar.close()
        stats = meter.epoch_stats(self.data.batch_size)
        if stats["skipped_images"]:
            logger.warning("Epoch %d: %d broken images were skipped", epoch, stats["skipped_images"])
        return stats

    def steps_per_epoch(self):
        """The loader's batches, or ``max_iters_per_epoch`` when that is fewer."""
        batches = len(self.data.train_loader)
        return min(batches, self.options.max_iters_per_epoch or batches)

    def training_step(self, images, labels, epoch, step):
        """One optimiser step on one P x K batch: the loss of SPEC 6."""
        memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        images = images.to(self.device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            backbone_logits, embedding = self.backbone(images, output_option=self.options.output_train_enc)
            mpn_logits = self.mpn_logits(embedding) if self.loss_fn.uses_mpn else []
        loss, terms = self.loss_fn(backbone_logits, mpn_logits, labels)
        if not self.all_finite(loss):
            raise TrainingDiverged(f"The loss became {float(loss.detach())} at epoch {epoch}, iteration "
                                   f"{step + 1}; the last good checkpoint {self.run_dir / CHECKPOINT_NAME} is kept. "
                                   "Lower train_params.lr or check the data.")
        self.precision.backward(loss, self.optimizer)
        if self.options.grad_clip is not None:
            self.clip_gradients(self.options.grad_clip)
        self.precision.step(self.optimizer)
        return loss.detach(), {name: term.detach() for name, term in terms.items()}

    def clip_gradients(self, max_norm):
        """``grad_clip``: clip the norm of all gradients together, on their true (unscaled) values.

        A gradient scaler (float16) is told that the gradients are already
        unscaled, so its step does not divide them again; Apex O1 leaves them
        unscaled after its backward.
        """
        if self.precision.scaler is not None:
            self.precision.scaler.unscale_(self.optimizer)
        parameters = [parameter for group in self.optimizer.param_groups for parameter in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def mpn_logits(self, embedding):
        """MPN logits of this process's samples.

        The graph is this process's batch (the paper's), or with
        ``graph_scope: global`` the batches of all processes together.
        """
        output_option = self.options.output_train_gnn
        if self.distributed is None or self.options.graph_scope != "global":
            return self.mpn(embedding, output_option=output_option)[0]
        logits, _ = self.mpn(self.distributed.gather_with_grad(embedding), output_option=output_option)
        return [self.distributed.local_rows(layer_logits) for layer_logits in logits]

    def stop_requested(self):
        requested = self.stop_request is not None and self.stop_request.is_set()
        return self.distributed.any_rank(requested) if self.distributed is not None else requested

    def all_finite(self, loss):
        """Whether the loss is finite in every process (they must stop together)."""
        finite = bool(torch.isfinite(loss))
        return finite if self.distributed is None else not self.distributed.any_rank(not finite)

    def evaluate(self, split, what):
        """Metrics of the backbone on ``split``; a stop request during it says what the checkpoint holds."""
        try:
            return self.evaluators[split].evaluate(self.backbone, **self.data.eval_loaders[split])
        except RunInterrupted:
            raise self.interrupted_during(what) from None

    def close_epoch(self, epoch, train_stats, started):
        """Evaluate for model selection, then record the epoch's row (``after_evaluation``, ``after_epoch``)."""
        split = self.selection_split
        metrics = self.evaluate(split, f"the evaluation of epoch {epoch}")
        logger.info("Epoch %d %s: %s", epoch, split, format_metrics(metrics))
        metrics = {f"{split}_{name}": value for name, value in metrics.items()}
        self.call("after_evaluation", epoch, metrics)
        row = {"epoch": epoch, **train_stats, **metrics, "lr": self.optimizer.param_groups[0]["lr"],
               "time_s": round(time.perf_counter() - started, 2)}
        self.history.append(row)
        self.epoch = epoch
        self.call("after_epoch", epoch, row)

    def interrupted_during(self, what):
        """Stopped in an evaluation: the checkpoint of the last completed epoch stays as it was."""
        if not self.history.rows:
            return TrainingInterrupted.at(f"during {what}, before any epoch was completed",
                                          "nothing to resume, start the run again")
        return TrainingInterrupted.at(f"during {what}", f"{self.run_dir / CHECKPOINT_NAME} holds epoch "
                                                        f"{self.epoch}, {resume_command(self.run_dir)}")

    # -------------------------------------------------------------- resume
    def state_dict(self):
        """What an uninterrupted run would still hold in memory after ``epoch``: the loop's and each hook's."""
        state = {
            "epoch": self.epoch,
            "resume_step": 0,
            "partial_sums": {},
            "backbone": unwrap(self.backbone).state_dict(),
            "mpn": unwrap(self.mpn).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "precision": self.precision.state_dict(),
            "history": self.history.rows,
            "rng": capture_rng_state(),
            RESUMES_KEY: self.resumes,
        }
        for hook in self.hooks:
            state.update(hook.state_dict())
        return state

    def load_state_dict(self, state):
        unwrap(self.backbone).load_state_dict(state["backbone"])
        unwrap(self.mpn).load_state_dict(state["mpn"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state["precision"])
        for hook in self.hooks:
            hook.load_state_dict(self, state)
        self.history = History(state["history"])
        self.epoch = state["epoch"]
        self.resume_step = state["resume_step"]
        self.partial_sums = dict(state["partial_sums"])
        self.resumes = list(state.get(RESUMES_KEY, []))
        restore_rng_state(state["rng"])


class EpochMeter:
    """Sums of the loss terms over an epoch (carried over when resuming mid-epoch) and throughput."""

    def __init__(self, sums=None):
        self.sums = dict(sums or {})
        self.images_this_session = 0
        self.started = time.perf_counter()

    def update(self, loss, terms, batch_images):
        for name, value in {"Total": loss, **terms}.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value)
        self.sums["steps"] = self.sums.get("steps", 0) + 1
        self.sums["images"] = self.sums.get("images", 0) + batch_images
        self.images_this_session += batch_images

    def images_per_second(self):
        return self.images_this_session / max(time.perf_counter() - self.started, 1e-9)

    def epoch_stats(self, batch_size):
        """Mean loss terms, images/s, and the images missing from full batches (skipped broken ones)."""
        steps = self.sums.get("steps", 0)
        stats = {f"loss_{name}": value / max(steps, 1) for name, value in self.sums.items()
                 if name not in ("steps", "images")}
        stats["images_per_s"] = self.images_per_second()
        stats["skipped_images"] = steps * batch_size - self.sums.get("images", 0)
        return stats
