"""Dense MPN attention against the authors' edge-list formulation.

Run by hand from the repository root:
``python -m benchmarks.mpn [--device cpu] [--repeats 5]``.
For the CUB (1 layer, 2 heads) and Cars (2 layers, 8 heads) configs, 512-d,
and batches of n = 54, 90, 512, it first checks that both formulations give
the same output (eval mode), then times forward + backward (train mode) of
the whole MPN and of the first layer's attention module alone, the two
formulations in alternation in one run, and prints a table.

The edge-list formulation is written here only as the yardstick: all n^2
ordered edges (k -> (k // n, k % n), source, target), index_select of the
queries/keys/values per edge, the null-logit softmax with scatter-style
reductions per target (scatter_reduce max, index_add sum) and index_add of
the weighted messages, as the authors' scatter code does.
"""
import argparse
import copy
import math
import statistics
import sys
import time
import types

import torch

from net.attention import NULL_LOGIT
from net.mpn import build_mpn
from utils.boundary import command
from utils.devices import resolve_device
from utils.flags import MAX_REPEATS, MAX_SEED, MAX_THREADS, at_least

EMBED_DIM = 512
BATCH_SIZES = (54, 90, 512)
CONFIGS = {"cub": (1, 2), "cars": (2, 8)}  # name: (num_layers, num_heads)
SAME_OUTPUT_ATOL = 1e-4
WARMUP_STEPS = 2


def gnn_params(num_layers, num_heads):
    return {
        "pretrained_path": "no", "red": 1, "cat": 0, "every": 0,
        "gnn": {"num_layers": num_layers, "aggregator": "add", "num_heads": num_heads,
                "attention": "dot", "mlp": 1, "dropout_mlp": 0.1, "norm1": 1, "norm2": 1,
                "res1": 1, "res2": 1, "dropout_1": 0.1, "dropout_2": 0.1, "mult_attr": 0},
        "classifier": {"neck": 1, "num_classes": 100, "dropout_p": 0.4, "use_batchnorm": 0},
    }


def edge_list_attend(self, queries, keys, values, edge_weights):
    """``MultiHeadDotProduct.attend`` on the edge list of the complete graph."""
    num_heads, num_nodes, head_dim = queries.shape
    nodes = torch.arange(num_nodes, device=queries.device)
    source = nodes.repeat_interleave(num_nodes)
    target = nodes.repeat(num_nodes)
    scores = (queries.index_select(1, target) * keys.index_select(1, source)).sum(-1)
    scores = scores / math.sqrt(head_dim)
    target_per_head = target.expand(num_heads, -1)
    # Starting the per-target max at the null logit clamps it the same way.
    shift = torch.full((num_heads, num_nodes), NULL_LOGIT, device=scores.device)
    shift = shift.scatter_reduce(1, target_per_head, scores, reduce="amax", include_self=True)
    exp_scores = torch.exp(scores - shift.index_select(1, target))
    denominator = torch.zeros_like(shift).index_add(1, target, exp_scores)
    denominator = denominator + torch.exp(NULL_LOGIT - shift)
    weights = self.dropout(exp_scores / denominator.index_select(1, target))
    if edge_weights is not None:
        weights = weights * edge_weights[source, target]
    messages = weights.unsqueeze(-1) * values.index_select(1, source)
    return torch.zeros_like(queries).index_add(1, target, messages)


def with_edge_list_attention(model):
    """A copy of ``model`` whose attention runs on the edge list."""
    edge_model = copy.deepcopy(model)
    for layer in edge_model.gnn_model["node_model"].layers:
        layer.att.attend = types.MethodType(edge_list_attend, layer.att)
    return edge_model


def max_output_difference(model, edge_model, feats):
    model.eval()
    edge_model.eval()
    with torch.no_grad():
        logits, out = model(feats)
        edge_logits, edge_out = edge_model(feats)
    return max((logits[0] - edge_logits[0]).abs().max().item(),
               (out[0] - edge_out[0]).abs().max().item())


def mpn_step(model, feats, device):
    """One forward + backward of the whole MPN in train mode."""
    model.train()

    def step():
        logits, out = model(feats)
        (logits[0].logsumexp(dim=1).mean() + out[0].sum()).backward()
        model.zero_grad(set_to_none=True)
        _synchronize(device)
    return step


def attention_step(model, feats, device):
    """One forward + backward of the first layer's attention module alone."""
    att = model.gnn_model["node_model"].layers[0].att.train()

    def step():
        att(feats).sum().backward()
        att.zero_grad(set_to_none=True)
        _synchronize(device)
    return step


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds_side_by_side(steps, repeats):
    """Median seconds of each step, the steps timed in alternation.

    Alternating keeps both formulations under the same machine load.
    """
    for step in steps:
        for _ in range(WARMUP_STEPS):
            step()
    times = [[] for _ in steps]
    for _ in range(repeats):
        for step, step_times in zip(steps, times):
            start = time.perf_counter()
            step()
            step_times.append(time.perf_counter() - start)
    return [statistics.median(step_times) for step_times in times]


@command("benchmarks.mpn")
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mpn", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=at_least(1, MAX_REPEATS), default=5)
    parser.add_argument("--seed", type=at_least(0, MAX_SEED), default=0)
    parser.add_argument("--threads", type=at_least(1, MAX_THREADS), default=torch.get_num_threads(),
                        help="CPU threads; 1 gives steadier figures on a busy machine")
    args = parser.parse_args(argv)
    device, _ = resolve_device(args.device)
    torch.set_num_threads(args.threads)

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"d = {EMBED_DIM}, forward+backward in train mode, median of {args.repeats}, "
          f"dense and edge list timed in alternation")
    print(f"{'config':<6} {'layers':>6} {'heads':>5} {'n':>5} {'scope':<9} {'dense ms':>9} "
          f"{'edges ms':>9} {'edges/dense':>11} {'max |diff|':>10}")
    for name, (num_layers, num_heads) in CONFIGS.items():
        for num_nodes in BATCH_SIZES:
            torch.manual_seed(args.seed)
            model = build_mpn(gnn_params(num_layers, num_heads), EMBED_DIM).to(device)
            edge_model = with_edge_list_attention(model)
            feats = torch.nn.functional.normalize(torch.randn(num_nodes, EMBED_DIM), dim=1)
            feats = feats.to(device)
            difference = max_output_difference(model, edge_model, feats)
            if difference > SAME_OUTPUT_ATOL:
                raise SystemExit(f"{name} n={num_nodes}: outputs differ by {difference:.2e}")
            for scope, make_step in (("mpn", mpn_step), ("attention", attention_step)):
                dense, edges = median_seconds_side_by_side(
                    [make_step(model, feats, device), make_step(edge_model, feats, device)],
                    args.repeats)
                print(f"{name:<6} {num_layers:>6} {num_heads:>5} {num_nodes:>5} {scope:<9} "
                      f"{dense * 1e3:>9.2f} {edges * 1e3:>9.2f} {edges / dense:>11.2f} "
                      f"{difference:>10.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
