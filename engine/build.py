"""The composition root: build everything a run needs, then train.

Building comes first and touches no output: a missing dataset, a bad
weights file or missing ImageNet weights stop the run with one sentence
before its run folder is even created. ``build_hooks`` is the one place
that lists the side concerns of training, in their order; nothing is
replaced on an object after it is built.
"""
import logging
import random
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from engine.components import Data, build_data, build_evaluators, ensure_dataset_present
from engine.hooks import (BestWeights, Checkpoint, EpochLog, FinalTest, LrSchedule, Pictures, Plots, SummaryFile,
                          TensorBoard, check_logging_options)
from engine.trainer import LoopOptions, Trainer
from losses.intra_batch import IntraBatchLoss
from optim.param_groups import build_optimizer, build_param_groups
from recipe import RunRecipe
from run_folder.resume import ALLOW_FLAG, describe
from run_folder.layout import best_weight_names
from utils.errors import UserInputError
from utils.precision import Precision, build_precision, initialize_apex

logger = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Setup:
    """Everything built from the config for one run."""

    config: dict
    recipe: RunRecipe
    device: torch.device
    data: Data
    precision: Precision
    backbone: torch.nn.Module
    mpn: torch.nn.Module
    evaluators: dict
    distributed: object = None


def build_setup(config, mode, device, device_requested=False, distributed=None, stop_request=None):
    """Data, models, precision and evaluators for ``mode`` ('train' or 'test').

    ``stop_request`` makes the evaluations stop within one batch of a signal.
    """
    seed_everything(config["train_params"]["seed"])
    check_logging_options(config)
    ensure_dataset_present(config)
    recipe = RunRecipe(config)
    rank, world_size = (distributed.rank, distributed.world_size) if distributed else (0, 1)
    data = build_data(recipe, mode, rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
    precision = build_precision(config["train_params"]["is_apex"], device, device_requested)
    backbone, mpn = recipe.build_models(device)
    if distributed is not None:
        distributed.check_options(config)
    evaluators = build_evaluators(recipe, device, precision.dtype, distributed, stop_request)
    return Setup(config, recipe, device, data, precision, backbone, mpn, evaluators, distributed)


def build_optimizer_for(config, backbone, mpn):
    """RAdam over both networks' parameter groups (``train_params`` lr, scales and weight decay)."""
    train_params = config["train_params"]
    groups = build_param_groups(backbone, mpn, train_params["lr"], train_params["backbone_lr_scale"],
                                train_params["layer_decay"])
    return build_optimizer(groups, train_params["lr"], train_params["weight_decay"])


def build_hooks(config, run_dir, is_main):
    """The side concerns of training, in the order in which each event reaches them.

    1. LrSchedule: before an epoch, the drops (reloading the best weights); before a step, the warm-up.
    2. EpochLog: the epoch's line, once its row exists.
    3. FinalTest: after training, the test of the best weights and the summary; before the pictures,
       which show that test.
    4. Pictures (``logging.pictures``): keeps the best and the last evaluation; draws them after
       training (main process), before TensorBoard closes.
    5. TensorBoard (main process, ``logging.tensorboard``): each row as scalars, and the pictures.
    6. Checkpoint (main process): last.pth with metrics.csv, which name the new best files.
    7. Plots (main process): losses.png and metrics.png.
    8. BestWeights: selects the best epoch right after the evaluation, so the log, the checkpoint and the
       plots see it; after the epoch, deletes the replaced files, which the checkpoint no longer names.
    9. SummaryFile (main process): summary.json, last of all: it marks the run finished, so a run killed
       in anything before it resumes into its end again.
    Returns ``(hooks, final_test)``; ``final_test.summary`` is the run's summary.
    """
    train_params, logging_options = config["train_params"], config["logging"]
    best_weights = BestWeights(run_dir, partial(best_weight_names, config=config), is_main)
    final_test = FinalTest(best_weights)
    tensorboard = TensorBoard(run_dir) if is_main and logging_options["tensorboard"] else None
    pictures = None
    if logging_options["pictures"]:
        pictures = Pictures(run_dir, logging_options["embedding_map"], train_params["seed"], best_weights,
                            final_test, tensorboard, is_main)
    main_only = [Checkpoint(run_dir),
                 Plots(run_dir, config["dataset"]["dataset_short"], config["models"]["encoder_params"]["net_type"],
                       train_params["lr_drop_epochs"], best_weights)] if is_main else []
    hooks = [LrSchedule(train_params["lr"], train_params["lr_drop_epochs"], train_params["warmup_epochs"],
                        best_weights),
             EpochLog(train_params["num_epochs"], best_weights),
             final_test,
             *(hook for hook in (pictures, tensorboard) if hook is not None),
             *main_only, best_weights,
             *([SummaryFile(run_dir, final_test)] if is_main else [])]
    return hooks, final_test


def build_trainer(setup, run_dir, stop_request=None):
    """The Trainer of ``setup`` with its hooks; ``(trainer, final_test)``.

    Apex must see the bare models and the optimiser before any DDP wrapper.
    """
    optimizer = build_optimizer_for(setup.config, setup.backbone, setup.mpn)
    (backbone, mpn), optimizer = initialize_apex(setup.precision, [setup.backbone, setup.mpn], optimizer)
    if setup.distributed is not None:
        backbone, mpn = setup.distributed.wrap_models(backbone, mpn, setup.config)
    is_main = setup.distributed is None or setup.distributed.is_main
    hooks, final_test = build_hooks(setup.config, run_dir, is_main)
    trainer = Trainer(backbone, mpn, optimizer, IntraBatchLoss.from_config(setup.config), setup.precision,
                      setup.device, LoopOptions.from_config(setup.config), run_dir, data=setup.data,
                      evaluators=setup.evaluators, hooks=hooks, stop_request=stop_request,
                      distributed=setup.distributed)
    return trainer, final_test


# What restoring a state of the wrong shape raises (a tensor where a dict belongs, a missing key, weights of
# another size); the checkpoint file is the cause, whichever part of the trainer meets it first.
DAMAGED_STATE_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)


