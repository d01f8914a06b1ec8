"""Mixed precision for ``train_params.is_apex``: one object, three back ends.

``is_apex: 0`` trains in float32. ``is_apex: 1`` uses NVIDIA Apex amp O1 when
Apex is importable (the authors' setup), otherwise torch's native autocast:
float16 with a GradScaler on CUDA, bfloat16 (no scaler needed) on the CPU.
The training step calls ``autocast()``, ``backward()`` and ``step()``
whatever the back end, so there is one code path.
"""
import contextlib
import importlib.util
import logging

import torch

from utils.errors import UserInputError

logger = logging.getLogger(__name__)


def apex_available():
    return importlib.util.find_spec("apex") is not None and importlib.util.find_spec("apex.amp") is not None


class Precision:
    """Autocast context, loss scaling and optimiser step for one back end."""

    def __init__(self, name, device, dtype=None, scaler=None, amp=None):
        self.name = name
        self.device = device
        self.dtype = dtype
        self.scaler = scaler
        self.amp = amp

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss, optimizer):
        if self.amp is not None:
            with self.amp.scale_loss(loss, optimizer) as scaled_loss:
                scaled_loss.backward()
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer):
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self):
        return {"name": self.name, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state):
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])


def build_precision(is_apex, device, device_was_requested):
    """Pick the back end; ``device_was_requested`` is True when --device named it.

    Mixed precision on a CPU that was only picked because no GPU was found
    is almost certainly a mistake, so it stops with a sentence instead.
    """
    if not is_apex:
        return Precision("float32", device)
    if device.type == "cuda":
        if apex_available():
            return Precision("apex-amp-O1", device, amp=importlib.import_module("apex.amp"))
        return Precision("autocast-float16", device, dtype=torch.float16, scaler=torch.amp.GradScaler("cuda"))
    if not device_was_requested:
        raise UserInputError("train_params.is_apex (--is_apex) is 1 but neither NVIDIA Apex nor a CUDA GPU is "
                             "available; set it to 0, or pass --device cpu to train with bfloat16 autocast "
                             "on the CPU.")
    return Precision("autocast-bfloat16", device, dtype=torch.bfloat16)


def initialize_apex(precision, models, optimizer):
    """Apex needs to wrap the models and optimiser once before training."""
    if precision.amp is None:
        return models, optimizer
    return precision.amp.initialize(models, optimizer, opt_level="O1")
