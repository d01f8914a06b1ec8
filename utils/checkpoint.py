"""The resumable training state and the random number generators it needs.

``last.pth`` holds everything an uninterrupted run would still have in
memory at that point: both networks, the optimiser, the loss scaler, the
epoch (and step, for a run stopped mid-epoch), the best weights and score
(the schedule reloads them at the drop epochs), the history rows and every
RNG state. It is written atomically, so a crash leaves the previous one.
"""
import random
from pathlib import Path

import numpy as np
import torch

from utils.errors import UserInputError
from utils.io import atomic_torch_save

CHECKPOINT_NAME = "last.pth"
FORMAT_VERSION = 1


def capture_rng_state():
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise UserInputError(f"--resume {path} is not a readable checkpoint ({type(error).__name__}); pass "
                             "the last.pth of a run folder.") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UserInputError(f"--resume {path} is not a training checkpoint of this project; pass the "
                             "last.pth of a run folder.")
    return state
