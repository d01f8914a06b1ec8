"""``mode: hyper_search``: the authors' random search, one training run per trial.

Search space of the authors' trainer: lr = 10^U(-5, -3), weight decay =
10^U(-15, -6), P in 6..15, K in 3..9, temperature U(0, 1), heads in
{1, 2, 4, 8}; every trial trains ``hyper_search.num_epochs`` epochs (40).
(Their code also drew the number of layers but overwrote that draw, so the
layers stay as configured; we keep that.) Trials are scored by their best
R@1; ``trials.csv`` lists them and ``best_config.yaml`` is the winner,
ready to train with.
"""
import copy
import logging
import random

from dataset.sampler import check_batch_fits
from engine.build import build_setup, run_train
from recipe import RunRecipe
from schema import config_to_yaml, set_dotted
from utils.errors import UserInputError
from run_folder.history import History
from run_folder.layout import BEST_CONFIG_NAME, TRIALS_NAME, write_resolved_config
from utils.io import atomic_write_text
from utils.signals import RunInterrupted

logger = logging.getLogger(__name__)

CLASSES_PER_BATCH = (6, 15)  # the authors' range of P


def check_search_space(config, source):
    """Every trial's draw must fit the training split; say so before any trial runs."""
    num_classes, largest_draw = RunRecipe(config).num_classes, CLASSES_PER_BATCH[1]
    if num_classes < largest_draw:
        raise UserInputError(f"mode hyper_search in {source} draws up to {largest_draw} classes per batch "
                             f"(the authors' range {CLASSES_PER_BATCH[0]}..{largest_draw}) but the training "
                             f"split has {num_classes} classes; search on a dataset with at least "
                             f"{largest_draw} training classes.")
    labels = training_labels(config)
    bssampling = config["dataset"]["bssampling"]
    draws = draw_trials(config)
    for index, draw in enumerate(draws, start=1):
        shape = draw["train_params.num_classes_iter"], draw["train_params.num_elements_class"]
        try:
            check_batch_fits(labels, *shape, None if bssampling == "no" else bssampling)
        except UserInputError as error:
            raise UserInputError(f"mode hyper_search in {source}: trial {index} of {len(draws)} would draw "
                                 f"P x K = {shape[0]} x {shape[1]}, which does not fit ({error}); search on "
                                 "a dataset with more images per class, or fewer trials.") from None


def training_labels(config):
    """Labels of the split the trials train on (images are not opened)."""
    return RunRecipe(config).dataset("train").labels


def draw_trials(config):
    """Every trial's draw, in order: a function of train_params.seed and the number of trials."""
    rng = random.Random(config["train_params"]["seed"])
    return [sample_trial(rng) for _ in range(config["hyper_search"]["num_trials"])]


def sample_trial(rng):
    """One draw from the authors' search space, as dotted config keys."""
    return {
        "train_params.lr": 10 ** rng.uniform(-5, -3),
        "train_params.weight_decay": 10 ** rng.uniform(-15, -6),
        "train_params.num_classes_iter": rng.randint(*CLASSES_PER_BATCH),
        "train_params.num_elements_class": rng.randint(3, 9),
        "train_params.temperatur": rng.random(),
        "models.gnn_params.gnn.num_heads": rng.choice([1, 2, 4, 8]),
    }


def trial_config(config, draw):
    trial = copy.deepcopy(config)
    trial["mode"] = "train"
    trial["train_params"]["num_epochs"] = config["hyper_search"]["num_epochs"]
    for dotted_key, value in draw.items():
        set_dotted(trial, dotted_key, value)
    return trial


def interrupted_in_trial(index, num_trials, run_dir, finished, error):
    kept = (f"{run_dir / TRIALS_NAME} lists the {finished} finished trial(s) and "
            f"{run_dir / BEST_CONFIG_NAME} is the best so far" if finished else "no trial had finished")
    return RunInterrupted.at(f"in trial {index}/{num_trials} ({error})", kept)


def run_hyper_search(config, run_dir, device, device_requested=False, stop_request=None):
    trials = History()
    best_score, best_config = -1.0, None
    num_trials = config["hyper_search"]["num_trials"]
    for index, draw in enumerate(draw_trials(config), start=1):
        trial = trial_config(config, draw)
        trial_dir = run_dir / f"trial_{index:03d}"
        trial_dir.mkdir()
        write_resolved_config(trial, trial_dir)
        logger.info("Trial %d/%d: %s", index, num_trials, draw)
        try:
            summary = run_train(build_setup(trial, "train", device, device_requested, stop_request=stop_request),
                                trial_dir, stop_request=stop_request)
        except RunInterrupted as error:
            raise interrupted_in_trial(index, num_trials, run_dir, len(trials.rows), error) from None
        score = max((value for key, value in summary["best_metrics"].items() if key.endswith("R@1")), default=0.0)
        trials.append({"trial": index, **draw, "best_R@1": score, "best_epoch": summary["best_epoch"]})
        trials.write_csv(run_dir / TRIALS_NAME)
        if score > best_score:
            best_score, best_config = score, trial
            atomic_write_text(run_dir / BEST_CONFIG_NAME, config_to_yaml(best_config))
    logger.info("Best trial R@1 %.2f; its config is %s", 100 * best_score, run_dir / BEST_CONFIG_NAME)
    return best_score, best_config
