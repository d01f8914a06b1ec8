"""Evaluation of SPEC 8: Recall@K, In-Shop Recall@K and NMI, exact and blockwise.

The metrics are pure functions of tensors; ``Evaluator`` is the one place
that runs a model. Nothing here imports a model module.
"""
from evaluation.embeddings import extract_embeddings
from evaluation.k_reciprocal import k_reciprocal_batches, k_reciprocal_batches_inshop
from evaluation.evaluator import Evaluator
from evaluation.metric_sets import format_metrics, metric_set
from evaluation.clustering import nmi, nmi_backend, nmi_from_clusters
from evaluation.recall import inshop_recall_at_k, recall_at_k

__all__ = [
    "Evaluator",
    "extract_embeddings",
    "format_metrics",
    "inshop_recall_at_k",
    "k_reciprocal_batches",
    "k_reciprocal_batches_inshop",
    "metric_set",
    "nmi",
    "nmi_backend",
    "nmi_from_clusters",
    "recall_at_k",
]
