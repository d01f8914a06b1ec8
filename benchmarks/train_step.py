"""Training-step throughput: float32 against mixed precision, with and without channels_last.

Run by hand from the repository root:
``python -m benchmarks.train_step [--config config/config_cub_train.yaml] [--device cuda]
[--steps 20] [--warmup 5] [--batch P K]``.

Builds the backbone and MPN of a config (from random weights: speed does not
depend on them) and times ``Trainer.training_step``, the real step (forward,
the loss of SPEC 6, backward, RAdam step), on random P x K batches of the
config's crop size. The four variants run in one process, one after another,
each after its own warm-up; mixed precision is ``is_apex: 1`` as the trainer
picks it (Apex O1 when installed, else float16 autocast with a gradient
scaler on CUDA, bfloat16 autocast on the CPU). Prints images per second and
each variant's speed relative to float32.

``--mpn_share`` instead times, in float32, the config's backbone and a ViT-S/16
(``timm:vit_small_patch16_224`` at 224 px) alone (loss ``lsce``, no MPN)
against backbone + MPN (the config's loss), at the config's P x K (or
``--batch``), alternating the two step by step, and prints the median
images/s (on the CPU: per CPU-second of this process) and the MPN's share
of a training step.
"""
import argparse
import copy
import statistics
import sys
import tempfile
import time

import torch

from engine.build import build_optimizer_for
from engine.trainer import LoopOptions, Trainer
from losses.intra_batch import IntraBatchLoss
from recipe import RunRecipe
from schema import load_config
from utils.boundary import command
from utils.devices import resolve_device
from utils.flags import at_least
from utils.precision import build_precision, initialize_apex

# Bounds of the flags: far above any real measurement, far below what would exhaust a machine.
MAX_STEPS = 100_000
MAX_BATCH_SIDE = 1_024

VIT_S16 = "timm:vit_small_patch16_224"
VIT_CROP = 224
BACKBONE_ALONE_LOSS = "lsce"
VARIANTS = (  # name, is_apex, channels_last
    ("float32", 0, 0),
    ("float32 + channels_last", 0, 1),
    ("mixed precision", 1, 0),
    ("mixed precision + channels_last", 1, 1),
)


def build_trainer(config, device, is_apex, channels_last, run_dir):
    config = copy.deepcopy(config)
    config["models"]["encoder_params"].update(imagenet_pretrained=0, pretrained_path="no",
                                              channels_last=channels_last)
    config["models"]["gnn_params"]["pretrained_path"] = "no"
    config["train_params"]["is_apex"] = is_apex
    precision = build_precision(is_apex, device, device_was_requested=True)
    backbone, mpn = RunRecipe(config).build_models(device)
    (backbone, mpn), optimizer = initialize_apex(precision, [backbone, mpn],
                                                 build_optimizer_for(config, backbone, mpn))
    trainer = Trainer(backbone, mpn, optimizer, IntraBatchLoss.from_config(config), precision, device,
                      LoopOptions.from_config(config), run_dir)
    trainer.backbone.train()
    trainer.mpn.train()
    return trainer, precision.name


def random_batch(config, num_classes_iter, num_elements_class, generator):
    crop = config["dataset"]["crop_size"]
    images = torch.randn(num_classes_iter * num_elements_class, 3, crop, crop, generator=generator)
    labels = torch.arange(num_classes_iter).repeat_interleave(num_elements_class)
    return images, labels


