"""Shared pytest fixtures. Fixtures of the data tests start with ``dataset_``."""
import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, settings

from engine.hooks import Hook

REPO_ROOT = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several test processes share the cores: one thread each (also for the runs and subprocesses they
    # start), or OpenMP threads spin against each other and a step gets many times slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The fuzz tests (tests/test_fuzz_*.py). "ci", the default: a fixed seed, so every run tries the same cases,
# and about a minute in all; `pytest --hypothesis-profile=long tests/test_fuzz_*.py` draws new cases each run,
# 20 times as many (docs/reliability.md). Each test sets its count for "ci" with fuzz_examples(n).
FUZZ_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
               HealthCheck.filter_too_much]
settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=FUZZ_HEALTH,
                          print_blob=True, database=None)
settings.register_profile("long", deadline=None, suppress_health_check=FUZZ_HEALTH, print_blob=True)
LONG_PROFILE_FACTOR = 20
if settings.get_current_profile_name() == "default":
    settings.load_profile("ci")


def fuzz_examples(ci_count):
    """``settings`` of a fuzz test: ``ci_count`` cases in CI, 20 times as many with ``--hypothesis-profile=long``."""
    factor = LONG_PROFILE_FACTOR if settings.get_current_profile_name() == "long" else 1
    return settings(max_examples=ci_count * factor)


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """This is the CPU suite that CI runs, and its exact comparisons (resume
    equals an uninterrupted run, two processes equal one) hold on the CPU; on a
    GPU machine its runs, subprocesses included, stay there too. Tests marked
    ``cuda`` (tests/test_cuda.py) see the GPU."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def write_image(path, colour=(200, 100, 50), size=(12, 10)):
    """A small single-colour RGB image; the format follows the suffix (.jpg, .png)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[...] = colour
    PIL.Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def dataset_write_image():
    """``write_image(path, colour=(r, g, b), size=(w, h))`` -> path."""
    return write_image


@pytest.fixture
def dataset_image_tree(tmp_path):
    """``make_tree(images_per_class)``: ``<tmp>/data/images/class_XX/*`` with JPEGs and PNGs.

    Returns the dataset root; class ``i`` holds ``images_per_class[i]`` images.
    """
    def make_tree(images_per_class):
        root = tmp_path / "data"
        for class_index, count in enumerate(images_per_class):
            for image_index in range(count):
                suffix = ".jpg" if image_index % 2 == 0 else ".png"
                write_image(root / "images" / f"class_{class_index:02d}" / f"img_{image_index:03d}{suffix}",
                            colour=(10 * class_index, 5 * image_index, 100))
        return root
    return make_tree


