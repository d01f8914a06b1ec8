"""The one place that opens PyTorch files, and only as data.

A ``.pth`` file is a pickle, and unpickling can call any function the file
names: a crafted checkpoint would run code the moment it is loaded. Every
checkpoint and weights file of this project is therefore read here, with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists, tuples
and dicts come back, anything else is refused before it is built; a
floating tensor holding NaN or inf anywhere in the file is refused too,
naming where (a diverged run's weights would evaluate to errors or noise
far from the load); every zip record is checked against its CRC-32 first
(``utils.archives``: ``torch.load`` checks none, and a flipped bit loaded as
one wrong weight). A test
(tests/test_safe_loading.py) fails if another module calls ``torch.load``
or ``torch.jit.load``, or imports ``pickle``. The one ``torch.jit.load``
here opens only a TorchScript file this process has just exported, to run
it in its runtime before it is written; no file a user gives is loaded so.
"""
import io
import pickle
import re
import warnings

import torch

from utils.archives import DamagedArchive, check_zip_records
from utils.errors import UserInputError

# How torch's weights-only unpickler names what it refused: a global (function
# or class) the file asks for, or a class it would have to build.
_REFUSED = (re.compile(r"GLOBAL (\S+)"), re.compile(r"got <class '([^']+)'>"))


class UnsafeFileError(UserInputError):
    """The file holds something that only running code from it could rebuild.

    ``refused`` is the name of the global it asked for (``posix.system``,
    ``numpy.ndarray``, ...).
    """

    def __init__(self, message, refused):
        super().__init__(message)
        self.refused = refused


class UnreadableFileError(Exception):
    """The file is not a PyTorch file at all (damaged, truncated, another format).

    Callers turn it into a ``UserInputError`` that says what they expected.
    """


def load_torch_file(path, given_by, allowed_globals=()):
    """The object stored at ``path``, on the CPU, read without running code from it.

    ``given_by`` names the flag or key the path came from, for the message.
    ``allowed_globals`` are extra types the caller accepts for this one load
    (the exact NumPy types of old checkpoints); they are allowed only inside
    this call, never process-wide.
    """
    try:
        check_zip_records(path)
    except DamagedArchive as error:
        raise UnreadableFileError(str(error)) from None
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = refused_name(str(error))
        if refused is None:  # a damaged pickle, not a refused object
            raise UnreadableFileError(type(error).__name__) from None
        raise UnsafeFileError(
            f"The file {path} given by {given_by} contains a pickled {refused}, which only running code from "
            "the file could rebuild, so it was not loaded; use a file saved by this project or by "
            "torch.save(model.state_dict()) from a source you trust.", refused) from None
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise UnreadableFileError(type(error).__name__) from None
    where = first_non_finite(loaded)
    if where is not None:
        raise UserInputError(
            f"The file {path} given by {given_by} holds NaN or infinite values in {where}, so it was not "
            "loaded; such weights come from a diverged training, give the file of an earlier, finite epoch.")
    return loaded


def first_non_finite(value, where="the file"):
    """Where in ``value`` (dicts, lists and tuples of tensors) a floating tensor holds NaN or inf, or ``None``."""
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            return where
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = first_non_finite(item, f"'{key}'" if where == "the file" else f"{where[:-1]}.{key}'")
        if found is not None:
            return found
    return None


def load_own_torchscript(data):
    """The TorchScript module in ``data``, bytes that ``torch.jit.save`` wrote in this process, on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation; the file loads as ever
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def refused_name(message):
    """The global or class named in torch's weights-only error ``message``, or ``None``."""
    for pattern in _REFUSED:
        found = pattern.search(message)
        if found:
            return found.group(1)
    return None
