"""The gallery indexes of ``index.py`` on a million clustered embeddings: build time, memory, speed, recall.

Run by hand from the repository root:
``python -m benchmarks.index [--size 1000000] [--dimension 512] [--queries 1000] [--threads 1]
[--kinds flat ivf hnsw]``.

Data: L2-normalised embeddings shaped like a trained model's: classes of
2 to 300 items (sizes log-uniform, so most are small, as in SOP) around
class centres, which themselves lie around one of a few hundred category
centres (similar products look alike); queries are new items of random
classes. Distances are Euclidean, as the paper's datasets but In-Shop.

Per kind, with the parameters ``index.py`` chooses for the size: build
time (training and adding), memory (the bytes of the index, as written to
disk and held in memory), queries per second (all queries in one search,
``--threads`` faiss threads, the best of 2 for exact search and of 3 for
the others) and recall@10: the share of the exact 10
nearest (the ``flat`` index) that the kind returns; for ``ivf`` and
``hnsw`` also with half and twice the default search effort (``nprobe``,
``ef_search``), which needs no new build.
"""
import argparse
import logging
import time

import numpy as np

from evaluation.faiss_neighbours import faiss_module
from inference.gallery_index import build_index, index_parameters
from utils.boundary import command
from utils.flags import MAX_DIMENSION, MAX_ITEMS, MAX_SEED, MAX_THREADS, at_least
from utils.console import setup_console_logging

logger = logging.getLogger("benchmarks.index")

SMALLEST_CLASS, LARGEST_CLASS = 2, 300
ITEMS_PER_CATEGORY = 2000
CATEGORY_SPREAD, CLASS_SPREAD, ITEM_SPREAD = 1.0, 0.7, 0.45
GENERATION_CHUNK = 100_000
TOP_K = 10
# Searches of all queries per measurement, the fastest kept (exact search takes a minute on a million).
EXACT_REPEATS, APPROXIMATE_REPEATS = 2, 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=at_least(1, MAX_ITEMS), default=1_000_000, help="Gallery items (default 1,000,000).")
    parser.add_argument("--dimension", type=at_least(1, MAX_DIMENSION), default=512, help="Embedding size (default 512).")
    parser.add_argument("--queries", type=at_least(1, MAX_ITEMS), default=1000, help="Queries (default 1000).")
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), default=1, help="faiss threads (default 1).")
    parser.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=("flat", "ivf", "hnsw"),
                        help="Kinds to measure; flat (exact) is always measured, as the reference.")
    parser.add_argument("--seed", type=at_least(0, MAX_SEED), default=0)
    return parser.parse_args(argv)


def class_sizes(total, generator):
    """Log-uniform class sizes between SMALLEST_CLASS and LARGEST_CLASS, summing to ``total``."""
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(np.exp(generator.uniform(np.log(SMALLEST_CLASS), np.log(LARGEST_CLASS + 1)))))
    sizes[-1] -= sum(sizes) - total
    return np.array([size for size in sizes if size > 0])


def class_centres(num_classes, num_categories, dimension, generator):
    """Centres of classes scattered around category centres (spreads relative to a unit-norm vector)."""
    scale = 1.0 / np.sqrt(dimension)
    categories = generator.standard_normal((num_categories, dimension), dtype=np.float32) * CATEGORY_SPREAD * scale
    category_of_class = generator.integers(0, num_categories, num_classes)
    offsets = generator.standard_normal((num_classes, dimension), dtype=np.float32) * CLASS_SPREAD * scale
    return categories[category_of_class] + offsets


