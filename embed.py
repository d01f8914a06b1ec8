"""Command line: `python embed.py --run RUN_DIR --images DIR --output FILE.npz`.

Embeds every image under DIR (recursively) with the run's best backbone,
exactly as its evaluation embeds a test set (evaluation transform,
``eval_params.output_test_enc``). Class sub-folders give labels. Unreadable
images are logged, counted and left out. Bad input: one sentence, exit 2.
"""
import argparse
import logging
import sys
from pathlib import Path

from utils.errors import UserInputError
from utils.boundary import check_new_outputs, command
from utils.console import setup_console_logging

logger = logging.getLogger("embed")


def add_model_arguments(parser, with_device=True):
    """``--run`` or ``--weights`` with ``--config_path``, and ``--device`` (shared with retrieve.py and export.py,
    which exports from the CPU and so takes no ``--device``)."""
    parser.add_argument("--run", help="A finished training run folder (its config.yaml and best backbone), or "
                                      "'latest': the newest finished run in runs/.")
    parser.add_argument("--weights", help="Backbone weights file (instead of --run; needs --config_path).")
    parser.add_argument("--config_path", help="The config the --weights were trained with.")
    if with_device:
        parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Embed a folder of images with a trained backbone.")
    add_model_arguments(parser)
    parser.add_argument("--images", required=True, help="Folder of images (a sub-folder per class gives labels).")
    parser.add_argument("--output", required=True, help="The .npz file to write (not overwritten).")
    return parser.parse_args(argv)


def check_output(path):
    """A new .npz file in an existing folder: nothing a user made is overwritten."""
    path = Path(path)
    if path.suffix != ".npz":
        raise UserInputError(f"--output {path} must end in .npz; give e.g. --output embeddings.npz.")
    return check_new_outputs(path, (path,))


@command("embed.py")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    # Imported late so that `--help` answers without loading torch and the models.
    from dataset.image_folder import read_image_folder
    from inference.embed_images import embed_listing
    from inference.embedding_file import save_embeddings
    from inference.run_model import load_run_model, weights_source
    from utils.devices import resolve_device

    output = check_output(args.output)
    source = weights_source(args.run, args.weights, args.config_path)
    listing = read_image_folder(args.images)
    model = load_run_model(source, resolve_device(args.device)[0])
    embedded = embed_listing(model, listing)
    save_embeddings(embedded, output)
    labels = f", {len(embedded.classes)} classes" if embedded.labels is not None else ", no labels"
    logger.info("Wrote %d embeddings of %d dimensions%s to %s", *embedded.embeddings.shape, labels, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
