"""The training loop of SPEC 6, readable top to bottom.

``Trainer.fit`` runs epochs; each epoch is ``apply_schedule`` (reload the
best weights and divide the lr at the drop epochs), ``train_one_epoch``
(forward, loss, backward, step, meters), ``evaluate`` and ``end_of_epoch``
(best weights, metrics.csv row, plots, resumable checkpoint). The step
itself computes the loss and nothing else. The best weights live in their
files in the run folder, written when an epoch becomes the best; the
checkpoint only names them.
"""
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from evaluation import format_metrics
from inference.after_evaluation import AfterEvaluation
from net.weights import load_weights
from run_folder.checkpoint import (CHECKPOINT_NAME, FORMAT_1_BEST_WEIGHTS, capture_rng_state, restore_rng_state,
                              save_checkpoint)
from utils.errors import UserInputError
from run_folder.history import History, is_metric_column
from utils.io import atomic_torch_save, atomic_write_text, write_together
from optim.param_groups import build_optimizer, build_param_groups
from run_folder.plots import legend_name, plot_run, schedule_events
from run_folder.run_dir import name_for_files
from utils.signals import RunInterrupted

logger = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(RunInterrupted):
    """A stop was requested (SIGINT/SIGTERM); a resumable checkpoint was written or kept."""


@dataclass
class BestWeights:
    """The best epoch so far and the names of its weights files in the run folder.

    The files are written (atomically, in the authors' naming) as soon as an
    epoch becomes the best, and those of the epoch it replaces are deleted;
    the schedule and the final test read them back. Names, not paths, so a
    copied run folder still resumes.
    """

    score: float = -1.0
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    backbone_file: str = None
    mpn_file: str = None


def unwrap(model):
    """The module inside a DistributedDataParallel wrapper, or the model itself."""
    return getattr(model, "module", model)


def best_weight_names(score, config):
    """The authors' file names: ``<R@1>[neck_]<net_type>_<dataset>.pth`` and the MPN twin."""
    neck = "neck_" if config["models"]["encoder_params"]["neck"] else ""
    net_type = name_for_files(config["models"]["encoder_params"]["net_type"])
    dataset = config["dataset"]["dataset_short"]
    return (f"{score}{neck}{net_type}_{dataset}.pth", f"{score}gnn_{neck}{net_type}_{dataset}.pth")


