"""Images per second of the training loader with 0, 1 and 2 workers, side by side.

Run by hand: ``python benchmarks/loader.py``. Generates 500x375 JPEGs
(20 classes x 20 images by default) in a temporary folder and times whole
epochs of GL_orig_RE training batches (227 px) after one warm-up epoch.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset import ClassBalancedSampler, build_dataset, build_train_loader, build_transform  # noqa: E402
from utils.boundary import command  # noqa: E402
from utils.flags import MAX_THREADS, at_least  # noqa: E402

# The batches timed: 10 classes x 4 images.
BATCH_CLASSES, BATCH_IMAGES_PER_CLASS = 10, 4


def write_jpegs(root, num_classes, images_per_class, seed=0):
    """Photo-like 500x375 JPEGs: a smooth colour gradient with mild noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:375, 0:500]
    for class_index in range(num_classes):
        class_dir = root / "images" / f"{class_index:03d}"
        class_dir.mkdir(parents=True)
        for image_index in range(images_per_class):
            base = rng.uniform(0, 255, size=3)
            gradient = np.stack([(rows + base[0]) % 256, (cols + base[1]) % 256,
                                 (rows + cols + base[2]) % 256], axis=-1)
            pixels = np.clip(gradient + rng.normal(0, 8, gradient.shape), 0, 255).astype(np.uint8)
            PIL.Image.fromarray(pixels).save(class_dir / f"{image_index:03d}.jpg", quality=90)


def images_per_second(dataset, num_workers, num_classes_iter, num_elements_class, epochs):
    sampler = ClassBalancedSampler(dataset.labels, num_classes_iter, num_elements_class)
    batch_size = num_classes_iter * num_elements_class
    loader = build_train_loader(dataset, sampler, batch_size, num_workers)
    for _ in loader:  # warm-up: worker start, file cache
        pass
    images, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        for batch_images, _, _, _ in loader:
            images += batch_images.shape[0]
    return images / (time.perf_counter() - start)


@command("benchmarks.loader")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=at_least(BATCH_CLASSES, 10_000), default=20)
    parser.add_argument("--images-per-class", type=at_least(BATCH_IMAGES_PER_CLASS, 1_000), default=20)
    parser.add_argument("--epochs", type=at_least(1, 1_000), default=2)
    parser.add_argument("--workers", type=at_least(0, MAX_THREADS), nargs="+", default=[0, 1, 2])
    parser.add_argument("--main-threads", type=at_least(1, MAX_THREADS), default=None,
                        help="torch threads of the main process (workers always use 1); "
                             "on a busy machine the default can slow 0 workers down a lot")
    args = parser.parse_args(argv)
    if args.main_threads:
        torch.set_num_threads(args.main_threads)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_jpegs(root, args.classes, args.images_per_class)
        transform = build_transform("GL_orig_RE", train=True, net_type="resnet50")
        dataset = build_dataset("cub", root, "train", args.classes, transform)
        rates = {workers: images_per_second(dataset, workers, BATCH_CLASSES, BATCH_IMAGES_PER_CLASS, args.epochs) for workers in args.workers}
    print(f"training loader, {args.classes} classes x {args.images_per_class} JPEGs of 500x375, "
          f"GL_orig_RE at 227 px, batches of 10 x 4, "
          f"{torch.get_num_threads()} torch thread(s) in the main process")
    print(f"{'workers':>8} {'images/s':>10} {'vs 0 workers':>13}")
    for workers, rate in rates.items():
        print(f"{workers:>8} {rate:>10.1f} {rate / rates[args.workers[0]]:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
