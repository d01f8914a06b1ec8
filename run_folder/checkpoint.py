"""The resumable training state and the random number generators it needs.

``last.pth`` holds everything an uninterrupted run would still have in
memory at that point: both networks, the optimiser, the loss scaler, the
epoch (and step, for a run stopped mid-epoch), the best epoch's score,
metrics and the names of its weights files in the run folder (the schedule
reloads them at the drop epochs), the history rows and every RNG state. It
is written atomically, so a crash leaves the previous one.

Everything in it is tensors and plain Python data, so it is read with
``weights_only=True`` (``utils.safe_load``). Format 1 held the NumPy RNG
state as a NumPy array and a full copy of the best weights; such files are
converted on load, allowing exactly the NumPy types they hold.
"""
import logging
import math
import random
from pathlib import Path

import numpy as np
import torch

from run_folder.layout import CHECKPOINT_NAME
from utils.errors import UserInputError
from utils.io import atomic_torch_save
from utils.safe_load import UnreadableFileError, UnsafeFileError, load_torch_file

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
# Key of a converted format-1 state: the best weights it held, for the trainer to write to files.
FORMAT_1_BEST_WEIGHTS = "format_1_best_weights"
RESUME_FLAG = "--resume"


def capture_rng_state():
    """Every RNG state as tensors and plain data.

    Python's state is already a tuple of ints (and ``None`` or a float);
    NumPy's legacy tuple is split into its name, its key as an int64 tensor
    and its counters.
    """
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state_as_data(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state_as_data(legacy_state):
    bit_generator, key, position, has_gauss, cached_gaussian = legacy_state
    return {"bit_generator": bit_generator, "key": torch.from_numpy(key.astype(np.int64)),
            "position": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def restore_rng_state(state):
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resume_command(run_dir):
    """How the user continues the run in ``run_dir``, as said in every stop message."""
    return f"resume with `python train.py {RESUME_FLAG} {run_dir}`"


def save_checkpoint(path, state):
    atomic_torch_save({"format_version": FORMAT_VERSION, **state}, path)


def resolve_resume_path(resume):
    """``--resume`` takes a run folder or its ``last.pth``."""
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserInputError(f"--resume {resume}: no checkpoint {path} found; pass a run folder that holds "
                             f"{CHECKPOINT_NAME} or the file itself.")
    return path


def load_checkpoint(path):
    """The training state in ``path``, in the current format (a format-1 file is converted)."""
    try:
        state = _read(path)
    except UnsafeFileError as error:
        if error.refused not in _FORMAT_1_GLOBAL_NAMES:
            raise
        state = _read(path, allowed_globals=format_1_numpy_globals())
    if not isinstance(state, dict) or state.get("format_version") not in (1, FORMAT_VERSION):
        raise UserInputError(f"{RESUME_FLAG} {path} is not a training checkpoint of this project; pass the "
                             f"{CHECKPOINT_NAME} of a run folder.")
    if state["format_version"] == 1:
        state = upgrade_from_format_1(state)
        logger.info("%s is a format-1 checkpoint (NumPy RNG state, best weights inside); converted to format "
                    "%d on load, its best weights go to files in the run folder", path, FORMAT_VERSION)
    check_training_state(state, path)
    return state


def _whole(value, minimum=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _tensors(value):
    return isinstance(value, dict) and bool(value) and all(
        isinstance(key, str) and isinstance(item, torch.Tensor) for key, item in value.items())


def _optional(check):
    return lambda value: value is None or check(value)


def _file_name(value):
    """A file of the run folder itself: a resume reads, writes and deletes it there, and nowhere else."""
    return isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value \
        and "\\" not in value and "\x00" not in value


def _best_epoch(value):
    return isinstance(value, dict) and set(value) == set(_BEST_FIELDS) and all(
        check(value[key]) for key, check in _BEST_FIELDS.items())


_BEST_FIELDS = {"score": _optional(_number), "epoch": _optional(_whole),
                "metrics": _optional(lambda value: isinstance(value, dict)),
                "backbone_file": _optional(_file_name), "mpn_file": _optional(_file_name)}
# The best epoch that a new best replaced, while its files are still to be deleted (optional: format 2 before).
BEST_REPLACED_KEY = "best_replaced"
# What each entry of a training state must be before any of it is used (format 2, after conversion).
_STATE_FIELDS = {
    "epoch": _whole,
    "resume_step": _whole,
    "partial_sums": lambda value: isinstance(value, dict) and all(
        isinstance(key, str) and _number(item) for key, item in value.items()),
    "backbone": _tensors,
    "mpn": _tensors,
    "optimizer": lambda value: isinstance(value, dict) and isinstance(value.get("state"), dict)
    and isinstance(value.get("param_groups"), list) and all(isinstance(group, dict) for group in value["param_groups"]),
    "precision": lambda value: isinstance(value, dict) and isinstance(value.get("name"), str),
    "history": lambda value: isinstance(value, list) and all(
        isinstance(row, dict) and _whole(row.get("epoch")) for row in value),
    "rng": lambda value: isinstance(value, dict) and isinstance(value.get("python"), (tuple, list))
    and isinstance(value.get("numpy"), dict) and isinstance(value.get("torch"), torch.Tensor)
    and value["torch"].dtype == torch.uint8,
    "best": _best_epoch,
    BEST_REPLACED_KEY: _optional(_best_epoch),
}
_OPTIONAL_STATE_FIELDS = {BEST_REPLACED_KEY}


def check_training_state(state, path):
    """Every entry of a training state has its kind, or one sentence names the first that does not.

    Checked whole before the trainer takes any of it, so that a damaged or
    edited ``last.pth`` is refused, never half restored.
    """
    for key, check in _STATE_FIELDS.items():
        if key not in state and key in _OPTIONAL_STATE_FIELDS:
            continue
        if key not in state or not check(state[key]):
            found = "missing" if key not in state else f"a {type(state[key]).__name__} of the wrong content"
            raise UserInputError(f"{RESUME_FLAG} {path} holds a damaged training state ('{key}' is {found}); "
                                 "restore the file from a backup, or start a new run.")


def _read(path, allowed_globals=()):
    try:
        return load_torch_file(path, RESUME_FLAG, allowed_globals)
    except UnreadableFileError as error:
        raise UserInputError(f"{RESUME_FLAG} {path} is not a readable checkpoint ({error}); pass the "
                             f"{CHECKPOINT_NAME} of a run folder.") from None


def format_1_numpy_globals():
    """Exactly the NumPy types that ``np.random.get_state()`` put into a format-1 file.

    The array rebuild function, ``ndarray``, ``dtype`` and the uint32 dtype
    class; the rebuild function also under its NumPy 1 name, for files
    written with NumPy 1.
    """
    reconstruct = np.zeros(1, np.uint32).__reduce__()[0]
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.uint32))]


def _global_name(entry):
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


_FORMAT_1_GLOBAL_NAMES = frozenset(_global_name(entry) for entry in format_1_numpy_globals())


def upgrade_from_format_1(state):
    """A format-1 state in format 2; the best weights it held move to ``FORMAT_1_BEST_WEIGHTS``."""
    rng = {**state["rng"], "numpy": _numpy_state_as_data(state["rng"]["numpy"])}
    old_best = state["best"]
    best = {"score": old_best["score"], "epoch": old_best["epoch"], "metrics": old_best["metrics"],
            "backbone_file": None, "mpn_file": None}
    upgraded = {**state, "format_version": FORMAT_VERSION, "rng": rng, "best": best}
    if old_best["backbone"] is not None:
        upgraded[FORMAT_1_BEST_WEIGHTS] = {"backbone": old_best["backbone"], "mpn": old_best["mpn"]}
    return upgraded
