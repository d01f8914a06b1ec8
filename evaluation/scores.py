"""The two ways a query scores items: Euclidean distance and cosine similarity.

Each is a *score, lower is closer*, computed blockwise in float32 by one
matrix product, with a bound on the float32 error of every entry and an
exact (float64) score for the few pairs whose order the bound leaves open
(see ``evaluation.ranking``). A score object holds its queries and items,
already sorted by the caller; blocks are addressed by row and column slices.

Error bounds follow Higham's bound for a float32 dot product of length ``n``
summed in any order: ``|fl(a.b) - a.b| <= gamma_n sum_k |a_k b_k|`` with
``gamma_n = n u / (1 - n u)`` and ``u = 2^-24``; each bound is then doubled as
a safety factor (a library may, e.g., round an intermediate once more).
"""
import contextlib

import torch

FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
SAFETY_FACTOR = 2.0
# The authors' l2_norm adds 1e-12 under the square root (evaluation/recall_inshop.py).
INSHOP_NORM_EPS = 1e-12
# Float64 re-scoring of candidate pairs works in chunks of this many vector elements.
EXACT_CHUNK_ELEMENTS = 1 << 18


def gamma(num_terms):
    """Higham's ``gamma_n`` for float32."""
    nu = num_terms * FLOAT32_UNIT_ROUNDOFF
    return nu / (1.0 - nu)


@contextlib.contextmanager
def ieee_float32_matmul():
    """Run float32 products in full precision (no TF32 or bf16 shortcuts).

    The error bounds assume IEEE float32 products; a caller that enabled TF32
    for training would otherwise push near-ties beyond the bound.
    """
    previous_precision = torch.get_float32_matmul_precision()
    previous_cuda_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_cuda_tf32
        torch.set_float32_matmul_precision(previous_precision)


def exact_scores(scorer, query_index, item_index, chunk_elements=EXACT_CHUNK_ELEMENTS):
    """Float64 scores of the pairs (``scorer.exact``), ``chunk_elements`` vector elements
    at a time to bound memory."""
    chunk = max(1, chunk_elements // max(1, scorer.items.shape[1]))
    pieces = [scorer.exact(query_index[start:start + chunk], item_index[start:start + chunk])
              for start in range(0, len(query_index), chunk)]
    return (torch.cat(pieces) if pieces
            else torch.empty(0, dtype=torch.float64, device=query_index.device))


def product_block(query_side, item_side, buffer=None):
    """``query_side @ item_side.T``, written into the first elements of the flat
    ``buffer`` when one is given (the result is valid until its next use)."""
    if buffer is None:
        return torch.mm(query_side, item_side.T)
    out = buffer[:len(query_side) * len(item_side)].view(len(query_side), len(item_side))
    return torch.mm(query_side, item_side.T, out=out)


class SquaredEuclidean:
    """Squared Euclidean distance, ``||q||^2 + ||x||^2 - 2 q.x`` in one product.

    Both sides are extended by two columns, ``[q, ||q||^2, 1]`` and
    ``[-2x, 1, ||x||^2]``, so a block is a single matrix product (no extra
    passes to add the norms) and its values are symmetric when the queries
    are the items, which lets ``evaluation.ranking`` compute each pair once.
    Scaling by -2 is exact in floating point.
    """

    symmetric = True

    def __init__(self, queries, items):
        self.queries, self.items = queries, items
        self.dim = items.shape[1]
        query_squared_norms = torch.linalg.vecdot(queries, queries)
        item_squared_norms = (query_squared_norms if items is queries
                              else torch.linalg.vecdot(items, items))
        self.query_side = _extended(queries, 1.0, query_squared_norms, 1.0)
        self.item_side = _extended(items, -2.0, 1.0, item_squared_norms)
        largest_item_norm = item_squared_norms.max().sqrt() if len(items) else 0.0
        # The |terms| of entry (q, x) sum to at most (||q|| + ||x||)^2, and the two
        # squared norms carry gamma_d relative error each.
        self.error_bounds = (SAFETY_FACTOR * 2.0 * gamma(self.dim + 2)
                             * (query_squared_norms.sqrt() + largest_item_norm) ** 2)

    def block(self, rows, columns=slice(None), buffer=None):
        return product_block(self.query_side[rows], self.item_side[columns], buffer)

    def exact(self, query_index, item_index):
        """Squared distances of the pairs in float64, differences first (no cancellation).

        In place on one float64 copy (``index_select`` gathers rows faster
        than indexing); the values are those of ``((q - x) ** 2).sum(1)``.
        """
        differences = self.queries.index_select(0, query_index).double()
        differences.sub_(self.items.index_select(0, item_index))
        return differences.square_().sum(1)


def _extended(vectors, scale, first_extra_column, second_extra_column):
    """``[scale * vectors, first, second]`` built in one allocation."""
    num_vectors, dim = vectors.shape
    extended = torch.empty(num_vectors, dim + 2, dtype=vectors.dtype, device=vectors.device)
    torch.mul(vectors, scale, out=extended[:, :dim])
    extended[:, dim] = first_extra_column
    extended[:, dim + 1] = second_extra_column
    return extended


def inshop_l2_normalize(vectors):
    """The authors' ``x / sqrt(sum x^2 + 1e-12)``, in the dtype of ``vectors``."""
    return vectors / torch.sqrt((vectors * vectors).sum(1, keepdim=True) + INSHOP_NORM_EPS)


class NegativeCosine:
    """``-cos(q, g)`` of vectors normalised as the authors' In-Shop code does."""

    symmetric = False

    def __init__(self, queries, items):
        self.queries, self.items = queries, items
        self.query_side = -inshop_l2_normalize(queries)
        self.item_side = inshop_l2_normalize(items)
        # A dot product of vectors of norm <= 1, plus the normalisation of both sides.
        bound = SAFETY_FACTOR * 4.0 * gamma(items.shape[1] + 4)
        self.error_bounds = torch.full((len(queries),), bound, device=queries.device)

    def block(self, rows, columns=slice(None), buffer=None):
        return product_block(self.query_side[rows], self.item_side[columns], buffer)

    def exact(self, query_index, item_index):
        queries = inshop_l2_normalize(self.queries[query_index].double())
        return -(queries * inshop_l2_normalize(self.items[item_index].double())).sum(1)
