"""K-medoids on samples split across processes: centers are samples of the data.

Each iteration assigns every sample to the nearest center in L1 distance, computes every
cluster's feature-wise median (as :class:`torchheat.cluster.KMedians`) and moves the center
to the cluster's sample nearest that median: one ``(n/p, k)`` distance matrix with the
other clusters masked out, a global argmin per cluster and one fetch of the ``k`` rows.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [1.], [3.], [10.], [11.], [30.]]), split=0)
>>> km = th.cluster.KMedoids(n_clusters=2, init=torch.tensor([[0.], [10.]])).fit(x)
>>> km.cluster_centers_[:, 0].tolist()
[1.0, 11.0]
"""
from __future__ import annotations

import torch

from ..pairwise import manhattan_distances
from ..validation import check_array, replicated
from .kmedians import KMedians, cluster_medians

__all__ = ["KMedoids"]


class KMedoids(KMedians):
    """K-medoids clustering: like :class:`KMedians`, but every center is the sample of its
    cluster nearest (L1) to the cluster's median.

    Attributes
    ----------
    cluster_centers_ : Tensor (n_clusters, n_features), rows of X
    medoid_indices_ : Tensor (n_clusters,), global indices of those rows
    labels_, inertia_, n_iter_ : as :class:`KMedians`

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0., 0.], [0., 2.], [0., 3.], [9., 9.]]), split=0)
    >>> th.cluster.KMedoids(2, random_state=0).fit(x).cluster_centers_.tolist()
    [[0.0, 2.0], [9.0, 9.0]]
    """

    def _update(self, x, sample_weight, labels, centers):
        return self._medoids(x, labels, cluster_medians(x, labels, centers), centers)[0]

    def _medoids(self, x, labels, medians, centers):
        k = centers.shape[0]
        cost = manhattan_distances(x, medians)
        cost = torch.where(labels[:, None] == torch.arange(k, device=labels.device), cost, torch.inf)
        best = cost.min(0)
        index = replicated(best.indices)
        rows = replicated(x[index])
        empty = torch.isinf(replicated(best.values))[:, None]  # an empty cluster keeps its center
        return torch.where(empty, centers, rows), index

    def fit(self, X, y=None):
        """Cluster ``X`` (samples split along axis 0, or replicated); returns self."""
        super().fit(X)
        cost = manhattan_distances(check_array(X).to(self.cluster_centers_.dtype), self.cluster_centers_)
        self.medoid_indices_ = replicated(cost.argmin(0))
        return self
