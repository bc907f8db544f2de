"""k-nearest-neighbour classification with split queries and split training samples.

The training chunks and their labels visit every rank in turn
(:func:`torchheat.pairwise.chunks`: each rank's chunk is broadcast by its owner); every rank
keeps, for each of its query rows, the ``k`` nearest training samples seen so far. A chunk
is searched in blocks of ``256 x 1024`` query/training pairs that stay in cache, two ops each:
one matmul gives ``|t|^2 - 2 q . t`` (the ranking of ``|q - t|^2`` along a query row), and
one reduction writes the minima of the block's 64 strided groups of 16 columns into a table of
the chunk's group minima. The ``k`` groups of smallest minima hold a query's ``k`` nearest
rows of the chunk: their ``16 k`` squared distances are computed exactly from the
differences, and one top-k merges them into the running best.
No rank holds more than its queries, one training chunk, one block, the group minima of a
block of queries and ``16 k`` candidates per query; labels travel with the chunks, so the
vote is local to the query's rank.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [1.], [2.], [10.], [11.]]), split=0)
>>> y = th.distribute(torch.tensor([0, 0, 0, 1, 1]), split=0)
>>> knn = th.neighbors.KNeighborsClassifier(n_neighbors=3).fit(x, y)
>>> knn.predict(th.distribute(torch.tensor([[1.5], [9.]]), split=0)).full().tolist()
[0, 1]
"""
from __future__ import annotations

import numbers

import torch

from ..base import BaseEstimator, check_is_fitted
from ..pairwise import chunks
from ..tensor import DistTensor, wrap
from ..validation import check_array, check_n_features, check_targets, replicated, rows_like

__all__ = ["KNeighborsClassifier"]

_QUERIES, _COLUMNS, _GROUPS = 256, 1024, 16  # a block of query/training pairs (2 MB in float64), its column groups


def _rows_like(q, local: torch.Tensor) -> torch.Tensor:
    """A plain per-query-row result laid out like the query rows ``q``."""
    if not isinstance(q, DistTensor):
        return local
    return wrap(local, q.split_dim, q.comm, (q.shape[0],) + tuple(local.shape[1:]), q.counts)


