"""K-means on samples split across processes: Lloyd's iterations with one reduction each.

Each iteration computes, on every rank's rows, the ``n/p x k`` matrix
``|c|^2 - 2 x . c`` (one matmul with the replicated centers) and its row-wise argmin, then
the per-cluster sums of the samples and their weights with one ``index_add`` into a
``(k, d + 1)`` table: the samples are stored once with a column of ones appended, so sums
and counts travel in the same single allreduce. No per-cluster copy of the data is made.
Empty clusters are relocated as scikit-learn does, to the samples farthest from their
centers. ``inertia_`` is the sum of squared distances of the samples to their centers.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0., 0.], [0., 1.], [10., 10.], [10., 11.]]), split=0)
>>> km = th.cluster.KMeans(n_clusters=2, init=torch.tensor([[0., 0.], [10., 10.]])).fit(x)
>>> km.cluster_centers_
tensor([[ 0.0000,  0.5000],
        [10.0000, 10.5000]])
>>> km.labels_.full().tolist(), km.inertia_
([0, 0, 1, 1], 1.0)
"""
from __future__ import annotations

import torch

from ..pairwise import squared_distances
from ..validation import replicated
from ._kcluster import KClusterBase

__all__ = ["KMeans"]


class KMeans(KClusterBase):
    """K-means clustering (scikit-learn's ``KMeans``, Lloyd's algorithm) on split samples.

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "random"}, tensor of shape (n_clusters, n_features) or callable, default "k-means++"
        Greedy k-means++, distinct random rows, given centers, or ``init(X, n_clusters, generator)``.
    n_init : int or "auto", default "auto"
        Runs from different seeds; the one with the lowest inertia is kept ("auto": 10 for
        "random", else 1).
    max_iter : int, default 300
    tol : float, default 1e-4
        Stop when the squared shift of the centers is at most ``tol`` times the mean variance
        of the features.
    verbose : bool, default False
        A progress bar on rank 0.
    random_state : int, torchheat.Generator or None
        Seed of the initialization: the same result on any number of processes.
    algorithm : {"lloyd", "elkan"}, default "lloyd"
        Accepted for scikit-learn compatibility; both run Lloyd's iterations (Elkan's
        variant gives the same result, only faster on one process).

    Attributes
    ----------
    cluster_centers_ : Tensor of shape (n_clusters, n_features), the same on every rank
    labels_ : DistTensor of shape (n_samples,), laid out like X's rows
    inertia_ : float, sum of squared distances of the samples to their centers (weighted)
    n_iter_ : int
    n_features_in_ : int

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.cat([torch.zeros(5, 2), torch.ones(5, 2)]), split=0)
    >>> km = th.cluster.KMeans(n_clusters=2, random_state=0).fit(x)
    >>> sorted(km.cluster_centers_.sum(1).tolist()), km.inertia_
    ([0.0, 2.0], 0.0)
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300, tol=1e-4, verbose=False,
                 random_state=None, algorithm="lloyd"):
        super().__init__(n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, verbose=verbose,
                         random_state=random_state)
        self.algorithm = algorithm

    def _check_params(self, n_samples, n_features):
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"The 'algorithm' parameter of KMeans must be a str among {{'lloyd', 'elkan'}}. "
                             f"Got {self.algorithm!r} instead.")
        return super()._check_params(n_samples, n_features)

    def _cost(self, x, centers):
        return squared_distances(x, centers)

    def _distance(self, x, centers):
        return squared_distances(x, centers).sqrt_()

    def _prepare(self, x, sample_weight):
        # the samples with a column of ones: per-cluster sums and counts in one index_add
        return torch.nn.functional.pad(x, (0, 1), value=1.0), sample_weight

    def _samples(self, data):
        return data[0][:, :-1]

    def _assign(self, data, centers):
        # the argmin of |x - c|^2 needs no |x|^2
        return torch.addmm((centers * centers).sum(1), self._samples(data), centers.T, alpha=-2).argmin(1)

    def _update(self, data, sample_weight, labels, centers):
        xa, weighted = data
        k, d = centers.shape
        source = xa * sample_weight[:, None] if weighted is not None else xa
        sums = replicated(torch.zeros(k, d + 1, dtype=xa.dtype, device=xa.device).index_add_(0, labels, source))
        if bool((sums[:, d] == 0).any()):
            relocate_empty_clusters(self._samples(data), sample_weight, centers, labels, sums)
        weight = sums[:, d:]
        return torch.where(weight > 0, sums[:, :d] / torch.where(weight > 0, weight, 1), sums[:, :d])

    def _inertia(self, data, sample_weight, centers, labels):
        x = self._samples(data)
        return float((((x - centers[labels]) ** 2).sum(1) * sample_weight).sum())


def relocate_empty_clusters(x, sample_weight, centers, labels, sums) -> None:
    """Give each empty cluster one of the samples farthest from their centers (scikit-learn's
    rule), moving its weight out of its cluster's sums. ``sums`` is the replicated
    ``(k, d + 1)`` table of weighted sums and weights; updated in place."""
    d = x.shape[1]
    empty = (sums[:, d] == 0).nonzero()[:, 0].tolist()
    far = replicated(torch.topk(((x - centers[labels]) ** 2).sum(1), len(empty)).indices)
    rows, old, weights = replicated(x[far]), replicated(labels[far]).tolist(), replicated(sample_weight[far])
    for j, cluster in enumerate(empty):
        moved = torch.cat([rows[j] * weights[j], weights[j:j + 1]])
        sums[old[j]] -= moved
        sums[cluster] = moved
