"""pseudo_test's graphs and MPN refinement against a re-statement of the authors' method.

Run by hand from the repository root:
``python -m benchmarks.pseudo_test [--sizes cub cars sop] [--threads 2] [--repeats 3] [--device cuda]``.

Data: random unit vectors of 512 dims at the sizes of the test sets of CUB
(5,924), Cars196 (8,131) and Stanford Online Products (60,502); the MPN is
the CUB pseudo config's (1 layer, 2 heads, 512-d), randomly initialised, in
eval mode; graphs of 7 items, k1 = 30.

Measured, each in a fresh child process, the wall time, the CPU time of
the process (on a shared machine, CPU seconds / threads bounds what the wall
time would be on an idle one) and the growth of resident memory (peak VmHWM, reset just before, minus the resident memory
before; the embeddings are not counted), ``--repeats`` times per method and
size, each time in a new child; the repeat with the median total time is
printed, with the range of the totals (a shared or virtual machine varies by
tens of percent from run to run). Before the measured call each child runs
the method once on 2,000 items, so that the BLAS has its buffers and threads
ready, as it has in ``pseudo_test`` after the backbone embedded the test set:
- ours: ``evaluation.k_reciprocal_batches`` (exact blockwise neighbour
  tables, vectorised expansion), then ``evaluation.refinement.refine_first_nodes``
  (chunks of graphs through the MPN in one call, first node only);
- the authors' method at CUB size, re-stated: the full n x n distance matrix
  by ``addmm`` as their ``KReciprocalSampler``, ``np.argsort`` of every row,
  their per-item loop of numpy calls, then one MPN call per item (as their
  ``predict_batchwise_gnn``; our dense MPN stands in for their edge-list one,
  which is slower, so the ratio is conservative). Also reported: the share
  of items whose graph is the same set as ours (float32 near-ties aside).
"""
import argparse
import multiprocessing
import sys
import time

import numpy as np
import torch

from benchmarks.evaluation import resident_kib
from utils.boundary import command
from utils.devices import resolve_device
from utils.flags import MAX_REPEATS, MAX_THREADS, at_least

DIM = 512
GRAPH_SIZE = 7
K1 = 30
SIZES = {"cub": 5_924, "cars": 8_131, "sop": 60_502}
AUTHORS_METHOD_SIZES = ("cub",)
WARM_UP_ITEMS = 2_000


def random_embeddings(num_items, seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(num_items, DIM, generator=generator)
    return embeddings / embeddings.norm(dim=1, keepdim=True)


def cub_mpn():
    from net import build_mpn
    from schema import load_config
    gnn_params = load_config("config/config_cub_test_pseudo.yaml")["models"]["gnn_params"]
    torch.manual_seed(0)
    return build_mpn(gnn_params, DIM).eval()


def ours(embeddings, mpn, device):
    from evaluation import k_reciprocal_batches
    from evaluation.refinement import RefinementOptions, refine_first_nodes
    embeddings, mpn = embeddings.to(device), mpn.to(device)
    start = time.perf_counter()
    graphs = k_reciprocal_batches(embeddings, GRAPH_SIZE, K1)
    _synchronize(device)
    graph_seconds = time.perf_counter() - start
    refine_first_nodes(mpn, embeddings, graphs, RefinementOptions(graph_size=GRAPH_SIZE, k1=K1))
    _synchronize(device)
    return graph_seconds, time.perf_counter() - start - graph_seconds, graphs.cpu()


def authors_graphs(embeddings):
    """Their sampler's steps: full matrix, full argsort, a loop of numpy calls per item."""
    squared = embeddings.pow(2).sum(1, keepdim=True)
    distances = (squared + squared.T).addmm_(embeddings, embeddings.T, beta=1, alpha=-2).numpy()
    order = np.argsort(distances, axis=1)
    half = int(np.around(K1 / 2))

    def reciprocal(item, k):
        forward = order[item, :k + 1]
        return forward[np.where(order[forward, :k + 1] == item)[0]]

    graphs = []
    for item in range(len(order)):
        mutual = reciprocal(item, K1)
        expansion = mutual
        for candidate in mutual:
            candidate_set = reciprocal(candidate, half)
            if len(np.intersect1d(candidate_set, mutual)) > 2 / 3 * len(candidate_set):
                expansion = np.append(expansion, candidate_set)
        expansion = np.unique(expansion)
        graph = expansion[np.argsort(distances[item, expansion])[:GRAPH_SIZE]].tolist()
        position = 0
        while len(graph) < GRAPH_SIZE:
            if order[item, position] not in graph:
                graph.append(order[item, position])
            position += 1
        graphs.append(graph)
    return graphs


def authors(embeddings, mpn, device):
    start = time.perf_counter()
    graphs = authors_graphs(embeddings)
    graph_seconds = time.perf_counter() - start
    mpn = mpn.to(device)
    with torch.no_grad():
        for graph in graphs:
            mpn(embeddings[graph].to(device), output_option="plain")[1][-1][0].cpu()
    return graph_seconds, time.perf_counter() - start - graph_seconds, torch.tensor(graphs)


def _synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(task):
    """Child process: time one method and the growth of its resident memory."""
    method, size, threads, device = task
    torch.set_num_threads(threads)
    mpn = cub_mpn()
    call = ours if method == "ours" else authors
    call(random_embeddings(WARM_UP_ITEMS, seed=1), mpn, device)
    embeddings = random_embeddings(SIZES[size])
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    resident_before = resident_kib("VmRSS")
    cpu_start = time.process_time()
    graph_seconds, refine_seconds, graphs = call(embeddings, mpn, device)
    cpu_seconds = time.process_time() - cpu_start
    return (graph_seconds, refine_seconds, (resident_kib("VmHWM") - resident_before) / 2 ** 20, graphs,
            cpu_seconds)


def run_in_child(task):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (task,))


