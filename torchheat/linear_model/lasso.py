"""Lasso by cyclic coordinate descent on the Gram matrix: one reduction for the whole fit.

The objective is scikit-learn's ``1 / (2 n) ||y - X w||^2 + alpha ||w||_1``. With centered
data (``fit_intercept``) every coordinate update needs only ``G = X^T X``, ``q = X^T y`` and
``y^T y``: those are computed once (a matmul over the split samples: one allreduce of
``d x d + d + 1`` numbers), and the coordinate descent then runs on those small replicated
tensors with no further communication. It is scikit-learn's ``precompute=True`` solver, so
the iterates and the stopping rule (largest coordinate change, then the duality gap) are
scikit-learn's; only the reduction order of the sums differs.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0., 0.], [1., 1.], [2., 2.]]), split=0)
>>> y = th.distribute(torch.tensor([0., 1., 2.]), split=0)
>>> lasso = th.linear_model.Lasso(alpha=0.1).fit(x, y)
>>> [round(c, 4) for c in lasso.coef_.tolist()], round(lasso.intercept_, 4)
([0.85, 0.0], 0.15)
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..base import BaseEstimator, check_is_fitted
from ..validation import ConvergenceWarning, check_array, check_n_features, check_targets, replicated

__all__ = ["Lasso"]


def coordinate_descent(gram, q, y_norm2, alpha, max_iter, tol, positive=False, w=None):
    """Minimize ``1/2 w^T G w - q^T w + alpha |w|_1`` cyclically (scikit-learn's
    ``enet_coordinate_descent_gram`` with no L2 term); returns ``(w, gap, tol, n_iter)``.

    Runs in numpy on the small replicated statistics (a coordinate update is a handful of
    operations on ``d`` numbers, where numpy's per-call cost is lower than torch's)."""
    gram, q = gram.double().numpy(), q.double().numpy()
    d = q.shape[0]
    w = np.zeros(d) if w is None else w.double().numpy().copy()
    h = gram @ w
    d_w_tol, tol = tol, tol * y_norm2
    diag = gram.diagonal().tolist()
    gap = tol + 1.0
    for n_iter in range(max_iter):
        w_max = d_w_max = 0.0
        for j in range(d):
            if diag[j] == 0.0:
                continue
            w_j = w[j]
            if w_j != 0.0:
                h -= w_j * gram[j]
            tmp = q[j] - h[j]
            new = 0.0 if positive and tmp < 0 else math.copysign(max(abs(tmp) - alpha, 0.0), tmp) / diag[j]
            w[j] = new
            if new != 0.0:
                h += new * gram[j]
            d_w_max = max(d_w_max, abs(new - w_j))
            w_max = max(w_max, abs(new))
        if w_max == 0.0 or d_w_max / w_max < d_w_tol or n_iter == max_iter - 1:
            xta = q - h
            dual_norm = float(xta.max()) if positive else float(np.abs(xta).max())
            r_norm2 = float(y_norm2 + w @ h - 2 * (q @ w))
            if dual_norm > alpha:
                const = alpha / dual_norm
                gap = 0.5 * (r_norm2 + r_norm2 * const ** 2)
            else:
                const, gap = 1.0, r_norm2
            gap += alpha * float(np.abs(w).sum()) - const * float(y_norm2 - q @ w)
            if gap < tol:
                break
    return torch.from_numpy(w), gap, tol, n_iter + 1


class Lasso(BaseEstimator):
    """Linear regression with an L1 penalty (scikit-learn's ``Lasso``), on split samples.

    Parameters
    ----------
    alpha : float, default 1.0
    fit_intercept : bool, default True
    max_iter : int, default 1000
    tol : float, default 1e-4
    positive : bool, default False
    warm_start : bool, default False

    Attributes
    ----------
    coef_ : Tensor (n_features,)
    intercept_ : float
    n_iter_ : int
    dual_gap_ : float

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.eye(3, dtype=torch.float64), split=0)
    >>> th.linear_model.Lasso(alpha=0.01, fit_intercept=False).fit(x, torch.tensor([1., 0., 0.])).coef_.tolist()
    [0.97, 0.0, 0.0]
    """

    def __init__(self, alpha=1.0, *, fit_intercept=True, max_iter=1000, tol=1e-4, positive=False, warm_start=False):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.positive = positive
        self.warm_start = warm_start

    def fit(self, X, y):
        """Fit on ``X`` (samples split along axis 0, or replicated) and ``y``; returns self."""
        if not self.alpha >= 0:
            raise ValueError(f"The 'alpha' parameter of Lasso must be a float in the range [0, inf). Got {self.alpha!r} instead.")
        x = check_array(X)
        y = check_targets(x, check_array(y, name="y", ensure_2d=False)).to(x.dtype)
        check_n_features(self, x, reset=True)
        n = x.shape[0]
        if self.fit_intercept:
            x_mean, y_mean = replicated(x.mean(0)), float(y.mean())
            x, y = x - x_mean, y - y_mean
        else:
            x_mean, y_mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device), 0.0
        stats = replicated(torch.cat([x, y[:, None]], 1).T @ torch.cat([x, y[:, None]], 1))  # one reduction
        gram, q, y_norm2 = stats[:-1, :-1].cpu(), stats[:-1, -1].cpu(), float(stats[-1, -1])
        start = self.coef_.cpu() if self.warm_start and hasattr(self, "coef_") else None
        w, gap, tol, self.n_iter_ = coordinate_descent(gram, q, y_norm2, self.alpha * n, self.max_iter, self.tol,
                                                       self.positive, start)
        if gap >= tol:
            warnings.warn(f"Objective did not converge. You might want to increase the number of iterations. "
                          f"Duality gap: {gap:.3e}, tolerance: {tol:.3e}", ConvergenceWarning, stacklevel=2)
        self.dual_gap_ = gap / n
        self.coef_ = w.to(dtype=x.dtype, device=x.device)
        self.intercept_ = y_mean - float(x_mean @ self.coef_) if self.fit_intercept else 0.0
        return self

    def predict(self, X):
        """``X @ coef_ + intercept_`` (laid out like ``X``'s rows)."""
        check_is_fitted(self, "coef_")
        x = check_array(X)
        check_n_features(self, x, reset=False)
        return x @ self.coef_.to(x.dtype) + self.intercept_

    def score(self, X, y):
        """Coefficient of determination R^2 of the prediction."""
        y = check_array(y, name="y", ensure_2d=False)
        residual = float(((y - self.predict(X)) ** 2).sum())
        return 1 - residual / float(((y - y.mean()) ** 2).sum())
