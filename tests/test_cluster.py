"""Clustering against scikit-learn (and numpy references) on the global data, for split,
unbalanced and replicated samples; the same random_state gives the same result on any
number of processes; bad input raises scikit-learn's exceptions on every rank."""
import numpy as np
import pytest
import torch

import torchheat as th
from torchheat.comm.self import SelfCommunicator
from torchheat.testing import skewed_counts
from torchheat.validation import replicated

sklearn = pytest.importorskip("sklearn")
from estimator_data import placements  # noqa: E402
from sklearn import cluster as skc, datasets, metrics  # noqa: E402

DATA = {name: torch.tensor(getattr(datasets, f"load_{name}")().data) for name in ("iris", "wine", "breast_cancer")}
DATA["digits"] = torch.tensor(datasets.load_digits().data[:400])
DATA["blobs"] = torch.tensor(datasets.make_blobs(300, 5, centers=4, random_state=0)[0])


def same_partition(a, b):
    """Labels equal up to a permutation of the cluster ids."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("name", list(DATA))
def test_kmeans_from_the_same_centers_equals_scikit_learn(comm, name):
    X = DATA[name]
    k = 3 if name != "blobs" else 4
    init = X[torch.linspace(0, X.shape[0] - 1, k).long()]
    ref = skc.KMeans(k, init=init.numpy(), n_init=1).fit(X.numpy())
    for x in placements(X, comm):
        km = th.cluster.KMeans(k, init=init).fit(x)
        assert km.n_iter_ == ref.n_iter_
        torch.testing.assert_close(km.cluster_centers_, torch.tensor(ref.cluster_centers_))
        assert km.labels_.split_dim == x.split_dim and km.labels_.counts == x.counts
        assert np.array_equal(km.labels_.full().numpy(), ref.labels_)
        assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
        assert np.array_equal(km.predict(x).full().numpy(), ref.predict(X.numpy()))
        torch.testing.assert_close(km.transform(x).full(), torch.tensor(ref.transform(X.numpy())))
        assert km.score(x) == pytest.approx(ref.score(X.numpy()), rel=1e-10)


def test_kmeans_weights_tolerance_float32_and_empty_clusters(comm):
    X = DATA["blobs"]
    w = torch.rand(X.shape[0], dtype=torch.float64) + 0.5
    init = X[:4]
    ref = skc.KMeans(4, init=init.numpy(), n_init=1, tol=1e-2).fit(X.numpy(), sample_weight=w.numpy())
    km = th.cluster.KMeans(4, init=init, tol=1e-2).fit(th.distribute(X, 0), sample_weight=th.distribute(w, 0))
    assert km.n_iter_ == ref.n_iter_ and km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    torch.testing.assert_close(km.cluster_centers_, torch.tensor(ref.cluster_centers_))
    km32 = th.cluster.KMeans(4, init=init.float()).fit(th.distribute(X.float(), 0))
    assert km32.cluster_centers_.dtype == torch.float32 and km32.labels_.dtype == torch.int64
    # a center far from every sample starts empty: relocated to the farthest sample, as scikit-learn
    far = torch.cat([X[:3], torch.full((1, 5), 1e3, dtype=torch.float64)])
    ref = skc.KMeans(4, init=far.numpy(), n_init=1).fit(X.numpy())
    km = th.cluster.KMeans(4, init=far).fit(th.distribute(X, 0, counts=skewed_counts(300, comm.size)))
    torch.testing.assert_close(km.cluster_centers_, torch.tensor(ref.cluster_centers_))
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


def test_kmeans_far_from_the_origin_and_weighted_runs_of_many_iterations(comm):
    # the loop measures from the initial centers' mean: data far from 0 loses nothing to cancellation
    X = DATA["blobs"] + 1e8
    ref = skc.KMeans(4, init=X[:4].numpy(), n_init=1).fit(X.numpy())
    for x in placements(X, comm):
        km = th.cluster.KMeans(4, init=X[:4]).fit(x)
        assert km.n_iter_ == ref.n_iter_ and np.array_equal(km.labels_.full().numpy(), ref.labels_)
        torch.testing.assert_close(km.cluster_centers_, torch.tensor(ref.cluster_centers_), rtol=0, atol=1e-6)
        assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-8)
    # weighted, tol=0: the per-cluster table updated with the moved rows over many iterations
    X, w = DATA["digits"], torch.linspace(0.5, 2, DATA["digits"].shape[0], dtype=torch.float64)
    init = X[torch.linspace(0, X.shape[0] - 1, 6).long()]
    ref = skc.KMeans(6, init=init.numpy(), n_init=1, tol=0).fit(X.numpy(), sample_weight=w.numpy())
    km = th.cluster.KMeans(6, init=init, tol=0).fit(th.distribute(X, 0, counts=skewed_counts(400, comm.size)),
                                                   sample_weight=th.distribute(w, 0, counts=skewed_counts(400, comm.size)))
    assert km.n_iter_ == ref.n_iter_ and np.array_equal(km.labels_.full().numpy(), ref.labels_)
    torch.testing.assert_close(km.cluster_centers_, torch.tensor(ref.cluster_centers_))
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


@pytest.mark.parametrize("k", [3, 6, 64])  # torch.min row-wise, or the transposed branch-free search in one or many blocks
def test_the_nearest_center_search_takes_the_lowest_index_among_ties(k):
    from torchheat.cluster.kmeans import _NearestCenter

    g = torch.Generator().manual_seed(k)
    x = torch.randint(-3, 4, (3000, 5), generator=g).double()  # integers: every distance exact, many exact ties
    c = torch.randint(-3, 4, (k, 5), generator=g).double()
    c[k - 1] = c[1]
    bias = (c * c).sum(1)
    expected = torch.argmin(bias - 2 * (x[:, None, :] * c).sum(2), 1)  # argmin: the first of the minima
    search, labels = _NearestCenter(k, 1024, x), torch.empty(3000, dtype=torch.int64)
    for start in range(0, 3000, 1024):  # the last block shorter
        search(bias, c, x[start:start + 1024], out=labels[start:start + 1024])
    assert torch.equal(labels, expected)


def test_one_reduction_per_lloyd_iteration(comm):
    X = DATA["blobs"]
    x = th.distribute(X, 0)
    events = []
    for max_iter in (1, 2):
        with th.debug.comm_log() as log:
            th.cluster.KMeans(4, init=X[:4], max_iter=max_iter, tol=0).fit(x)
        events.append([e.collective for e in log])
    if comm.size > 1:
        assert len(events[1]) - len(events[0]) == 1 and "alltoallv" not in events[1]


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_the_same_random_state_gives_the_same_result_on_any_number_of_processes(comm, init):
    X = DATA["blobs"]
    one = th.cluster.KMeans(4, init=init, n_init=2, random_state=7).fit(th.distribute(X, 0, comm=SelfCommunicator()))
    for x in placements(X, comm):
        km = th.cluster.KMeans(4, init=init, n_init=2, random_state=7).fit(x)
        torch.testing.assert_close(km.cluster_centers_, one.cluster_centers_)
        assert km.inertia_ == pytest.approx(one.inertia_, rel=1e-10)
    if init == "k-means++":  # the seeding is as good as scikit-learn's on these blobs
        ref = skc.KMeans(4, init=init, n_init=2, random_state=7).fit(X.numpy())
        assert one.inertia_ <= ref.inertia_ * 1.05


def numpy_kmedians(X, centers, medoids=False, max_iter=300):
    for _ in range(max_iter):
        labels = np.abs(X[:, None] - centers[None]).sum(-1).argmin(1)
        new = np.array([np.median(X[labels == c], 0) if (labels == c).any() else centers[c] for c in range(len(centers))])
        if medoids:
            new = np.array([X[labels == c][np.abs(X[labels == c] - new[c]).sum(1).argmin()] if (labels == c).any()
                            else centers[c] for c in range(len(centers))])
        if np.array_equal(new, centers):
            break
        centers = new
    return centers, np.abs(X[:, None] - centers[None]).sum(-1).argmin(1)


@pytest.mark.parametrize("medoids", [False, True])
def test_kmedians_and_kmedoids_equal_a_numpy_reference(comm, medoids):
    X = DATA["iris"]
    init = X[[0, 50, 100]]
    centers, labels = numpy_kmedians(X.numpy(), init.numpy(), medoids)
    est = th.cluster.KMedoids if medoids else th.cluster.KMedians
    for x in placements(X, comm):
        m = est(3, init=init, tol=0).fit(x)
        torch.testing.assert_close(m.cluster_centers_, torch.tensor(centers))
        assert np.array_equal(m.labels_.full().numpy(), labels)
        assert m.inertia_ == pytest.approx(np.abs(X.numpy() - centers[labels]).sum())
    if medoids:
        assert torch.equal(X[m.medoid_indices_], m.cluster_centers_)


def test_batch_parallel_kmeans_finds_the_blobs(comm):
    X, truth = (torch.tensor(a) for a in datasets.make_blobs(400, 3, centers=3, cluster_std=0.5, random_state=1))
    for x in placements(X, comm):
        b = th.cluster.BatchParallelKMeans(3, random_state=0).fit(x)
        assert same_partition(b.labels_.full().numpy(), truth.numpy())
        assert b.labels_.counts == x.counts
        assert b.inertia_ == pytest.approx(float(((X - b.cluster_centers_[b.labels_.full()]) ** 2).sum()))


def test_silhouette_equals_scikit_learn(comm):
    X = DATA["iris"]
    labels = torch.tensor(datasets.load_iris().target) * 5 - 3  # (any label values)
    expected = metrics.silhouette_samples(X.numpy(), labels.numpy())
    for x in placements(X, comm):
        for lab in (labels, th.distribute(labels, 0, counts=skewed_counts(150, comm.size))):
            s = th.cluster.silhouette_samples(x, lab)
            assert x.split_dim is None or s.split_dim == x.split_dim
            np.testing.assert_allclose(s.full().numpy(), expected, atol=1e-8)
            assert th.cluster.silhouette_score(x, lab) == pytest.approx(float(expected.mean()), abs=1e-8)
    with pytest.raises(ValueError, match="Number of labels is 1"):
        th.cluster.silhouette_score(th.distribute(X, 0), torch.zeros(150))


@pytest.mark.parametrize("est", [th.cluster.KMeans, th.cluster.KMedians, th.cluster.KMedoids, th.cluster.BatchParallelKMeans])
def test_bad_input_raises_scikit_learns_errors_on_every_rank(comm, est):
    X = DATA["iris"].clone()
    x = th.distribute(X, 0, counts=skewed_counts(150, comm.size))
    with pytest.raises(th.NotFittedError):
        est(3).predict(x)
    bad = X.clone()
    bad[-1, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN"):
        est(3).fit(th.distribute(bad, 0))
    bad[-1, 0] = float("inf")
    with pytest.raises(ValueError, match="infinity"):
        est(3).fit(th.distribute(bad, 0))
    with pytest.raises(ValueError, match="n_samples=150 should be >= n_clusters=151"):
        est(151).fit(x)
    with pytest.raises(ValueError, match="n_clusters"):
        est(0).fit(x)
    with pytest.raises(ValueError, match="split along axis 1"):
        est(3).fit(th.distribute(X, 1))
    fitted = est(3, random_state=0).fit(x)
    with pytest.raises(ValueError, match="X has 3 features, but .* is expecting 4 features"):
        fitted.predict(th.distribute(X[:, :3], 0))
    assert est(3).get_params()["n_clusters"] == 3 and repr(est(5)) == f"{est.__name__}(n_clusters=5)"


def test_bad_init_and_more_clusters_than_distinct_points(comm):
    X = DATA["iris"]
    x = th.distribute(X, 0)
    with pytest.raises(ValueError, match="does not match the number of clusters 3"):
        th.cluster.KMeans(3, init=X[:2]).fit(x)
    with pytest.raises(ValueError, match="does not match the number of features of the data 4"):
        th.cluster.KMeans(2, init=X[:2, :3]).fit(x)
    with pytest.raises(ValueError, match="init"):
        th.cluster.KMeans(2, init="kmeans||").fit(x)
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        th.cluster.KMeans(2, init=X[:2], n_init=3).fit(x)
    with pytest.warns(th.validation.ConvergenceWarning, match="distinct clusters"):
        th.cluster.KMeans(3, random_state=0).fit(th.distribute(torch.ones(10, 2) * torch.tensor([1.0, 2.0]), 0))


def test_verbose_shows_a_progress_bar_on_rank_0_only(comm, capsys):
    th.cluster.KMeans(3, init=DATA["iris"][:3], verbose=True).fit(th.distribute(DATA["iris"], 0))
    err = capsys.readouterr().err
    assert ("KMeans" in err) == (comm.rank == 0)


# -- spectral clustering -----------------------------------------------------------------------------
BLOBS3 = torch.tensor(datasets.make_blobs(60, 3, centers=3, cluster_std=0.5, random_state=2)[0])


def normalized_laplacian(a):
    """Heat's and scipy's symmetric normalized Laplacian of an affinity (diagonal ignored), on the global data."""
    a = a.clone().fill_diagonal_(0)
    root = a.sum(1).where(a.sum(1) > 0, torch.ones(())).sqrt()
    return torch.eye(a.shape[0], dtype=a.dtype) - a / root[:, None] / root


@pytest.mark.parametrize("affinity", ["nearest_neighbors", "rbf"])
def test_spectral_clustering_equals_scikit_learn(comm, affinity):
    X = BLOBS3
    ref = skc.SpectralClustering(3, affinity=affinity, gamma=0.5, n_neighbors=8, random_state=0).fit(X.numpy())
    affinity_ref = torch.tensor(ref.affinity_matrix_.toarray() if affinity != "rbf" else ref.affinity_matrix_)
    eigenvalues = torch.linalg.eigvalsh(normalized_laplacian(affinity_ref))[:3]
    # (the 3 components of the neighbour graph give 0 three times, which one Lanczos start
    # vector resolves only with the whole space: eigh there)
    params = dict(affinity=affinity, gamma=0.5, n_neighbors=8, random_state=0, n_init=2, n_lanczos=40,
                  eigen_solver="lanczos" if affinity == "rbf" else "eigh")
    one = th.cluster.SpectralClustering(3, **params).fit(th.distribute(X, 0, comm=SelfCommunicator()))
    for x in placements(X, comm):
        sc = th.cluster.SpectralClustering(3, **params).fit(x)
        labels = sc.labels_.full()
        assert metrics.adjusted_rand_score(labels.numpy(), ref.labels_) == 1.0
        assert sc.labels_.counts == x.counts and sc.embedding_.counts == x.counts
        torch.testing.assert_close(sc.affinity_matrix_.full(), affinity_ref)
        torch.testing.assert_close(sc.eigenvalues_, eigenvalues, atol=1e-8, rtol=0)
        assert torch.equal(labels, one.labels_.full())  # the same labels on any number of processes


def test_spectral_clustering_heat_options_and_eigh(comm):
    X = BLOBS3
    d = torch.cdist(X, X)
    heat_graph = torch.where(d < 2.0, d, 0)  # Heat's metric="euclidean", laplacian="eNeighbour", boundary="upper"
    expected = torch.linalg.eigvalsh(normalized_laplacian(heat_graph))[:3]
    for x in placements(X, comm):
        sc = th.cluster.SpectralClustering(3, affinity="euclidean", laplacian="eNeighbour", threshold=2.0,
                                           eigen_solver="eigh", random_state=0, n_init=1).fit(x)
        torch.testing.assert_close(sc.eigenvalues_, expected, atol=1e-8, rtol=0)
        # a precomputed affinity split along rows, and the number of clusters from the largest eigengap
        a = th.distribute(torch.exp(-0.5 * d ** 2), x.split_dim, counts=x.counts)
        auto = th.cluster.Spectral(None, affinity="precomputed", random_state=0, n_init=1, n_lanczos=30).fit(a)
        assert auto.n_clusters_ == 3
        assert metrics.adjusted_rand_score(replicated(auto.labels_).numpy(), sc.labels_.full().numpy()) == 1.0


def test_spectral_clustering_bad_input(comm):
    x = th.distribute(BLOBS3, 0, counts=skewed_counts(60, comm.size))
    for params, match in [({"affinity": "poly"}, "'affinity' parameter"), ({"eigen_solver": "arpack"}, "eigen_solver"),
                          ({"n_clusters": 61}, "n_samples=60 should be >= n_clusters=61"), ({"gamma": -1.0}, "gamma"),
                          ({"assign_labels": "discretize"}, "assign_labels"), ({"n_lanczos": 0}, "n_lanczos")]:
        with pytest.raises(ValueError, match=match):
            th.cluster.SpectralClustering(**params).fit(x)
    with pytest.raises(ValueError, match="square affinity matrix"):
        th.cluster.SpectralClustering(2, affinity="precomputed").fit(x)
    with pytest.raises(ValueError, match="contains NaN"):
        th.cluster.SpectralClustering(2).fit(th.distribute(torch.full((6, 2), float("nan")), 0))
    assert repr(th.cluster.SpectralClustering(3, gamma=2.0)) == "SpectralClustering(gamma=2.0, n_clusters=3)"
