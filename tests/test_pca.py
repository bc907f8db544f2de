"""PCA against scikit-learn's on the same data (components, variances, projections,
reconstructions), on balanced and skewed layouts; the estimator contract of
torchheat.base."""
import numpy as np
import pytest
import sklearn.base
import torch
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.decomposition import PCA as SkPCA

import torchheat as th
from torchheat.testing import skewed_counts

ATTRIBUTES = ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_", "mean_")


def split_data(x, comm, skewed):
    return th.distribute(torch.tensor(x), 0, counts=skewed_counts(len(x), comm.size) if skewed else None)


def assert_like_sklearn(ours, theirs, x, data, atol=1e-7):
    assert ours.n_components_ == theirs.n_components_
    kept = theirs.explained_variance_ > 1e-9 * theirs.explained_variance_.max()  # null-space directions are arbitrary
    for name in ATTRIBUTES:
        mine, ref = getattr(ours, name).numpy(), getattr(theirs, name)
        if name == "components_":
            mine, ref = mine[kept], ref[kept]
        # singular values from eigenvalues: sqrt(rounding of the largest) where the spectrum is 0
        tol = atol * theirs.singular_values_.max() if name == "singular_values_" else atol
        np.testing.assert_allclose(mine, ref, atol=tol, rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(ours.noise_variance_, theirs.noise_variance_, atol=atol)
    projected = ours.transform(data)
    assert isinstance(projected, th.DistTensor) and projected.split_dim == 0
    np.testing.assert_allclose(projected.numpy()[:, kept], theirs.transform(x)[:, kept], atol=1e-6)
    np.testing.assert_allclose(ours.inverse_transform(projected).numpy(), theirs.inverse_transform(theirs.transform(x)),
                               atol=1e-6)


@pytest.mark.parametrize("loader", [load_iris, load_wine, load_digits], ids=lambda f: f.__name__)
@pytest.mark.parametrize("n_components, whiten", [(None, False), (2, True), (0.9, False)])
def test_full_solver_equals_sklearn(comm, loader, n_components, whiten):
    x = loader().data.astype(np.float64)
    theirs = SkPCA(n_components=n_components, whiten=whiten, svd_solver="full").fit(x)
    for skewed in (False, True):
        data = split_data(x, comm, skewed)
        ours = th.decomposition.PCA(n_components=n_components, whiten=whiten).fit(data)
        assert_like_sklearn(ours, theirs, x, data)


def test_fit_transform_and_wide_data(comm):
    x = np.random.default_rng(1).standard_normal((12, 30))  # fewer samples than features
    theirs = SkPCA(svd_solver="full").fit(x)
    data = split_data(x, comm, True)
    ours = th.decomposition.PCA(svd_solver="full")
    projected = ours.fit_transform(data)
    assert_like_sklearn(ours, theirs, x, data)
    np.testing.assert_allclose(projected.numpy()[:, :11], theirs.transform(x)[:, :11], atol=1e-6)


def low_rank(n, d, rank, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, rank)) * np.geomspace(20, 5, rank)) @ rng.standard_normal((rank, d)) \
        + 0.01 * rng.standard_normal((n, d)) + 3.0


def test_randomized_solver(comm):
    x = low_rank(300, 40, 4)
    theirs = SkPCA(n_components=4, svd_solver="full").fit(x)
    ours = th.decomposition.PCA(n_components=4, svd_solver="randomized", random_state=0).fit(split_data(x, comm, True))
    assert_like_sklearn(ours, theirs, x, split_data(x, comm, False), atol=1e-5)
    again = th.decomposition.PCA(n_components=4, svd_solver="randomized", random_state=0).fit(split_data(x, comm, False))
    torch.testing.assert_close(again.components_, ours.components_)  # the same random numbers on any layout


def test_auto_solver_and_float32(comm):
    x = low_rank(700, 520, 3)  # large and few components asked: randomized
    ours = th.decomposition.PCA(n_components=3, random_state=1).fit(split_data(x, comm, False))
    assert ours._fit_svd_solver == "randomized"
    np.testing.assert_allclose(ours.components_.numpy(), SkPCA(3, svd_solver="full").fit(x).components_, atol=1e-5)
    x = load_iris().data.astype(np.float32)
    ours = th.decomposition.PCA(2).fit(split_data(x, comm, False))
    assert ours._fit_svd_solver == "full" and ours.components_.dtype == torch.float32
    np.testing.assert_allclose(ours.components_.numpy(), SkPCA(2).fit(x).components_, atol=1e-4)


def test_estimator_contract(comm):
    pca = th.decomposition.PCA(n_components=3, whiten=True)
    assert pca.get_params() == {"n_components": 3, "whiten": True, "svd_solver": "auto", "iterated_power": "auto",
                                "n_oversamples": 10, "random_state": None}
    assert repr(pca) == "PCA(n_components=3, whiten=True)"
    assert pca.set_params(svd_solver="full") is pca and pca.svd_solver == "full"
    copy = sklearn.base.clone(pca)
    assert copy is not pca and copy.get_params() == pca.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        pca.set_params(bogus=1)
    with pytest.raises(th.NotFittedError, match="not fitted yet"):
        pca.transform(torch.ones(2, 3))
    assert issubclass(th.NotFittedError, ValueError) and issubclass(th.NotFittedError, AttributeError)
    data = split_data(load_iris().data, comm, False)
    assert pca.fit(data) is pca
    th.base.check_is_fitted(pca)
    with pytest.raises(ValueError, match="n_components=9"):
        th.decomposition.PCA(9).fit(data)
    with pytest.raises(ValueError, match="svd_solver"):
        th.decomposition.PCA(svd_solver="arpack-ish").fit(data)


def test_nested_params_and_mixins():
    class Inner(th.base.BaseEstimator):
        def __init__(self, k=1):
            self.k = k

    class Outer(th.base.ClusterMixin, th.base.BaseEstimator):
        def __init__(self, inner=None, tol=0.5):
            self.inner, self.tol = inner, tol

        def fit(self, x, y=None):
            self.labels_ = torch.zeros(len(x), dtype=torch.int64)
            return self

    est = Outer(Inner(2))
    assert est.get_params()["inner__k"] == 2
    est.set_params(inner__k=5, tol=0.1)
    assert est.inner.k == 5 and est.tol == 0.1
    assert est.fit_predict(torch.ones(3, 2)).tolist() == [0, 0, 0]
