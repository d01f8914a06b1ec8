"""Test-time refinement by the MPN (the authors' ``pseudo_test``).

Each test item's graph (``evaluation.k_reciprocal``) goes through the trained
MPN in eval mode; the item's refined embedding is the first row of the
output, the item itself. Many graphs of the same size go through the MPN at
once as a ``(graphs, nodes, dim)`` batch, ``graphs_per_chunk`` at a time, on
the device of the embeddings. The MPN is a module handed in by the caller
(``net.MPN``: ``item_projections`` and ``first_node_features``).
"""
from dataclasses import dataclass

import torch
from tqdm import tqdm

from evaluation.k_reciprocal import k_reciprocal_batches, k_reciprocal_batches_inshop
from utils.errors import UserInputError

# The authors hard-code the graph size: KReciprocalSampler(1, 7) and
# KReciprocalSamplerInshop(1, 4) in data_utility.py, whatever the config says.
AUTHORS_GRAPH_SIZE = 7
AUTHORS_INSHOP_GRAPH_SIZE = 4


@dataclass(frozen=True)
class RefinementOptions:
    """``graph_size`` counts the query; None is the authors' size. ``output_option``
    is the MPN's (``eval_params.output_test_gnn``); ``concatenate`` joins the
    MPN's output features instead of taking the last (``eval_params.cat``)."""

    k1: int = 30
    graph_size: int = None
    graphs_per_chunk: int = 1024
    output_option: str = "plain"
    concatenate: bool = False

    def size(self, query_gallery):
        if self.graph_size is not None:
            return self.graph_size
        return AUTHORS_INSHOP_GRAPH_SIZE if query_gallery else AUTHORS_GRAPH_SIZE


def all_against_all_graphs(embeddings, options, block_size):
    """``[n, size]`` node indices into ``embeddings``, each item first in its graph."""
    _check_graph_size(options.size(False), len(embeddings), "test set")
    return k_reciprocal_batches(embeddings, options.size(False), options.k1, block_size)


def query_gallery_graphs(query, gallery, options, block_size, query_self=None):
    """``[num_query, size]`` node indices into ``cat([query, gallery])``: query i, then its gallery items
    (never the gallery copy of its own image, ``query_self``)."""
    has_copy = query_self is not None and bool((query_self >= 0).any())
    _check_graph_size(options.size(True) - 1, len(gallery) - has_copy, "gallery")
    gallery_items = k_reciprocal_batches_inshop(query, gallery, options.size(True), options.k1, block_size,
                                                query_self)
    own_row = torch.arange(len(query), device=gallery_items.device)[:, None]
    return torch.cat([own_row, gallery_items + len(query)], 1)


def _check_graph_size(size, num_items, what):
    if size > num_items:
        raise UserInputError(f"eval_params.graph_size asks for graphs of {size} {what} items but the {what} "
                             f"has {num_items}; set eval_params.graph_size to at most {num_items}"
                             f"{' + 1' if what == 'gallery' else ''}.")


def refine_first_nodes(mpn, nodes, graphs, options, autocast_dtype=None):
    """``[len(graphs), dim']``: the MPN's refined embedding of the first node of every graph.

    ``nodes`` holds the node embeddings, ``graphs`` indexes them (one row per
    graph). Only the first row of every graph is computed
    (``MPN.first_node_features``), and the maps that see one node at a time
    once per node embedding (``MPN.item_projections``). The MPN runs in eval
    mode without gradients and goes back to its previous mode afterwards.
    """
    device = nodes.device
    was_training = mpn.training
    mpn.eval()
    refined = []
    try:
        with torch.no_grad():
            with _autocast(device, autocast_dtype):
                item_projections = mpn.item_projections(nodes)
            for chunk in tqdm(graphs.split(options.graphs_per_chunk), desc="refining", leave=False,
                              disable=None):
                with _autocast(device, autocast_dtype):
                    features = mpn.first_node_features(nodes, item_projections, chunk.to(device),
                                                       output_option=options.output_option)
                chosen = torch.cat(features, dim=-1) if options.concatenate else features[-1]
                refined.append(chosen.float())
    finally:
        mpn.train(was_training)
    return torch.cat(refined)


def _autocast(device, dtype):
    """Mixed precision as the evaluation of the backbone, or none when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
