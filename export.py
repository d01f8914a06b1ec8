"""Command line: `python export.py --run RUN_DIR --format onnx|torchscript --output FILE [--check]`.

Writes the run's best backbone, in eval mode, as an ONNX or TorchScript file
that takes a preprocessed float batch (any batch size) and returns the
embedding the run's evaluation used, and beside it FILE's name with
``.json``: preprocessing, distance, embedding size, backbone and origin.
``--check`` runs the file (onnxruntime for ONNX) on the run's test images
and logs the largest difference from PyTorch's embeddings; above
``--tolerance`` the exit code is 1. Bad input, or a backbone the format
cannot represent: one sentence, exit 2.
"""
import argparse
import logging
import sys

from embed import add_model_arguments
from utils.boundary import command
from utils.flags import MAX_ITEMS, at_least
from utils.console import setup_console_logging
from utils.errors import UserInputError

logger = logging.getLogger("export")

DEFAULT_CHECK_IMAGES = 256
DEFAULT_TOLERANCE = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Export a trained backbone to ONNX or TorchScript.")
    add_model_arguments(parser, with_device=False)
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="The file format.")
    parser.add_argument("--output", required=True,
                        help="The model file to write, e.g. model.onnx; its .json is written beside it.")
    parser.add_argument("--check", action="store_true",
                        help="Compare the exported file with PyTorch on the run's test images.")
    parser.add_argument("--check_images", type=at_least(0, MAX_ITEMS), default=DEFAULT_CHECK_IMAGES,
                        help=f"Test images --check embeds, evenly spread (default {DEFAULT_CHECK_IMAGES}; 0: all).")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"Largest difference --check accepts (default {DEFAULT_TOLERANCE:g}).")
    return parser.parse_args(argv)


@command("export.py")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    # Imported late so that `--help` answers without loading torch and the models.
    from inference.export import check_export_output, check_format_packages, export_model, largest_difference
    from inference.export import spec_path
    import torch

    from inference.run_model import load_run_model, weights_source

    if args.check_images < 0:
        raise UserInputError(f"--check_images {args.check_images} must be 0 (all) or more.")
    check_format_packages(args.format)
    output = check_export_output(args.output)
    source = weights_source(args.run, args.weights, args.config_path)
    model = load_run_model(source, torch.device("cpu"))
    runtime, spec = export_model(model, source, args.format, output)
    logger.info("Wrote %s (%s, %d-d %s embeddings, %s distance) and %s", output, args.format,
                spec["embedding_size"], spec["embedding_output"], spec["distance"], spec_path(output))
    if not args.check:
        return 0
    difference, compared = largest_difference(model, runtime, args.check_images)
    logger.info("Largest difference from PyTorch over %d test images: %.3g", compared, difference)
    if difference > args.tolerance:
        logger.error("The exported file differs from PyTorch by %.3g, more than --tolerance %g.",
                     difference, args.tolerance)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
