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
from run_folder.layout import CONFIG_NAME, SUMMARY_NAME, read_summary
from schema import load_config
from utils.errors import UserInputError

logger = logging.getLogger(__name__)

# ``--run latest``: the newest finished training run below runs/.
LATEST = "latest"


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


def resolve_run_folder(text, flag="--run", runs_root="runs"):
    """``text`` as a run folder; ``latest`` is the newest finished training run below ``runs_root``."""
    if text != LATEST:
        return Path(text)
    finished = [summary.parent for summary in Path(runs_root).rglob(SUMMARY_NAME)
                if (summary.parent / CONFIG_NAME).is_file() and _names_best_weights(summary.parent)]
    if not finished:
        raise UserInputError(f"{flag} {LATEST}: no finished training run (a folder with {CONFIG_NAME} and a "
                             f"{SUMMARY_NAME} naming best weights) below {Path(runs_root).resolve()}; run train.py "
                             f"first, or give the run folder itself.")
    latest = max(finished, key=lambda folder: (folder / SUMMARY_NAME).stat().st_mtime)
    logger.info("%s %s: %s", flag, LATEST, latest)
    return latest


def _names_best_weights(run_dir):
    try:
        return bool(read_summary(run_dir)["best_weights"]["backbone"])
    except (UserInputError, KeyError, TypeError):
        return False


def best_weights_files(run_dir, flag="--run", need_mpn=True):
    """``(backbone file, MPN file)`` that a finished run folder's summary.json names; the backbone's
    (and with ``need_mpn`` the MPN's) present."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_NAME).is_file():
        raise UserInputError(f"{flag} {run_dir} is not a run folder (it has no {CONFIG_NAME}); give a folder that "
                             f"train.py wrote, or {flag} {LATEST} for the newest finished run in runs/.")
    try:
        names = read_summary(run_dir)["best_weights"]
        files = run_dir / names["backbone"], run_dir / names["mpn"]
    except (UserInputError, KeyError, TypeError):
        raise UserInputError(f"{flag} {run_dir} has no best weights (summary.json with best_weights is missing: "
                             "the run has not finished); let it finish or resume it, or give --weights FILE "
                             "--config_path CFG.") from None
    for which, path in zip(("backbone", "MPN"), files[:2 if need_mpn else 1]):
        if not path.is_file():
            raise UserInputError(f"{flag} {run_dir}: its best {which} file {path.name} is missing; copy it back "
                                 "into the run folder, or give the weights files directly.")
    return files


def run_weights(run_dir):
    """Config and best backbone file of a finished run folder (or ``latest``)."""
    run_dir = resolve_run_folder(run_dir)
    backbone, _mpn = best_weights_files(run_dir, need_mpn=False)
    return WeightsSource(run_dir / CONFIG_NAME, backbone, f"--run {run_dir}")


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
