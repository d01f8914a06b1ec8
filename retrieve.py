"""Command line: `python retrieve.py --run RUN_DIR --gallery DIR_OR_NPZ_OR_INDEX --queries DIR_OR_NPZ_OR_IMAGE
--top_k K --output OUT_DIR`.

Finds the K nearest gallery images of every query, exactly and with the
distance of the run's evaluation (``--faiss``: a faiss flat index instead;
a gallery ``FILE.index`` of ``index.py``: that index), a query never
matching its own file, however its path is spelled. Writes
``OUT_DIR/neighbours.csv`` and ``OUT_DIR/retrieval.png``. Folders and
images are embedded as ``embed.py`` does; embedding files and indexes need
no model. Bad input: one sentence, exit 2.
"""
import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from embed import add_model_arguments
from utils.errors import UserInputError
from utils.boundary import command
from utils.console import setup_console_logging

logger = logging.getLogger("retrieve")

OUTPUT_FILES = ("neighbours.csv", "retrieval.png")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Nearest gallery images of query images, with a picture.")
    add_model_arguments(parser)
    parser.add_argument("--gallery", required=True,
                        help="Folder of images, .npz file of embed.py or .index file of index.py.")
    parser.add_argument("--queries", required=True, help="Folder of images, one image, or .npz file of embed.py.")
    parser.add_argument("--top_k", type=int, required=True, help="Neighbours per query.")
    parser.add_argument("--output", required=True, help="Folder for neighbours.csv and retrieval.png.")
    parser.add_argument("--rows", type=int, default=8, help="Queries drawn in retrieval.png, evenly spread over all (default 8).")
    parser.add_argument("--faiss", action="store_true",
                        help="Search an .npz or folder gallery with a faiss flat index (pip install faiss-cpu).")
    return parser.parse_args(argv)


def check_output(folder, rows):
    """Refuse, before any work, to overwrite an earlier result."""
    if rows < 1:
        raise UserInputError(f"--rows {rows} must be at least 1.")
    folder = Path(folder)
    taken = [name for name in OUTPUT_FILES if (folder / name).exists()]
    if taken:
        raise UserInputError(f"--output {folder} already holds {', '.join(taken)}; give another folder.")
    return folder


def create_output(folder):
    """The output folder, created only once the search has succeeded."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"--output {folder} cannot be created ({error.strerror}); give a writable "
                             "folder.") from None


def model_loader(args):
    from inference.run_model import load_run_model, weights_source
    from utils.devices import resolve_device

    def load():
        return load_run_model(weights_source(args.run, args.weights, args.config_path), resolve_device(args.device)[0])
    return load


def shown_queries(num_queries, rows):
    """At most ``rows`` queries, evenly spread over all of them (a folder's classes come in order)."""
    return np.unique(np.linspace(0, num_queries - 1, min(rows, num_queries)).round().astype(np.int64))


def draw_picture(path, queries, gallery, retrieval, rows):
    from inference.pictures import draw_retrieval_grid
    shown = shown_queries(len(queries.paths), rows)
    query_paths, gallery_paths = queries.absolute_paths(), gallery.absolute_paths()
    captions = queries.class_names()
    picture = draw_retrieval_grid(
        [query_paths[i] for i in shown], [[gallery_paths[i] for i in retrieval.indices[q]] for q in shown],
        retrieval.distances[shown], None if retrieval.same_label is None else retrieval.same_label[shown],
        title=f"{len(queries.paths)} queries, {len(gallery.paths)} gallery images, {gallery.distance} distance",
        query_captions=None if captions is None else [f"class {captions[i]}" for i in shown])
    picture.save(path)


@command("retrieve.py")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    # Imported late so that `--help` answers without loading torch and the models.
    from inference.gallery_index import GalleryIndex
    from inference.inputs import LazyModel, embedded_input, gallery_input
    from inference.retrieval import retrieve, write_neighbours_csv

    output = check_output(args.output, args.rows)
    model = LazyModel(model_loader(args))
    gallery = gallery_input(args.gallery, "--gallery", model)
    if args.faiss and isinstance(gallery, GalleryIndex):
        raise UserInputError(f"--gallery {args.gallery} is an index, searched as index.py built it; leave "
                             "out --faiss (which builds a flat index of an .npz gallery).")
    queries = embedded_input(args.queries, "--queries", model, allow_image=True)
    retrieval = retrieve(queries, gallery, args.top_k, use_faiss=args.faiss)
    create_output(output)
    gallery = gallery.items if isinstance(gallery, GalleryIndex) else gallery
    write_neighbours_csv(output / "neighbours.csv", queries, gallery, retrieval)
    draw_picture(output / "retrieval.png", queries, gallery, retrieval, args.rows)
    if retrieval.same_label is not None:
        logger.info("First neighbour of the same class for %.1f%% of the queries",
                    100 * retrieval.same_label[:, 0].mean())
    logger.info("Wrote %s and %s", output / "neighbours.csv", output / "retrieval.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
