"""The composition root: build everything a run needs, then train or test.

Building comes first and touches no output: a missing dataset, a bad
weights file or missing ImageNet weights stop the run with one sentence
before its run folder is even created.
"""
import json
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

from engine.components import (Data, build_data, build_evaluators, build_models, build_refinement_options,
                        ensure_dataset_present)
from evaluation import format_metrics
from inference.after_evaluation import check_logging_options, draw_test_pictures
from engine.trainer import Trainer
from run_folder.checkpoint import load_checkpoint
from schema import config_to_yaml
from utils.io import atomic_write_text
from losses.intra_batch import IntraBatchLoss
from utils.precision import Precision, build_precision, initialize_apex
from run_folder.resume import RECORD_NAME
from utils.signals import RunInterrupted

logger = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_resolved_config(config, run_dir):
    """``config.yaml`` for the reader and the hidden record a resume is checked against."""
    text = config_to_yaml(config)
    atomic_write_text(run_dir / "config.yaml", text)
    atomic_write_text(run_dir / RECORD_NAME, text)


@dataclass
class Setup:
    """Everything built from the config for one run."""

    config: dict
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
    rank, world_size = (distributed.rank, distributed.world_size) if distributed else (0, 1)
    data = build_data(config, mode, rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
    precision = build_precision(config["train_params"]["is_apex"], device, device_requested)
    backbone, mpn = build_models(config, data.num_train_classes, device)
    if distributed is not None:
        distributed.check_options(config)
    evaluators = build_evaluators(config, device, precision.dtype, distributed, stop_request)
    return Setup(config, device, data, precision, backbone, mpn, evaluators, distributed)


def run_train(setup, run_dir, resume_path=None, stop_request=None):
    """Train and evaluate every epoch; returns the run summary."""
    logger.info("Precision: %s", setup.precision.name)
    trainer = Trainer(setup.config, run_dir, setup.device, setup.precision, setup.backbone, setup.mpn,
                      setup.data, setup.evaluators, IntraBatchLoss.from_config(setup.config),
                      stop_request=stop_request, distributed=setup.distributed)
    # Apex must see the bare models and the optimiser before any DDP wrapper.
    (trainer.backbone, trainer.mpn), trainer.optimizer = initialize_apex(
        setup.precision, [trainer.backbone, trainer.mpn], trainer.optimizer)
    if setup.distributed is not None:
        trainer.backbone, trainer.mpn = setup.distributed.wrap_models(trainer.backbone, trainer.mpn, setup.config)
    if resume_path is not None:
        trainer.load_state_dict(load_checkpoint(resume_path))
        logger.info("Resumed from %s after epoch %d", resume_path, trainer.epoch)
    return trainer.fit()


def evaluate_once(run_dir, evaluate):
    """``evaluate()`` of a test run; a stop request during it says what the run folder holds."""
    try:
        return evaluate()
    except RunInterrupted:
        raise RunInterrupted(f"Stopped during the test evaluation; {run_dir} holds only config.yaml and "
                             "train.log, run the test again for metrics.json.") from None


def run_test(setup, run_dir):
    """Evaluate the backbone (weights of ``models.encoder_params.pretrained_path``) once."""
    logger.info("Precision: %s", setup.precision.name)
    backbone, _ = initialize_apex(setup.precision, setup.backbone)
    metrics = evaluate_once(run_dir, lambda: setup.evaluators["test"].evaluate(
        backbone, **setup.data.eval_loaders["test"]))
    logger.info("Test: %s", format_metrics(metrics))
    if setup.distributed is None or setup.distributed.is_main:
        record = dict(metrics)
        if "NMI" in metrics:  # which k-means produced it: NMI differs between back ends
            record["nmi_backend"] = setup.evaluators["test"].kmeans_backend
        atomic_write_text(run_dir / "metrics.json", json.dumps(record, indent=2))
        draw_test_pictures(setup.config, run_dir, setup.evaluators["test"].last, setup.data.eval_loaders["test"])
    return metrics


def run_pseudo_test(setup, run_dir):
    """Evaluate the backbone, then the embeddings the MPN refines on each test item's graph of
    k-reciprocal neighbours (weights of ``models.gnn_params.pretrained_path``); metrics.json
    holds both sets and the seconds of each stage."""
    if setup.config["models"]["gnn_params"]["pretrained_path"] == "no":
        logger.warning("pseudo_test without MPN weights (models.gnn_params.pretrained_path: no): "
                       "the refinement uses a randomly initialised MPN")
    logger.info("Precision: %s", setup.precision.name)
    (backbone, mpn), _ = initialize_apex(setup.precision, [setup.backbone, setup.mpn])
    result = evaluate_once(run_dir, lambda: setup.evaluators["test"].evaluate_refined(
        backbone, mpn, build_refinement_options(setup.config), **setup.data.eval_loaders["test"]))
    seconds = result["seconds"]
    logger.info("Test, backbone only: %s (embedding %.1f s, metrics %.1f s)", format_metrics(result["backbone"]),
                seconds["embedding"], seconds["backbone_metrics"])
    logger.info("Test, MPN-refined: %s (graphs %.1f s, refinement %.1f s, metrics %.1f s)",
                format_metrics(result["mpn_refined"]), seconds["graphs"], seconds["refinement"],
                seconds["refined_metrics"])
    if setup.distributed is None or setup.distributed.is_main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    return result
