"""The one place that runs a model for evaluation; the metrics are pure functions."""
import logging
import time
from typing import NamedTuple, Optional

import torch

from evaluation.clustering import nmi, nmi_backend
from evaluation.embeddings import extract_embeddings
from evaluation.metric_sets import MetricSet, format_metrics, metric_set
from schema.options import EXTRA_METRIC_COLUMNS
from evaluation.precision_at_r import inshop_retrieval_metrics, retrieval_metrics
from evaluation.recall import DEFAULT_BLOCK_SIZE, inshop_recall_at_k, recall_at_k
from evaluation.refinement import all_against_all_graphs, query_gallery_graphs, refine_first_nodes

logger = logging.getLogger(__name__)


class EmbeddedSplit(NamedTuple):
    """One embedded split in dataset-index order; ``indices`` say which dataset
    items they are (a skipped broken image leaves a gap)."""

    embeddings: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor


class LastEvaluation(NamedTuple):
    """What the latest ``evaluate`` embedded: ``queries`` against ``gallery``
    (In-Shop, a table with queries), or ``gallery`` against itself (``queries``
    is None). ``query_self``: per query, the gallery row of its own image, or -1."""

    gallery: EmbeddedSplit
    queries: Optional[EmbeddedSplit] = None
    query_self: Optional[torch.Tensor] = None


class Evaluator:
    """Embeds the test set(s) with the backbone and computes the metrics of SPEC 8.

    Embeddings are put in dataset-index order, so the metrics, NMI's k-means
    included, do not depend on the loader's order. For several processes:
    ``gather(embeddings, labels, indices)`` returns the three tensors
    concatenated over all processes (indices a DistributedSampler duplicated
    to pad its shards are dropped afterwards), and ``share(compute)`` runs
    ``compute()`` on one process and returns its result on all of them.
    ``extra_metrics`` (names of ``EXTRA_METRIC_COLUMNS``) are reported after the
    dataset's own, in that order. ``should_stop()`` (asked after every
    embedding batch, the same number of times on every process) stops the
    evaluation with ``RunInterrupted``.
    ``last`` keeps the embeddings of the latest evaluation (a ``LastEvaluation``)
    so that pictures can be drawn without embedding again.
    """

    def __init__(self, protocol, device, autocast_dtype=None, block_size=DEFAULT_BLOCK_SIZE,
                 nmi_seed=0, gather=None, share=None, output_option="plain", extra_metrics=(),
                 kmeans_backend=None, should_stop=None):
        """``protocol``: a ``MetricSet`` (a run's: ``RunRecipe.metric_set``) or the name of a paper dataset's."""
        self.metric_set = protocol if isinstance(protocol, MetricSet) else metric_set(protocol)
        self.device = torch.device(device)
        self.autocast_dtype = autocast_dtype
        self.block_size = block_size
        self.nmi_seed = nmi_seed
        # The k-means back end of NMI ('sklearn' or 'faiss'); None: nmi_backend().
        self.kmeans_backend = nmi_backend() if kmeans_backend is None else kmeans_backend
        self.gather = gather
        self.share = share
        self.output_option = output_option
        self.extra_metrics = tuple(extra_metrics)
        self.should_stop = should_stop
        self._backend_logged = False
        self.last = None
        # pseudo_test: ``last`` with the MPN-refined embeddings in place of the backbone's (refined split).
        self.last_refined = None

    def evaluate(self, model, loader=None, query_loader=None, gallery_loader=None, query_in_gallery=None):
        """``{'R@1': fraction, ..., 'NMI': fraction}``.

        Queries against a gallery take ``query_loader`` and ``gallery_loader``
        (and ``query_in_gallery``: per query dataset index, the gallery
        dataset index of the same image or -1; that item is never the
        query's neighbour), all against all takes ``loader``.
        """
        self.last = self.embed_test_set(model, loader, query_loader, gallery_loader, query_in_gallery)
        inputs = metric_inputs(self.last)
        compute = lambda: self._metrics_of(*inputs)  # noqa: E731
        return compute() if self.share is None else self.share(compute)

    def embed_test_set(self, model, loader=None, query_loader=None, gallery_loader=None, query_in_gallery=None):
        """The ``LastEvaluation`` of the test splits: queries and gallery, else ``loader``'s."""
        if self.metric_set.query_gallery:
            if query_loader is None or gallery_loader is None:
                raise ValueError("a query-against-gallery evaluation needs query_loader and gallery_loader")
            query = self._embed(model, query_loader)
            gallery = self._embed(model, gallery_loader)
            return LastEvaluation(gallery, query, own_gallery_rows(query, gallery, query_in_gallery))
        if loader is None:
            raise ValueError("this dataset's evaluation needs loader")
        return LastEvaluation(self._embed(model, loader))

    def evaluate_refined(self, model, mpn, options, loader=None, query_loader=None, gallery_loader=None,
                         query_in_gallery=None):
        """Backbone-only metrics, then the metrics of the MPN-refined embeddings (``pseudo_test``).

        Returns ``{'backbone': metrics, 'mpn_refined': metrics, 'seconds': {...}}``
        with the seconds of each stage. ``options`` is a
        ``evaluation.refinement.RefinementOptions``. In-Shop refines the
        queries with graphs of gallery items; the gallery stays as embedded.
        """
        started = time.perf_counter()
        self.last = self.embed_test_set(model, loader, query_loader, gallery_loader, query_in_gallery)
        embedded = metric_inputs(self.last)
        embedding_seconds = time.perf_counter() - started
        compute = lambda: self._backbone_and_refined_metrics(mpn, options, embedded)  # noqa: E731
        result = compute() if self.share is None else self.share(compute)
        result["seconds"] = {"embedding": embedding_seconds, **result["seconds"]}
        return result

    def _backbone_and_refined_metrics(self, mpn, options, embedded):
        seconds, clock = {}, time.perf_counter()

        def lap(name):
            nonlocal clock
            now = time.perf_counter()
            seconds[name], clock = now - clock, now

        backbone = self._metrics_of(*embedded)
        lap("backbone_metrics")
        logger.info("Backbone: %s", format_metrics(backbone))
        if self.metric_set.query_gallery:
            query, query_labels, gallery, gallery_labels, query_self = embedded
            graphs = query_gallery_graphs(query, gallery, options, self.block_size, query_self)
            nodes = torch.cat([query, gallery])
        else:
            nodes, labels = embedded
            graphs = all_against_all_graphs(nodes, options, self.block_size)
        lap("graphs")
        refined = refine_first_nodes(mpn, nodes, graphs, options, self.autocast_dtype)
        lap("refinement")
        refined_set = ((refined, query_labels, gallery, gallery_labels, query_self) if self.metric_set.query_gallery
                       else (refined, labels))
        self.last_refined = (self.last._replace(queries=self.last.queries._replace(embeddings=refined))
                             if self.metric_set.query_gallery
                             else self.last._replace(gallery=self.last.gallery._replace(embeddings=refined)))
        mpn_refined = self._metrics_of(*refined_set)
        lap("refined_metrics")
        logger.info("MPN-refined (%d graphs of %d): %s", len(graphs), graphs.shape[1],
                    format_metrics(mpn_refined))
        return {"backbone": backbone, "mpn_refined": mpn_refined, "seconds": seconds}

    def _metrics_of(self, *embedded):
        if self.metric_set.query_gallery:
            return self.query_gallery_metrics(*embedded)
        return self.all_against_all_metrics(*embedded)

    def all_against_all_metrics(self, embeddings, labels):
        ks = self.metric_set.recall_ks
        recalls = recall_at_k(embeddings, labels, ks, self.block_size)
        return {**{f"R@{k}": recalls[k] for k in ks}, **self._nmi(embeddings, labels),
                **self._extra(retrieval_metrics, embeddings, labels)}

    def query_gallery_metrics(self, query, query_labels, gallery, gallery_labels, query_self=None):
        """``query_self``: per query, the gallery row of its own image (never its neighbour), or -1."""
        ks = self.metric_set.recall_ks
        recalls = inshop_recall_at_k(query, query_labels, gallery, gallery_labels, ks,
                                     self.block_size, query_self)
        # NMI clusters each test image once: a query that is also a gallery item counts as the gallery item.
        only_query = torch.ones(len(query), dtype=torch.bool) if query_self is None else query_self.cpu() < 0
        test_set = (torch.cat([query[only_query.to(query.device)], gallery]),
                    torch.cat([query_labels[only_query.to(query_labels.device)], gallery_labels]))
        return {**{f"R@{k}": recalls[k] for k in ks}, **self._nmi(*test_set),
                **self._extra(inshop_retrieval_metrics, query, query_labels, gallery, gallery_labels,
                              query_self=query_self)}

    def _extra(self, compute, *test_set, **options):
        """The requested ones of MAP@R, R-precision and P@1 (computed together), or {}."""
        if not self.extra_metrics:
            return {}
        values = compute(*test_set, block_size=self.block_size, **options)
        return {EXTRA_METRIC_COLUMNS[name]: values[EXTRA_METRIC_COLUMNS[name]] for name in self.extra_metrics}

    def _nmi(self, embeddings, labels):
        """``{'NMI': value}`` with as many k-means clusters as test classes, or {} if not reported."""
        if not self.metric_set.with_nmi:
            return {}
        if not self._backend_logged:
            logger.info("NMI: k-means by %s", self.kmeans_backend)
            self._backend_logged = True
        return {"NMI": nmi(embeddings, labels, seed=self.nmi_seed, backend=self.kmeans_backend)}

    def _embed(self, model, loader):
        embeddings, labels, indices = extract_embeddings(model, loader, self.device,
                                                         self.autocast_dtype, self.output_option,
                                                         self.should_stop)
        if self.gather is not None:
            embeddings, labels, indices = self.gather(embeddings, labels, indices)
        return in_index_order(embeddings, labels, indices)


