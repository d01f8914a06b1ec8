"""``environment.json``: what produced a run, so that a number can be traced back.

The command line (and the folder it ran in: relative paths resolve from
there), the git commit of the code and whether the tree had uncommitted
changes, the versions of Python and of every library that changes numbers,
the device, the CPU threads and the NMI k-means back end the run's config
resolves to (``eval_params.kmeans``). A resume compares the fields that
change numbers with the run's last record (``run_folder.resume``). Anything
that cannot be determined (no git, a library not installed) is ``null``.
"""
import json
import os
import platform
import shlex
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from run_folder.layout import ENVIRONMENT_NAME
from utils.io import atomic_write_text

# Distribution names under which each library may be installed.
LIBRARIES = {
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "numpy": ("numpy",),
    "scikit-learn": ("scikit-learn",),
    "faiss": ("faiss-cpu", "faiss-gpu", "faiss"),
}
GIT_TIMEOUT_S = 10


def environment_record(command, repo_root, device, threads, nmi_backend, world_size=1):
    """The provenance of one run as a JSON-ready dict."""
    commit, dirty = git_state(repo_root)
    return {
        "command_line": shlex.join(command),
        "working_directory": os.getcwd(),
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        **{name: library_version(distributions) for name, distributions in LIBRARIES.items()},
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(device),
        "device_name": device_name(device),
        "processes": world_size,
        "cpu_threads": threads,
        "cpu_interop_threads": torch.get_num_interop_threads(),
        "nmi_backend": nmi_backend,
        "platform": platform.platform(),
    }


def git_state(repo_root):
    """``(commit, dirty)`` of the checkout holding the code, or ``(None, None)`` without git."""
    try:
        commit = _git(repo_root, "rev-parse", "HEAD")
        dirty = bool(_git(repo_root, "status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def _git(repo_root, *args):
    return subprocess.run(["git", "-C", str(repo_root), *args], capture_output=True, text=True, check=True,
                          timeout=GIT_TIMEOUT_S).stdout.strip()


def library_version(distributions):
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def device_name(device):
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def write_environment(run_dir, record):
    """``environment.json`` for a new run; a resumed run adds ``environment_resume<N>.json`` beside it."""
    run_dir = Path(run_dir)
    path = run_dir / ENVIRONMENT_NAME
    resume = 1
    while path.exists():
        path = run_dir / f"environment_resume{resume}.json"
        resume += 1
    atomic_write_text(path, json.dumps(record, indent=2))
    return path
