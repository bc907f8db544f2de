"""K-medians on samples split across processes: L1 assignment, per-cluster medians.

Each iteration assigns every sample to the center nearest in L1 distance (local), then sets
every center to the feature-wise median of its cluster (numpy's median: the mean of the two
middle values for an even count). The medians come from torchheat's distributed
``nanquantile`` over the samples, one call per cluster on the data with the other clusters'
samples masked out: no rank holds more than its share of the data. An empty cluster keeps
its center.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [1.], [5.], [10.], [11.], [30.]]), split=0)
>>> km = th.cluster.KMedians(n_clusters=2, init=torch.tensor([[0.], [10.]])).fit(x)
>>> km.cluster_centers_[:, 0].tolist(), km.labels_.full().tolist()
([1.0, 11.0], [0, 0, 0, 1, 1, 1])
"""
from __future__ import annotations

import torch

from ..pairwise import manhattan_distances
from ._kcluster import KClusterBase

__all__ = ["KMedians"]


def cluster_medians(x, labels, centers):
    """``(k, d)`` feature-wise medians of every cluster (an empty one keeps its center)."""
    out = []
    for c in range(centers.shape[0]):
        masked = torch.where(labels[:, None] == c, x, torch.nan)
        med = torch.nanquantile(masked, 0.5, dim=0)
        out.append(torch.where(torch.isnan(med), centers[c], med))
    return torch.stack([m.full() if hasattr(m, "full") else m for m in out])


class KMedians(KClusterBase):
    """K-medians clustering: the k centers minimizing the sum of L1 distances, by
    alternating L1 assignment and per-cluster medians.

    Parameters are those of :class:`torchheat.cluster.KMeans` (``init``, ``n_init``,
    ``max_iter``, ``tol``, ``verbose``, ``random_state``); k-means++ seeding draws with
    probability proportional to the L1 distance.

    Attributes
    ----------
    cluster_centers_ : Tensor (n_clusters, n_features)
    labels_ : DistTensor (n_samples,)
    inertia_ : float, the sum of L1 distances of the samples to their centers
    n_iter_ : int

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0., 0.], [0., 2.], [9., 9.], [9., 11.]]), split=0)
    >>> th.cluster.KMedians(2, random_state=0).fit(x).inertia_
    4.0
    """

    _center_data = False  # (medoids stay rows of X exactly)

    def fit(self, X, y=None):
        """Cluster ``X`` (samples split along axis 0, or replicated); returns self."""
        return super().fit(X)

    def _cost(self, x, centers):
        return manhattan_distances(x, centers)

    def _update(self, x, sample_weight, labels, centers):
        return cluster_medians(x, labels, centers)