def items_of(centres, labels, generator):
    """Normalised items around ``centres[labels]``, generated chunk by chunk to bound memory."""
    dimension = centres.shape[1]
    items = np.empty((len(labels), dimension), dtype=np.float32)
    for start in range(0, len(labels), GENERATION_CHUNK):
        chunk = labels[start:start + GENERATION_CHUNK]
        noise = generator.standard_normal((len(chunk), dimension), dtype=np.float32)
        block = centres[chunk] + noise * (ITEM_SPREAD / np.sqrt(dimension))
        items[start:start + len(chunk)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return items


def clustered_embeddings(size, dimension, num_queries, seed):
    """``(gallery, queries, number of classes)``."""
    generator = np.random.default_rng(seed)
    sizes = class_sizes(size, generator)
    centres = class_centres(len(sizes), max(1, size // ITEMS_PER_CATEGORY), dimension, generator)
    gallery = items_of(centres, np.repeat(np.arange(len(sizes)), sizes), generator)
    queries = items_of(centres, generator.integers(0, len(sizes), num_queries), generator)
    return gallery, queries, len(sizes)


def index_bytes(index):
    """The size of ``index`` as faiss writes it, counted without keeping a copy."""
    faiss = faiss_module("benchmarks.index", "install it")
    written = [0]

    def count(chunk):
        written[0] += len(chunk)
        return len(chunk)
    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return written[0]


def timed_search(index, queries, search_parameters, repeats):
    """``(queries per second, neighbours)``: the best of ``repeats`` searches of all queries.

    The best, because other jobs on a shared machine only ever slow a search down.
    """
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        _, neighbours = index.search(queries, TOP_K, params=search_parameters)
        best = max(best, len(queries) / (time.perf_counter() - started))
    return best, neighbours


def search_variants(parameters):
    """``(label, faiss search parameters)``: the default, and half and twice its search effort."""
    faiss = faiss_module("benchmarks.index", "install it")
    if parameters.kind == "ivf":
        return [(f"nprobe {nprobe}", faiss.SearchParametersIVF(nprobe=min(parameters.nlist, nprobe)))
                for nprobe in (parameters.nprobe, max(1, parameters.nprobe // 2), 2 * parameters.nprobe)]
    if parameters.kind == "hnsw":
        return [(f"ef_search {ef}", faiss.SearchParametersHNSW(efSearch=ef))
                for ef in (parameters.ef_search, max(TOP_K, parameters.ef_search // 2), 2 * parameters.ef_search)]
    return [("exact", None)]


def measure(kind, gallery, queries):
    """``(build parameters, build s, bytes, [(search label, queries/s, neighbours)])`` of one kind."""
    parameters = index_parameters(kind, len(gallery))
    started = time.perf_counter()
    index = build_index(gallery, "euclidean", parameters)
    build_seconds = time.perf_counter() - started
    repeats = EXACT_REPEATS if kind == "flat" else APPROXIMATE_REPEATS
    searches = [(label, *timed_search(index, queries, search_parameters, repeats))
                for label, search_parameters in search_variants(parameters)]
    return parameters, build_seconds, index_bytes(index), searches


def build_settings(parameters):
    """The build parameters (those of the search are in each row's search label)."""
    searched = ("kind", "nprobe", "ef_search")
    return ", ".join(f"{name} {value}" for name, value in vars(parameters).items()
                     if value is not None and name not in searched) or "-"


def recall_at_k(found, exact):
    return float(np.mean([len(set(row) & set(truth)) / TOP_K for row, truth in zip(found, exact)]))


@command("benchmarks.index")
def main(argv=None):
    setup_console_logging()
    args = parse_args(argv)
    faiss_module("benchmarks.index", "install it").omp_set_num_threads(args.threads)
    started = time.perf_counter()
    gallery, queries, num_classes = clustered_embeddings(args.size, args.dimension, args.queries, args.seed)
    logger.info("Generated %d x %d gallery embeddings of %d classes and %d queries in %.0f s", *gallery.shape,
                num_classes, len(queries), time.perf_counter() - started)
    rows, exact, exact_speed = [], None, None
    for kind in ["flat"] + [kind for kind in args.kinds if kind != "flat"]:
        parameters, seconds, size, searches = measure(kind, gallery, queries)
        if kind == "flat":
            _, exact_speed, exact = searches[0]
        for number, (label, speed, neighbours) in enumerate(searches):
            default = " (default)" if number == 0 and kind != "flat" else ""
            rows.append((kind, build_settings(parameters), label + default, seconds, size / 2 ** 20, speed,
                         speed / exact_speed, recall_at_k(neighbours, exact)))
            logger.info("%s", rows[-1])
    print(f"\n{args.size:,} x {args.dimension} gallery, {len(queries)} queries, {args.threads} faiss thread(s)\n")
    print("| kind | built with | searched with | build s | memory MiB | queries/s | x exact | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, built, searched, seconds, mebibytes, speed, ratio, recall in rows:
        print(f"| {kind} | {built} | {searched} | {seconds:.1f} | {mebibytes:.0f} | {speed:.0f} | {ratio:.1f} | "
              f"{recall:.3f} |")
    return 0


if __name__ == "__main__":
    main()
