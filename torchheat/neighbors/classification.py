"""k-nearest-neighbour classification with split queries and split training samples.

The training chunks visit every rank in turn (:func:`torchheat.pairwise.chunks`: each
rank's chunk is broadcast by its owner); every rank keeps, for each of its query rows, the
``k`` nearest training samples seen so far (the chunk's own top-k, merged with the current
best by a top-k of the ``2k`` candidates). No rank holds more than its queries, one
training chunk and ``k`` candidates per query; the vote is local to the query's rank.

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
from ..pairwise import chunks, squared_distances
from ..validation import check_array, check_n_features, check_targets, replicated

__all__ = ["KNeighborsClassifier"]


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
        self._fit_codes = torch.searchsorted(self.classes_, y) + torch.zeros_like(x[:, 0], dtype=torch.int64)
        self.n_samples_fit_ = x.shape[0]
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        """Distances and global indices of the nearest training samples of every query row,
        ``(n_queries, n_neighbors)`` each, nearest first (laid out like ``X``'s rows)."""
        check_is_fitted(self, "classes_")
        k = self.n_neighbors if n_neighbors is None else n_neighbors
        if k > self.n_samples_fit_:
            raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {k}, n_samples_fit = "
                             f"{self.n_samples_fit_}, n_samples = {self.n_samples_fit_}")
        q = check_array(X)
        check_n_features(self, q, reset=False)
        q = q.to(self._fit_x.dtype)
        best_d = best_i = None
        norms = (q * q).sum(1)
        for start, rows in chunks(self._fit_x):
            top = torch.topk(squared_distances(q, rows, norms), min(k, rows.shape[0]), dim=1, largest=False, sorted=True)
            dist, index = top.values, top.indices + start  # (a column of the chunk: its global index)
            if best_d is not None:  # merged with the running best: a top-k of 2k candidates, no copy of the chunk's
                dist, index = torch.cat([best_d, dist], 1), torch.cat([best_i, index], 1)
                top = torch.topk(dist, min(k, dist.shape[1]), dim=1, largest=False, sorted=True)
                dist, index = top.values, index.gather(1, top.indices)
            best_d, best_i = dist, index
        return (best_d.sqrt(), best_i) if return_distance else best_i

    def _labels_of(self, index):
        """The class codes of training samples given by global index (a fetch of ``k`` labels per query)."""
        return self._fit_codes[index]

    def predict_proba(self, X):
        """Class probabilities of every query row, ``(n_queries, n_classes)``."""
        dist, index = self.kneighbors(X)
        codes = self._labels_of(index)
        if self.weights == "uniform":
            votes = torch.ones_like(dist)
        else:
            exact = dist == 0
            votes = torch.where(exact.any(1, keepdim=True), exact.to(dist.dtype), 1 / torch.where(exact, 1, dist))
        onehot = codes[:, :, None] == torch.arange(self.classes_.shape[0], device=codes.device)
        proba = (onehot * votes[:, :, None]).sum(1)
        return proba / proba.sum(1, keepdim=True)

    def predict(self, X):
        """The class of every query row (laid out like ``X``'s rows)."""
        best = self.predict_proba(X).argmax(1)
        return self.classes_[best]

    def score(self, X, y):
        """Mean accuracy on ``X`` and ``y``."""
        y = torch.as_tensor(y) if not isinstance(y, torch.Tensor) else y
        return float((self.predict(X) == y).to(torch.float64).mean())
