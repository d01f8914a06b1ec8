"""When does the MPN help at test time? ``python -m benchmarks.mpn_at_test_time --run RUN``.

Evaluates a finished training run's best backbone and MPN as ``mode:
pseudo_test`` does (``Evaluator.evaluate_refined``: each test item's graph of
k-reciprocal neighbours, refined by the MPN, the item's own row kept) over a
grid of ``eval_params.graph_size`` x ``eval_params.k1``, and at the default
graph for each MPN output feature (``eval_params.output_test_gnn``: plain,
norm, neck), and prints one Markdown table of the test R@1 and NMI, the
backbone alone first. ``--pattern_run FOLDER`` first writes a dataset that
the tests build (tests/conftest.py's class pattern images, more classes and
images, Gaussian noise added: ``--noise``) into FOLDER and trains the demo
config on it (``--epochs``), then evaluates that run too.

Run by hand from the repository root, e.g.
``python -m benchmarks.mpn_at_test_time --run runs/demo_resnet18_train_* --pattern_run runs/mpn_pattern``.
"""
import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import yaml

from utils.boundary import command
from utils.flags import MAX_EPOCHS, MAX_ITEMS, at_least

REPO_ROOT = Path(__file__).resolve().parents[1]
GRAPH_SIZES = (2, 4, 7, 15)
K1S = (5, 10, 30)
FEATURES = ("plain", "norm", "neck")
PATTERN_CLASSES, PATTERN_IMAGES = 20, 30  # 10 classes trained on, 10 tested: 300 test images


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mpn_at_test_time",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="*", default=[], help="Finished training run folders.")
    parser.add_argument("--pattern_run", help="New folder: train on the tests' pattern images, then evaluate.")
    parser.add_argument("--epochs", type=at_least(1, MAX_EPOCHS), default=8, help="Epochs of the pattern run (default 8).")
    parser.add_argument("--noise", type=float, default=90.0,
                        help="Std of the Gaussian noise added to every pattern image, in grey levels (default 90; "
                             "the tests' images alone are learnt perfectly in one epoch).")
    parser.add_argument("--graph_sizes", type=at_least(2, MAX_ITEMS), nargs="+", default=list(GRAPH_SIZES))
    parser.add_argument("--k1", type=at_least(1, MAX_ITEMS), nargs="+", default=list(K1S))
    return parser.parse_args(argv)


def add_noise(root, std, seed=0):
    """Gaussian noise of ``std`` grey levels on every PNG below ``root`` (the same draw every time)."""
    rng = np.random.default_rng(seed)
    for path in sorted(Path(root).rglob("*.png")):
        with PIL.Image.open(path) as image:
            pixels = np.asarray(image, dtype=np.float64)
        pixels = np.clip(pixels + rng.normal(0, std, pixels.shape), 0, 255).astype(np.uint8)
        PIL.Image.fromarray(pixels).save(path)


def train_pattern_run(folder, epochs, noise):
    """The demo config on ``PATTERN_CLASSES`` classes of noisy pattern images; the run folder."""
    import train
    from tests.conftest import write_class_pattern_images
    folder = Path(folder)
    data = write_class_pattern_images(folder / "data", PATTERN_CLASSES, PATTERN_IMAGES)
    add_noise(data, noise)
    raw = yaml.safe_load((REPO_ROOT / "config" / "config_demo_train.yaml").read_text())
    trained = PATTERN_CLASSES // 2
    raw["dataset"].update(dataset_path=str(data), dataset_short="cub", num_classes=trained)
    raw["models"]["gnn_params"]["classifier"]["num_classes"] = trained
    raw["train_params"].update(num_epochs=epochs, lr_drop_epochs=[epochs - 1], eval_before_training=0)
    raw["logging"] = {"pictures": 0}
    config = folder / "pattern_train.yaml"
    config.write_text(yaml.safe_dump(raw))
    if train.main(["--config_path", str(config), "--output_dir", str(folder / "runs")]) != 0:
        raise SystemExit(f"the pattern run failed; see {folder / 'runs'}")
    (run,) = (folder / "runs").iterdir()
    return run


def evaluation_setup(run_dir):
    """The run's config in pseudo_test mode with its best weights, built once: ``(setup, evaluator)``."""
    from engine.build import build_setup
    from inference.run_model import best_weights_files
    from schema import load_config
    backbone, mpn = best_weights_files(run_dir)
    config = load_config(Path(run_dir) / "config.yaml", {
        "mode": "pseudo_test", "models.encoder_params.pretrained_path": str(backbone),
        "models.gnn_params.pretrained_path": str(mpn), "logging.pictures": 0})
    setup = build_setup(config, "pseudo_test", torch.device("cpu"))
    setup.backbone.eval()
    setup.mpn.eval()
    return setup, setup.evaluators["test"]


def refined(setup, evaluator, **changes):
    """``evaluate_refined`` with ``eval_params`` changed as given; ``(backbone metrics, refined metrics)``."""
    from engine.components import build_refinement_options
    config = {**setup.config, "eval_params": {**setup.config["eval_params"], **changes}}
    result = evaluator.evaluate_refined(setup.backbone, setup.mpn, build_refinement_options(config),
                                        **setup.data.eval_loaders["test"])
    return result["backbone"], result["mpn_refined"]


def rows_of_run(run_dir, graph_sizes, k1s):
    setup, evaluator = evaluation_setup(run_dir)
    name = Path(run_dir).name
    rows = []
    backbone, default = refined(setup, evaluator)
    rows.append((name, "backbone alone", "-", "-", backbone))
    rows.append((name, "MPN plain (default)", "default", 30, default))
    for feature in FEATURES[1:]:
        rows.append((name, f"MPN {feature}", "default", 30, refined(setup, evaluator, output_test_gnn=feature)[1]))
    for graph_size in graph_sizes:
        for k1 in k1s:
            rows.append((name, "MPN plain", graph_size, k1,
                         refined(setup, evaluator, graph_size=graph_size, k1=k1)[1]))
    return rows


def table(rows):
    lines = ["| run | embedding | graph_size | k1 | R@1 | NMI |", "|---|---|---|---|---|---|"]
    for name, what, graph_size, k1, metrics in rows:
        lines.append(f"| {name} | {what} | {graph_size} | {k1} | {100 * metrics['R@1']:.2f} | "
                     f"{100 * metrics.get('NMI', float('nan')):.2f} |")
    return "\n".join(lines)


@command("benchmarks.mpn_at_test_time")
def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    args = parse_args(argv)
    runs = list(args.run)
    if args.pattern_run:
        runs.append(train_pattern_run(args.pattern_run, args.epochs, args.noise))
    rows = [row for run in runs for row in rows_of_run(run, args.graph_sizes, args.k1)]
    sys.stdout.write(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