def median_of_repeats(task, repeats):
    """``(result with the median total time, (fastest, slowest) total)`` over ``repeats`` children."""
    results = sorted((run_in_child(task) for _ in range(repeats)), key=lambda result: result[0] + result[1])
    return results[len(results) // 2], (results[0][0] + results[0][1], results[-1][0] + results[-1][1])


def same_sets(first, second):
    return float(np.mean([set(a) == set(b) for a, b in zip(first.tolist(), second.tolist())]))


@command("benchmarks.pseudo_test")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pseudo_test", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), default=torch.get_num_threads())
    parser.add_argument("--repeats", type=at_least(1, MAX_REPEATS), default=3, help="children per method and size; the median is shown")
    parser.add_argument("--device", default="cpu", help="where ours runs (the authors' sampler is CPU-only)")
    args = parser.parse_args(argv)
    resolve_device(args.device)
    print(f"{args.threads} torch threads, ours on {args.device}; graphs of {GRAPH_SIZE}, k1 = {K1}, "
          f"{DIM}-d; memory = peak resident growth (VmHWM) during the call; median of {args.repeats} "
          "repeat(s), range of the totals")
    print(f"{'size':<6}{'items':>8} {'method':<10}{'graphs s':>10}{'refine s':>10}{'total s':>10}"
          f"{'range s':>14}{'CPU s':>8}{'peak GiB':>10}", flush=True)
    for size in args.sizes:
        measured = {"ours": median_of_repeats(("ours", size, args.threads, args.device), args.repeats)}
        if size in AUTHORS_METHOD_SIZES:
            measured["authors"] = median_of_repeats(("authors", size, args.threads, "cpu"), args.repeats)
        results = {method: result for method, (result, _) in measured.items()}
        for method, ((graph_seconds, refine_seconds, gib, _, cpu_seconds), (fastest, slowest)) in measured.items():
            spread = f"{fastest:.2f}-{slowest:.2f}"
            print(f"{size:<6}{SIZES[size]:>8} {method:<10}{graph_seconds:>10.2f}{refine_seconds:>10.2f}"
                  f"{graph_seconds + refine_seconds:>10.2f}{spread:>14}{cpu_seconds:>8.1f}{gib:>10.2f}", flush=True)
        if "authors" in results:
            ours_result, authors_result = results["ours"], results["authors"]
            ratio = lambda index: authors_result[index] / ours_result[index]  # noqa: E731
            total = (authors_result[0] + authors_result[1]) / (ours_result[0] + ours_result[1])
            print(f"{size:<6}{'':>8} authors / ours: graphs {ratio(0):.1f}x, refinement {ratio(1):.1f}x, "
                  f"total {total:.1f}x, memory {ratio(2):.1f}x; same graph sets for "
                  f"{100 * same_sets(ours_result[3], authors_result[3]):.1f}% of the items", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
