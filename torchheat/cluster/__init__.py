"""Clustering of samples split across processes, with scikit-learn's estimator contract.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [1.], [10.], [11.]]), split=0)
>>> th.cluster.KMeans(n_clusters=2, random_state=0).fit(x).inertia_
1.0
"""
from .batchparallel import BatchParallelKMeans
from .kmeans import KMeans
from .kmedians import KMedians
from .kmedoids import KMedoids
from .spectral import Spectral, SpectralClustering
from .silhouette import silhouette_samples, silhouette_score

__all__ = ["KMeans", "KMedians", "KMedoids", "BatchParallelKMeans", "SpectralClustering", "Spectral", "silhouette_samples", "silhouette_score"]
