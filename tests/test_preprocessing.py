"""Scalers against scikit-learn on the global data, for split, unbalanced and replicated
samples: fitted statistics, transformed values, inverse transforms, layouts and errors."""
import numpy as np
import pytest
import torch

import torchheat as th

skp = pytest.importorskip("sklearn.preprocessing")
from estimator_data import load, placements  # noqa: E402

SCALERS = {
    "StandardScaler": {}, "StandardScaler(with_mean=False)": dict(with_mean=False),
    "MinMaxScaler((-2, 3))": dict(feature_range=(-2, 3)), "MaxAbsScaler": {}, "RobustScaler": {},
    "RobustScaler(10, 90, unit_variance)": dict(quantile_range=(10.0, 90.0), unit_variance=True),
    "Normalizer": {}, "Normalizer(l1)": dict(norm="l1"), "Normalizer(max)": dict(norm="max"),
}
ATTRS = ("mean_", "var_", "scale_", "data_min_", "data_max_", "min_", "max_abs_", "center_")


@pytest.mark.parametrize("data", ["wine", "breast_cancer"])
@pytest.mark.parametrize("name", SCALERS)
def test_scalers_equal_scikit_learn(comm, name, data):
    X = load(data)[0]
    X[:, 3] = 2.5  # a constant feature gets a scale of 1
    cls, kwargs = name.split("(")[0], SCALERS[name]
    ref = getattr(skp, cls)(**kwargs).fit(X.numpy())
    expected = ref.transform(X.numpy())
    for x in placements(X, comm):
        est = getattr(th.preprocessing, cls)(**kwargs).fit(x)
        for attr in ATTRS:
            if getattr(ref, attr, None) is not None:
                np.testing.assert_allclose(getattr(est, attr).numpy(), getattr(ref, attr), rtol=1e-10, atol=1e-12)
        out = est.transform(x)
        assert out.split_dim == x.split_dim and out.counts == x.counts
        np.testing.assert_allclose(out.full().numpy(), expected, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(est.fit_transform(x).full().numpy(), expected, rtol=1e-10, atol=1e-12)
        if hasattr(est, "inverse_transform"):
            np.testing.assert_allclose(est.inverse_transform(out).full().numpy(), X.numpy(), rtol=1e-10, atol=1e-10)


def test_standard_scaler_weights_and_float32(comm):
    X = load("iris")[0]
    w = torch.rand(150, dtype=torch.float64)
    ref = skp.StandardScaler().fit(X.numpy(), sample_weight=w.numpy())
    est = th.preprocessing.StandardScaler().fit(th.distribute(X, 0), sample_weight=th.distribute(w, 0))
    np.testing.assert_allclose(est.mean_.numpy(), ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(est.var_.numpy(), ref.var_, rtol=1e-10)
    out = th.preprocessing.MinMaxScaler().fit_transform(th.distribute(X.float(), 0))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("cls", ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "Normalizer"])
def test_bad_input_raises_scikit_learns_errors_on_every_rank(comm, cls):
    X = load("iris")[0]
    est = getattr(th.preprocessing, cls)
    with pytest.raises(th.NotFittedError):
        est().transform(th.distribute(X, 0))
    bad = X.clone()
    bad[-1, -1] = float("inf")
    with pytest.raises(ValueError, match="infinity"):
        est().fit(th.distribute(bad, 0))
    with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 4 features"):
        est().fit(th.distribute(X, 0)).transform(th.distribute(X[:, :3], 0))
    with pytest.raises(ValueError, match="Expected a 2-dimensional input"):
        est().fit(th.distribute(X[:, 0], 0))


@pytest.mark.parametrize("weighted", [False, True])
def test_standard_scaler_merges_blocks_of_rows(comm, monkeypatch, weighted):
    # blocks of 7 rows: many per rank, a short last one; shifted data (no cancellation in the merge)
    from torchheat.preprocessing import scalers

    monkeypatch.setattr(scalers, "_ROWS", 7)
    X = load("breast_cancer")[0] + 100
    w = torch.rand(X.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0)) if weighted else None
    ref = skp.StandardScaler().fit(X.numpy(), sample_weight=None if w is None else w.numpy())
    for x in placements(X, comm):
        est = th.preprocessing.StandardScaler()
        out = est.fit_transform(x, sample_weight=None if w is None else th.distribute(w, 0))
        np.testing.assert_allclose(est.mean_.numpy(), ref.mean_, rtol=1e-12)
        np.testing.assert_allclose(est.var_.numpy(), ref.var_, rtol=1e-9)
        assert out.split_dim == x.split_dim and out.counts == x.counts
        np.testing.assert_allclose(out.full().numpy(), ref.transform(X.numpy()), rtol=1e-9, atol=1e-10)
