"""Recall@K: the fraction of queries with a same-label item among their K nearest.

Pure functions of tensors; they run on the device the embeddings are on.
The rule and its tie-breaking are those of ``evaluation.ranking``.
"""
from evaluation.ranking import same_label_hits
from evaluation.scores import NegativeCosine, SquaredEuclidean

# Queries per block: a block holds block_size x num_items float32 scores
# (about 120 MB at Stanford Online Products scale).
DEFAULT_BLOCK_SIZE = 512


def recall_at_k(embeddings, labels, ks, block_size=DEFAULT_BLOCK_SIZE):
    """Recall@K of every embedding against all others (CUB, Cars, SOP).

    Nearest neighbours by Euclidean distance as the authors'
    ``assign_by_euclidian_at_k``; the query itself is excluded by its index.
    Embeddings need not be unit length. Returns ``{K: fraction}``.
    """
    hits = same_label_hits(SquaredEuclidean, embeddings, labels, ks, block_size)
    return _fractions(hits, ks)


def inshop_recall_at_k(query, query_labels, gallery, gallery_labels, ks,
                       block_size=DEFAULT_BLOCK_SIZE, query_self=None):
    """In-Shop Recall@K of queries against the gallery by cosine similarity.

    A query is a hit at K when fewer than K other-label gallery items score
    strictly higher than its best-scoring same-label item, both vectors
    normalised as ``x / sqrt(sum x^2 + 1e-12)`` (the authors' rule).
    ``query_self`` (per query, the gallery index of its own image, or -1)
    keeps a query that is also a gallery item from matching itself.
    Returns ``{K: fraction}``.
    """
    hits = same_label_hits(NegativeCosine, gallery, gallery_labels, ks, block_size,
                           queries=query, query_labels=query_labels, query_self=query_self)
    return _fractions(hits, ks)


def _fractions(hits, ks):
    """Hit counts over the number of queries, as the authors' mean of 0/1 values."""
    counts = hits.sum(0).tolist()
    return {int(k): count / len(hits) for k, count in zip(ks, counts)}
