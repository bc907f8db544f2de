"""Batch-parallel k-means: every rank clusters its own chunk, then the centers are merged.

Each rank runs :class:`torchheat.cluster.KMeans` on its local samples alone (no
communication), the ``p * k`` local centers and their cluster sizes are shared (one small
allgather), and a weighted k-means of those centers gives the ``k`` final ones. One pass of
communication instead of one per iteration, at the price of the exact k-means result: the
result depends on the number of processes (it is k-means of the chunks' summaries).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.cat([torch.zeros(6, 2), torch.ones(6, 2) * 5]), split=0)
>>> km = th.cluster.BatchParallelKMeans(n_clusters=2, random_state=0).fit(x)
>>> sorted(km.cluster_centers_[:, 0].tolist())
[0.0, 5.0]
"""
from __future__ import annotations

import torch

from ..base import BaseEstimator, ClusterMixin, TransformerMixin, check_is_fitted
from ..ops.creation import from_local
from ..tensor import DistTensor
from ..validation import check_array, check_n_features, check_random_state, comm_of
from .kmeans import KMeans

__all__ = ["BatchParallelKMeans"]


class BatchParallelKMeans(TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means of the k-means centers of every rank's chunk (Heat's ``BatchParallelKMeans``).

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "random"}, default "k-means++"
        Seeding of the local runs and of the merge.
    max_iter, tol : as :class:`KMeans`, for the local runs and the merge
    random_state : int, torchheat.Generator or None

    Attributes
    ----------
    cluster_centers_ : Tensor (n_clusters, n_features)
    labels_ : DistTensor (n_samples,), laid out like X's rows
    inertia_ : float, sum of squared distances of the samples to the final centers
    n_iter_ : int, iterations of the merge

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0.], [1.], [10.], [11.]]), split=0)
    >>> th.cluster.BatchParallelKMeans(2, random_state=1).fit(x).inertia_
    1.0
    """

    def __init__(self, n_clusters=8, *, init="k-means++", max_iter=300, tol=1e-4, random_state=None):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _kmeans(self, seed):
        return KMeans(self.n_clusters, init=self.init, max_iter=self.max_iter, tol=self.tol, random_state=seed)

    def fit(self, X, y=None):
        """Cluster ``X`` (samples split along axis 0, or replicated); returns self."""
        x = check_array(X)
        check_n_features(self, x, reset=True)
        comm = comm_of(x)
        merge = self._kmeans(None)
        merge._check_params(x.shape[0], x.shape[1])
        generator = check_random_state(self.random_state, comm)
        seed = int(torch.randint(2 ** 62, (1,), generator=generator))  # (the same on every rank)
        local = x.local if isinstance(x, DistTensor) and x.split_dim == 0 else (x.full() if isinstance(x, DistTensor) else x)
        if local.shape[0] > self.n_clusters:
            km = self._kmeans(seed + comm.rank).fit(local)
            centers, sizes = km.cluster_centers_, torch.bincount(km.labels_, minlength=self.n_clusters).to(x.dtype)
        else:  # a small chunk is its own summary
            centers, sizes = local, torch.ones(local.shape[0], dtype=x.dtype, device=local.device)
        if isinstance(x, DistTensor) and x.split_dim == 0:
            pooled = from_local(torch.cat([centers, sizes[:, None]], 1), 0, comm=comm).full()
        else:
            pooled = torch.cat([centers, sizes[:, None]], 1)
        keep = pooled[:, -1] > 0
        pooled = pooled[keep]
        merge.random_state = seed
        merge.fit(pooled[:, :-1], sample_weight=pooled[:, -1])
        self.cluster_centers_, self.n_iter_ = merge.cluster_centers_, merge.n_iter_
        self._scorer = merge
        self.labels_ = self.predict(x)
        self.inertia_ = -merge.score(x)
        return self

    def predict(self, X):
        """Index of the nearest final center for every sample of ``X``."""
        check_is_fitted(self, "cluster_centers_")
        return self._scorer.predict(X)

    def transform(self, X):
        """Euclidean distances of every sample to every final center."""
        check_is_fitted(self, "cluster_centers_")
        return self._scorer.transform(X)
