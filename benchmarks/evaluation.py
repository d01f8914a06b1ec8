"""Blockwise exact Recall@K against the authors' full-matrix evaluation, and
blockwise exact MAP@R against pytorch-metric-learning's AccuracyCalculator.

Run by hand from the repository root:
``python -m benchmarks.evaluation [--sizes cub cars sop] [--repeats 2] [--no-nmi] [--device cuda]``.

Data: random unit vectors of 512 dims with balanced random labels, at the
sizes of the test sets of CUB (5,924 images / 100 classes), Cars196
(8,131 / 98) and Stanford Online Products (60,502 / 11,316), with the
datasets' K (1, 2, 4, 8 or 1, 10, 100, 1000).

Measured, each in a fresh child process so that one measurement's memory
cannot hide another's, methods in alternation, the best of ``--repeats``:
- ours: ``evaluation.recall_at_k`` on ``--device`` (default the CPU);
- the authors' method end to end (CUB and Cars sizes): scikit-learn pairwise
  Euclidean distances, ``np.argsort`` of every row, the first column
  dropped, Python lists of the neighbours' labels and Python hit counting,
  fed as their evaluator feeds it (``Evaluator_DML.evaluate`` passes the
  torch tensors of ``predict_batchwise``), and once more with numpy arrays,
  which makes their Python loops faster than they ever ran;
- the bare block products (every size): ``queries_block @ items.T`` for
  every block of queries, nothing else (ours scores each pair once, so it
  can beat this);
- NMI at SOP size (k-means with the back end ``nmi_backend()`` names);
- ours for MAP@R, R-precision and P@1 (``evaluation.retrieval_metrics``, every
  size, on ``--device``) and, at CUB size, pytorch-metric-learning's
  ``AccuracyCalculator(k="max_bin_count")`` on the CPU (its faiss k-NN given
  ``--threads`` OpenMP threads), with both sets of values printed.
``--device cuda`` runs ours and the bare products on the GPU (the authors'
method stays on the CPU, where their evaluator computed it); their memory is
then the growth of allocated GPU memory. On the CPU, memory is the growth of
resident memory during the call: the peak (VmHWM,
reset through ``/proc/self/clear_refs`` just before the call) minus the
resident memory just before it. The input embeddings are not counted; a
call on a tiny input first pages in the libraries' code, which would
otherwise count as memory.
"""
import argparse
import multiprocessing
import sys
import time

import numpy as np
import torch

from evaluation.recall import DEFAULT_BLOCK_SIZE
from utils.boundary import command
from utils.devices import resolve_device
from utils.flags import MAX_REPEATS, MAX_THREADS, at_least

# Rows of scores per block: a million rows of the largest gallery would not fit any machine's memory.
MAX_BLOCK_SIZE = 1 << 20

DIM = 512
WARMUP_SIZE = (300, 30)  # images, classes
SIZES = {  # name: (num_images, num_classes, ks)
    "cub": (5_924, 100, (1, 2, 4, 8)),
    "cars": (8_131, 98, (1, 2, 4, 8)),
    "sop": (60_502, 11_316, (1, 10, 100, 1000)),
}
AUTHORS_METHOD_SIZES = ("cub", "cars")
GPU_METHODS = ("ours", "floor", "map_at_r")  # the others run on the CPU whatever --device says
NMI_SIZES = ("sop",)
PML_SIZES = ("cub",)
PML_NAMES = {"MAP@R": "mean_average_precision_at_r", "RP": "r_precision", "P@1": "precision_at_1"}


def random_test_set(num_images, num_classes, seed=0):
    """Unit vectors and balanced labels (every class gets its share, shuffled)."""
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_images, DIM, generator=generator)
    embeddings /= embeddings.norm(dim=1, keepdim=True)
    labels = torch.arange(num_images) % num_classes
    return embeddings, labels[torch.randperm(num_images, generator=generator)]


def authors_recall_at_k(embeddings, labels, ks):
    """The authors' evaluation: full matrix, full argsort, then Python loops over
    the labels. Works on torch tensors (as their evaluator calls it) and on numpy arrays."""
    from sklearn.metrics.pairwise import pairwise_distances

    distances = pairwise_distances(embeddings, metric="euclidean")
    neighbours = np.argsort(distances, axis=1)[:, 1:max(ks) + 1]
    neighbour_labels = np.array([[labels[j] for j in row] for row in neighbours])
    if isinstance(labels, torch.Tensor):
        neighbour_labels = torch.from_numpy(neighbour_labels)
    return {k: sum(1 for label, found in zip(labels, neighbour_labels) if label in found[:k])
            / len(labels) for k in ks}


def bare_block_products(embeddings, block_size):
    """Only the products of every query block with all items."""
    for start in range(0, len(embeddings), block_size):
        torch.mm(embeddings[start:start + block_size], embeddings.T)


def resident_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(task):
    """Child process: build the data, then time one call and its memory growth
    (on a GPU: the growth of allocated GPU memory)."""
    method, size, block_size, threads, device = task
    torch.set_num_threads(threads)
    if method == "pml":
        import faiss
        faiss.omp_set_num_threads(threads)
    num_images, num_classes, ks = SIZES[size]
    method_call(method, *random_test_set(*WARMUP_SIZE), ks, block_size, device)()
    call = method_call(method, *random_test_set(num_images, num_classes), ks, block_size, device)
    on_gpu = method in GPU_METHODS and device.startswith("cuda")
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current resident memory
    resident_before = resident_kib("VmRSS")
    start = time.perf_counter()
    result = call()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if on_gpu:
        return seconds, (torch.cuda.max_memory_allocated() - allocated_before) / 2 ** 30, result
    return seconds, (resident_kib("VmHWM") - resident_before) / 2 ** 20, result


