"""A faiss index of an embedding file, for galleries searched many times (``index.py``, ``retrieve.py``).

Kinds: ``flat`` (exact, float32), ``ivf`` (inverted lists: a query scans the
``nprobe`` lists nearest to it out of ``nlist``) and ``hnsw`` (a graph of
``hnsw_m`` links per item, searched with a beam of ``ef_search``). The
distance is the run's: squared L2 for Euclidean runs, inner product of
L2-normalised vectors for cosine ones (In-Shop). ``FILE.index`` holds the
index, ``FILE.index.npz`` beside it the items (paths, root, distance,
labels), the kind and parameters, and the SHA-256 of the index file; both are
written together. faiss reads an index without any check of its content, so
a bit flipped in the file would silently change the neighbours: the
checksum is compared before faiss reads it.

A query excluded from its own results (its file is in the gallery) asks
for as many more neighbours; a row that an approximate search leaves
short (an IVF probe of few small lists) is searched again wider until it
has ``k``.
"""
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from evaluation.faiss_neighbours import drop_excluded, faiss_module, prepared_vectors
from inference.embedding_file import item_arrays, items_from_arrays, npz_bytes, read_arrays
from utils.errors import UserInputError
from utils.io import atomic_write, write_together

logger = logging.getLogger(__name__)

KINDS = ("flat", "ivf", "hnsw")
OWN_PARAMETERS = {"flat": (), "ivf": ("nlist", "nprobe"), "hnsw": ("hnsw_m", "ef_construction", "ef_search")}
# IVF: faiss' rule of 4 sqrt(n) lists, each trained on this many sample points (faiss warns below 39)
# with 10 k-means iterations (faiss' 25 take minutes more on a CPU for a million items, for no recall).
IVF_LISTS_PER_SQRT_ITEMS = 4.0
IVF_TRAINING_POINTS_PER_LIST = 40
IVF_MIN_POINTS_PER_LIST = 39
IVF_KMEANS_ITERATIONS = 10
# The share of lists a query probes: 1 / IVF_PROBE_DIVISOR of them, at least IVF_MIN_PROBES. A list is
# scanned vector by vector, far slower per vector than the matrix products of exact search, so the share
# must stay small for IVF to be worth it: on a million clustered items 8 of 4000 lists gave 26-60x exact
# search's queries per second at recall@10 1.000, 16 lists 8-25x (benchmarks.index, docs/deploy.md).
IVF_PROBE_DIVISOR = 512
IVF_MIN_PROBES = 8
HNSW_LINKS = 32
# Enough up to a few hundred thousand items; a million clustered ones recall 0.73 with it and need about
# 200 (docs/deploy.md), for three times the build.
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
# Items added (and queries searched) per step of the progress bar.
CHUNK = 65536
QUERY_CHUNK = 1024
SIDECAR_ARRAYS = ("paths", "root", "distance", "kind", "parameters", "dimension")
# Recorded by index.py since the checksum was added; an older sidecar lacks it (its index is read unchecked).
CHECKSUM_ARRAY = "index_sha256"
TRAINING_SEED = 0


@dataclass(frozen=True)
class IndexParameters:
    """The parameters of one kind; those of the other kinds are None."""

    kind: str
    nlist: Optional[int] = None
    nprobe: Optional[int] = None
    hnsw_m: Optional[int] = None
    ef_construction: Optional[int] = None
    ef_search: Optional[int] = None


def index_parameters(kind, num_items, nlist=None, nprobe=None, hnsw_m=None, ef_construction=None,
                     ef_search=None):
    """The parameters of ``kind`` for a gallery of ``num_items``: each one given, else chosen from the size."""
    given = dict(nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search)
    for name, value in given.items():
        if value is not None and value < 1:
            raise UserInputError(f"--{name} {value} must be at least 1.")
    foreign = [f"--{name}" for name, value in given.items() if value is not None and name not in OWN_PARAMETERS[kind]]
    if foreign:
        raise UserInputError(f"{', '.join(foreign)} do not apply to --kind {kind}; leave them out.")
    if kind == "ivf":
        return ivf_parameters(num_items, nlist, nprobe)
    if kind == "hnsw":
        return IndexParameters(kind, hnsw_m=hnsw_m or HNSW_LINKS,
                               ef_construction=ef_construction or HNSW_EF_CONSTRUCTION,
                               ef_search=ef_search or HNSW_EF_SEARCH)
    return IndexParameters(kind)


