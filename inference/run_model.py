"""The backbone of a finished run, ready to embed images as its evaluation did.

A run folder holds ``config.yaml`` (the resolved config) and ``summary.json``,
whose ``best_weights`` names the best backbone file. Alternatively a weights
file and a config are given directly. Either way the run's ``RunRecipe``
says everything else: the classes its head was trained on, the input
transform and the embedding its evaluation used.
"""
import logging
from pathlib import Path
from typing import NamedTuple

from recipe import RunRecipe
from run_folder.layout import CONFIG_NAME, read_summary
from schema import load_config
from utils.errors import UserInputError

logger = logging.getLogger(__name__)


class RunModel:
    """A backbone in eval mode with everything needed to embed like the evaluation."""

    def __init__(self, backbone, recipe, device):
        self.backbone = backbone
        self.recipe = recipe
        self.config = recipe.config
        self.transform = recipe.input.evaluation()
        self.device = device
        self.output_option = recipe.embedding_output
        self.batch_size = recipe.config["eval_params"]["batch_size"]
        self.num_workers = recipe.config["dataset"]["nb_workers"]
        self.distance = recipe.distance


class WeightsSource(NamedTuple):
    """A config, the backbone weights trained with it, and the flag that named them (for messages)."""

    config_path: Path
    weights_path: Path
    flag: str


def run_weights(run_dir):
    """Config and best backbone file of a finished run folder."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_NAME).is_file():
        raise UserInputError(f"--run {run_dir} is not a run folder (it has no {CONFIG_NAME}); give a folder that "
                             "train.py wrote, e.g. runs/demo_resnet18_train_<time>.")
    try:
        backbone_name = read_summary(run_dir)["best_weights"]["backbone"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserInputError(f"--run {run_dir} has no best weights (summary.json with best_weights is missing: "
                             "the run has not finished); let it finish or resume it, or give --weights FILE "
                             "--config_path CFG.") from None
    weights = run_dir / backbone_name
    if not weights.is_file():
        raise UserInputError(f"--run {run_dir}: its best backbone file {weights.name} is missing; give "
                             "--weights FILE --config_path CFG instead.")
    return WeightsSource(run_dir / CONFIG_NAME, weights, f"--run {run_dir}")


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


def load_run_model(source, device):
    """The backbone of ``source`` (a ``WeightsSource``) with its weights, on ``device``, in eval mode."""
    recipe = RunRecipe(load_config(source.config_path))
    backbone, _ = recipe.build_backbone(weights=source.weights_path, weights_flag=source.flag)
    return RunModel(backbone.to(device).eval(), recipe, device)
