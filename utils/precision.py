"""Mixed precision for ``train_params.is_apex``: one object, three back ends.

``is_apex: authors`` (the default of the paper configs) is what the authors'
code ran whatever their YAML said: their ``train.py`` declares ``--is_apex``
with the default 'from yaml' but tests for 'from_yaml', so it always
overwrote the YAML value with a non-empty string and ``trainer.py`` always ran
Apex amp O1, in training and in test mode. Here it resolves, once the device
is known, to ``1`` on CUDA and to ``0`` (float32) on the CPU, with one log line
saying why; the resolved value is what ``config.yaml`` of the run records.
``is_apex: 0`` trains in float32. ``is_apex: 1`` uses NVIDIA Apex amp O1 when
Apex is importable (the authors' setup), otherwise torch's native autocast:
float16 with a dynamic GradScaler on CUDA, bfloat16 (no scaler needed) on
the CPU. The training step calls ``autocast()``, ``backward()`` and ``step()``
whatever the back end, so there is one code path.
"""
import contextlib
import copy
import importlib.util
import logging

import torch

from utils.errors import UserInputError

logger = logging.getLogger(__name__)


AS_THE_AUTHORS = "authors"
IS_APEX_VALUES = (AS_THE_AUTHORS, 0, 1)


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


def resolve_is_apex(config, device):
    """``(config, note)``: ``is_apex: authors`` replaced by the 0 or 1 that runs on ``device``.

    ``note`` is the sentence to log when ``authors`` was resolved, else None.
    The returned config is a copy; 0 and 1 stay as they are.
    """
    if config["train_params"]["is_apex"] != AS_THE_AUTHORS:
        return config, None
    resolved = copy.deepcopy(config)
    if device.type == "cuda":
        resolved["train_params"]["is_apex"] = 1
        note = ("train_params.is_apex: authors -> 1: mixed precision, as the authors' code always ran "
                "(Apex amp O1 when installed, else float16 autocast with a dynamic gradient scaler)")
    else:
        resolved["train_params"]["is_apex"] = 0
        note = (f"train_params.is_apex: authors -> 0: float32 on {device.type}; the authors' Apex amp O1 "
                "mixed precision needs a CUDA GPU")
    return resolved, note


def build_precision(is_apex, device, device_was_requested):
    """Pick the back end; ``device_was_requested`` is True when --device named it.

    ``is_apex`` is 0, 1 or 'authors' (see ``resolve_is_apex``). Mixed
    precision on a CPU that was only picked because no GPU was found is
    almost certainly a mistake, so ``1`` there stops with a sentence instead.
    """
    if is_apex == AS_THE_AUTHORS:
        is_apex = 1 if device.type == "cuda" else 0
    if not is_apex:
        return Precision("float32", device)
    if device.type == "cuda":
        if apex_available():
            return Precision("apex-amp-O1", device, amp=importlib.import_module("apex.amp"))
        return Precision("autocast-float16", device, dtype=torch.float16, scaler=torch.amp.GradScaler("cuda"))
    if not device_was_requested:
        raise UserInputError("train_params.is_apex (--is_apex) is 1 but neither NVIDIA Apex nor a CUDA GPU is "
                             "available; set it to 0 or authors, or pass --device cpu to train with bfloat16 "
                             "autocast on the CPU.")
    return Precision("autocast-bfloat16", device, dtype=torch.bfloat16)


def initialize_apex(precision, models, optimizer=None):
    """Apex needs to wrap the models (and the optimiser, when training) once before use.

    The authors initialised amp O1 in test mode too, so evaluation runs in
    mixed precision there as well.
    """
    if precision.amp is None:
        return models, optimizer
    if optimizer is None:
        return precision.amp.initialize(models, opt_level="O1"), None
    return precision.amp.initialize(models, optimizer, opt_level="O1")
