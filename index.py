"""Command line: `python index.py --gallery FILE.npz --kind flat|ivf|hnsw --output FILE.index`.

Builds a faiss index of an ``embed.py`` file for ``retrieve.py --gallery
FILE.index``, with the distance the run evaluates with, and writes the
items' paths and labels beside it (``FILE.index.npz``). The parameters of
``ivf`` and ``hnsw`` are chosen from the gallery's size unless given. Bad
input: one sentence, exit 2.
"""
import argparse
import logging
import sys
import time
from pathlib import Path

from utils.boundary import check_new_outputs, command
from utils.flags import MAX_DIMENSION, MAX_ITEMS, MAX_THREADS, at_least
from utils.console import setup_console_logging
from utils.errors import UserInputError

logger = logging.getLogger("index")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Build a faiss index of an embedding file for retrieve.py.")
    parser.add_argument("--gallery", required=True, help="The .npz file of embed.py to index.")
    parser.add_argument("--kind", required=True, choices=("flat", "ivf", "hnsw"),
                        help="flat: exact; ivf: inverted lists; hnsw: a neighbour graph.")
    parser.add_argument("--output", required=True, help="The .index file to write (its .index.npz beside it).")
    parser.add_argument("--nlist", type=at_least(1, MAX_ITEMS), help="ivf: number of lists (default: 4 sqrt of the gallery size).")
    parser.add_argument("--nprobe", type=at_least(1, MAX_ITEMS), help="ivf: lists a query scans (default: 1/512 of them, at least 8).")
    parser.add_argument("--hnsw_m", type=at_least(2, MAX_DIMENSION), help="hnsw: links per item (default 32).")
    parser.add_argument("--ef_construction", type=at_least(1, MAX_ITEMS), help="hnsw: beam width while building (default 80).")
    parser.add_argument("--ef_search", type=at_least(1, MAX_ITEMS), help="hnsw: beam width while searching (default 128).")
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), help="faiss threads (default: OMP_NUM_THREADS, else all cores).")
    return parser.parse_args(argv)


def check_output(path):
    """A new .index file and sidecar in an existing folder: nothing a user made is overwritten."""
    from inference.gallery_index import sidecar_path
    path = Path(path)
    if path.suffix != ".index":
        raise UserInputError(f"--output {path} must end in .index; give e.g. --output gallery.index.")
    return check_new_outputs(path, (path, sidecar_path(path)))


def set_threads(threads):
    from evaluation.faiss_neighbours import faiss_module
    if threads is None:
        return
    if threads < 1:
        raise UserInputError(f"--threads {threads} must be at least 1.")
    faiss_module("index.py", "use retrieve.py's exact search of the .npz file").omp_set_num_threads(threads)


@command("index.py")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    # Imported late so that `--help` answers without loading faiss.
    from inference.embedding_file import load_embeddings
    from inference.gallery_index import build_index, index_parameters, save_gallery_index

    output = check_output(args.output)
    set_threads(args.threads)
    gallery = load_embeddings(args.gallery, "--gallery")
    parameters = index_parameters(args.kind, len(gallery.paths), nlist=args.nlist, nprobe=args.nprobe,
                                  hnsw_m=args.hnsw_m, ef_construction=args.ef_construction,
                                  ef_search=args.ef_search)
    started = time.perf_counter()
    index = build_index(gallery.embeddings, gallery.distance, parameters)
    save_gallery_index(index, gallery, parameters, output)
    settings = ", ".join(f"{name} {value}" for name, value in vars(parameters).items()
                         if value is not None and name != "kind")
    logger.info("Wrote the %s index of %d %d-d embeddings (%s distance%s) in %.1f s to %s and %s", args.kind,
                *gallery.embeddings.shape, gallery.distance, f"; {settings}" if settings else "",
                time.perf_counter() - started, output, f"{output}.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
