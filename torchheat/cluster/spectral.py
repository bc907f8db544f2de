"""Spectral clustering of samples split across processes: affinity, Laplacian, Lanczos, k-means.

The ``n x n`` affinity matrix is split along its rows like the samples: it is built one
chunk of columns at a time (:func:`torchheat.pairwise.chunks`: every rank's chunk of samples
is broadcast in turn and each rank computes its rows' block against it), so a rank holds
its ``n/p`` rows of the matrix and one chunk of samples, never the whole data. The graph is
the affinity with a zero diagonal, optionally thresholded (``laplacian="eNeighbour"``);
``L = I - D^-1/2 A D^-1/2`` is its symmetric normalized Laplacian (D the degrees, one
allgather of an ``n``-vector). ``n_lanczos`` steps of Lanczos with full reorthogonalization
(:func:`torchheat.linalg.lanczos`: one row-split matrix-vector product and an allgather
of the ``n``-vector per step) give the Ritz pairs of L; the eigenvectors of its smallest
eigenvalues, scaled by ``D^-1/2`` and sign-fixed as scikit-learn's ``spectral_embedding``,
are the embedding (laid out like the samples) that :class:`KMeans` clusters.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [0.1], [0.2], [5.], [5.1], [5.2]]), split=0)
>>> labels = th.cluster.SpectralClustering(2, random_state=0).fit(x).labels_.full()
>>> bool(labels[0] == labels[2] != labels[3] == labels[5])
True
"""
from __future__ import annotations

import numbers

import torch

from ..base import BaseEstimator, ClusterMixin
from ..linalg import lanczos
from ..ops.creation import distribute
from ..ops.random import randn
from ..pairwise import chunks, squared_distances
from ..tensor import DistTensor
from ..validation import check_array, check_n_features, check_random_state, comm_of, replicated
from .kmeans import KMeans

__all__ = ["SpectralClustering", "Spectral"]

AFFINITIES = ("rbf", "euclidean", "nearest_neighbors", "precomputed")


