"""The backbone of a finished run, ready to embed images as its evaluation did.

A run folder holds ``config.yaml`` (the resolved config) and ``summary.json``,
whose ``best_weights`` names the best backbone file. Alternatively a weights
file and a config are given directly. Either way the embedding is the one the
evaluation used: the run's evaluation transform and ``eval_params.output_test_enc``.
"""
import copy
import json
import logging
from pathlib import Path
from typing import NamedTuple


from dataset import build_transform
from dataset.build import validation_cut
from evaluation.neighbours import distance_name
from net import build_backbone, load_weights
from schema import load_config
from utils.errors import UserInputError

logger = logging.getLogger(__name__)


class RunModel:
    """A backbone in eval mode with everything needed to embed like the evaluation."""

    def __init__(self, backbone, config, transform, device):
        self.backbone = backbone
        self.config = config
        self.transform = transform
        self.device = device
        self.output_option = config["eval_params"]["output_test_enc"]
        self.batch_size = config["eval_params"]["batch_size"]
        self.num_workers = config["dataset"]["nb_workers"]
        self.distance = distance_name(config["dataset"]["dataset_short"])


class WeightsSource(NamedTuple):
    """A config, the backbone weights trained with it, and the flag that named them (for messages)."""

    config_path: Path
    weights_path: Path
    flag: str


def run_weights(run_dir):
    """Config and best backbone file of a finished run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserInputError(f"--run {run_dir} is not a run folder (it has no config.yaml); give a folder that "
                             "train.py wrote, e.g. runs/demo_resnet18_train_<time>.")
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        backbone_name = summary["best_weights"]["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserInputError(f"--run {run_dir} has no best weights (summary.json with best_weights is missing: "
                             "the run has not finished); let it finish or resume it, or give --weights FILE "
                             "--config_path CFG.") from None
    weights = run_dir / backbone_name
    if not weights.is_file():
        raise UserInputError(f"--run {run_dir}: its best backbone file {weights.name} is missing; give "
                             "--weights FILE --config_path CFG instead.")
    return WeightsSource(run_dir / "config.yaml", weights, f"--run {run_dir}")


def weights_source(run_dir=None, weights=None, config_path=None):
    """Where the model comes from: ``--run`` alone, or ``--weights`` with ``--config_path``."""
    if run_dir is not None:
        if weights is not None or config_path is not None:
            raise UserInputError("Give either --run RUN_DIR or --weights FILE with --config_path CFG, not both.")
        return run_weights(run_dir)
    if weights is None or config_path is None:
        raise UserInputError("No model given; pass --run RUN_DIR (a finished training run) or --weights FILE "
                             "together with --config_path CFG.")
    return WeightsSource(Path(config_path), Path(weights), "--weights")


def trained_num_classes(config):
    """Outputs of the trained classifier head: the training classes (fewer when some were held out)."""
    dataset = config["dataset"]
    if dataset["val"] and config["mode"] == "train":
        return validation_cut(dataset["num_classes"], dataset["val_fraction"])
    return dataset["num_classes"]


def load_run_model(source, device):
    """The backbone of ``source`` (a ``WeightsSource``) with its weights, on ``device``, in eval mode."""
    config = load_config(source.config_path)
    encoder_params = copy.deepcopy(config["models"]["encoder_params"])
    # The weights come from the file below; nothing is downloaded or loaded twice.
    encoder_params.update(pretrained_path="no", imagenet_pretrained=0)
    backbone, _ = build_backbone(encoder_params, trained_num_classes(config))
    load_weights(backbone, source.weights_path, source.flag)
    dataset = config["dataset"]
    transform = build_transform(dataset["trans"], False, encoder_params["net_type"],
                                crop_size=dataset["crop_size"], resize_size=dataset["resize_size"])
    return RunModel(backbone.to(device).eval(), config, transform, device)
