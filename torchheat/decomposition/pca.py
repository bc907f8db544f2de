"""Principal component analysis of data split along its samples.

Written on torchheat's torch ops only (every backend runs it). The data ``X (n, d)`` is
centred by its global mean (one allreduce), then:

* ``svd_solver="full"``: the covariance ``X_c^T X_c / (n - 1)`` (``d x d``, one product whose
  partial sums are combined across ranks) is decomposed by ``eigh`` on every rank alike; its
  eigenvalues are the explained variances and its eigenvectors the components. Exact for
  tall-skinny data (``d`` up to a few thousand); nothing of size ``n`` leaves a rank.
* ``svd_solver="randomized"``: Halko et al.'s randomized range finder on ``X_c``: a Gaussian
  test matrix from torchheat's random numbers (the same on any number of processes), power
  iterations with orthonormalization of the split ``n x l`` basis by a Gram matrix
  (``l x l``, one product), then the SVD of the small ``l x d`` projection.
* ``"auto"``: scikit-learn's policy (full for tall-skinny or small data, randomized when
  few components of a large matrix are asked for).

Signs follow scikit-learn's ``svd_flip(u_based_decision=False)``: the largest entry (in
absolute value) of each component is positive, so components equal scikit-learn's.

References
----------
N. Halko, P.-G. Martinsson, J. A. Tropp, "Finding structure with randomness: probabilistic
algorithms for constructing approximate matrix decompositions", SIAM Review 53 (2011).
"""
from __future__ import annotations

import numbers
import torch

from ..base import BaseEstimator, TransformerMixin, check_is_fitted
from ..ops.random import Generator, default_generator, randn
from ..validation import check_array, replicated

_FITTED = ("components_", "mean_", "explained_variance_")


def _svd_flip(vt: torch.Tensor) -> torch.Tensor:
    """Rows of ``vt`` with their largest absolute entry made positive (scikit-learn's convention)."""
    biggest = vt.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vt.gather(1, biggest))
    return vt * torch.where(signs == 0, torch.ones_like(signs), signs)


