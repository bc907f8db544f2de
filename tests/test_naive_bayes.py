"""GaussianNB against scikit-learn on the global data: fitted statistics, predictions and
probabilities, partial_fit in batches, priors, and errors on every rank."""
import numpy as np
import pytest
import torch

import torchheat as th

sknb = pytest.importorskip("sklearn.naive_bayes")
from estimator_data import load, placements  # noqa: E402


def assert_same_model(est, ref):
    np.testing.assert_allclose(est.theta_.numpy(), ref.theta_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(est.var_.numpy(), ref.var_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.class_prior_.numpy(), ref.class_prior_, rtol=1e-12)
    assert est.epsilon_ == pytest.approx(ref.epsilon_, rel=1e-10)


@pytest.mark.parametrize("data", ["iris", "wine", "breast_cancer", "digits"])
def test_gaussian_nb_equals_scikit_learn(comm, data):
    X, y = load(data, 500)
    y = y * 3 + 2  # (any class values)
    ref = sknb.GaussianNB().fit(X.numpy(), y.numpy())
    for x in placements(X, comm):
        for labels in (y, th.distribute(y, 0)):
            nb = th.naive_bayes.GaussianNB().fit(x, labels)
            assert_same_model(nb, ref)
            assert np.array_equal(nb.classes_.numpy(), ref.classes_)
            pred = nb.predict(x)
            assert pred.split_dim == x.split_dim
            assert np.array_equal(pred.full().numpy(), ref.predict(X.numpy()))
            np.testing.assert_allclose(nb.predict_proba(x).full().numpy(), ref.predict_proba(X.numpy()), atol=1e-9)
            np.testing.assert_allclose(nb.predict_log_proba(x).full().numpy(), ref.predict_log_proba(X.numpy()),
                                       rtol=1e-7, atol=1e-7)
            assert nb.score(x, labels) == pytest.approx(ref.score(X.numpy(), y.numpy()))


def test_partial_fit_weights_and_priors_equal_scikit_learn(comm):
    X, y = load("wine")
    w = torch.rand(len(y), dtype=torch.float64) + 0.1
    ref = sknb.GaussianNB(priors=[0.2, 0.3, 0.5], var_smoothing=1e-6)
    nb = th.naive_bayes.GaussianNB(priors=[0.2, 0.3, 0.5], var_smoothing=1e-6)
    x, labels, weights = th.distribute(X, 0), th.distribute(y, 0), th.distribute(w, 0)
    for batch in (slice(0, 70), slice(70, 71), slice(71, 178)):
        ref.partial_fit(X[batch].numpy(), y[batch].numpy(), classes=[0, 1, 2], sample_weight=w[batch].numpy())
        nb.partial_fit(x[batch], labels[batch], classes=[0, 1, 2], sample_weight=weights[batch])
    assert_same_model(nb, ref)
    np.testing.assert_allclose(nb.class_count_.numpy(), ref.class_count_, rtol=1e-12)
    np.testing.assert_allclose(nb.predict_proba(x).full().numpy(), ref.predict_proba(X.numpy()), atol=1e-9)


def test_bad_input_raises_scikit_learns_errors_on_every_rank(comm):
    X, y = load("iris")
    x, labels = th.distribute(X, 0), th.distribute(y, 0)
    with pytest.raises(th.NotFittedError):
        th.naive_bayes.GaussianNB().predict(x)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        th.naive_bayes.GaussianNB().partial_fit(x, labels)
    with pytest.raises(ValueError, match=r"target label\(s\) \[2\] in y do not exist"):
        th.naive_bayes.GaussianNB().partial_fit(x, labels, classes=[0, 1])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        th.naive_bayes.GaussianNB().fit(x, y[:10])
    with pytest.raises(ValueError, match="sum of the priors should be 1"):
        th.naive_bayes.GaussianNB(priors=[0.5, 0.5, 0.5]).fit(x, labels)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianNB is expecting 4 features"):
        th.naive_bayes.GaussianNB().fit(x, labels).predict(x[:, :2])
    bad = X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        th.naive_bayes.GaussianNB().fit(th.distribute(bad, 0), labels)
