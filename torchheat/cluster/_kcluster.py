"""What k-means, k-medians and k-medoids share: parameters, seeding, the iteration loop, predict.

The data is split along the samples; centers are small plain tensors, the same on every
rank. One iteration assigns every sample to its cheapest center (local: an ``n/p x k`` cost
matrix and an argmin per row), then recomputes the centers from global per-cluster
statistics (the subclass's ``_update``: one reduction for k-means). Convergence is decided on
replicated values, so every rank leaves the loop at the same iteration.

Seeding: greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's variant with
``2 + log(k)`` candidates per step, keeping the one that lowers the potential most) or
``"random"`` rows. Candidates are drawn with ``torch.multinomial`` over the split vector of
per-sample costs, whose random numbers come from torchheat's counter-based stream, so a
``random_state`` gives the same centers on any number of processes.
"""
from __future__ import annotations

import math
import numbers
import warnings

import torch

from ..base import BaseEstimator, ClusterMixin, TransformerMixin, check_is_fitted
from ..validation import (
    ConvergenceWarning, check_array, check_n_features, check_random_state, check_sample_weight, comm_of, progress,
    replicated,
)

__all__ = ["KClusterBase", "kmeans_plusplus"]


def kmeans_plusplus(x, n_clusters: int, cost, sample_weight, generator, n_local_trials=None):
    """Greedy k-means++ seeds: ``n_clusters`` rows of ``x`` (a plain ``(k, d)`` tensor).

    ``cost(x, centers)`` is the ``(n, m)`` matrix of per-sample costs (squared distances for
    k-means). Each step draws ``n_local_trials`` candidates with probability proportional to
    the weighted cost to the nearest center so far and keeps the candidate that lowers the
    total cost most. Per step: the draw, one fetch of the candidate rows, one reduction.
    """
    n_local_trials = n_local_trials or 2 + int(math.log(n_clusters))
    first = torch.multinomial(sample_weight, 1, generator=generator)
    centers = [replicated(x[first])]
    closest = cost(x, centers[0])[:, 0]
    pot = (closest * sample_weight).sum()
    for _ in range(1, n_clusters):
        if bool(pot > 0):
            candidates = torch.multinomial(sample_weight * closest, n_local_trials, replacement=True, generator=generator)
        else:  # every sample sits on a center (duplicates): scikit-learn takes the first sample
            candidates = torch.zeros(n_local_trials, dtype=torch.int64, device=x.device)
        rows = replicated(x[candidates])
        costs = torch.minimum(closest[:, None], cost(x, rows))
        pots = replicated((costs * sample_weight[:, None]).sum(0))
        best = int(pots.argmin())
        closest, pot = costs[:, best], pots[best]
        centers.append(rows[best:best + 1])
    return torch.cat(centers)


