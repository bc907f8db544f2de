"""Silhouette coefficients of a clustering of samples split across processes.

For sample ``i`` in cluster ``A``: ``a`` is its mean distance to the other members of ``A``,
``b`` the smallest mean distance to the members of another cluster, and
``s = (b - a) / max(a, b)`` (0 for a sample alone in its cluster), as scikit-learn's
``silhouette_samples``. The ``(n/p, n_labels)`` per-cluster sums of distances are built one
chunk of samples at a time (:func:`torchheat.pairwise.chunks`): each rank's chunk is
broadcast in turn, every rank adds the distances from its rows to it, and no rank holds
more than two chunks or an ``n x n`` matrix.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0.], [1.], [10.], [11.]]), split=0)
>>> labels = th.distribute(torch.tensor([0, 0, 1, 1]), split=0)
>>> round(th.cluster.silhouette_score(x, labels), 4)
0.8997
"""
from __future__ import annotations

import torch

from ..pairwise import chunks, squared_distances
from ..validation import check_array, check_targets, replicated

__all__ = ["silhouette_samples", "silhouette_score"]


def _check_labels(x, labels):
    values, codes = torch.unique(check_targets(x, labels), return_inverse=True)
    n_labels = values.shape[0]
    if not 2 <= n_labels <= x.shape[0] - 1:
        raise ValueError(f"Number of labels is {n_labels}. Valid values are 2 to n_samples - 1 (inclusive)")
    return codes, n_labels


def silhouette_samples(X, labels, *, metric="euclidean"):
    """Silhouette coefficient of every sample (laid out like ``X``'s rows).

    Parameters
    ----------
    X : DistTensor, Tensor or array (n_samples, n_features)
    labels : DistTensor, Tensor or array (n_samples,), any values (encoded in sorted order)
    metric : "euclidean"
    """
    if metric != "euclidean":
        raise ValueError(f"metric={metric!r} is not supported (expected 'euclidean')")
    x = check_array(X)
    codes, n_labels = _check_labels(x, labels)
    x = x - replicated(x.mean(0))  # (distances by matmul lose less to cancellation)
    norms = (x * x).sum(1)
    sums = None
    for start, rows in chunks(x):
        onehot = torch.nn.functional.one_hot(replicated(codes[start:start + rows.shape[0]]), n_labels).to(x.dtype)
        part = squared_distances(x, rows, norms).sqrt_() @ onehot
        sums = part if sums is None else sums + part
    sizes = replicated(torch.bincount(codes, minlength=n_labels)).to(x.dtype)
    own = sums.gather(1, codes[:, None])[:, 0]
    own_size = sizes[codes]
    a = own / (own_size - 1).clamp(min=1)
    others = torch.where(codes[:, None] == torch.arange(n_labels, device=codes.device), torch.inf, sums / sizes)
    b = others.amin(1)
    s = (b - a) / torch.maximum(a, b)
    return torch.where(own_size > 1, torch.nan_to_num(s), 0.0)


def silhouette_score(X, labels, *, metric="euclidean"):
    """Mean silhouette coefficient over all samples (a float, the same on every rank)."""
    return float(silhouette_samples(X, labels, metric=metric).mean())
