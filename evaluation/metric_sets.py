"""Which metrics each dataset reports (SPEC 8), and how they are printed."""
from dataclasses import dataclass, replace

from utils.errors import UserInputError


@dataclass(frozen=True)
class MetricSet:
    """``recall_ks``: the K of Recall@K; ``query_gallery``: In-Shop's
    query-against-gallery protocol instead of all-against-all."""

    recall_ks: tuple
    with_nmi: bool
    query_gallery: bool = False

    @property
    def distance(self):
        """What the protocol ranks by: In-Shop's cosine for queries against a gallery, else Euclidean distance."""
        return "cosine" if self.query_gallery else "euclidean"

    def with_recall_ks(self, recall_ks):
        """This set with the K of ``eval_params.recall_at``, or unchanged for None."""
        return self if recall_ks is None else replace(self, recall_ks=tuple(recall_ks))


METRIC_SETS = {
    "cub": MetricSet(recall_ks=(1, 2, 4, 8), with_nmi=True),
    "cars": MetricSet(recall_ks=(1, 2, 4, 8), with_nmi=True),
    "demo": MetricSet(recall_ks=(1, 2, 4, 8), with_nmi=True),
    # The authors skip NMI for SOP and In-Shop; we report it for every dataset (SPEC 8),
    # for In-Shop over its whole test set (queries and gallery together).
    "sop": MetricSet(recall_ks=(1, 10, 100, 1000), with_nmi=True),
    "in_shop": MetricSet(recall_ks=(1, 10, 20, 30, 40), with_nmi=True, query_gallery=True),
}


# A table's test set gets SOP's K from this gallery size on, CUB's below it.
LARGE_GALLERY = 10_000


def table_metric_set(gallery_size, query_gallery):
    """A table's metrics: Recall@K with K for its size, NMI, and its queries against its gallery if it has them."""
    recall_ks = METRIC_SETS["sop" if gallery_size >= LARGE_GALLERY else "cub"].recall_ks
    return MetricSet(recall_ks=recall_ks, with_nmi=True, query_gallery=query_gallery)


def metric_set(dataset_short):
    """The metrics of a dataset, by its ``dataset.dataset_short`` name."""
    if dataset_short not in METRIC_SETS:
        raise UserInputError(f"dataset.dataset_short is {dataset_short!r}, which has no evaluation "
                             f"protocol; use one of {', '.join(METRIC_SETS)}.")
    return METRIC_SETS[dataset_short]


def format_metrics(metrics):
    """One line in percent, e.g. ``R@1 70.29 | R@2 80.31 | NMI 73.21``."""
    return " | ".join(f"{name} {100.0 * value:.2f}" for name, value in metrics.items())