def write_class_pattern_images(root, num_classes, images_per_class, size=32, seed=0, noise=12):
    """A learnable tree: each class has its own colour and stripe pattern, plus noise (its standard deviation)."""
    rng = np.random.default_rng(seed)
    for class_index in range(num_classes):
        base = rng.integers(30, 226, size=3)
        period = 2 + class_index % 5
        for image_index in range(images_per_class):
            pixels = np.empty((size, size, 3), dtype=np.float64)
            pixels[...] = base
            stripes = (np.arange(size) // period) % 2 == 0
            if class_index % 2:
                pixels[stripes, :, :] *= 0.4
            else:
                pixels[:, stripes, :] *= 0.4
            pixels += rng.normal(0, noise, size=pixels.shape)
            path = Path(root) / "images" / f"class_{class_index:02d}" / f"img_{image_index:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            PIL.Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return Path(root)


@pytest.fixture(scope="session")
def pattern_tree(tmp_path_factory):
    """8 classes x 12 images of 32 px: 4 classes train, 4 test."""
    return write_class_pattern_images(tmp_path_factory.mktemp("pattern") / "data", 8, 12)


def tiny_train_config(dataset_path, **train_params):
    """The demo config shrunk for tests: resnet18, 32 px, 4+4 classes, P x K = 4 x 3."""
    import yaml
    config_dir = Path(__file__).resolve().parents[1] / "config"
    raw = yaml.safe_load((config_dir / "config_demo_train.yaml").read_text())
    raw["dataset"].update(dataset_path=str(dataset_path), dataset_short="cub", num_classes=4, nb_workers=0)
    raw["models"]["gnn_params"]["classifier"]["num_classes"] = 4
    raw["train_params"].update(num_classes_iter=4, num_elements_class=3, num_epochs=3, lr_drop_epochs=[2, 3],
                               eval_before_training=0)
    raw["train_params"].update(train_params)
    raw["eval_params"]["batch_size"] = 16
    raw["logging"] = {"pictures": 0}  # a few seconds per run; tests/test_use_model.py draws them
    return raw


@pytest.fixture
def write_tiny_config(tmp_path, pattern_tree):
    """``write(**train_params) -> path`` of a tiny train config on ``pattern_tree``."""
    import yaml

    def write(name="config.yaml", mutate=None, **train_params):
        raw = tiny_train_config(pattern_tree, **train_params)
        if mutate is not None:
            mutate(raw)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path
    return write


def evaluate_best_weights_in_test_mode(run_folder, output_dir):
    """Run test mode on a finished run's config and best weights; returns the metrics.json dict."""
    import json

    import yaml

    import train
    summary = json.loads((run_folder / "summary.json").read_text())
    raw = yaml.safe_load((run_folder / "config.yaml").read_text())
    raw["mode"] = "test"
    config_path = Path(output_dir) / "test.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(yaml.safe_dump(raw))
    weights = summary["best_weights"]
    assert train.main(["--config_path", str(config_path), "--bb_path", str(run_folder / weights["backbone"]),
                       "--gnn_path", str(run_folder / weights["mpn"]),
                       "--output_dir", str(Path(output_dir) / "runs")]) == 0
    (test_run,) = list((Path(output_dir) / "runs").iterdir())
    return json.loads((test_run / "metrics.json").read_text())


def run_torchrun(args, cwd, nproc):
    """``train.py args`` under torchrun with ``nproc`` processes; the CompletedProcess."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(REPO_ROOT / "train.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def add_training_hooks(monkeypatch, *hooks, first=()):
    """Every training run started while the patch holds gets ``first`` before its own hooks and ``hooks`` after."""
    from engine import build
    original = build.build_hooks

    def with_test_hooks(*args, **kwargs):
        built, final_test = original(*args, **kwargs)
        return [*first, *built, *hooks], final_test

    monkeypatch.setattr(build, "build_hooks", with_test_hooks)


class StopRequestAt(Hook):
    """The stop request (as SIGINT/SIGTERM would raise it) arrives during step ``step`` of ``epoch``.

    ``seen`` collects every ``(epoch, step)`` started.
    """

    def __init__(self, epoch, step, seen=None):
        self.at = (epoch, step)
        self.seen = [] if seen is None else seen

    def before_step(self, trainer, epoch, step, steps_per_epoch):
        self.seen.append((epoch, step))
        if (epoch, step) == self.at:
            trainer.stop_request._event.set()


class StopAfterFirstEpoch(Hook):
    def after_epoch(self, trainer, epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupted_after_first_epoch(monkeypatch):
    """Inside: a training run gets a SIGINT (KeyboardInterrupt) right after epoch 1 is saved."""
    with monkeypatch.context() as patch:
        add_training_hooks(patch, StopAfterFirstEpoch())
        yield


def bare_trainer(config, backbone, mpn, run_dir, precision=None, hooks=()):
    """A Trainer of ``config`` without data (steps are fed by hand), its optimiser as a run builds it."""
    from engine.build import build_optimizer_for
    from engine.trainer import LoopOptions, Trainer
    from losses.intra_batch import IntraBatchLoss
    from utils.precision import Precision
    device = torch.device("cpu")
    return Trainer(backbone, mpn, build_optimizer_for(config, backbone, mpn), IntraBatchLoss.from_config(config),
                   precision or Precision("float32", device), device, LoopOptions.from_config(config),
                   Path(run_dir), hooks=hooks)
