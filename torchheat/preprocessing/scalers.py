"""StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler and Normalizer (scikit-learn's).

``fit`` reduces over the samples (extremes: one allreduce each; RobustScaler's quantiles:
torchheat's distributed selection; StandardScaler's means and variances: one pass over
every rank's rows in blocks that stay in cache, each block's mean and sum of squared
deviations, merged by Chan's formula after one allgather of the blocks' statistics),
keeping the statistics as small plain tensors; ``transform`` is one fused elementwise
kernel (``x * a + b``) on every rank's rows, and ``fit_transform`` does not check the data a
second time. Constant features get a scale of 1, as in scikit-learn.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[1., -1.], [3., 1.]]), split=0)
>>> th.preprocessing.MinMaxScaler().fit_transform(x).full().tolist()
[[0.0, 0.0], [1.0, 1.0]]
"""
from __future__ import annotations

import torch

from ..base import BaseEstimator, TransformerMixin, check_is_fitted
from ..comm import functional as cf
from ..tensor import DistTensor
from ..validation import check_array, check_n_features, check_sample_weight, replicated

__all__ = ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer"]

_ROWS = 4096  # rows per block of the moments: a block stays in cache between its two passes


def handle_zeros_in_scale(scale: torch.Tensor, constant=None) -> torch.Tensor:
    """``scale`` with 1 where it is (numerically) zero, or where ``constant`` is True."""
    if constant is None:
        constant = scale < 10 * torch.finfo(scale.dtype).eps
    return torch.where(constant, torch.ones_like(scale), scale)