def _candidates(queries: torch.Tensor, rows: torch.Tensor, norms: torch.Tensor, k: int, d: torch.Tensor):
    """Columns of ``rows`` holding the ``k`` nearest rows of every query, ``(n, G k)``, and a
    mask of the real ones (the last block is padded).

    The chunk is searched in blocks of ``_COLUMNS`` rows; a block's columns fall into
    ``width`` groups of ``G`` columns ``c, c + width, ...``, whose minima of ``|t|^2 - 2 q . t``
    (one matmul into the reused block ``d``, one reduction) go into a table of the chunk's
    group minima. The ``k`` groups of smallest minima hold the ``k`` smallest entries of a row."""
    n, m = queries.shape[0], rows.shape[0]
    width = d.shape[1] // _GROUPS
    blocks = -(-m // d.shape[1])
    d, minima = d[:n], d.new_empty(n, blocks * width)
    for b in range(blocks):
        j = b * d.shape[1]
        cols = min(d.shape[1], m - j)
        torch.addmm(norms[j:j + cols], queries, rows[j:j + cols].T, alpha=-2, out=d[:, :cols])
        d[:, cols:] = float("inf")  # past the chunk's end: never a minimum
        torch.amin(d.view(n, _GROUPS, width), 1, out=minima[:, b * width:(b + 1) * width])
    groups = torch.topk(minima, min(k, minima.shape[1]), dim=1, largest=False, sorted=False).indices
    offsets = torch.arange(0, d.shape[1], width, device=d.device)
    columns = (groups.div(width, rounding_mode="floor") * d.shape[1] + groups.remainder(width))[:, :, None] + offsets
    columns = columns.view(n, -1)
    return columns.clamp(max=m - 1), columns < m


class KNeighborsClassifier(BaseEstimator):
    """Classifier voting among the ``n_neighbors`` nearest training samples (Euclidean).

    Parameters
    ----------
    n_neighbors : int, default 5
    weights : {"uniform", "distance"}, default "uniform"
        Equal votes, or votes weighted by inverse distance (an exact match takes all).

    Attributes
    ----------
    classes_ : Tensor (n_classes,)
    n_samples_fit_ : int

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0., 0.], [0., 1.], [5., 5.]]), split=0)
    >>> knn = th.neighbors.KNeighborsClassifier(1).fit(x, torch.tensor([3, 3, 7]))
    >>> knn.predict_proba(torch.tensor([[4., 4.]])).tolist()
    [[0.0, 1.0]]
    """

    def __init__(self, n_neighbors=5, *, weights="uniform"):
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X, y):
        """Keep the training samples (split along axis 0) and their labels; returns self."""
        k = self.n_neighbors
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"Expected n_neighbors > 0. Got {k!r}")
        if self.weights not in ("uniform", "distance"):
            raise ValueError(f"weights={self.weights!r} is not supported (expected 'uniform' or 'distance')")
        x = check_array(X)
        y = check_targets(x, y)
        check_n_features(self, x, reset=True)
        self.classes_ = replicated(torch.unique(y))
        self._fit_x = x
        self._fit_codes = rows_like(torch.searchsorted(self.classes_, y), x)  # (its chunks are x's)
        self.n_samples_fit_ = x.shape[0]
        return self

    def _search(self, X, n_neighbors):
        """The query rows (checked) and, for this rank's ones, the squared distances, global
        indices and class codes of their ``k`` nearest training samples, nearest first."""
        check_is_fitted(self, "classes_")
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if k > self.n_samples_fit_:
            raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, n_samples_fit = "
                             f"{self.n_samples_fit_}, n_samples = {self.n_samples_fit_}")
        q = check_array(X)
        check_n_features(self, q, reset=False)
        q = q.to(self._fit_x.dtype)
        local = q.local if isinstance(q, DistTensor) else q
        n = local.shape[0]
        best_d = local.new_full((n, k), float("inf"))
        # a neighbour's tag is its global index times the number of classes plus its class code
        best_t = torch.zeros(n, k, dtype=torch.int64, device=local.device)
        n_classes = self.classes_.shape[0]
        block = local.new_empty(min(n, _QUERIES), _GROUPS * max(1, _COLUMNS // _GROUPS))
        for (start, rows), (_, codes) in zip(chunks(self._fit_x), chunks(self._fit_codes)):
            norms = (rows * rows).sum(1)
            tags = torch.arange(start, start + rows.shape[0], device=codes.device) * n_classes + codes
            for i in range(0, n, _QUERIES):
                queries, top = local[i:i + _QUERIES], slice(i, i + _QUERIES)
                columns, real = _candidates(queries, rows, norms, k, block)
                # the candidates' squared distances from their differences: exact, not the matmul form
                found = (rows[columns] - queries[:, None]).square_().sum(2).masked_fill_(~real, float("inf"))
                merged = torch.topk(torch.cat([best_d[top], found], 1), k, dim=1, largest=False, sorted=True)
                best_t[top] = torch.cat([best_t[top], tags[columns]], 1).gather(1, merged.indices)
                best_d[top] = merged.values
        best_i, best_c = best_t.div(n_classes, rounding_mode="floor"), best_t.remainder(n_classes)
        return q, best_d, best_i, best_c

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Distances and global indices of the nearest training samples of every query row,
        ``(n_queries, n_neighbors)`` each, nearest first (laid out like ``X``'s rows)."""
        q, dist, index, _ = self._search(X, n_neighbors)
        index = _rows_like(q, index)
        return (_rows_like(q, dist.sqrt_()), index) if return_distance else index

    def _proba(self, X):
        """The query rows and this rank's rows of their class probabilities (plain)."""
        q, dist, _, codes = self._search(X, None)
        if self.weights == "uniform":
            votes = torch.ones_like(dist)
        else:
            dist = dist.sqrt_()
            exact = dist == 0
            votes = torch.where(exact.any(1, keepdim=True), exact.to(dist.dtype), 1 / torch.where(exact, 1, dist))
        proba = torch.zeros(dist.shape[0], self.classes_.shape[0], dtype=dist.dtype, device=dist.device)
        proba.scatter_add_(1, codes, votes)
        return q, proba / proba.sum(1, keepdim=True)

    def predict_proba(self, X):
        """Class probabilities of every query row, ``(n_queries, n_classes)``."""
        q, proba = self._proba(X)
        return _rows_like(q, proba)

    def predict(self, X):
        """The class of every query row (laid out like ``X``'s rows)."""
        q, proba = self._proba(X)
        return _rows_like(q, self.classes_.to(proba.device)[proba.argmax(1)])

    def score(self, X, y):
        """Mean accuracy on ``X`` and ``y``."""
        y = torch.as_tensor(y) if not isinstance(y, torch.Tensor) else y
        return float((self.predict(X) == y).to(torch.float64).mean())
