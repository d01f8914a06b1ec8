"""Loading saved weights into a module: one door for backbone and MPN checkpoints.

A weights file must fit the module exactly (same keys, same shapes), the way
the authors load their released ``best_weights/*.pth`` with ``strict=True``.
Every problem a user can fix (wrong path, not a checkpoint, weights of
another model) becomes a ``UserInputError`` naming the file, the config key
or flag that gave it, and the first key that does not fit.
"""
import logging
from pathlib import Path

import torch

from utils.errors import UserInputError
from utils.safe_load import UnreadableFileError, load_torch_file

logger = logging.getLogger(__name__)

# Wrappers that training scripts commonly put around a state dict.
_STATE_DICT_HOLDERS = ("state_dict", "model")
# Prefix that DataParallel / DistributedDataParallel add to every key.
_PARALLEL_PREFIX = "module."
# Counter buffer that checkpoints written before PyTorch 0.4.1 lack.
_BATCH_COUNTER = "num_batches_tracked"


def read_state_dict(path, config_key):
    """``{key: tensor}`` stored in the checkpoint at ``path`` (on the CPU).

    Accepts a plain state dict or a dict holding one under ``'state_dict'``
    or ``'model'``, and strips a DataParallel/DDP ``module.`` prefix. The
    file is read as data only (``utils.safe_load``).
    """
    path = Path(path)
    if not path.is_file():
        problem = "is not a regular file" if path.exists() else "does not exist"
        raise UserInputError(
            f"The weights file {path} given by {config_key} {problem}; "
            f"give the path of an existing .pth file.")
    try:
        checkpoint = load_torch_file(path, config_key)
    except UnreadableFileError as error:
        raise UserInputError(
            f"The file {path} given by {config_key} is not a PyTorch checkpoint "
            f"({error}); give a file written by torch.save(model.state_dict()).") from None
    if isinstance(checkpoint, dict) and "format_version" in checkpoint and "backbone" in checkpoint:
        raise UserInputError(resumable_checkpoint_message(path, config_key))
    state = _unwrap(checkpoint)
    if state is None:
        raise UserInputError(
            f"The file {path} given by {config_key} holds no state dict of tensors; "
            f"give a file written by torch.save(model.state_dict()).")
    return _strip_parallel_prefix(state)


def resumable_checkpoint_message(path, config_key):
    return (f"The file {path} given by {config_key} is a resumable training checkpoint, not weights; give the "
            f"best weights of that run (the files its summary.json names under best_weights), test them with "
            f"`python train.py --run {path.parent} --mode test`, or continue the run with --resume {path.parent}.")


def _unwrap(checkpoint):
    """The ``{str: tensor}`` dict inside ``checkpoint``, or ``None``."""
    if isinstance(checkpoint, dict):
        for holder in _STATE_DICT_HOLDERS:
            if isinstance(checkpoint.get(holder), dict):
                checkpoint = checkpoint[holder]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        return None
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor)
               for key, value in checkpoint.items()):
        return None
    return dict(checkpoint)


def _strip_parallel_prefix(state):
    if all(key.startswith(_PARALLEL_PREFIX) for key in state):
        return {key[len(_PARALLEL_PREFIX):]: value for key, value in state.items()}
    return state


def first_mismatch(expected, state):
    """Describe the first key where ``state`` does not fit ``expected``.

    ``expected`` and ``state`` map keys to tensors. Missing keys and shape
    differences are reported in the module's order, then unexpected keys in
    the file's order; ``None`` when everything fits. A missing batch counter
    (``num_batches_tracked``) is allowed: old checkpoints predate it.
    """
    for key, tensor in expected.items():
        if key not in state:
            if not key.endswith(_BATCH_COUNTER):
                return f"key '{key}' is missing"
        elif state[key].shape != tensor.shape:
            return (f"key '{key}' has shape {list(state[key].shape)} in the file "
                    f"but {list(tensor.shape)} in the model")
    for key in state:
        if key not in expected:
            return f"key '{key}' is not part of the model"
    return None


def load_state(module, state, source, config_key, keep_prefixes=()):
    """Load ``state`` into ``module`` strictly, or raise a ``UserInputError``.

    Keys under ``keep_prefixes`` keep the module's own values: they are
    neither expected in ``state`` nor taken from it (used to load a trunk
    while its fresh head stays as initialised).
    """
    def kept(key):
        return key.startswith(tuple(keep_prefixes))

    current = module.state_dict()
    expected = {key: value for key, value in current.items() if not kept(key)}
    loaded = {key: value for key, value in state.items() if not kept(key)}
    mismatch = first_mismatch(expected, loaded)
    if mismatch is not None:
        raise UserInputError(
            f"The weights in {source} (given by {config_key}) do not fit the model: "
            f"{mismatch}; give weights saved from the same net_type and settings.")
    complete = {key: loaded.get(key, value) for key, value in current.items()}
    module.load_state_dict(complete, strict=True)
    logger.info("loaded weights from %s (%s)", source, config_key)


def load_weights(module, path, config_key):
    """Load the checkpoint at ``path`` into ``module`` with strict key matching.

    ``config_key`` names where the path came from, e.g.
    ``'--bb_path / models.encoder_params.pretrained_path'``.
    """
    load_state(module, read_state_dict(path, config_key), path, config_key)