def restore_training_state(trainer, state, path):
    """``trainer.load_state_dict(state)``, a damaged state refused in one sentence naming the file.

    Nothing is written before training continues, so a state refused half-way
    leaves the run folder as it was.
    """
    try:
        trainer.load_state_dict(state)
    except DAMAGED_STATE_ERRORS as error:
        problem = " ".join(str(error).split())[:160] or type(error).__name__
        raise UserInputError(f"--resume {path} holds a damaged training state ({problem}); restore the file "
                             "from a backup, or start a new run.") from None


def run_train(setup, run_dir, resume=None, stop_request=None):
    """Train and evaluate every epoch; returns the run summary.

    ``resume`` (``run_folder.resume.Resume``) continues a run from its
    checkpoint; the trainer keeps its record, which summary.json reports.
    """
    logger.info("Precision: %s", setup.precision.name)
    trainer, final_test = build_trainer(setup, run_dir, stop_request)
    if resume is not None:
        restore_training_state(trainer, resume.take_state(), resume.path)
        trainer.resumes = resume.all_records()
        log_resume(resume, trainer)
    trainer.fit()
    return final_test.summary


def log_resume(resume, trainer):
    """Where the resumed run continues, and whether from there it differs from an uninterrupted run."""
    if resume.epoch > trainer.options.num_epochs:
        where = "with its final test (every epoch is trained)"
    else:
        where = f"at epoch {resume.epoch}, step {resume.step} of {trainer.steps_per_epoch()}"
    logger.info("Resumed from %s (%d epoch(s) completed): continues %s", resume.path, trainer.epoch, where)
    if not resume.exact:
        logger.warning("Resumed with %s (%s): from epoch %d, step %d on the numbers differ from an uninterrupted "
                       "run; config.yaml and summary.json record it (\"resumed_exactly\": false).",
                       describe(resume.changes_numbers), ALLOW_FLAG, resume.epoch, resume.step)