def moments(x: torch.Tensor, sample_weight=None):
    """Global ``(total weight, mean, variance)`` of every feature of ``x``'s rows (population
    variance, weighted by ``sample_weight`` if given).

    Every block of ``_ROWS`` local rows gives its weight, mean and sum of squared deviations
    (the block read twice while in cache, no copy of the data); the blocks of all ranks are
    merged by Chan's formula, ``M2 = sum M2_b + sum n_b (mean_b - mean)^2`` (no cancellation),
    after one allgather of their statistics."""
    local = x.local if isinstance(x, DistTensor) else x
    w = sample_weight.local if isinstance(sample_weight, DistTensor) else sample_weight
    n, f = local.shape
    stats = local.new_zeros(-(-n // _ROWS), 1 + 2 * f)  # per block: weight, mean, M2
    buffer = local.new_empty(min(n, _ROWS), f)
    for b, start in enumerate(range(0, n, _ROWS)):
        rows, weight, mean, m2 = local[start:start + _ROWS], stats[b, 0], stats[b, 1:f + 1], stats[b, f + 1:]
        if w is None:
            weight.fill_(rows.shape[0])
            torch.sum(rows, 0, out=mean).div_(rows.shape[0])
        else:
            wb = w[start:start + _ROWS]
            weight.copy_(wb.sum())
            torch.mv(rows.T, wb, out=mean).div_(weight.clamp(min=torch.finfo(local.dtype).tiny))
        deviation = torch.sub(rows, mean, out=buffer[:rows.shape[0]]).square_()
        torch.sum(deviation, 0, out=m2) if w is None else torch.mv(deviation.T, wb, out=m2)
    if isinstance(x, DistTensor) and x.split_dim is not None:
        stats = cf.all_gather(stats, x.comm, tuple(-(-c // _ROWS) for c in x.counts), 0)
    weights, means = stats[:, :1], stats[:, 1:f + 1]
    total = weights.sum()
    mean = (weights * means).sum(0) / total
    m2 = stats[:, f + 1:].sum(0) + (weights * (means - mean).square()).sum(0)
    return total, mean, m2 / total


class _Scaler(TransformerMixin, BaseEstimator):
    """``transform(X) = (X - offset_) / scale_`` with the statistics from ``_fit``."""

    def _check(self, X, reset: bool):
        x = check_array(X)
        check_n_features(self, x, reset)
        return x

    def _offset_scale(self):
        raise NotImplementedError

    def _apply(self, x):
        """The transform of checked data: ``x * (1 / scale) - offset / scale`` in one kernel."""
        offset, scale = self._offset_scale()
        if scale is None:
            return x - offset.to(x.dtype) if offset is not None else x.clone()
        inverse = 1 / scale.to(x.dtype)
        if offset is None:
            return x * inverse
        return torch.addcmul(-offset.to(x.dtype) * inverse, x, inverse)

    def transform(self, X):
        """Scale ``X`` (laid out like ``X``)."""
        check_is_fitted(self, "n_features_in_")
        return self._apply(self._check(X, reset=False))

    def fit_transform(self, X, y=None, **fit_params):
        """``fit`` then ``transform``; the data, checked by ``fit``, are not checked again."""
        self.fit(X, y, **fit_params)
        return self._apply(check_array(X, allow_nan=True))

    def inverse_transform(self, X):
        """Undo :meth:`transform`."""
        check_is_fitted(self, "n_features_in_")
        x = self._check(X, reset=False)
        offset, scale = self._offset_scale()
        out = x * scale.to(x.dtype) if scale is not None else x
        return out + offset.to(x.dtype) if offset is not None else out


class StandardScaler(_Scaler):
    """Remove the mean and scale to unit variance (population variance, as scikit-learn).

    Attributes
    ----------
    mean_, var_, scale_ : Tensor (n_features,) (None when not computed)
    n_samples_seen_ : int

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0., 1.], [2., 1.]]), split=0)
    >>> th.preprocessing.StandardScaler().fit_transform(x).full().tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """

    def __init__(self, *, copy=True, with_mean=True, with_std=True):
        self.copy = copy
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X, y=None, sample_weight=None):
        """Compute the mean and standard deviation of every feature; returns self."""
        # the finiteness of the data is read from the statistics: no pass of its own
        x = check_array(X, allow_nan=True)
        check_n_features(self, x, reset=True)
        w = None if sample_weight is None else check_sample_weight(sample_weight, x)
        total, mean, var = moments(x, w)
        if not bool(torch.isfinite(mean).all() and torch.isfinite(var).all()):
            check_array(X)  # raises scikit-learn's error for NaN or infinite data
        self.n_samples_seen_ = int(x.shape[0]) if sample_weight is None else float(total)
        self.mean_ = mean if self.with_mean or self.with_std else None
        self.var_ = self.scale_ = None
        if self.with_std:
            self.var_ = var
            eps = torch.finfo(torch.float64).eps
            n = float(total)
            constant = self.var_ <= n * eps * self.var_ + (n * mean * eps) ** 2  # scikit-learn's constant features
            self.scale_ = handle_zeros_in_scale(self.var_.sqrt(), constant)
        return self

    def _offset_scale(self):
        return (self.mean_ if self.with_mean else None), self.scale_


class MinMaxScaler(_Scaler):
    """Scale every feature to ``feature_range`` from its minimum and maximum.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0.], [5.], [10.]]), split=0)
    >>> th.preprocessing.MinMaxScaler((-1, 1)).fit_transform(x).full()[:, 0].tolist()
    [-1.0, 0.0, 1.0]
    """

    def __init__(self, feature_range=(0, 1), *, copy=True, clip=False):
        self.feature_range = feature_range
        self.copy = copy
        self.clip = clip

    def fit(self, X, y=None):
        """Compute the minimum and maximum of every feature; returns self."""
        low, high = self.feature_range
        if low >= high:
            raise ValueError(f"Minimum of desired feature range must be smaller than maximum. Got {self.feature_range!r}.")
        x = self._check(X, reset=True)
        self.data_min_, self.data_max_ = replicated(x.amin(0)), replicated(x.amax(0))
        self.data_range_ = self.data_max_ - self.data_min_
        self.scale_ = (high - low) / handle_zeros_in_scale(self.data_range_)
        self.min_ = low - self.data_min_ * self.scale_
        self.n_samples_seen_ = int(x.shape[0])
        return self

    def _apply(self, x):
        out = x * self.scale_.to(x.dtype) + self.min_.to(x.dtype)
        return out.clamp(*self.feature_range) if self.clip else out

    def inverse_transform(self, X):
        check_is_fitted(self, "scale_")
        x = self._check(X, reset=False)
        return (x - self.min_.to(x.dtype)) / self.scale_.to(x.dtype)


class MaxAbsScaler(_Scaler):
    """Scale every feature by its maximum absolute value.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[-4.], [2.]]), split=0)
    >>> th.preprocessing.MaxAbsScaler().fit_transform(x).full()[:, 0].tolist()
    [-1.0, 0.5]
    """

    def __init__(self, *, copy=True):
        self.copy = copy

    def fit(self, X, y=None):
        """Compute the maximum absolute value of every feature; returns self."""
        x = self._check(X, reset=True)
        self.max_abs_ = replicated(x.abs().amax(0))
        self.scale_ = handle_zeros_in_scale(self.max_abs_)
        self.n_samples_seen_ = int(x.shape[0])
        return self

    def _offset_scale(self):
        return None, self.scale_


class RobustScaler(_Scaler):
    """Center on the median and scale by the interquartile range (or ``quantile_range``).

    Quantiles interpolate linearly, as numpy's percentile; ``unit_variance`` divides the
    scale by the range's width for a standard normal.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[1.], [2.], [3.], [4.], [5.]]), split=0)
    >>> th.preprocessing.RobustScaler().fit_transform(x).full()[:, 0].tolist()
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    """

    def __init__(self, *, with_centering=True, with_scaling=True, quantile_range=(25.0, 75.0), copy=True,
                 unit_variance=False):
        self.with_centering = with_centering
        self.with_scaling = with_scaling
        self.quantile_range = quantile_range
        self.copy = copy
        self.unit_variance = unit_variance

    def fit(self, X, y=None):
        """Compute the median and the quantile range of every feature; returns self."""
        q_min, q_max = self.quantile_range
        if not 0 <= q_min <= q_max <= 100:
            raise ValueError(f"Invalid quantile range: {self.quantile_range}")
        x = self._check(X, reset=True)
        levels = torch.tensor([q_min / 100, 0.5, q_max / 100], dtype=x.dtype, device=x.device)
        low, median, high = replicated(torch.quantile(x, levels, dim=0)).unbind(0)
        self.center_ = median if self.with_centering else None
        self.scale_ = None
        if self.with_scaling:
            self.scale_ = handle_zeros_in_scale(high - low)
            if self.unit_variance:
                normal = torch.special.ndtri(torch.tensor([q_min / 100, q_max / 100], dtype=torch.float64))
                self.scale_ = self.scale_ / float(normal[1] - normal[0])
        self.n_features_in_ = x.shape[1]
        return self

    def _offset_scale(self):
        return self.center_, self.scale_


class Normalizer(TransformerMixin, BaseEstimator):
    """Scale every sample to unit norm (``"l1"``, ``"l2"`` or ``"max"``); rows of norm 0 stay.

    Stateless: ``fit`` only checks the input. There is no ``inverse_transform`` (the norms
    are not kept).

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[3., 4.], [0., 0.]]), split=0)
    >>> th.preprocessing.Normalizer().fit_transform(x).full().tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """

    def __init__(self, norm="l2", *, copy=True):
        self.norm = norm
        self.copy = copy

    def fit(self, X, y=None):
        """Check ``X``; returns self."""
        x = check_array(X)
        check_n_features(self, x, reset=True)
        return self

    def transform(self, X, copy=None):
        """Every row of ``X`` divided by its norm (laid out like ``X``)."""
        check_is_fitted(self, "n_features_in_")
        x = check_array(X)
        check_n_features(self, x, reset=False)
        if self.norm == "l1":
            norms = x.abs().sum(1)
        elif self.norm == "l2":
            norms = (x * x).sum(1).sqrt()
        elif self.norm == "max":
            norms = x.abs().amax(1)
        else:
            raise ValueError(f"'{self.norm}' is not a supported norm (expected 'l1', 'l2' or 'max')")
        return x / handle_zeros_in_scale(norms)[:, None]
