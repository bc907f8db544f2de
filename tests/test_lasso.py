"""Lasso against scikit-learn on the global data: coefficients, intercept, iterations and
predictions for split, unbalanced and replicated samples; one reduction per fit; errors."""
import numpy as np
import pytest
import torch

import torchheat as th

sklm = pytest.importorskip("sklearn.linear_model")
from estimator_data import load, placements  # noqa: E402


@pytest.mark.parametrize("data", ["diabetes", "breast_cancer"])
@pytest.mark.parametrize("kwargs", [dict(alpha=0.05), dict(alpha=0.5, fit_intercept=False), dict(alpha=0.01, positive=True)],
                         ids=str)
def test_lasso_equals_scikit_learn(comm, data, kwargs):
    X, y = load(data)
    X = (X - X.mean(0)) / X.std(0)
    y = y.to(torch.float64) * 3 + 1
    ref = sklm.Lasso(tol=1e-10, max_iter=5000, **kwargs).fit(X.numpy(), y.numpy())
    for x in placements(X, comm):
        est = th.linear_model.Lasso(tol=1e-10, max_iter=5000, **kwargs).fit(x, th.distribute(y, 0))
        np.testing.assert_allclose(est.coef_.numpy(), ref.coef_, rtol=1e-7, atol=1e-9)
        assert est.intercept_ == pytest.approx(ref.intercept_, rel=1e-9, abs=1e-9)
        pred = est.predict(x)
        assert pred.split_dim == x.split_dim
        np.testing.assert_allclose(pred.full().numpy(), ref.predict(X.numpy()), rtol=1e-8, atol=1e-8)
        assert est.score(x, y) == pytest.approx(ref.score(X.numpy(), y.numpy()), rel=1e-9)


def test_iterates_and_communication(comm):
    X, y = load("diabetes")
    ref = sklm.Lasso(alpha=0.1).fit(X.numpy(), y.numpy())
    with th.debug.comm_log() as log:
        est = th.linear_model.Lasso(alpha=0.1).fit(th.distribute(X, 0), th.distribute(y.double(), 0))
    assert est.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(est.coef_.numpy(), ref.coef_, rtol=1e-6, atol=1e-8)
    moved = sum(e.nbytes for e in log)
    assert moved < 64 * (X.shape[1] + 2) ** 2  # statistics only, never the samples
    warm = th.linear_model.Lasso(alpha=0.1, warm_start=True).fit(th.distribute(X, 0), y.double())
    assert warm.fit(th.distribute(X, 0), y.double()).n_iter_ <= 2


def test_bad_input_raises_scikit_learns_errors_on_every_rank(comm):
    X, y = load("diabetes")
    x = th.distribute(X, 0)
    with pytest.raises(th.NotFittedError):
        th.linear_model.Lasso().predict(x)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        th.linear_model.Lasso().fit(x, y[:-1].double())
    with pytest.raises(ValueError, match="alpha"):
        th.linear_model.Lasso(alpha=-1.0).fit(x, y.double())
    bad = y.double().clone()
    bad[5] = float("nan")
    with pytest.raises(ValueError, match="Input y contains NaN"):
        th.linear_model.Lasso().fit(x, th.distribute(bad, 0))
    with pytest.raises(ValueError, match="X has 3 features, but Lasso is expecting 10 features"):
        th.linear_model.Lasso().fit(x, y.double()).predict(x[:, :3])
    with pytest.warns(th.validation.ConvergenceWarning, match="did not converge"):
        th.linear_model.Lasso(alpha=1e-4, max_iter=2, tol=1e-12).fit(x, y.double())
