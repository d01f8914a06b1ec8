"""NMI between k-means clusters of the embeddings and the class labels.

As the authors: k-means with as many clusters as classes, then
``sklearn.metrics.normalized_mutual_info_score`` (arithmetic mean). Their
``KMeans(nb_clusters)`` is unseeded; ours is seeded. Two k-means back ends,
swappable without touching the metric: scikit-learn (the authors' library,
which they ran on CUB and Cars; far slower at SOP scale) and faiss
(``pip install faiss-cpu``), which finishes at Stanford Online Products
scale (11,316 clusters, 60,502 points: minutes, see
``benchmarks/evaluation.py``). ``eval_params.kmeans`` picks one
(``resolve_kmeans_backend``). k-means finds different local optima per back
end and seed, so NMI moves by a few points between them: logs and
``metrics.json`` name the back end.
"""
import importlib.util
import logging

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from utils.errors import UserInputError

logger = logging.getLogger(__name__)

BACKENDS = ("faiss", "sklearn")
# eval_params.kmeans: 'paper' is the authors' scikit-learn where they computed
# NMI (CUB, Cars; the demo is scored like CUB) and 'auto' where they did not
# (SOP, In-Shop), since scikit-learn does not finish there in useful time.
KMEANS_CHOICES = ("paper", "sklearn", "faiss", "auto")
PAPER_SKLEARN_DATASETS = ("cub", "cars", "demo")
# Both back ends start from k-means++ and keep the best of KMEANS_RESTARTS
# runs, the defaults of the authors' scikit-learn KMeans, up to
# MAX_CLUSTERS_FOR_RESTARTS clusters; beyond that one run, since every
# restart costs a whole k-means at SOP scale (11,316 clusters).
KMEANS_RESTARTS = 10
MAX_CLUSTERS_FOR_RESTARTS = 1000
# Lloyd iterations per faiss run (faiss's default; it has no tolerance test).
FAISS_ITERATIONS = 25


def nmi_backend():
    """The k-means back end ``nmi`` uses by default ('auto'): 'faiss' if importable, else 'sklearn'."""
    return "faiss" if faiss_available() else "sklearn"


def resolve_kmeans_backend(choice, dataset_short):
    """The back end ('sklearn' or 'faiss') that ``eval_params.kmeans: choice`` means for a dataset."""
    if choice == "paper":
        choice = "sklearn" if dataset_short in PAPER_SKLEARN_DATASETS else "auto"
    if choice == "auto":
        return nmi_backend()
    if choice == "faiss" and not faiss_available():
        raise UserInputError("eval_params.kmeans is 'faiss' but faiss is not installed; run "
                             "`pip install faiss-cpu` or set eval_params.kmeans to sklearn, auto or paper.")
    if choice not in BACKENDS:
        raise ValueError(f"unknown eval_params.kmeans {choice!r}; expected one of {KMEANS_CHOICES}")
    return choice


def faiss_available():
    return importlib.util.find_spec("faiss") is not None


def nmi_from_clusters(cluster_labels, labels):
    """NMI (arithmetic mean) of given cluster assignments against the labels."""
    return float(normalized_mutual_info_score(_to_numpy(cluster_labels), _to_numpy(labels),
                                              average_method="arithmetic"))


def nmi(embeddings, labels, n_clusters=None, seed=0, backend=None):
    """k-means of ``embeddings``, then NMI against ``labels``.

    ``n_clusters`` defaults to the number of classes, ``backend`` ('faiss' or
    'sklearn') to ``nmi_backend()``.
    """
    labels = _to_numpy(labels)
    n_clusters = len(np.unique(labels)) if n_clusters is None else n_clusters
    backend = nmi_backend() if backend is None else backend
    points = np.ascontiguousarray(_to_numpy(embeddings), dtype=np.float32)
    cluster_labels = kmeans(points, n_clusters, seed, backend)
    return nmi_from_clusters(cluster_labels, labels)


def kmeans(points, n_clusters, seed, backend):
    """Cluster index of every row of the float32 array ``points``."""
    if backend == "faiss":
        return _faiss_kmeans(points, n_clusters, seed)
    if backend == "sklearn":
        return _sklearn_kmeans(points, n_clusters, seed)
    raise ValueError(f"unknown k-means backend {backend!r}; expected one of {BACKENDS}")


def _faiss_kmeans(points, n_clusters, seed):
    if not faiss_available():
        raise UserInputError("The NMI backend 'faiss' is not installed; run "
                             "`pip install faiss-cpu` or use the backend 'sklearn'.")
    import faiss

    # Cluster every point (faiss would subsample above 256 points per
    # centroid) and accept few points per centroid: a handful of images per
    # class is normal in retrieval test sets (SOP), not a reason to warn.
    clustering = faiss.Kmeans(points.shape[1], n_clusters, niter=FAISS_ITERATIONS,
                              nredo=_restarts(n_clusters), seed=seed,
                              init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
                              min_points_per_centroid=1, max_points_per_centroid=len(points),
                              verbose=False)
    clustering.train(points)
    _, assignment = clustering.index.search(points, 1)
    return assignment[:, 0]


def _sklearn_kmeans(points, n_clusters, seed):
    from sklearn.cluster import KMeans

    if n_clusters > MAX_CLUSTERS_FOR_RESTARTS:
        logger.info("k-means of %d points into %d clusters with scikit-learn may take long; "
                    "`pip install faiss-cpu` makes it faster", len(points), n_clusters)
    return KMeans(n_clusters=n_clusters, n_init=_restarts(n_clusters),
                  random_state=seed).fit(points).labels_


def _restarts(n_clusters):
    return KMEANS_RESTARTS if n_clusters <= MAX_CLUSTERS_FOR_RESTARTS else 1


def _to_numpy(values):
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
