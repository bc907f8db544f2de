"""Gaussian naive Bayes on samples split across processes.

Per-class weighted counts, means and variances come from two ``index_add`` reductions over
the samples (sums, then squared deviations from the class means: the two-pass variance),
one allreduce each; ``partial_fit`` merges a batch's statistics into the running ones with
Chan's update, as scikit-learn does. Prediction is local to every rank's rows: the
``(n/p, n_classes)`` joint log-likelihood, its argmax and log-sum-exp.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[-1., -1.], [-2., -1.], [1., 1.], [2., 1.]]), split=0)
>>> y = th.distribute(torch.tensor([1, 1, 2, 2]), split=0)
>>> nb = th.naive_bayes.GaussianNB().fit(x, y)
>>> nb.classes_.tolist(), nb.predict(torch.tensor([[-0.8, -1.]])).tolist()
([1, 2], [1])
"""
from __future__ import annotations

import math

import torch

from ..base import BaseEstimator, check_is_fitted
from ..validation import check_array, check_n_features, check_sample_weight, check_targets, replicated

__all__ = ["GaussianNB"]


class GaussianNB(BaseEstimator):
    """Gaussian naive Bayes (scikit-learn's ``GaussianNB``).

    Parameters
    ----------
    priors : tensor of shape (n_classes,), optional
        Prior probabilities of the classes (default: the class frequencies).
    var_smoothing : float, default 1e-9
        Portion of the largest feature variance added to every variance.

    Attributes
    ----------
    classes_, class_count_, class_prior_ : Tensor (n_classes,)
    theta_, var_ : Tensor (n_classes, n_features)
    epsilon_ : float

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[0.], [1.], [10.], [11.]]), split=0)
    >>> nb = th.naive_bayes.GaussianNB().partial_fit(x[:2], torch.tensor([0, 0]), classes=[0, 1])
    >>> nb.partial_fit(x[2:], torch.tensor([1, 1])).theta_[:, 0].tolist()
    [0.5, 10.5]
    """

    def __init__(self, *, priors=None, var_smoothing=1e-9):
        self.priors = priors
        self.var_smoothing = var_smoothing

    def fit(self, X, y, sample_weight=None):
        """Fit from scratch on ``X`` (samples split along axis 0) and ``y``; returns self."""
        for name in ("classes_", "theta_", "var_", "class_count_", "class_prior_", "epsilon_", "n_features_in_"):
            self.__dict__.pop(name, None)
        return self._partial_fit(X, y, None, sample_weight, refit=True)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """Update the model with one batch; ``classes`` is required on the first call."""
        return self._partial_fit(X, y, classes, sample_weight, refit=False)

    def _partial_fit(self, X, y, classes, sample_weight, refit):
        x = check_array(X)
        y = check_targets(x, y)
        first = not hasattr(self, "classes_")
        check_n_features(self, x, reset=first)
        if first:
            if classes is None:
                if not refit:
                    raise ValueError("classes must be passed on the first call to partial_fit.")
                classes = torch.unique(y)
            self.classes_ = replicated(torch.as_tensor(classes)).unique()
        elif classes is not None and not torch.equal(replicated(torch.as_tensor(classes)).unique(), self.classes_):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to partial_fit, was: "
                             f"{self.classes_!r}")
        y = y.to(self.classes_.dtype)
        if not bool(torch.isin(y, self.classes_).all()):
            unknown = replicated(torch.unique(y))
            unknown = unknown[~torch.isin(unknown, self.classes_)]
            raise ValueError(f"The target label(s) {unknown.tolist()} in y do not exist in the initial classes "
                             f"{self.classes_.tolist()}")
        k, d = self.classes_.shape[0], x.shape[1]
        w = check_sample_weight(sample_weight, x)
        # scikit-learn's rule: the smoothing comes from this batch's largest variance
        self.epsilon_ = float(self.var_smoothing * replicated(torch.var(x, 0, correction=0)).amax())
        if first:
            self.theta_ = torch.zeros(k, d, dtype=x.dtype, device=x.device)
            self.var_ = torch.zeros(k, d, dtype=x.dtype, device=x.device)
            self.class_count_ = torch.zeros(k, dtype=torch.float64, device=x.device)
            self._check_priors(k)
        else:
            self.var_ = self.var_ - self.epsilon_
        codes = torch.searchsorted(self.classes_, y)
        count = replicated(torch.zeros(k, dtype=x.dtype, device=x.device).index_add_(0, codes, w))
        sums = replicated(torch.zeros(k, d, dtype=x.dtype, device=x.device).index_add_(0, codes, x * w[:, None]))
        seen = count > 0
        mean = sums / torch.where(seen, count, 1)[:, None]
        ssd = replicated(torch.zeros(k, d, dtype=x.dtype, device=x.device).index_add_(
            0, codes, (x - mean[codes]) ** 2 * w[:, None]))
        var = ssd / torch.where(seen, count, 1)[:, None]
        past = self.class_count_.to(x.dtype)[:, None]
        new = count[:, None]
        total = past + new
        safe = torch.where(total > 0, total, 1)
        theta = (new * mean + past * self.theta_) / safe
        var_total = (past * self.var_ + new * var + new * past / safe * (self.theta_ - mean) ** 2) / safe
        self.theta_ = torch.where(seen[:, None], theta, self.theta_)
        self.var_ = torch.where(seen[:, None], var_total, self.var_) + self.epsilon_
        self.class_count_ = self.class_count_ + count.to(torch.float64)
        if self.priors is None:
            self.class_prior_ = self.class_count_ / self.class_count_.sum()
        return self

    def _check_priors(self, k):
        if self.priors is None:
            return
        priors = torch.as_tensor(self.priors, dtype=torch.float64)
        if priors.shape[0] != k:
            raise ValueError("Number of priors must match number of classes.")
        if not math.isclose(float(priors.sum()), 1.0):
            raise ValueError("The sum of the priors should be 1.")
        if bool((priors < 0).any()):
            raise ValueError("Priors must be non-negative.")
        self.class_prior_ = priors

    def _joint_log_likelihood(self, X):
        check_is_fitted(self, "theta_")
        x = check_array(X)
        check_n_features(self, x, reset=False)
        x = x.to(self.theta_.dtype)
        log_norm = -0.5 * torch.log(2 * math.pi * self.var_).sum(1)
        prior = torch.log(self.class_prior_).to(x.dtype)
        quad = ((x[:, None, :] - self.theta_) ** 2 / self.var_).sum(2)  # (n/p, k, d) per rank, as scikit-learn
        return prior + log_norm - 0.5 * quad

    def predict(self, X):
        """The most likely class of every sample (laid out like ``X``'s rows)."""
        best = self._joint_log_likelihood(X).argmax(1)
        return self.classes_[best]

    def predict_log_proba(self, X):
        """Log-probabilities of the classes, ``(n_samples, n_classes)``."""
        jll = self._joint_log_likelihood(X)
        return jll - torch.logsumexp(jll, 1, keepdim=True)

    def predict_proba(self, X):
        """Probabilities of the classes, ``(n_samples, n_classes)``."""
        return torch.exp(self.predict_log_proba(X))

    def score(self, X, y):
        """Mean accuracy on ``X`` and ``y``."""
        y = check_targets(check_array(X), y)
        return float((self.predict(X) == y.to(self.classes_.dtype)).to(torch.float64).mean())
