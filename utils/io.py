"""Atomic file writes: a crash at any moment leaves the previous file intact.

Every result and checkpoint goes through ``atomic_write``: the bytes land in
a temporary file in the same folder, are flushed and fsync'ed, then renamed
over the target (``os.replace`` is atomic on POSIX and Windows), and the
folder entry is fsync'ed so the rename itself survives a power cut.
"""
import io
import os
import tempfile
from pathlib import Path

import torch


def atomic_write(path, data: bytes):
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path, text: str):
    atomic_write(path, text.encode("utf-8"))


def atomic_torch_save(obj, path):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def _fsync_folder(folder):
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