def ivf_parameters(num_items, nlist=None, nprobe=None):
    most_lists = max(1, num_items // IVF_MIN_POINTS_PER_LIST)
    if nlist is None:
        nlist = min(most_lists, max(1, round(IVF_LISTS_PER_SQRT_ITEMS * math.sqrt(num_items))))
    elif nlist > most_lists:
        raise UserInputError(f"--nlist {nlist} is too many lists for {num_items} items (each list needs "
                             f"{IVF_MIN_POINTS_PER_LIST} to train); give --nlist {most_lists} or fewer.")
    if nprobe is None:
        nprobe = min(nlist, max(IVF_MIN_PROBES, math.ceil(nlist / IVF_PROBE_DIVISOR)))
    elif nprobe > nlist:
        raise UserInputError(f"--nprobe {nprobe} is more than the {nlist} lists; give --nprobe {nlist} or fewer.")
    return IndexParameters("ivf", nlist=nlist, nprobe=nprobe)


def faiss_metric(distance):
    faiss = faiss_module("index.py", "use retrieve.py's exact search of the .npz file")
    return faiss.METRIC_INNER_PRODUCT if distance == "cosine" else faiss.METRIC_L2


def new_index(parameters, dimension, distance):
    faiss = faiss_module("index.py", "use retrieve.py's exact search of the .npz file")
    metric = faiss_metric(distance)
    if parameters.kind == "flat":
        return faiss.IndexFlat(dimension, metric)
    if parameters.kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlat(dimension, metric), dimension, parameters.nlist, metric)
        index.nprobe = parameters.nprobe
        index.cp.niter = IVF_KMEANS_ITERATIONS
        return index
    index = faiss.IndexHNSWFlat(dimension, parameters.hnsw_m, metric)
    index.hnsw.efConstruction = parameters.ef_construction
    index.hnsw.efSearch = parameters.ef_search
    return index


def build_index(embeddings, distance, parameters):
    """A faiss index of ``embeddings`` (n x d) for ``distance``, trained if its kind needs it."""
    vectors = prepared_vectors(embeddings, distance)
    index = new_index(parameters, vectors.shape[1], distance)
    if not index.is_trained:
        sample_size = min(len(vectors), IVF_TRAINING_POINTS_PER_LIST * parameters.nlist)
        sample = np.random.default_rng(TRAINING_SEED).choice(len(vectors), sample_size, replace=False)
        logger.info("Training %d lists on %d of the %d embeddings", parameters.nlist, sample_size, len(vectors))
        index.train(vectors[np.sort(sample)])
    for start in tqdm(range(0, len(vectors), CHUNK), desc=f"adding to the {parameters.kind} index",
                      leave=False, disable=None):
        index.add(vectors[start:start + CHUNK])
    return index


def sidecar_path(path):
    """``FILE.index.npz``: the items of ``FILE.index``."""
    return Path(f"{path}.npz")


def save_gallery_index(index, items, parameters, path):
    """``index`` to ``path`` and its items (``EmbeddedImages``) with the parameters beside it, together."""
    faiss = faiss_module("index.py", "use retrieve.py's exact search of the .npz file")
    serialized = memoryview(faiss.serialize_index(index))
    arrays = dict(item_arrays(items), kind=np.array(parameters.kind, dtype=np.str_),
                  parameters=np.array(json.dumps(asdict(parameters)), dtype=np.str_),
                  dimension=np.array(index.d, dtype=np.int64),
                  **{CHECKSUM_ARRAY: np.array(hashlib.sha256(serialized).hexdigest(), dtype=np.str_)})
    with write_together():
        atomic_write(path, serialized, replace=False)
        atomic_write(sidecar_path(path), npz_bytes(arrays), replace=False)


