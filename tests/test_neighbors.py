"""KNeighborsClassifier against scikit-learn on the global data: neighbours, distances,
predictions and probabilities for split, unbalanced and replicated training and query
samples, and errors on every rank."""
import numpy as np
import pytest
import torch

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


@pytest.mark.parametrize("columns", [4096, 150, 20])
def test_blocks_and_column_groups_equal_scikit_learn(comm, monkeypatch, columns):
    # blocks of 16 queries and `columns` training samples (rounded down to whole groups of 16):
    # one padded block per chunk, several blocks with a padded last one, one group per block
    # (fewer groups than neighbours in a small chunk)
    from torchheat.neighbors import classification

    monkeypatch.setattr(classification, "_QUERIES", 16)
    monkeypatch.setattr(classification, "_COLUMNS", columns)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(1100, 3, generator=g, dtype=torch.float64) + torch.randint(0, 4, (1100, 1), generator=g)
    y = (X.sum(1) > 1.5).long()
    ref = skn.KNeighborsClassifier(7).fit(X[:1000].numpy(), y[:1000].numpy())
    ref_d, ref_i = ref.kneighbors(X[1000:].numpy())
    for x in placements(X[:1000], comm):
        knn = th.neighbors.KNeighborsClassifier(7).fit(x, th.distribute(y[:1000], 0))
        q = th.distribute(X[1000:], 0)
        dist, index = knn.kneighbors(q)
        assert np.array_equal(index.full().numpy(), ref_i)
        np.testing.assert_allclose(dist.full().numpy(), ref_d, rtol=1e-10, atol=1e-10)
        assert np.array_equal(knn.predict(q).full().numpy(), ref.predict(X[1000:].numpy()))


def test_chunks_walk_every_rank_chunk(comm):
    # the ring under the search: each chunk broadcast by its owner (read-only on the owner);
    # a tensor that needs gradients goes the differentiable way and keeps them exact
    from torchheat.pairwise import chunks

    X = torch.randn(23, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for x in placements(X, comm):
        walked = list(chunks(x))
        assert torch.equal(torch.cat([rows for _, rows in walked]), X)
        assert [start for start, _ in walked] == np.cumsum([0] + [len(r) for _, r in walked])[:-1].tolist()
    a = X.clone().requires_grad_()
    x = th.distribute(X, 0).requires_grad_()
    sum(rows.square().sum() * (i + 1) for i, (_, rows) in enumerate(chunks(x))).backward()
    counts = th.distribute(X, 0).counts
    weights = torch.repeat_interleave(torch.arange(1, 1 + sum(c > 0 for c in counts), dtype=X.dtype),
                                      torch.tensor([c for c in counts if c]))
    (a.square().sum(1) * weights).sum().backward()
    torch.testing.assert_close(x.grad.full(), a.grad)
