"""K-means on samples split across processes: Lloyd's iterations with one reduction each.

Each iteration computes, on every rank's rows, the ``n/p x k`` matrix
``|c|^2 - 2 x . c`` (matmuls with the replicated centers, in blocks of rows whose distances
stay in cache, in one buffer reused by every block and iteration) and the index of each
row's minimum (from 4 clusters on without branches, on the transposed block), then this
rank's ``(k, d + 1)`` table of per-cluster sums of the samples and of their weights, and
one allreduce of that table gives the new centers. The table is kept
between iterations: after the first few iterations only a small fraction of the labels
change, so the table is updated by adding the moved rows to their new clusters and
subtracting them from their old ones (``index_add_``); while more than a tenth of this
rank's labels change (at the start of a run), it is summed from all rows instead (an
accumulating ``index_put_`` per block of the assignment, while the block is in cache, and a
``bincount``). The loop runs on the local chunk as plain tensors (no dispatch per small
op); no per-cluster copy of the data is made. Empty clusters are relocated as
scikit-learn does, to the samples farthest from their centers. ``inertia_`` is the sum of
squared distances of the samples to their centers.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0., 0.], [0., 1.], [10., 10.], [10., 11.]]), split=0)
>>> km = th.cluster.KMeans(n_clusters=2, init=torch.tensor([[0., 0.], [10., 10.]])).fit(x)
>>> km.cluster_centers_
tensor([[ 0.0000,  0.5000],
        [10.0000, 10.5000]])
>>> km.labels_.full().tolist(), km.inertia_
([0, 0, 1, 1], 1.0)
"""
from __future__ import annotations

import torch

from ..comm import functional as cf
from ..pairwise import squared_distances
from ..tensor import DistTensor, wrap
from ..validation import replicated
from ._kcluster import KClusterBase

__all__ = ["KMeans"]

_BLOCK = 2048  # rows per block of the final inertia and of the moved rows (512 KiB at d=32 in float64: in cache)
_DISTANCES, _MIN_ROWS = 1 << 16, 1024  # distances per block of an assignment (512 KiB in float64), fewest rows
_TRANSPOSED = 4  # clusters from which an assignment's blocks are (k, rows), searched without branches


