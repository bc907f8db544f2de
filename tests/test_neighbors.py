"""KNeighborsClassifier against scikit-learn on the global data: neighbours, distances,
predictions and probabilities for split, unbalanced and replicated training and query
samples, and errors on every rank."""
import numpy as np
import pytest

import torchheat as th

skn = pytest.importorskip("sklearn.neighbors")
from estimator_data import load, placements  # noqa: E402


def standardized(name):
    X, y = load(name)
    return (X - X.mean(0)) / X.std(0), y


@pytest.mark.parametrize("data", ["wine", "breast_cancer"])
@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_equals_scikit_learn(comm, data, weights):
    X, y = standardized(data)
    train, query = slice(0, 120), slice(120, None)
    ref = skn.KNeighborsClassifier(5, weights=weights).fit(X[train].numpy(), y[train].numpy() + 10)
    ref_d, ref_i = ref.kneighbors(X[query].numpy())
    trains, queries = list(placements(X[train], comm)), list(placements(X[query], comm))
    for x, q in zip(trains, queries[1:] + queries[:1]):  # every layout of each, in different pairs
        knn = th.neighbors.KNeighborsClassifier(5, weights=weights).fit(x, th.distribute(y[train] + 10, 0))
        dist, index = knn.kneighbors(q)
        assert index.split_dim == q.split_dim
        assert np.array_equal(index.full().numpy(), ref_i)
        np.testing.assert_allclose(dist.full().numpy(), ref_d, rtol=1e-10, atol=1e-10)
        assert np.array_equal(knn.predict(q).full().numpy(), ref.predict(X[query].numpy()))
        np.testing.assert_allclose(knn.predict_proba(q).full().numpy(), ref.predict_proba(X[query].numpy()),
                                   atol=1e-12)


def test_exact_matches_take_the_vote_and_errors(comm):
    X, y = standardized("iris")
    x = th.distribute(X, 0)
    knn = th.neighbors.KNeighborsClassifier(3, weights="distance").fit(x, th.distribute(y, 0))
    ref = skn.KNeighborsClassifier(3, weights="distance").fit(X.numpy(), y.numpy())
    np.testing.assert_allclose(knn.predict_proba(x[:20]).full().numpy(), ref.predict_proba(X[:20].numpy()), atol=1e-12)
    with pytest.raises(th.NotFittedError):
        th.neighbors.KNeighborsClassifier().predict(x)
    with pytest.raises(ValueError, match="Expected n_neighbors <= n_samples_fit"):
        th.neighbors.KNeighborsClassifier(200).fit(x, y).predict(x)
    with pytest.raises(ValueError, match="Expected n_neighbors > 0"):
        th.neighbors.KNeighborsClassifier(0).fit(x, y)
    with pytest.raises(ValueError, match="X has 2 features, but KNeighborsClassifier is expecting 4 features"):
        knn.predict(x[:, :2])
    bad = X.clone()
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match="infinity"):
        knn.predict(th.distribute(bad, 0))