class SpectralClustering(ClusterMixin, BaseEstimator):
    """Spectral clustering (scikit-learn's ``SpectralClustering``, Heat's ``Spectral``) on split samples.

    Parameters
    ----------
    n_clusters : int or None, default 8
        None: the number of eigenvalues of the Laplacian below its largest gap (Heat's rule).
    eigen_solver : {"lanczos", "eigh"}, default "lanczos"
        Lanczos on the row-split Laplacian, or ``torch.linalg.eigh`` of the gathered one
        (every rank then holds the ``n x n`` matrix: for small ``n`` only).
    n_components : int, optional
        Eigenvectors in the embedding (default ``n_clusters``).
    random_state : int, torchheat.Generator or None
        Seed of Lanczos' start vector and of k-means: the same labels on any number of processes.
    n_init : int, default 10
        k-means runs on the embedding.
    gamma : float, default 1.0
        ``exp(-gamma |x - y|^2)`` for the rbf affinity.
    affinity : {"rbf", "euclidean", "nearest_neighbors", "precomputed"}, default "rbf"
        rbf kernel; Euclidean distances as weights (Heat's ``metric="euclidean"``); the
        symmetrized connectivity of the ``n_neighbors`` nearest samples (the sample itself
        included, as scikit-learn); or ``X`` is the ``n x n`` affinity matrix (split along rows).
    n_neighbors : int, default 10
    assign_labels : {"kmeans"}, default "kmeans"
    laplacian : {"fully_connected", "eNeighbour"}, default "fully_connected"
        The whole graph, or only the edges whose weight is below (``boundary="upper"``) or
        above (``"lower"``) ``threshold`` (Heat's options).
    threshold : float, default 1.0
    boundary : {"upper", "lower"}, default "upper"
    n_lanczos : int, default 300
        Lanczos steps (at most ``n``).
    verbose : bool, default False
        k-means' progress bar on rank 0.

    Attributes
    ----------
    affinity_matrix_ : DistTensor (n_samples, n_samples), split like X's rows
    embedding_ : DistTensor (n_samples, n_components), split like X's rows
    eigenvalues_ : Tensor (n_components,), the smallest eigenvalues of the Laplacian
    labels_ : DistTensor (n_samples,), laid out like X's rows
    n_features_in_ : int

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.cat([torch.zeros(4, 2), torch.ones(4, 2) * 3]) + torch.arange(8.)[:, None] / 10, 0)
    >>> sc = th.cluster.SpectralClustering(n_clusters=2, gamma=0.5, random_state=0).fit(x)
    >>> len(set(sc.labels_.full()[:4].tolist())), len(set(sc.labels_.full().tolist()))
    (1, 2)
    """

    def __init__(self, n_clusters=8, *, eigen_solver="lanczos", n_components=None, random_state=None, n_init=10,
                 gamma=1.0, affinity="rbf", n_neighbors=10, assign_labels="kmeans", laplacian="fully_connected",
                 threshold=1.0, boundary="upper", n_lanczos=300, verbose=False):
        self.n_clusters = n_clusters
        self.eigen_solver = eigen_solver
        self.n_components = n_components
        self.random_state = random_state
        self.n_init = n_init
        self.gamma = gamma
        self.affinity = affinity
        self.n_neighbors = n_neighbors
        self.assign_labels = assign_labels
        self.laplacian = laplacian
        self.threshold = threshold
        self.boundary = boundary
        self.n_lanczos = n_lanczos
        self.verbose = verbose

    def _check_params(self, n_samples):
        def choice(name, options):
            if getattr(self, name) not in options:
                raise ValueError(f"The '{name}' parameter of SpectralClustering must be a str among "
                                 f"{{{', '.join(repr(o) for o in options)}}}. Got {getattr(self, name)!r} instead.")

        def integer(name, low, allow_none=False):
            value = getattr(self, name)
            if allow_none and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"The '{name}' parameter of SpectralClustering must be an int in the range "
                                 f"[{low}, inf){' or None' if allow_none else ''}. Got {value!r} instead.")

        choice("affinity", AFFINITIES)
        choice("eigen_solver", ("lanczos", "eigh"))
        choice("assign_labels", ("kmeans",))
        choice("laplacian", ("fully_connected", "eNeighbour"))
        choice("boundary", ("upper", "lower"))
        integer("n_clusters", 1, allow_none=True)
        integer("n_components", 1, allow_none=True)
        integer("n_init", 1)
        integer("n_neighbors", 1)
        integer("n_lanczos", 1)
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, numbers.Real) or not self.gamma >= 0:
            raise ValueError(f"The 'gamma' parameter of SpectralClustering must be a float in the range [0, inf). "
                             f"Got {self.gamma!r} instead.")
        if self.n_clusters is not None and n_samples < self.n_clusters:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}.")
        if self.affinity == "nearest_neighbors" and self.n_neighbors > n_samples:
            raise ValueError(f"Expected n_neighbors <= n_samples_fit, but n_neighbors = {self.n_neighbors}, "
                             f"n_samples_fit = {n_samples}, n_samples = {n_samples}")

    def _affinity(self, x):
        """The ``(n, n)`` affinity matrix, split along rows like ``x``."""
        if self.affinity == "precomputed":
            if x.shape[0] != x.shape[1]:
                raise ValueError(f"affinity='precomputed' expects a square affinity matrix, got shape {tuple(x.shape)}")
            return x
        x = x - replicated(x.mean(0))  # (distances by matmul lose less to cancellation)
        norms = (x * x).sum(1)
        dist = torch.cat([squared_distances(x, rows, norms) for _, rows in chunks(x)], 1)
        if self.affinity == "rbf":
            return dist.mul_(-self.gamma).exp_()
        if self.affinity == "euclidean":
            return dist.sqrt_()
        # the n_neighbors nearest samples of each row (itself among them; ties all kept), symmetrized
        kth = torch.topk(dist, self.n_neighbors, dim=1, largest=False).values[:, -1:]
        connectivity = (dist <= kth).to(x.dtype)
        return (connectivity + connectivity.T) / 2

    def _graph(self, affinity):
        """The graph's weights: the affinity without self-loops, thresholded for "eNeighbour"."""
        graph = affinity.clone()
        graph.diagonal().zero_()
        if self.laplacian == "eNeighbour":
            keep = graph < self.threshold if self.boundary == "upper" else graph > self.threshold
            graph = graph * keep
        return graph

    def _eigenpairs(self, laplacian, generator):
        """Eigenvalues of the Laplacian, ascending, and their eigenvectors (replicated): all of them
        (eigh) or the Ritz pairs of ``n_lanczos`` Lanczos steps."""
        n = laplacian.shape[0]
        if self.eigen_solver == "eigh":
            values, vectors = torch.linalg.eigh(replicated(laplacian))
            return values, vectors
        comm = laplacian.comm if isinstance(laplacian, DistTensor) else None
        v0 = replicated(randn(n, generator=generator, dtype=laplacian.dtype, comm=comm))
        basis, tridiagonal = lanczos(laplacian, min(self.n_lanczos, n), v0)
        basis, tridiagonal = replicated(basis), replicated(tridiagonal)
        values, ritz = torch.linalg.eigh(tridiagonal)
        return values, basis @ ritz

    def fit(self, X, y=None):
        """Cluster ``X`` (samples split along axis 0, or replicated; the affinity matrix for
        ``affinity="precomputed"``); returns self."""
        x = check_array(X)
        self._check_params(x.shape[0])
        check_n_features(self, x, reset=True)
        generator = check_random_state(self.random_state, comm_of(x))
        self.affinity_matrix_ = self._affinity(x)
        graph = self._graph(self.affinity_matrix_)
        degree = graph.sum(1)
        degree = torch.where(degree > 0, degree, 1)  # (an isolated sample: its row of L is the identity's)
        root = degree.sqrt()
        root_all = replicated(root)
        laplacian = graph.div_(root[:, None]).div_(root_all).neg_()
        laplacian.diagonal().add_(1)
        values, vectors = self._eigenpairs(laplacian, generator)
        n_clusters = self.n_clusters
        if n_clusters is None:  # Heat's rule: the largest gap between consecutive eigenvalues
            n_clusters = int((values[1:] - values[:-1]).argmax()) + 1
        m = min(self.n_components or n_clusters, values.shape[0])
        embedding = vectors[:, :m] / root_all[:, None]
        # scikit-learn's sign rule: each vector's entry of largest magnitude is positive
        signs = torch.sign(embedding.gather(0, embedding.abs().argmax(0, keepdim=True)))
        embedding = embedding * torch.where(signs == 0, 1, signs)
        if isinstance(x, DistTensor):  # (each rank keeps its rows: no communication)
            embedding = distribute(embedding, x.split_dim, comm=x.comm, counts=x.counts)
        self.eigenvalues_ = values[:m]
        self.embedding_ = embedding
        self.n_clusters_ = n_clusters
        km = KMeans(n_clusters, n_init=self.n_init, random_state=generator, verbose=self.verbose).fit(embedding)
        self.labels_ = km.labels_
        return self


Spectral = SpectralClustering  # Heat's name
