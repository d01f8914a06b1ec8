"""The batch graph of the message passing network (SPEC 5.2).

The authors' graph generator (``thresh='no'``) keeps every ordered pair of
the batch, self-loops included, as an edge list in row-major order: edge
``k`` joins ``(k // n, k % n)``. Here the graph stays dense: the n x n
matrix ``W`` below holds the weight of edge ``k`` at ``W.view(-1)[k]``.
"""
import torch


def correlation_edge_weights(feats):
    """Pearson correlation of every pair of samples, negatives set to 0.

    Each vector is centred on its own mean over the dimensions, then the
    cosine of the centred vectors is taken. Used only with ``mult_attr: 1``,
    where it scales the attention weights. Computed in float32 even under
    autocast: it is one small n x n matrix and its values feed a product.

    Args:
        feats: (n, d) input embeddings of the batch, or (graphs, n, d) for
            a batch of graphs.

    Returns:
        (n, n) (or (graphs, n, n)) non-negative, symmetric edge weights;
        entry ``[i, j]`` is the weight of the edge between samples i and j.
    """
    with torch.autocast(device_type=feats.device.type, enabled=False):
        centred = feats.float() - feats.float().mean(dim=-1, keepdim=True)
        norms = centred.norm(dim=-1)
        # Same order of operations as the authors (product first, then divide
        # by the outer product of norms); the clamp only guards a constant
        # vector, whose correlation is undefined, against 0 / 0.
        outer_norms = norms.unsqueeze(-1) * norms.unsqueeze(-2)
        correlation = (centred @ centred.transpose(-2, -1)) / outer_norms.clamp_min(1e-24)
        return correlation.clamp_min(0.0)