def metric_inputs(embedded):
    """``(embeddings, labels)``, or ``(query, query_labels, gallery, gallery_labels, query_self)``."""
    if embedded.queries is None:
        return tuple(embedded.gallery[:2])
    return (*embedded.queries[:2], *embedded.gallery[:2], embedded.query_self)


def own_gallery_rows(query, gallery, query_in_gallery):
    """Per embedded query, the row of the embedded gallery that holds its own image, or -1.

    ``query_in_gallery`` maps query dataset indices to gallery dataset indices
    (-1: not in the gallery); None means the two sets share no image. A
    gallery image that was skipped (broken) is no row.
    """
    if query_in_gallery is None:
        return None
    wanted = torch.as_tensor(query_in_gallery, dtype=torch.int64)[query.indices.cpu()]
    gallery_indices = gallery.indices.cpu()
    rows = torch.searchsorted(gallery_indices, wanted.clamp(min=0)).clamp(max=max(len(gallery_indices) - 1, 0))
    found = (wanted >= 0) & (len(gallery_indices) > 0)
    if len(gallery_indices):
        found &= gallery_indices[rows] == wanted
    return torch.where(found, rows, -1)


def in_index_order(embeddings, labels, indices):
    """An ``EmbeddedSplit`` sorted by dataset index, each index kept once."""
    indices, order = torch.sort(indices, stable=True)
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    order = order[first]
    return EmbeddedSplit(embeddings[order], labels[order], indices[first])
