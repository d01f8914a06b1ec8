"""Evaluation of SPEC 8: Recall@K, In-Shop Recall@K and NMI, exact and blockwise;
also MAP@R, R-precision and precision@1 (pytorch-metric-learning's definitions).

The metrics are pure functions of tensors; ``Evaluator`` is the one place
that runs a model. Nothing here imports a model module.
"""
from evaluation.embeddings import extract_embeddings
from evaluation.k_reciprocal import k_reciprocal_batches, k_reciprocal_batches_inshop
from evaluation.evaluator import Evaluator
from evaluation.metric_sets import format_metrics, metric_set
from evaluation.clustering import nmi, nmi_backend, nmi_from_clusters, resolve_kmeans_backend
from evaluation.precision_at_r import (inshop_retrieval_metrics, map_at_r, precision_at_1,
                                      r_precision, retrieval_metrics)
from evaluation.recall import inshop_recall_at_k, recall_at_k

__all__ = [
    "Evaluator",
    "extract_embeddings",
    "format_metrics",
    "inshop_recall_at_k",
    "inshop_retrieval_metrics",
    "map_at_r",
    "k_reciprocal_batches",
    "k_reciprocal_batches_inshop",
    "metric_set",
    "nmi",
    "nmi_backend",
    "nmi_from_clusters",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
    "retrieval_metrics",
    "resolve_kmeans_backend",
]
