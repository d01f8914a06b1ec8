"""What the fuzz tests (tests/test_fuzz_*.py) share: damaged bytes, hostile values, and one way to run a command.

``damaged(original)`` draws what happens to files in the wild: empty,
truncated at any byte, bit-flipped, overwritten in part, replaced by a file
of another format under the same name (an image, a pickle that would run
code, a zip, YAML, JSON), re-encoded so it is no longer UTF-8, or random
bytes. ``run_command`` calls a command's ``main(argv)`` in-process and
returns its exit code with everything it printed or logged; ``check_outcome``
asserts what every command owes its user whatever the input: exit 0 or 2,
no traceback, no file of the user's changed.
"""
import argparse
import contextlib
import hashlib
import io
import json
import logging
import math
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from hypothesis import strategies as st

TRACEBACK = "Traceback (most recent call last)"
ALLOWED_EXIT_CODES = (0, 2)
# A pickle that would create this file if anything unpickled it unsafely.
CODE_RAN_MARKER = Path("/tmp/intra_batch_fuzz_code_ran")


def _image_bytes(format_name, mode="RGB", size=(6, 5)):
    buffer = io.BytesIO()
    PIL.Image.new(mode, size, 90).save(buffer, format=format_name)
    return buffer.getvalue()


def _torch_bytes(value):
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not what you expected")
    return buffer.getvalue()


def _code_running_pickle():
    """Protocol-0 pickle of ``os.system('touch <marker>')``."""
    return f"cos\nsystem\n(S'touch {CODE_RAN_MARKER}'\ntR.".encode()


class _Payload:
    def __reduce__(self):
        import os
        return os.system, (f"touch {CODE_RAN_MARKER}",)


OTHER_FORMATS = {
    "png": _image_bytes("PNG"),
    "jpeg": _image_bytes("JPEG"),
    "gif": _image_bytes("GIF", "P"),
    "zip": _zip_bytes(),
    "pth": _torch_bytes({"weight": torch.ones(2, 2)}),
    "pickle_runs_code": _code_running_pickle(),
    "torch_pickle_runs_code": _torch_bytes({"weight": _Payload()}),
    "plain_pickle": b"(dp0\nVa\np1\n(lp2\nI1\naI2\naI3\nas.",  # protocol 0: {"a": [1, 2, 3]}
    "yaml": b"mode: train\ndataset: {dataset_short: cub}\n",
    "json": b'{"best_epoch": 3, "status": "finished"}',
    "nested_100000_deep": b"a: " + b"[" * 100_000 + b"]" * 100_000 + b"\n",  # YAML and JSON alike
    "csv": b"epoch,test_R@1\n0,0.5\n1,0.6\n",
    "utf16": "epoch,loss\n1,2\n".encode("utf-16"),
    "npy": b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + b" " * 50 + b"\n"
           + bytes(8),
}


DAMAGE_KINDS = ("empty", "truncated", "bit_flips", "overwritten", "other_format", "not_utf8", "random")
# Damage done to the file itself (a disk, a copy, a download): what it holds is no other valid file.
DAMAGE_IN_PLACE = ("truncated", "bit_flips", "overwritten")


@st.composite
def damaged(draw, original, kinds=DAMAGE_KINDS):
    """``original`` (bytes) as a damaged file might hold it."""
    kind = draw(st.sampled_from(kinds))
    if kind == "empty" or not original:
        return b""
    if kind == "truncated":
        return original[:draw(st.integers(0, len(original) - 1))]
    if kind == "bit_flips":
        data = bytearray(original)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=6)):
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "overwritten":
        start = draw(st.integers(0, len(original) - 1))
        return original[:start] + draw(st.binary(min_size=1, max_size=64)) + original[start + 64:]
    if kind == "other_format":
        return OTHER_FORMATS[draw(st.sampled_from(sorted(OTHER_FORMATS)))]
    if kind == "not_utf8":
        position = draw(st.integers(0, len(original)))
        return original[:position] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9t\xe9", b"\x80\x80"])) \
            + original[position:]
    return draw(st.binary(max_size=512))


def hostile_numbers():
    return st.one_of(st.integers(-2**70, 2**70), st.sampled_from([0, -1, 1, 2**31, 2**63, -2**63]),
                     st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([math.nan, math.inf, -0.0]))


