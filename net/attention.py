"""Multi-head dot-product attention over the complete batch graph (SPEC 5.3).

The authors compute it on an edge list of all n^2 ordered pairs with scatter
operations; on a complete graph that is the same as dense batched attention
over the n x n score matrix of each head, which is what this file does.
Index convention: ``[..., i, j]`` is the message from source j (key, value)
to target i (query).
"""
import math

import torch
from torch import nn

# The attention dropout of the authors is fixed, not read from the config.
ATTENTION_DROPOUT = 0.1

# Quirk (the released weights depend on it): the authors' softmax puts one
# extra constant score, the null logit, in every node's denominator and
# throws its share away, so a node's attention weights sum to less than 1.
NULL_LOGIT = 0.0

# Bound on the (targets x n x d) tensor of weighted messages that the max
# aggregator needs; larger batches are reduced in blocks of targets.
MAX_AGGREGATION_ELEMENTS = 2 ** 25


def null_logit_softmax(scores):
    """Attention weights a_ij = exp(s_ij) / (sum_j exp(s_ij) + exp(null_logit)).

    A softmax over the n scores of each row plus the null logit, without the
    null logit's own share. The shift m_i = max(null_logit, max_j s_ij) only
    keeps the exponentials in range; it does not change the value.

    Args:
        scores: (..., n_targets, n_sources) scores s_ij.

    Returns:
        weights of the same shape; each row sums to Z / (exp(0) + Z) < 1.
    """
    shift = scores.amax(dim=-1, keepdim=True).clamp_min(NULL_LOGIT)
    exp_scores = torch.exp(scores - shift)
    exp_null_logit = torch.exp(NULL_LOGIT - shift)
    return exp_scores / (exp_scores.sum(dim=-1, keepdim=True) + exp_null_logit)


def aggregate_add(weights, values):
    """sum_j a_ij v_j: (..., H, n, n) weights, (..., H, n, d) values -> (..., H, n, d)."""
    return weights @ values


def aggregate_mean(weights, values):
    """The authors' scatter_mean over the incoming edges of each node.

    On the complete graph (self-loops included) every node has exactly n
    incoming edges, so the mean of the weighted messages is their sum / n.
    """
    return (weights @ values) / weights.shape[-1]


def aggregate_max(weights, values):
    """The authors' scatter_max: per channel, max_j a_ij v_j.

    On the complete graph every node receives n messages, so the channel-wise
    maximum of the n weighted messages is taken (it may be negative).
    Targets are processed in blocks so that the weighted messages never
    exceed ``MAX_AGGREGATION_ELEMENTS`` entries. Leading dimensions (a
    batch of graphs) pass through.
    """
    # A block of b targets weighs b x values.numel() messages.
    block = max(1, MAX_AGGREGATION_ELEMENTS // max(1, values.numel()))
    return torch.cat([
        (weights_block.unsqueeze(-1) * values.unsqueeze(-3)).amax(dim=-2)
        for weights_block in weights.split(block, dim=-2)
    ], dim=-2)


AGGREGATORS = {"add": aggregate_add, "mean": aggregate_mean, "max": aggregate_max}


class MultiHeadDotProduct(nn.Module):
    """Attention of SPEC 5.3, parameter names of the authors' module.

    q, k, v: Linear d -> d split into ``num_heads`` heads of d / H channels
    (head h uses channels [h*d/H, (h+1)*d/H)); s_ij = <q_i, k_j> / sqrt(d/H);
    null-logit weights; dropout 0.1; times the edge weight when given; the
    aggregated heads are concatenated and go through the Linear ``out``.
    """

    def __init__(self, embed_dim, num_heads, aggregator):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.aggregate = AGGREGATORS[aggregator]
        # Registration order q, v, k, out is the authors' state_dict order.
        self.q_linear = nn.Linear(embed_dim, embed_dim)
        self.v_linear = nn.Linear(embed_dim, embed_dim)
        self.k_linear = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(ATTENTION_DROPOUT)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        for linear in (self.q_linear, self.v_linear, self.k_linear, self.out):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, feats, edge_weights=None):
        """(n, d) node features -> (n, d) attention output; a batch of
        graphs of the same size, (graphs, n, d), gives (graphs, n, d).

        Args:
            feats: (n, d) or (graphs, n, d) node features.
            edge_weights: optional (n, n) or (graphs, n, n) weights that
                multiply the attention weights after dropout (``mult_attr``).
        """
        return self.attend_heads(*self.project(feats, feats), edge_weights, feats.dtype)

    def project(self, targets, sources):
        """``(queries, keys, values)``, split into heads: the queries of the ``targets``
        rows (..., H, t, d/H), the keys and values of the ``sources`` rows (..., H, n, d/H)."""
        return (self._split_heads(self.q_linear(targets)), self._split_heads(self.k_linear(sources)),
                self._split_heads(self.v_linear(sources)))

    def project_items(self, items):
        """``(queries, keys, values)`` of every item, (n_items, d) each: row-wise maps,
        computed once per item and gathered into graphs by ``gather_heads``."""
        return self.q_linear(items), self.k_linear(items), self.v_linear(items)

    def gather_heads(self, item_projections, targets, sources):
        """``project`` of graphs from ``project_items``: the queries of the items
        ``targets`` (graphs, t), the keys and values of ``sources`` (graphs, n).

        Each gather writes (graphs, H, rows, d/H) in that memory order, so the
        attention's products read them without a copy.
        """
        def gather(per_item, index):
            head_rows = per_item.reshape(-1, self.head_dim)  # row item * H + head
            heads = torch.arange(self.num_heads, device=index.device)[:, None]
            flat = (index[:, None, :] * self.num_heads + heads).reshape(-1)
            return head_rows.index_select(0, flat).view(len(index), self.num_heads, index.shape[1], self.head_dim)

        queries, keys, values = item_projections
        return gather(queries, targets), gather(keys, sources), gather(values, sources)

    def attend_heads(self, queries, keys, values, edge_weights, dtype):
        """(..., H, t, d/H) queries of t targets, (..., H, n, d/H) keys and values of
        the n nodes -> (..., t, d) attention output of the targets, via ``dtype``.

        ``edge_weights`` is None or (..., t, n): the targets' rows of the
        edge weights.
        """
        # Scores, weights and sums in float32 even under autocast: the scores
        # of large-norm features overflow float16 (max 65504).
        with torch.autocast(device_type=queries.device.type, enabled=False):
            messages = self.attend(queries.float(), keys.float(), values.float(), edge_weights)
        return self.out(self._merge_heads(messages.to(dtype)))

    def attend(self, queries, keys, values, edge_weights):
        """(..., H, t, d/H) queries of t targets, (..., H, n, d/H) keys and values
        -> (..., H, t, d/H) aggregated messages."""
        scores = queries @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)
        weights = self.dropout(null_logit_softmax(scores))
        if edge_weights is not None:
            weights = weights * edge_weights.unsqueeze(-3)
        return self.aggregate(weights, values)

    def _split_heads(self, feats):
        """(..., n, d) -> (..., H, n, d/H)."""
        return feats.view(*feats.shape[:-1], self.num_heads, self.head_dim).transpose(-3, -2)

    def _merge_heads(self, feats):
        """(..., H, n, d/H) -> (..., n, d)."""
        merged = feats.transpose(-3, -2)
        return merged.reshape(*merged.shape[:-2], self.num_heads * self.head_dim)