def method_call(method, embeddings, labels, ks, block_size, device):
    """A function of no arguments that runs ``method`` on the test set."""
    if method in GPU_METHODS:
        embeddings, labels = embeddings.to(device), labels.to(device)
    if method == "ours":
        from evaluation.recall import recall_at_k
        return lambda: recall_at_k(embeddings, labels, ks, block_size)
    if method == "authors":
        return lambda: authors_recall_at_k(embeddings, labels, ks)
    if method == "authors_numpy":
        return lambda: authors_recall_at_k(embeddings.numpy(), labels.numpy(), ks)
    if method == "floor":
        return lambda: bare_block_products(embeddings, block_size)
    if method == "map_at_r":
        from evaluation.precision_at_r import retrieval_metrics
        return lambda: retrieval_metrics(embeddings, labels, block_size)
    if method == "pml":
        return pml_call(embeddings, labels)
    from evaluation.clustering import nmi
    return lambda: nmi(embeddings, labels)


def alternate(methods, size, args):
    """``{method: (best seconds, largest peak GiB, result)}``, the methods taking turns."""
    runs = {method: [] for method in methods}
    for _ in range(args.repeats):
        for method in methods:
            runs[method].append(run_in_child((method, size, args.block_size, args.threads, args.device)))
    return {method: (min(run[0] for run in method_runs), max(run[1] for run in method_runs),
                     method_runs[0][2]) for method, method_runs in runs.items()}


def pml_call(embeddings, labels):
    """pytorch-metric-learning's three metrics, named as ours."""
    import logging

    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    logging.getLogger("PML").setLevel(logging.WARNING)
    calculator = AccuracyCalculator(include=tuple(PML_NAMES.values()), k="max_bin_count",
                                    device=torch.device("cpu"))

    def call():
        values = calculator.get_accuracy(embeddings, labels)
        return {ours: values[theirs] for ours, theirs in PML_NAMES.items()}
    return call


def run_in_child(task):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (task,))


@command("benchmarks.evaluation")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.evaluation", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--block-size", type=at_least(1, MAX_BLOCK_SIZE), default=DEFAULT_BLOCK_SIZE)
    parser.add_argument("--repeats", type=at_least(1, MAX_REPEATS), default=2)
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), default=torch.get_num_threads())
    parser.add_argument("--no-nmi", action="store_true", help="skip the NMI timing at SOP size")
    parser.add_argument("--device", default="cpu",
                        help="where ours and the bare products run (the authors' method runs on the CPU)")
    args = parser.parse_args(argv)
    resolve_device(args.device)

    from evaluation.clustering import nmi_backend

    memory = ("allocated GPU memory growth" if args.device.startswith("cuda")
              else "peak resident growth (VmHWM)")
    print(f"{args.threads} torch threads, block size {args.block_size}, best of {args.repeats}; "
          f"ours and bare products on {args.device}, memory = {memory} during the call")
    print(f"{'size':<6}{'method':<22}{'seconds':>10}{'peak GiB':>10}  result")
    for size in args.sizes:
        methods = (["ours", "floor", "map_at_r"]
                   + (["authors", "authors_numpy"] if size in AUTHORS_METHOD_SIZES else [])
                   + (["pml"] if size in PML_SIZES else []))
        results = alternate(methods, size, args)
        ours_seconds, ours_gib, ours_result = results["ours"]
        print(f"{size:<6}{'ours':<22}{ours_seconds:>10.3f}{ours_gib:>10.2f}  "
              f"{format_recall(ours_result)}")
        seconds, gib, _ = results["floor"]
        print(f"{size:<6}{'bare block products':<22}{seconds:>10.3f}{gib:>10.2f}  "
              f"-> ours / bare = {ours_seconds / seconds:.2f}")
        for method, name in (("authors", "authors (as run)"),
                             ("authors_numpy", "authors (numpy input)")):
            if method in results:
                seconds, gib, result = results[method]
                print(f"{size:<6}{name:<22}{seconds:>10.3f}{gib:>10.2f}  "
                      f"{format_recall(result)}  -> ours {seconds / ours_seconds:.1f}x faster")
        map_seconds, gib, map_result = results["map_at_r"]
        print(f"{size:<6}{'ours MAP@R, RP, P@1':<22}{map_seconds:>10.3f}{gib:>10.2f}  "
              f"{format_retrieval(map_result)}  -> / ours Recall@K = {map_seconds / ours_seconds:.2f}")
        if "pml" in results:
            seconds, gib, result = results["pml"]
            print(f"{size:<6}{'PML AccuracyCalculator':<22}{seconds:>10.3f}{gib:>10.2f}  "
                  f"{format_retrieval(result)}  -> ours {seconds / map_seconds:.1f}x faster, largest "
                  f"difference {max(abs(result[name] - map_result[name]) for name in result):.1e}")
        if size in NMI_SIZES and not args.no_nmi:
            seconds, gib, result = run_in_child(("nmi", size, args.block_size, args.threads, "cpu"))
            print(f"{size:<6}{'NMI (' + nmi_backend() + ')':<22}{seconds:>10.3f}{gib:>10.2f}  "
                  f"NMI {result:.4f}")
    return 0


def format_retrieval(metrics):
    return " ".join(f"{name} {100 * value:.2f}" for name, value in metrics.items())


def format_recall(recall):
    return " ".join(f"R@{k} {100 * value:.2f}" for k, value in recall.items())


if __name__ == "__main__":
    sys.exit(main())