def hostile_text():
    return st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "-", "--help", "-x", "../..", "/", "\x00",
                                                            "ünïcödé", "a b", "~", "$HOME", "nul\u200b",
                                                            "1e400", "nan", "inf", "None", "[]", "{}"]))


def hostile_values():
    """Values a YAML key, JSON field or CSV cell may hold instead of the right one."""
    scalars = st.one_of(st.none(), st.booleans(), hostile_numbers(), hostile_text())
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(hostile_text(), inner, max_size=3)),
                        max_leaves=6)


def snapshot(*roots):
    """``{path: sha256}`` of every file under ``roots``: what must not change."""
    files = {}
    for root in roots:
        root = Path(root)
        for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if path.is_file() and not path.name.startswith(".train.lock"):
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


REPOSITORY = Path(__file__).resolve().parents[1]
# Made by other tests and tools while a fuzz case runs beside them, never by the command under test.
SHARED_ENTRIES = {"data", "runs", ".hypothesis", ".pytest_cache", "__pycache__"}


def repository_entries():
    """The names at the top of the repository, less those other tests may create meanwhile."""
    return {path.name for path in REPOSITORY.iterdir()} - SHARED_ENTRIES


def run_command(main, argv):
    """``(exit code, output)`` of ``main(argv)`` run in-process; output is stdout, stderr and the log.

    It runs in a fresh temporary working folder: a drawn relative path (``--output 0``) lands
    there, never in the repository the tests run from.
    """
    captured = io.StringIO()
    handler = logging.StreamHandler(captured)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz_cwd_") as working_folder, contextlib.chdir(working_folder), \
                contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                code = main(argv)
            except SystemExit as exited:  # argparse: 0 for --help, 2 for a bad flag
                code = exited.code if isinstance(exited.code, int) else (0 if exited.code is None else 2)
    finally:
        root.removeHandler(handler)
    return code, captured.getvalue()


def check_outcome(main, argv, watched=()):
    """Run the command; assert exit 0 or 2, no traceback, the ``watched`` files unchanged; the outcome."""
    CODE_RAN_MARKER.unlink(missing_ok=True)
    before, repository_before = snapshot(*watched), repository_entries()
    code, output = run_command(main, argv)
    assert code in ALLOWED_EXIT_CODES, (code, argv, output[-3000:])
    assert TRACEBACK not in output, (argv, output[-3000:])
    assert snapshot(*watched) == before, argv
    assert repository_entries() <= repository_before, ("the command wrote into the repository", argv)
    assert not CODE_RAN_MARKER.exists(), "a file ran code when it was read"
    return code, output


class _ParserBuilt(BaseException):
    """Carries the parser a command built out of its ``main`` (not an ``Exception``: the boundary lets it by)."""


def flags_of(main, subcommand=None, leave_out=()):
    """Every ``--flag`` of the command ``main`` (of its ``subcommand``), less ``leave_out``: drawn from the
    parser itself, so that a flag added to a command is fuzzed without anyone adding it to a list."""
    def built(parser, *args, **kwargs):
        raise _ParserBuilt(parser)
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = built
    try:
        main([])
    except _ParserBuilt as reached:
        parser = reached.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    if subcommand is not None:
        parser = parser._subparsers._group_actions[0].choices[subcommand]
    flags = sorted(flag for flag in parser._option_string_actions if flag.startswith("--"))
    assert set(leave_out) <= set(flags), f"{set(leave_out) - set(flags)} are no flags of the command"
    return [flag for flag in flags if flag not in leave_out]


@contextlib.contextmanager
def scratch():
    """A new temporary folder, removed however the case ends: Hypothesis also stops a case inside a draw."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz_"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def json_bytes(value):
    return json.dumps(value, allow_nan=True).encode()


def array_strategy():
    """Arrays of every kind an .npz may hold where numbers are expected."""
    dtypes = st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.bool_, np.complex64, "U3", "S2"])
    shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)

    def build(spec):
        dtype, shape, fill = spec
        if np.dtype(dtype).kind in "US":
            return np.full(shape, "ab", dtype=dtype)
        with np.errstate(all="ignore"):
            return np.full(shape, fill).astype(dtype) if np.isfinite(fill) or np.dtype(dtype).kind in "fc" \
                else np.zeros(shape, dtype=dtype)
    return st.tuples(dtypes, shapes, st.floats(allow_nan=True, allow_infinity=True, width=32)).map(build)