class KMeans(KClusterBase):
    """K-means clustering (scikit-learn's ``KMeans``, Lloyd's algorithm) on split samples.

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "random"}, tensor of shape (n_clusters, n_features) or callable, default "k-means++"
        Greedy k-means++, distinct random rows, given centers, or ``init(X, n_clusters, generator)``.
    n_init : int or "auto", default "auto"
        Runs from different seeds; the one with the lowest inertia is kept ("auto": 10 for
        "random", else 1).
    max_iter : int, default 300
    tol : float, default 1e-4
        Stop when the squared shift of the centers is at most ``tol`` times the mean variance
        of the features.
    verbose : bool, default False
        A progress bar on rank 0.
    random_state : int, torchheat.Generator or None
        Seed of the initialization: the same result on any number of processes.
    algorithm : {"lloyd", "elkan"}, default "lloyd"
        Accepted for scikit-learn compatibility; both run Lloyd's iterations (Elkan's
        variant gives the same result, only faster on one process).

    Attributes
    ----------
    cluster_centers_ : Tensor of shape (n_clusters, n_features), the same on every rank
    labels_ : DistTensor of shape (n_samples,), laid out like X's rows
    inertia_ : float, sum of squared distances of the samples to their centers (weighted)
    n_iter_ : int
    n_features_in_ : int

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.cat([torch.zeros(5, 2), torch.ones(5, 2)]), split=0)
    >>> km = th.cluster.KMeans(n_clusters=2, random_state=0).fit(x)
    >>> sorted(km.cluster_centers_.sum(1).tolist()), km.inertia_
    ([0.0, 2.0], 0.0)
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300, tol=1e-4, verbose=False,
                 random_state=None, algorithm="lloyd"):
        super().__init__(n_clusters, init=init, n_init=n_init, max_iter=max_iter, tol=tol, verbose=verbose,
                         random_state=random_state)
        self.algorithm = algorithm

    def _check_params(self, n_samples, n_features):
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"The 'algorithm' parameter of KMeans must be a str among {{'lloyd', 'elkan'}}. "
                             f"Got {self.algorithm!r} instead.")
        return super()._check_params(n_samples, n_features)

    def _cost(self, x, centers):
        return squared_distances(x, centers)

    def _distance(self, x, centers):
        return squared_distances(x, centers).sqrt_()

    _center_data = False  # the loop measures from a point near the data instead: no centered copy of X

    def _init_centers(self, x, sample_weight, generator):
        if isinstance(self.init, str) and self.init in ("k-means++", "kmeans++"):
            # the seeding's distances on centered data (a temporary copy): less lost to cancellation
            mean = replicated(x.mean(0))
            return super()._init_centers(x - mean, sample_weight, generator) + mean
        return super()._init_centers(x, sample_weight, generator)

    def _prepare(self, x, mean, sample_weight):
        # this rank's rows as they are (no copy unless strided): the Lloyd loop runs on them as plain tensors
        local = (x.local if isinstance(x, DistTensor) else x).contiguous()
        samples = wrap(local, x.split_dim, x.comm, x.shape, x.counts) if isinstance(x, DistTensor) else local
        weights = None if sample_weight is None else (
            sample_weight.local if isinstance(sample_weight, DistTensor) else sample_weight)
        return _Lloyd(samples, local, weights)

    def _samples(self, data):
        return data.samples

    def _single_run(self, data, sample_weight, centers, tol, bar):
        # the shared loop on this rank's rows as plain tensors; the labels leave as X's rows
        data.restart(centers)
        labels, inertia, centers, n_iter = super()._single_run(data, sample_weight, centers, tol, bar)
        return data.labels(labels.clone()), inertia, centers, n_iter

    def _assign(self, data, centers):
        return data.assign(centers)

    def _step(self, data, sample_weight, centers):
        # this rank's per-cluster sums and weights, one allreduce
        labels = data.assign(centers)
        sums = data.local_sums(labels).clone()  # (relocation below edits the global table)
        if data.split is not None:
            sums = cf.all_reduce(sums, data.split.comm)
        d = centers.shape[1]
        if bool((sums[:, d] == 0).any()):
            relocate_empty_clusters(data.samples, sample_weight, centers, data.labels(labels), sums)
        weight = sums[:, d:]
        return labels, torch.where(weight > 0, sums[:, :d] / torch.where(weight > 0, weight, 1), sums[:, :d])

    def _inertia(self, data, sample_weight, centers, labels):
        """The exact inertia, ``|x - c|^2`` per sample as scikit-learn (weighted with the
        prepared data's weights), in blocks of rows that stay in cache; one reduction of a scalar."""
        x, w = data.x, data.weights
        labels = labels.local if isinstance(labels, DistTensor) else labels
        inertia = x.new_zeros(())
        block = x.new_empty(min(x.shape[0], _BLOCK), x.shape[1])
        for start in range(0, x.shape[0], _BLOCK):
            rows, b = x[start:start + _BLOCK], block[:min(_BLOCK, x.shape[0] - start)]
            torch.index_select(centers, 0, labels[start:start + _BLOCK], out=b)
            if w is None:  # one fused kernel per block
                inertia += torch.nn.functional.mse_loss(b, rows, reduction="sum")
            else:
                inertia += torch.dot(b.sub_(rows).square_().sum(1), w[start:start + _BLOCK])
        return float(cf.all_reduce(inertia, data.split.comm) if data.split is not None else inertia)


class _Lloyd:
    """One fit's samples and the state of its iterations.

    ``samples`` (X's samples, laid out like X), ``x`` (this rank's rows, plain), ``weights``
    (this rank's sample weights, None for ones). Between iterations it keeps this rank's
    labels of the last assignment and the ``(k, d + 1)`` table of weighted sums and weights
    they give, so that an iteration where few labels change adds and subtracts only the rows
    that moved (after the first few iterations a small fraction of the samples).
    """

    def __init__(self, samples, x, weights):
        self.samples, self.x, self.weights = samples, x, weights
        self.source = x if weights is None else x * weights[:, None]
        # the samples' DistTensor when they are split (sums then need an allreduce)
        self.split = samples if isinstance(samples, DistTensor) and samples.split_dim is not None else None
        self._nearest, self._table, self._rows, self._summed, self._many_moved = None, None, None, None, True

    def restart(self, centers):
        """Start a run from ``centers``: forget the table (the next iteration sums all rows)
        and measure from their mean, a point near the data."""
        self._table, self.origin = None, centers.mean(0)

    def assign(self, centers):
        """This rank's labels for ``centers``, in the label buffer the table's labels do not use.
        While many labels change (at the start of a run), the table of all rows is summed
        block by block too, while the block is in cache."""
        k, n, d = centers.shape[0], self.x.shape[0], self.x.shape[1]
        if self._nearest is None or self._nearest.k != k:
            rows = max(1, min(n, max(_MIN_ROWS, _DISTANCES // k)))
            self._nearest = _NearestCenter(k, rows, self.x)
            self._labels = [torch.empty(n, dtype=torch.int64, device=self.x.device) for _ in range(2)]
            self._table = None
        if self._table is not None and self._labels[0] is self._prev:  # keep the table's labels
            self._labels.reverse()
        labels = self._labels[0]
        sums = self.x.new_zeros(k, d) if self._table is None or self._many_moved else None
        # with c' = c - o: |x - c|^2 - |x - o|^2 = |c'|^2 + 2 o.c' - 2 x.c', small terms where o is near x
        c = centers - self.origin
        bias, step = (c * (c + 2 * self.origin)).sum(1), self._nearest.rows
        for start in range(0, n, step):  # in blocks of rows whose distances stay in cache
            end = min(start + step, n)
            self._nearest(bias, c, self.x[start:end], out=labels[start:end])
            if sums is not None:
                sums.index_put_((labels[start:end],), self.source[start:end], accumulate=True)
        self._summed = None if sums is None else (labels, sums)
        return labels

    def local_sums(self, labels):
        """This rank's ``(k, d + 1)`` weighted sums and weights per cluster for ``labels``, the
        last labels ``assign`` returned; they become the table's labels."""
        k, d = self._nearest.k, self.x.shape[1]
        moved = None if self._table is None else (labels != self._prev).nonzero()[:, 0]
        self._many_moved = moved is None or moved.shape[0] > labels.shape[0] // 10  # then summing all rows is cheaper
        if self._summed is not None and self._summed[0] is labels:  # all rows summed by the assignment
            table = torch.cat([self._summed[1], torch.bincount(labels, self.weights, minlength=k)[:, None]], 1)
        elif self._many_moved:
            table = self.x.new_zeros(k, d + 1)
            table[:, :d].index_put_((labels,), self.source, accumulate=True)
            table[:, d] = torch.bincount(labels, self.weights, minlength=k)
        else:
            new, old = labels[moved], self._prev[moved]
            weights = None if self.weights is None else self.weights[moved]
            table = self._table.clone()
            if self._rows is None:  # one small buffer for the moved rows, a block at a time
                self._rows = self.source.new_empty(max(1, min(self.source.shape[0], _BLOCK)), d)
            for start in range(0, moved.shape[0], self._rows.shape[0]):
                at = slice(start, start + self._rows.shape[0])
                rows = torch.index_select(self.source, 0, moved[at], out=self._rows[:moved[at].shape[0]])
                table[:, :d].index_add_(0, new[at], rows).index_add_(0, old[at], rows, alpha=-1)
            table[:, d] += torch.bincount(new, weights, minlength=k) - torch.bincount(old, weights, minlength=k)
        self._table, self._prev, self._summed = table, labels, None
        return table

    def labels(self, local):
        """This rank's labels laid out like the samples."""
        s = self.samples
        return wrap(local, s.split_dim, s.comm, s.shape[:1], s.counts) if isinstance(s, DistTensor) else local


class _NearestCenter:
    """The index of the nearest center for the rows of a block, in buffers kept between blocks.

    ``self(bias, c, x, out)`` writes ``argmin_j (bias_j - 2 x_i . c_j)`` for every row ``x_i``
    of ``x`` (at most ``rows`` rows) into ``out``, the lowest index among ties (as ``argmin``).
    From ``_TRANSPOSED`` clusters on the ``(k, rows)`` block is computed and searched without
    branches: its column minima (a vectorized reduction over ``k`` rows), where each entry
    equals its column's minimum, and the first such row as ``k - max_j (k - j) [d_j = min]``.
    ``torch.min`` along the rows of a ``(rows, k)`` block branches on every comparison, which on
    real data is unpredictable: 23-26 ms per 10^6 rows at k=8 against about 13, and the
    transposed product is faster too from that many clusters; for fewer, the plain row-wise
    ``torch.min`` is.
    """

    def __init__(self, k: int, rows: int, like: torch.Tensor):
        self.k, self.rows, self.transposed = k, rows, k >= _TRANSPOSED
        self.distances = like.new_empty((k, rows) if self.transposed else (rows, k))
        self.minima = like.new_empty(rows)
        if self.transposed:
            ints = dict(dtype=torch.int32, device=like.device)
            self.equal = torch.empty(k, rows, dtype=torch.bool, device=like.device)
            self.scores, self.best = torch.empty(k, rows, **ints), torch.empty(rows, **ints)
            self.priority = torch.arange(k, 0, -1, **ints)[:, None]  # k - j for row j: the first row ranks highest

    def __call__(self, bias: torch.Tensor, c: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> None:
        e = x.shape[0]
        if not self.transposed:
            block = torch.addmm(bias, x, c.T, alpha=-2, out=self.distances[:e])
            torch.min(block, 1, out=(self.minima[:e], out))  # (min: faster than argmin)
            return
        block = torch.addmm(bias[:, None], c, x.T, alpha=-2, out=self.distances[:, :e])
        minima = torch.amin(block, 0, out=self.minima[:e])
        scores = torch.mul(torch.eq(block, minima, out=self.equal[:, :e]), self.priority, out=self.scores[:, :e])
        torch.sub(self.k, torch.amax(scores, 0, out=self.best[:e]), out=out)


def relocate_empty_clusters(x, sample_weight, centers, labels, sums) -> None:
    """Give each empty cluster one of the samples farthest from their centers (scikit-learn's
    rule), moving its weight out of its cluster's sums. ``sums`` is the replicated
    ``(k, d + 1)`` table of weighted sums and weights; updated in place."""
    d = x.shape[1]
    empty = (sums[:, d] == 0).nonzero()[:, 0].tolist()
    far = replicated(torch.topk(((x - centers[labels]) ** 2).sum(1), len(empty)).indices)
    rows, old, weights = replicated(x[far]), replicated(labels[far]).tolist(), replicated(sample_weight[far])
    for j, cluster in enumerate(empty):
        moved = torch.cat([rows[j] * weights[j], weights[j:j + 1]])
        sums[old[j]] -= moved
        sums[cluster] = moved
