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

from components import (Data, build_data, build_evaluators, build_models, build_refinement_options,
                        ensure_dataset_present)
from evaluation import format_metrics
from trainer import Trainer
from utils.checkpoint import load_checkpoint
from utils.config import config_to_yaml
from utils.io import atomic_write_text
from utils.losses import IntraBatchLoss
from utils.precision import Precision, build_precision, initialize_apex

logger = logging.getLogger(__name__)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_resolved_config(config, run_dir):
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))


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


def build_setup(config, mode, device, device_requested=False, distributed=None):
    """Data, models, precision and evaluators for ``mode`` ('train' or 'test')."""
    seed_everything(config["train_params"]["seed"])
    ensure_dataset_present(config)
    rank, world_size = (distributed.rank, distributed.world_size) if distributed else (0, 1)
    data = build_data(config, mode, rank=rank, world_size=world_size, pin_memory=device.type == "cuda")
    precision = build_precision(config["train_params"]["is_apex"], device, device_requested)
    backbone, mpn = build_models(config, data.num_train_classes, device)
    if distributed is not None:
        distributed.check_options(config)
    evaluators = build_evaluators(config, device, precision.dtype, distributed)
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


def run_test(setup, run_dir):
    """Evaluate the backbone (weights of ``models.encoder_params.pretrained_path``) once."""
    metrics = setup.evaluators["test"].evaluate(setup.backbone, **setup.data.eval_loaders["test"])
    logger.info("Test: %s", format_metrics(metrics))
    if setup.distributed is None or setup.distributed.is_main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def run_pseudo_test(setup, run_dir):
    """Evaluate the backbone, then the embeddings the MPN refines on each test item's graph of
    k-reciprocal neighbours (weights of ``models.gnn_params.pretrained_path``); metrics.json
    holds both sets and the seconds of each stage."""
    if setup.config["models"]["gnn_params"]["pretrained_path"] == "no":
        logger.warning("pseudo_test without MPN weights (models.gnn_params.pretrained_path: no): "
                       "the refinement uses a randomly initialised MPN")
    result = setup.evaluators["test"].evaluate_refined(
        setup.backbone, setup.mpn, build_refinement_options(setup.config), **setup.data.eval_loaders["test"])
    seconds = result["seconds"]
    logger.info("Test, backbone only: %s (embedding %.1f s, metrics %.1f s)", format_metrics(result["backbone"]),
                seconds["embedding"], seconds["backbone_metrics"])
    logger.info("Test, MPN-refined: %s (graphs %.1f s, refinement %.1f s, metrics %.1f s)",
                format_metrics(result["mpn_refined"]), seconds["graphs"], seconds["refinement"],
                seconds["refined_metrics"])
    if setup.distributed is None or setup.distributed.is_main:
        atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    return result