class KClusterBase(TransformerMixin, ClusterMixin, BaseEstimator):
    """Shared fit/predict of the k-clustering estimators; subclasses give the cost and the
    center update (see :class:`torchheat.cluster.KMeans`)."""

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300, tol=1e-4, verbose=False,
                 random_state=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state

    _center_data = True  # whether the iterations run on the data minus its mean

    # -- what a subclass defines --------------------------------------------------------------
    def _cost(self, x, centers):
        """``(n, k)`` cost of each sample for each center; the objective sums the assigned ones."""
        raise NotImplementedError

    def _distance(self, x, centers):
        """``(n, k)`` distances (``transform``); the cost by default."""
        return self._cost(x, centers)

    def _update(self, x, sample_weight, labels, centers):
        """New centers from the assignment."""
        raise NotImplementedError

    def _step(self, data, sample_weight, centers):
        """One iteration: the assignment and the new centers from it."""
        labels = self._assign(data, centers)
        return labels, self._update(data, sample_weight, labels, centers)

    def _prepare(self, x, mean, sample_weight):
        """The data as the iterations use it: ``x - mean`` (``x`` when mean is None); KMeans
        keeps this rank's rows and the state of its iterations."""
        return x if mean is None else x - mean

    def _samples(self, data):
        """The samples in a prepared data object."""
        return data

    # -- checks ---------------------------------------------------------------------------------
    def _check_params(self, n_samples: int, n_features: int):
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"The 'n_clusters' parameter of {type(self).__name__} must be an int in the range "
                             f"[1, inf). Got {k!r} instead.")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"The 'max_iter' parameter of {type(self).__name__} must be an int in the range [1, inf). "
                             f"Got {self.max_iter!r} instead.")
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"The 'tol' parameter of {type(self).__name__} must be a float in the range [0, inf). "
                             f"Got {self.tol!r} instead.")
        if n_samples < k:
            raise ValueError(f"n_samples={n_samples} should be >= n_clusters={k}.")
        init = self.init
        array_init = not isinstance(init, str) and not callable(init)
        if isinstance(init, str) and init not in ("k-means++", "kmeans++", "random"):
            raise ValueError(f"The 'init' parameter of {type(self).__name__} must be a str among "
                             f"{{'k-means++', 'random'}}, an array-like or a callable. Got {init!r} instead.")
        n_init = self.n_init
        if n_init == "auto":
            n_init = 10 if init == "random" else 1
        elif isinstance(n_init, bool) or not isinstance(n_init, numbers.Integral) or n_init < 1:
            raise ValueError(f"The 'n_init' parameter of {type(self).__name__} must be an int in the range [1, inf) "
                             f"or 'auto'. Got {n_init!r} instead.")
        if array_init and n_init != 1:
            warnings.warn("Explicit initial center position passed: performing only one init in "
                          f"{type(self).__name__} instead of n_init={n_init}.", RuntimeWarning, stacklevel=3)
            n_init = 1
        return n_init

    def _check_init(self, init, x):
        centers = replicated(check_array(init, name="init")).to(x.dtype)
        k, d = self.n_clusters, x.shape[1]
        if centers.shape[0] != k:
            raise ValueError(f"The shape of the initial centers {tuple(centers.shape)} does not match the number of "
                             f"clusters {k}.")
        if centers.shape[1] != d:
            raise ValueError(f"The shape of the initial centers {tuple(centers.shape)} does not match the number of "
                             f"features of the data {d}.")
        return centers

    def _check_test_data(self, x):
        check_is_fitted(self, "cluster_centers_")
        x = check_array(x)
        check_n_features(self, x, reset=False)
        return x.to(self.cluster_centers_.dtype)

    # -- fitting ----------------------------------------------------------------------------------
    def _init_centers(self, x, sample_weight, generator):
        init = self.init
        if isinstance(init, str) and init in ("k-means++", "kmeans++"):
            return kmeans_plusplus(x, self.n_clusters, self._cost, sample_weight, generator)
        if isinstance(init, str):  # "random": distinct rows, drawn with probability proportional to the weights
            return replicated(x[torch.multinomial(sample_weight, self.n_clusters, generator=generator)])
        if callable(init):
            return self._check_init(init(x, self.n_clusters, generator), x)
        return self._check_init(init, x)

    def _assign(self, data, centers):
        return self._cost(self._samples(data), centers).argmin(1)

    def _inertia(self, data, sample_weight, centers, labels):
        cost = self._cost(self._samples(data), centers)
        return float((cost.gather(1, labels[:, None])[:, 0] * sample_weight).sum())

    def _single_run(self, data, sample_weight, centers, tol, bar):
        """One run of the iterations from ``centers``: (labels, inertia, centers, n_iter).

        Stops when the assignment no longer changes (the centers then do not move at all: the
        same labels give the same statistics) or when the squared center shift is at most
        ``tol`` (scikit-learn's rule); in the latter case the labels are recomputed for the
        final centers.
        """
        strict = False
        for i in range(self.max_iter):
            labels, new = self._step(data, sample_weight, centers)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            bar.update(1)
            bar.set_postfix(center_shift=shift, refresh=False)
            if shift == 0:
                strict = True
                break
            if shift <= tol:
                break
        if not strict:
            labels = self._assign(data, centers)
        return labels, self._inertia(data, sample_weight, centers, labels), centers, i + 1

    def fit(self, X, y=None, sample_weight=None):
        """Cluster ``X`` (samples split along axis 0, or replicated).

        Parameters
        ----------
        X : DistTensor, Tensor or array of shape (n_samples, n_features)
        y : ignored
        sample_weight : tensor of shape (n_samples,), optional
            Weights of the samples (in the update, the seeding and the inertia).

        Returns
        -------
        self
        """
        x = check_array(X)
        check_n_features(self, x, reset=True)
        n_init = self._check_params(x.shape[0], x.shape[1])
        comm = comm_of(x)
        w = check_sample_weight(sample_weight, x)
        generator = check_random_state(self.random_state, comm)
        # centered data: the matmul form of squared distances loses less to cancellation
        mean = replicated(x.mean(0)) if self._center_data else None
        data = self._prepare(x, mean, w if sample_weight is not None else None)
        xc = self._samples(data)
        tol = 0.0 if self.tol == 0 else float(torch.var(xc, 0, correction=0).mean()) * self.tol
        best = None
        with progress(self.verbose, n_init * self.max_iter, type(self).__name__, comm) as bar:
            for _ in range(n_init):
                centers = self._init_centers(xc, w, generator)
                if not isinstance(self.init, str) and not callable(self.init) and mean is not None:
                    centers = centers - mean
                labels, inertia, centers, n_iter = self._single_run(data, w, centers, tol, bar)
                if best is None or inertia < best[1]:
                    best = (labels, inertia, centers, n_iter)
        labels, self.inertia_, centers, self.n_iter_ = best
        self.cluster_centers_ = centers if mean is None else centers + mean
        self.labels_ = labels
        distinct = int((torch.bincount(labels, minlength=self.n_clusters) > 0).sum())
        if distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({self.n_clusters}). "
                          "Possibly due to duplicate points in X.", ConvergenceWarning, stacklevel=2)
        return self

    # -- using the fitted centers -------------------------------------------------------------------
    def predict(self, X, sample_weight=None):
        """Index of the cluster each sample of ``X`` belongs to (laid out like ``X``'s rows)."""
        x = self._check_test_data(X)
        return self._cost(x, self.cluster_centers_).argmin(1)

    def transform(self, X):
        """Distances of every sample to every center, ``(n_samples, n_clusters)``."""
        return self._distance(self._check_test_data(X), self.cluster_centers_)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).labels_

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the objective of ``X`` on the fitted centers (a float, the same on every rank)."""
        x = self._check_test_data(X)
        w = check_sample_weight(sample_weight, x)
        labels = self._cost(x, self.cluster_centers_).argmin(1)
        return -self._inertia(self._prepare(x, None, None if sample_weight is None else w), w, self.cluster_centers_,
                              labels)