class GalleryIndex:
    """A loaded gallery index: its faiss index, items (``EmbeddedImages`` without embeddings) and parameters."""

    def __init__(self, index, items, parameters):
        self.index = index
        self.items = items
        self.parameters = parameters
        self.dimension = index.d

    def search(self, queries, k, exclude):
        """``(indices, distances)`` of the ``k`` nearest items of each query, ``exclude`` (-1 padded) left out."""
        exclude = np.asarray(exclude)
        exclude = exclude[:, None] if exclude.ndim == 1 else exclude
        asked = min(self.index.ntotal, k + int((exclude >= 0).sum(1).max(initial=0)))
        vectors = prepared_vectors(queries, self.items.distance)
        values = np.empty((len(vectors), asked), dtype=np.float32)
        found = np.empty((len(vectors), asked), dtype=np.int64)
        for start in tqdm(range(0, len(vectors), QUERY_CHUNK), desc="searching", leave=False, disable=None):
            rows = slice(start, start + QUERY_CHUNK)
            values[rows], found[rows] = self.search_until_complete(vectors[rows], asked, k, exclude[rows])
        return drop_excluded(values, found, k, self.items.distance, exclude)

    def search_until_complete(self, vectors, asked, k, exclude):
        """faiss' results, rows short of ``k`` usable results searched again, twice as wide each time."""
        widening = 1
        self.set_search_effort(asked, widening)
        values, found = self.index.search(vectors, asked)
        short = usable_counts(found, exclude) < k
        while short.any() and self.can_widen(widening):
            widening *= 2
            self.set_search_effort(asked, widening)
            values[short], found[short] = self.index.search(vectors[short], asked)
            short = usable_counts(found, exclude) < k
        return values, found

    def set_search_effort(self, asked, widening):
        """The lists IVF probes, or the candidates HNSW keeps, ``widening`` times the index's own.

        Set on the index rather than passed as faiss' ``params``: libraries that
        patch ``Index.search`` for torch tensors (faiss.contrib.torch_utils, which
        pytorch-metric-learning imports) drop that argument.
        """
        if self.parameters.kind == "ivf":
            self.index.nprobe = min(self.parameters.nlist, self.parameters.nprobe * widening)
        elif self.parameters.kind == "hnsw":
            self.index.hnsw.efSearch = min(self.index.ntotal, max(asked, self.parameters.ef_search) * widening)

    def can_widen(self, widening):
        if self.parameters.kind == "ivf":
            return self.parameters.nprobe * widening < self.parameters.nlist
        if self.parameters.kind == "hnsw":
            return self.parameters.ef_search * widening < self.index.ntotal
        return False


def usable_counts(found, exclude):
    """Per row, the results that are neither missing (-1) nor excluded."""
    return ((found >= 0) & ~(found[:, :, None] == exclude[:, None, :]).any(2)).sum(1)


def load_gallery_index(path, flag):
    """The ``GalleryIndex`` that ``index.py`` wrote to ``path``; anything else is a ``UserInputError``."""
    faiss = faiss_module(f"{flag} {path}", "give the .npz file of embed.py")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise UserInputError(f"{flag} {path} has no {sidecar.name} beside it (the paths and labels of its items); "
                             "keep the two files of index.py together, or build the index again.")
    arrays = read_arrays(sidecar, flag, SIDECAR_ARRAYS, "index.py")
    parameters = recorded_parameters(arrays, sidecar, flag)
    check_index_checksum(path, arrays, flag)
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise UserInputError(f"{flag} {path} cannot be read as a faiss index ({str(error).splitlines()[0]}); "
                             "give a file that index.py wrote.") from None
    items = items_from_arrays(arrays, None)
    if index.ntotal != len(items.paths) or index.d != int(arrays["dimension"]):
        raise UserInputError(f"{flag} {path} holds {index.ntotal} {index.d}-d items but {sidecar.name} describes "
                             f"{len(items.paths)} {int(arrays['dimension'])}-d ones; build the index again.")
    return GalleryIndex(index, items, parameters)


def recorded_parameters(arrays, sidecar, flag):
    """The ``IndexParameters`` the sidecar records: its kind's own parameters, each a whole number of at least 1."""
    try:
        recorded = json.loads(str(arrays["parameters"]))
        kind = recorded["kind"]
        own = {name: recorded.pop(name) for name in OWN_PARAMETERS[kind]}
        usable = (kind == str(arrays["kind"]) and set(recorded) <= set(asdict(IndexParameters(kind)))
                  and all(recorded[name] is None for name in recorded if name != "kind")
                  and all(type(value) is int and value >= 1 for value in own.values()))
    except (ValueError, RecursionError, TypeError, KeyError):
        usable = False
    if not usable:
        raise UserInputError(f"{flag} {sidecar} does not hold the parameters of an index of index.py; build the "
                             "index again.")
    return IndexParameters(kind, **own)


def check_index_checksum(path, arrays, flag):
    """The index file is byte for byte the one index.py wrote (the SHA-256 in its sidecar), before faiss reads it."""
    if CHECKSUM_ARRAY not in arrays:
        logger.warning("%s %s was written without a checksum (by an older index.py), so damage to it cannot be "
                       "detected; build it again to have it checked.", flag, path)
        return
    try:
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except OSError as error:
        raise UserInputError(f"{flag} {path} cannot be read ({error.strerror or error}); check the path.") from None
    if digest != str(arrays[CHECKSUM_ARRAY]):
        raise UserInputError(f"{flag} {path} is damaged: its content is not what index.py wrote (the SHA-256 in "
                             f"{sidecar_path(path).name} differs); build the index again.")