class Trainer:
    def __init__(self, config, run_dir, device, precision, backbone, mpn, data, evaluators, loss_fn,
                 stop_request=None, distributed=None):
        self.config = config
        self.train_params = config["train_params"]
        self.run_dir = Path(run_dir)
        self.device = device
        self.precision = precision
        self.backbone = backbone
        self.mpn = mpn
        self.data = data
        self.evaluators = evaluators
        self.loss_fn = loss_fn
        self.stop_request = stop_request
        self.distributed = distributed
        self.is_main = distributed is None or distributed.is_main
        # Model selection (best epoch, schedule reloads) uses held-out classes when there are some.
        self.selection_split = "val" if "val" in evaluators else "test"
        self.channels_last = bool(config["models"]["encoder_params"]["channels_last"])
        param_groups = build_param_groups(unwrap(backbone), unwrap(mpn), self.train_params["lr"],
                                          self.train_params["backbone_lr_scale"], self.train_params["layer_decay"])
        self.optimizer = build_optimizer(param_groups, self.train_params["lr"], self.train_params["weight_decay"])
        self.epoch = 0
        self.resume_step = 0
        self.partial_sums = {}
        self.best = BestWeights()
        self.history = History()
        # Wall time of the epochs trained in this process, for the run's ETA.
        self.epoch_seconds = []
        # Pictures of the best and last epoch, TensorBoard: rank 0 only.
        self.after_evaluation = AfterEvaluation.from_config(config, run_dir) if self.is_main else None

    # ------------------------------------------------------------------ loop
    def fit(self):
        """Train all epochs; returns the summary dict also written to summary.json."""
        num_epochs = self.train_params["num_epochs"]
        if self.epoch == 0 and not self.history.rows and self.train_params["eval_before_training"]:
            started = time.perf_counter()
            self.end_of_epoch(0, {}, self.evaluate(0), started)
        for epoch in range(self.epoch + 1, num_epochs + 1):
            started = time.perf_counter()
            self.apply_schedule(epoch)
            train_stats = self.train_one_epoch(epoch)
            self.end_of_epoch(epoch, train_stats, self.evaluate(epoch), started)
        return self.finish()

    def apply_schedule(self, epoch):
        """Authors' schedule: at each drop epoch reload the best weights; lr becomes lr/10.

        The optimiser state is kept. A resumed run skips this for an epoch
        that was already under way (its lr is in the optimiser state). Each
        parameter group keeps its ``lr_scale`` (backbone_lr_scale, layer_decay).
        """
        if epoch not in self.train_params["lr_drop_epochs"] or self.resume_step:
            return
        new_lr = self.train_params["lr"] / 10.0
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr * group["lr_scale"]
        if self.best.backbone_file is None:
            logger.info("Epoch %d: no best epoch yet to reload, lr set to %.4g", epoch, new_lr)
            return
        self.reload_best_weights([(self.backbone, self.best.backbone_file), (self.mpn, self.best.mpn_file)])
        logger.info("Epoch %d: reloaded the best weights (epoch %d, R@1 %.2f), lr set to %.4g",
                    epoch, self.best.epoch, 100 * self.best.score, new_lr)

    def train_one_epoch(self, epoch):
        self.backbone.train()
        self.mpn.train()
        self.data.set_epoch(epoch)
        meter = EpochMeter(self.partial_sums)
        steps_done, self.resume_step, self.partial_sums = self.resume_step, 0, {}
        max_iters = self.train_params["max_iters_per_epoch"]
        total_steps = min(len(self.data.train_loader), max_iters or len(self.data.train_loader))
        self.data.skip_batches(steps_done)
        # Updated after each step (not by iterating the bar), so it reaches total_steps/total_steps.
        bar = tqdm(total=total_steps, initial=steps_done, disable=not self.is_main, unit="step",
                   desc=f"epoch {epoch}/{self.train_params['num_epochs']}", dynamic_ncols=True)
        for step, (images, labels, *_rest) in enumerate(self.data.train_loader, start=steps_done):
            self.warm_up_lr(epoch, step, total_steps)
            loss, terms = self.training_step(images, labels, epoch, step)
            meter.update(loss, terms, len(labels))
            bar.set_postfix(loss=f"{float(loss):.3f}", img_s=f"{meter.images_per_second():.1f}", refresh=False)
            bar.update(1)
            if self.stop_requested():
                self.save_interrupted(epoch, step + 1, meter.sums)
            if step + 1 >= total_steps:
                break
        bar.close()
        stats = meter.epoch_stats(self.data.batch_size)
        if stats["skipped_images"]:
            logger.warning("Epoch %d: %d broken images were skipped", epoch, stats["skipped_images"])
        return stats

    def warm_up_lr(self, epoch, step, steps_per_epoch):
        """``warmup_epochs``: the lr rises linearly, every step, from lr/steps to lr (times each lr_scale).

        ``warmup_epochs * steps_per_epoch`` steps (rounded); the last of them
        runs at the full lr, and later steps leave the lr to the schedule.
        The config makes the warm-up end before the first lr drop.
        """
        warmup_steps = round(self.train_params["warmup_epochs"] * steps_per_epoch)
        steps_before = (epoch - 1) * steps_per_epoch + step
        if steps_before >= warmup_steps:
            return
        factor = (steps_before + 1) / warmup_steps
        for group in self.optimizer.param_groups:
            group["lr"] = self.train_params["lr"] * group["lr_scale"] * factor

    def stop_requested(self):
        requested = self.stop_request is not None and self.stop_request.is_set()
        return self.distributed.any_rank(requested) if self.distributed is not None else requested

    def training_step(self, images, labels, epoch, step):
        """One optimiser step on one P x K batch: the loss of SPEC 6."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = images.to(self.device, non_blocking=True, memory_format=memory_format)
        labels = labels.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            backbone_logits, embedding = self.backbone(images, output_option=self.train_params["output_train_enc"])
            mpn_logits = self.mpn_logits(embedding) if self.loss_fn.uses_mpn else []
        loss, terms = self.loss_fn(backbone_logits, mpn_logits, labels)
        if not self.all_finite(loss):
            raise TrainingDiverged(f"The loss became {float(loss.detach())} at epoch {epoch}, iteration "
                                   f"{step + 1}; the last good checkpoint {self.run_dir / CHECKPOINT_NAME} is kept. "
                                   "Lower train_params.lr or check the data.")
        self.precision.backward(loss, self.optimizer)
        if self.train_params["grad_clip"] is not None:
            self.clip_gradients(self.train_params["grad_clip"])
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
        output_option = self.train_params["output_train_gnn"]
        if self.distributed is None or self.train_params["graph_scope"] != "global":
            return self.mpn(embedding, output_option=output_option)[0]
        logits, _ = self.mpn(self.distributed.gather_with_grad(embedding), output_option=output_option)
        return [self.distributed.local_rows(layer_logits) for layer_logits in logits]

    def all_finite(self, loss):
        """Whether the loss is finite in every process (they must stop together)."""
        finite = bool(torch.isfinite(loss))
        return finite if self.distributed is None else not self.distributed.any_rank(not finite)

    def evaluate(self, epoch):
        """Metrics used for model selection: the validation classes if held out, else the test set."""
        split = self.selection_split
        try:
            metrics = self.evaluators[split].evaluate(self.backbone, **self.data.eval_loaders[split])
        except RunInterrupted:
            raise self.interrupted_during(f"the evaluation of epoch {epoch}") from None
        logger.info("Epoch %d %s: %s", epoch, split, format_metrics(metrics))
        return {f"{split}_{name}": value for name, value in metrics.items()}

    def end_of_epoch(self, epoch, train_stats, metrics, started):
        score = metrics[f"{self.selection_split}_R@1"]
        replaced = None
        if epoch >= 1 and score > self.best.score:
            replaced, self.best = self.best, self.save_best_weights(score, epoch, metrics)
            logger.info("Epoch %d: new best %s R@1 %.2f", epoch, self.selection_split, 100 * score)
        seconds = time.perf_counter() - started
        row = {"epoch": epoch, **train_stats, **metrics, "lr": self.optimizer.param_groups[0]["lr"],
               "time_s": round(seconds, 2)}
        self.history.append(row)
        self.epoch = epoch
        if epoch >= 1:
            self.epoch_seconds.append(seconds)
        logger.info("%s", self.epoch_summary(row, score))
        self.report_evaluation(epoch, row)
        if self.is_main:
            # last.pth and metrics.csv must agree: both are renamed into place only once both were written.
            with write_together():
                save_checkpoint(self.run_dir / CHECKPOINT_NAME, self.state_dict())
                self.history.write_csv(self.run_dir / "metrics.csv")
            self.plot()
            if replaced is not None:
                self.remove_replaced_best_files(replaced)

    # -------------------------------------------------------- best weights
    def save_best_weights(self, score, epoch, metrics):
        """Write the current weights as the best epoch's files; the new ``BestWeights``."""
        backbone_file, mpn_file = best_weight_names(score, self.config)
        if self.is_main:
            atomic_torch_save(_cpu_copy(unwrap(self.backbone).state_dict()), self.run_dir / backbone_file)
            atomic_torch_save(_cpu_copy(unwrap(self.mpn).state_dict()), self.run_dir / mpn_file)
        return BestWeights(score, epoch, dict(metrics), backbone_file, mpn_file)

    def remove_replaced_best_files(self, replaced):
        """Delete the files of a former best epoch: this run wrote them and last.pth no longer names them."""
        current = (self.best.backbone_file, self.best.mpn_file)
        for name in (replaced.backbone_file, replaced.mpn_file):
            if name is not None and name not in current:
                (self.run_dir / name).unlink(missing_ok=True)

    def reload_best_weights(self, modules_and_files):
        """Load each ``(module, file name)`` of the best epoch from the run folder."""
        if self.distributed is not None:
            self.distributed.barrier()  # rank 0 wrote the files; every rank reads them
        for module, name in modules_and_files:
            load_weights(unwrap(module), self.run_dir / name, "the best epoch's weights named in last.pth")

    def adopt_format_1_best_weights(self, weights):
        """A format-1 checkpoint held the best weights itself: give them their files, as format 2 does.

        A finished format-1 run already wrote these files; they are kept as they are.
        """
        self.best.backbone_file, self.best.mpn_file = best_weight_names(self.best.score, self.config)
        if not self.is_main:
            return
        for name, state in ((self.best.backbone_file, weights["backbone"]), (self.best.mpn_file, weights["mpn"])):
            if not (self.run_dir / name).exists():
                atomic_torch_save(state, self.run_dir / name)

    def check_best_files_present(self):
        """A resumed run needs the best weights files its checkpoint names: say so before training."""
        if not self.is_main:
            return
        for name in (self.best.backbone_file, self.best.mpn_file):
            if name is not None and not (self.run_dir / name).is_file():
                raise UserInputError(
                    f"--resume {self.run_dir}: {CHECKPOINT_NAME} names the best weights file {name}, which is not "
                    f"in the run folder; copy it back beside {CHECKPOINT_NAME} (the lr drops and the final test "
                    "read it).")

    def epoch_summary(self, row, score):
        """One line: losses, lr, time, images/s, the selection R@1, the best so far and the run's ETA."""
        num_epochs = self.train_params["num_epochs"]
        split = self.selection_split
        head = f"Epoch {row['epoch']}/{num_epochs} in {format_duration(row['time_s'])}"
        if row["epoch"] == 0:
            return f"{head} (before training): {split} R@1 {100 * score:.2f}"
        loss_columns = [name for name in row if name.startswith("loss_") and name != "loss_Total"]
        terms = ", ".join(f"{legend_name(name, loss_columns)} {row[name]:.3f}" for name in loss_columns)
        remaining_s = (num_epochs - row["epoch"]) * sum(self.epoch_seconds) / len(self.epoch_seconds)
        eta = (f"run done in about {format_duration(remaining_s)} (at "
               f"{time.strftime('%H:%M', time.localtime(time.time() + remaining_s))})" if remaining_s else "run done")
        return (f"{head}: loss {row['loss_Total']:.3f} ({terms}), lr {row['lr']:.4g}, "
                f"{row['images_per_s']:.1f} images/s | {split} R@1 {100 * score:.2f}, best "
                f"{100 * self.best.score:.2f} (epoch {self.best.epoch}) | {eta}")

    def plot(self):
        """losses.png and metrics.png of the run so far (run_folder/plots.py)."""
        columns = self.history.columns()
        encoder = self.config["models"]["encoder_params"]
        title = (f"{self.config['dataset']['dataset_short']}, {self.selection_split} classes, "
                 f"{encoder['net_type']}\n{self.run_dir.name}")
        epochs = [row["epoch"] for row in self.history.rows]
        plot_run(self.run_dir, self.history.rows, [c for c in columns if c.startswith("loss_")],
                 [c for c in columns if is_metric_column(c)], title,
                 selection_column=f"{self.selection_split}_R@1", best_epoch=self.best.epoch,
                 events=schedule_events(self.train_params["lr_drop_epochs"], epochs))

    def report_evaluation(self, epoch, row):
        """Hand the evaluation just done to the pictures / TensorBoard (rank 0)."""
        if self.after_evaluation is not None:
            split = self.selection_split
            is_best = epoch >= 1 and self.best.epoch == epoch
            self.after_evaluation.epoch_done(epoch, split, row, self.evaluators[split].last,
                                             self.data.eval_loaders[split], is_best)

    # ------------------------------------------------------------- results
    def finish(self):
        """Final test of the best weights when selecting on val; summary.json names their files."""
        summary = {"best_epoch": self.best.epoch, "best_metrics": self.best.metrics,
                   "last_epoch": self.epoch, "last_metrics": self._last_metrics()}
        if "val" in self.evaluators and self.best.backbone_file is not None:
            self.reload_best_weights([(self.backbone, self.best.backbone_file)])
            try:
                test_metrics = self.evaluators["test"].evaluate(self.backbone, **self.data.eval_loaders["test"])
            except RunInterrupted:
                raise self.interrupted_during("the final test evaluation") from None
            summary["test_metrics_of_best_epoch"] = test_metrics
            if self.after_evaluation is not None:
                self.after_evaluation.best_weights_tested(self.best.epoch, self.evaluators["test"].last,
                                                          self.data.eval_loaders["test"])
            logger.info("Test set, weights of epoch %d: %s", self.best.epoch, format_metrics(test_metrics))
        if self.is_main and self.best.backbone_file is not None:
            summary["best_weights"] = {"backbone": self.best.backbone_file, "mpn": self.best.mpn_file}
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        if self.after_evaluation is not None:
            self.after_evaluation.finish(self.best.epoch)
        logger.info("Best epoch %d: %s", self.best.epoch, _format_prefixed(self.best.metrics))
        logger.info("Last epoch %d: %s", self.epoch, _format_prefixed(summary["last_metrics"]))
        return summary

    def _last_metrics(self):
        if not self.history.rows:
            return {}
        last = self.history.rows[-1]
        return {key: value for key, value in last.items() if is_metric_column(key)}

    # -------------------------------------------------------------- resume
    def state_dict(self):
        return {
            "epoch": self.epoch,
            "resume_step": 0,
            "partial_sums": {},
            "backbone": unwrap(self.backbone).state_dict(),
            "mpn": unwrap(self.mpn).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "precision": self.precision.state_dict(),
            "best": vars(self.best),
            "history": self.history.rows,
            "rng": capture_rng_state(),
        }

    def load_state_dict(self, state):
        unwrap(self.backbone).load_state_dict(state["backbone"])
        unwrap(self.mpn).load_state_dict(state["mpn"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state["precision"])
        self.best = BestWeights(**state["best"])
        if FORMAT_1_BEST_WEIGHTS in state:
            self.adopt_format_1_best_weights(state[FORMAT_1_BEST_WEIGHTS])
        self.check_best_files_present()
        self.history = History(state["history"])
        self.epoch = state["epoch"]
        self.resume_step = state["resume_step"]
        self.partial_sums = dict(state["partial_sums"])
        restore_rng_state(state["rng"])

    def interrupted_during(self, what):
        """Stopped in an evaluation: the checkpoint of the last completed epoch stays as it was."""
        if not self.history.rows:
            return TrainingInterrupted(f"Stopped during {what}, before any epoch was completed; nothing to "
                                       "resume, start the run again.")
        return TrainingInterrupted(f"Stopped during {what}; {self.run_dir / CHECKPOINT_NAME} holds epoch "
                                   f"{self.epoch}, resume with `python train.py --resume {self.run_dir}`.")

    def save_interrupted(self, epoch, steps_done, sums):
        """Write a checkpoint in the middle of ``epoch`` and stop."""
        if self.is_main:
            state = self.state_dict()
            state.update(epoch=epoch - 1, resume_step=steps_done, partial_sums=sums)
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        raise TrainingInterrupted(f"Stopped at epoch {epoch}, iteration {steps_done}; resume with "
                                  f"`python train.py --resume {self.run_dir}`.")


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


def format_duration(seconds):
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _cpu_copy(state):
    return {key: value.detach().to("cpu", copy=True) for key, value in state.items()}


def _format_prefixed(metrics):
    return ", ".join(f"{key} {100 * value:.2f}" for key, value in metrics.items()) or "no metrics"