def images_per_second(trainer, batch, steps, warmup, device):
    images, labels = batch
    for step in range(warmup):
        trainer.training_step(images, labels, 1, step)
    synchronize(device)
    start = time.perf_counter()
    for step in range(steps):
        trainer.training_step(images, labels, 1, step)
    synchronize(device)
    return steps * len(labels) / (time.perf_counter() - start)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mpn_share(config, device, batch_shape, steps, warmup, run_dir):
    """Rows ``(net_type, crop, images/s alone, images/s with the MPN)`` for the config's backbone and ViT-S/16.

    The two variants of a backbone alternate step by step and each reports
    its median step, so load from other processes hits both alike. On the
    CPU a step is timed by this process's CPU time, which other processes
    on a shared machine barely change (run with OMP_NUM_THREADS=1).
    """
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    rows = []
    for net_type, crop in ((config["models"]["encoder_params"]["net_type"], config["dataset"]["crop_size"]),
                           (VIT_S16, VIT_CROP)):
        trainers = []
        for fns in (BACKBONE_ALONE_LOSS, config["train_params"]["loss_fn"]["fns"]):
            variant = copy.deepcopy(config)
            variant["models"]["encoder_params"]["net_type"] = net_type
            variant["dataset"]["crop_size"] = crop
            variant["train_params"]["loss_fn"]["fns"] = fns
            torch.manual_seed(0)
            trainers.append(build_trainer(variant, device, 0, 0, run_dir)[0])
        images, labels = random_batch(variant, *batch_shape, torch.Generator().manual_seed(0))
        for trainer in trainers:
            for step in range(warmup):
                trainer.training_step(images, labels, 1, step)
        step_times = [[], []]
        for step in range(steps):
            for times, trainer in zip(step_times, trainers):
                start = clock()
                trainer.training_step(images, labels, 1, step)
                synchronize(device)
                times.append(clock() - start)
        rows.append((net_type, crop, *(len(labels) / statistics.median(times) for times in step_times)))
        del trainers
    return rows


def print_mpn_share(rows):
    print(f"{'backbone':<30}{'crop':>6}{'alone img/s':>14}{'+ MPN img/s':>14}{'MPN share':>11}")
    for net_type, crop, alone, with_mpn in rows:
        print(f"{net_type:<30}{crop:>6}{alone:>14.1f}{with_mpn:>14.1f}{1 - with_mpn / alone:>10.1%}")


@command("benchmarks.train_step")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/config_cub_train.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=at_least(1, MAX_STEPS), default=20)
    parser.add_argument("--warmup", type=at_least(0, MAX_STEPS), default=5)
    parser.add_argument("--batch", type=at_least(1, MAX_BATCH_SIDE), nargs=2, metavar=("P", "K"),
                        help="classes per batch and images per class (default: the config's)")
    parser.add_argument("--mpn_share", action="store_true",
                        help="time backbone alone vs backbone + MPN, for the config's backbone and ViT-S/16")
    args = parser.parse_args(argv)

    device, _ = resolve_device(args.device)
    config = load_config(args.config)
    train_params = config["train_params"]
    num_classes_iter, num_elements_class = args.batch or (train_params["num_classes_iter"],
                                                          train_params["num_elements_class"])
    if args.mpn_share:
        print(f"{args.config}: batch {num_classes_iter} x {num_elements_class}, float32, device {device}, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps after "
              f"{args.warmup} warm-up")
        with tempfile.TemporaryDirectory() as run_dir:
            print_mpn_share(mpn_share(config, device, (num_classes_iter, num_elements_class), args.steps,
                                      args.warmup, run_dir))
        return 0
    images, labels = random_batch(config, num_classes_iter, num_elements_class, torch.Generator().manual_seed(0))
    # The training loader pins its batches on CUDA; so does this one.
    batch = (images.pin_memory(), labels.pin_memory()) if device.type == "cuda" else (images, labels)
    print(f"{args.config}: {config['models']['encoder_params']['net_type']}, batch {num_classes_iter} x "
          f"{num_elements_class} at {config['dataset']['crop_size']} px, device {device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {args.steps} timed steps after "
          f"{args.warmup} warm-up")
    print(f"{'variant':<34}{'precision':<20}{'images/s':>10}{'vs float32':>12}")
    baseline = None
    with tempfile.TemporaryDirectory() as run_dir:
        for name, is_apex, channels_last in VARIANTS:
            torch.manual_seed(0)
            trainer, precision_name = build_trainer(config, device, is_apex, channels_last, run_dir)
            speed = images_per_second(trainer, batch, args.steps, args.warmup, device)
            baseline = baseline or speed
            print(f"{name:<34}{precision_name:<20}{speed:>10.1f}{speed / baseline:>11.2f}x")
            del trainer
    return 0


if __name__ == "__main__":
    sys.exit(main())