def _orthonormal(q: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of a split tall-skinny ``q``: twice ``q V L^-1/2``
    from the eigendecomposition of the Gram matrix (one small product each)."""
    for _ in range(2):
        values, vectors = torch.linalg.eigh(replicated(q.mT @ q))
        values = values.clamp_min(values.max().clamp_min(0) * torch.finfo(values.dtype).eps * q.shape[0])
        q = q @ (vectors / values.sqrt())
    return q


class PCA(TransformerMixin, BaseEstimator):
    """Principal component analysis (scikit-learn's ``PCA``) of split data.

    Parameters
    ----------
    n_components : int, float or None
        Components kept: an int, a fraction of the variance to explain (``0 < n_components <
        1``, full solver), or None (all, ``min(n_samples, n_features)``).
    whiten : bool
        Scale the projections to unit variance.
    svd_solver : {"auto", "full", "randomized"}
        See the module docstring.
    iterated_power : int or "auto"
        Power iterations of the randomized solver ("auto": 7 when ``n_components`` is below
        a tenth of the smaller dimension, else 4).
    n_oversamples : int
        Extra random vectors of the randomized solver.
    random_state : int, torchheat.Generator or None
        Seed of the randomized solver's test matrix (None: torchheat's default generator).

    Attributes
    ----------
    components_ : torch.Tensor (n_components, n_features)
    explained_variance_, explained_variance_ratio_, singular_values_ : torch.Tensor (n_components,)
    mean_ : torch.Tensor (n_features,)
    n_components_, n_samples_, n_features_in_ : int
    noise_variance_ : float
        The mean of the discarded variances (probabilistic PCA).

    All attributes are plain tensors, the same on every rank.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.tensor([[1., 2.], [3., 4.], [5., 7.], [0., 1.]]), split=0)
    >>> pca = th.decomposition.PCA(n_components=1).fit(x)
    >>> pca.transform(x).shape, pca.explained_variance_ratio_.item() > 0.99
    (torch.Size([4, 1]), True)
    """

    def __init__(self, n_components=None, *, whiten=False, svd_solver="auto", iterated_power="auto", n_oversamples=10,
                 random_state=None):
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.iterated_power = iterated_power
        self.n_oversamples = n_oversamples
        self.random_state = random_state

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, x, y=None) -> "PCA":
        """Learn the components of ``x (n_samples, n_features)``; returns self."""
        x = check_array(x)
        n, dim = x.shape
        k = self._check_components(n, dim)
        solver = self._solver(n, dim, k)
        self.mean_ = replicated(x.mean(0))
        centred = x - self.mean_
        if solver == "full":
            self._fit_full(centred, n, dim, k)
        else:
            self._fit_randomized(centred, n, dim, k)
        self.n_samples_, self.n_features_in_ = n, dim
        self._fit_svd_solver = solver
        return self

    def _check_components(self, n: int, dim: int):
        k = self.n_components
        if self.svd_solver not in ("auto", "full", "randomized"):
            raise ValueError(f"svd_solver must be 'auto', 'full' or 'randomized', got {self.svd_solver!r}")
        if k is None:
            return min(n, dim)
        if isinstance(k, numbers.Integral) and not isinstance(k, bool):
            if not 0 <= k <= min(n, dim):
                raise ValueError(f"n_components={k} must be between 0 and min(n_samples, n_features)={min(n, dim)} "
                                 f"with svd_solver={self.svd_solver!r}")
            return int(k)
        if isinstance(k, numbers.Real) and 0 < k < 1:
            if self.svd_solver == "randomized":
                raise ValueError(f"n_components={k} (a fraction of the variance) needs svd_solver='full' or 'auto'")
            return float(k)
        raise ValueError(f"n_components must be None, an int in [0, {min(n, dim)}] or a float in (0, 1), got {k!r}")

    def _solver(self, n: int, dim: int, k) -> str:
        if self.svd_solver != "auto":
            if self.svd_solver == "randomized" and not 1 <= k:
                raise ValueError(f"n_components={k} must be between 1 and min(n_samples, n_features)={min(n, dim)} "
                                 "with svd_solver='randomized'")
            return self.svd_solver
        if (dim <= 1000 and n >= 10 * dim) or max(n, dim) <= 500:
            return "full"
        return "randomized" if isinstance(k, int) and 1 <= k < 0.8 * min(n, dim) else "full"

    def _fit_full(self, centred, n: int, dim: int, k) -> None:
        covariance = replicated(centred.mT @ centred) / max(n - 1, 1)
        values, vectors = torch.linalg.eigh(covariance)
        rank = min(n, dim)
        variance = values.flip(0)[:rank].clamp_min(0)
        vt = _svd_flip(vectors.flip(1)[:, :rank].mT)
        ratio = variance / variance.sum()
        if isinstance(k, float):  # the fewest components that explain more than the fraction k
            k = int(torch.searchsorted(ratio.cumsum(0), torch.tensor(k, dtype=ratio.dtype), right=True)) + 1
            k = min(k, rank)
        self._keep(vt, variance, ratio, (variance * max(n - 1, 1)).sqrt(), k, variance[k:].mean() if k < rank else 0.0)

    def _fit_randomized(self, centred, n: int, dim: int, k: int) -> None:
        width = min(k + self.n_oversamples, n, dim)
        power = self.iterated_power if self.iterated_power != "auto" else (7 if k < 0.1 * min(n, dim) else 4)
        generator = self.random_state if isinstance(self.random_state, Generator) else \
            default_generator if self.random_state is None else Generator().manual_seed(int(self.random_state))
        q = centred @ replicated(randn(dim, width, generator=generator, dtype=centred.dtype))
        for _ in range(power):
            q = _orthonormal(q)
            q = centred @ replicated(centred.mT @ q)
        q = _orthonormal(q)
        _, s, vt = torch.linalg.svd(replicated(q.mT @ centred), full_matrices=False)
        vt = _svd_flip(vt[:k])
        variance = s[:k] ** 2 / max(n - 1, 1)
        total = float((centred ** 2).sum()) / max(n - 1, 1)
        rank = min(n, dim)
        noise = (total - float(variance.sum())) / (rank - k) if k < rank else 0.0
        self._keep(vt, variance, variance / total, s[:k], k, noise)

    def _keep(self, vt, variance, ratio, singular, k: int, noise) -> None:
        self.n_components_ = k
        self.components_ = vt[:k].contiguous()
        self.explained_variance_ = variance[:k].clone()
        self.explained_variance_ratio_ = ratio[:k].clone()
        self.singular_values_ = singular[:k].clone()
        self.noise_variance_ = float(noise)

    # -- using the components ---------------------------------------------------------------------
    def transform(self, x) -> torch.Tensor:
        """Project ``x`` on the components (split as ``x`` along its samples)."""
        check_is_fitted(self, _FITTED)
        out = (check_array(x) - self.mean_) @ self.components_.mT
        if self.whiten:
            out = out / self._scale()
        return out

    def inverse_transform(self, x) -> torch.Tensor:
        """Data back from projections (exact for the variance the components explain)."""
        check_is_fitted(self, _FITTED)
        components = self.components_ * self._scale()[:, None] if self.whiten else self.components_
        return check_array(x) @ components + self.mean_

    def _scale(self) -> torch.Tensor:
        scale = self.explained_variance_.sqrt()
        return scale.clamp_min(torch.finfo(scale.dtype).eps)
