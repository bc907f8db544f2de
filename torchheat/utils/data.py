"""Batches of split datasets: a distributed batch sampler, a DataLoader, a dataset partition.

An epoch is an order of the ``n`` samples (``th.randperm`` with a generator seeded by
``seed + epoch``, so the same on any number of processes; ``0 .. n-1`` without shuffling)
cut into global batches of ``batch_size`` (the last one shorter, or dropped with
``drop_last``). Every rank takes its balanced share of every global batch, so every rank
has the same number of batches and a batch's chunks follow the balanced layout.

* :class:`DistributedSampler` is a batch sampler: it yields, per global batch, the global
  indices of this rank's share, for ``torch.utils.data.DataLoader(dataset,
  batch_sampler=...)`` over any map-style dataset (plain per-rank batches, e.g. for
  :class:`torchheat.nn.DataParallel`).
* :class:`DataLoader` iterates split DistTensors (``X``, ``y`` split along rows) and yields
  batch-split DistTensors. At the start of an epoch each rank asks the owners of the rows
  it needs (the permutation is split too) and the samples of all tensors, packed as bytes,
  cross ranks in one exchange; the batches are then views of that buffer (no
  communication per batch).
* :class:`Partition` is this rank's balanced part of a map-style dataset (it reads only
  those samples), and :meth:`Partition.stack` turns it into split DistTensors.

Examples
--------
>>> import torch, torchheat as th
>>> X = th.distribute(torch.arange(20.).reshape(10, 2), split=0)
>>> y = th.distribute(torch.arange(10), split=0)
>>> loader = th.utils.data.DataLoader((X, y), batch_size=4, shuffle=True, seed=1)
>>> [tuple(xb.shape) for xb, yb in loader]
[(4, 2), (4, 2), (2, 2)]
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .. import layout
from ..comm import Communicator, get_comm
from ..ops.indexing import Route
from ..ops.random import Generator, randperm
from ..tensor import DistTensor, wrap

__all__ = ["DistributedSampler", "DataLoader", "Partition"]


def _check_batching(batch_size, drop_last) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size!r}")
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last should be a boolean value, but got drop_last={drop_last!r}")


def batch_sizes(n: int, batch_size: int, drop_last: bool) -> torch.Tensor:
    """Sizes of the global batches of an epoch of ``n`` samples.

    >>> batch_sizes(10, 4, False).tolist(), batch_sizes(10, 4, True).tolist()
    ([4, 4, 2], [4, 4])
    """
    full, rest = divmod(n, batch_size)
    sizes = [batch_size] * full + ([rest] if rest and not drop_last else [])
    return torch.tensor(sizes, dtype=torch.int64)


def shares(sizes: torch.Tensor, p: int, rank: int):
    """This rank's balanced share of every batch: (positions in the epoch's order, count per batch)."""
    starts = torch.cumsum(sizes, 0) - sizes
    base, extra = sizes // p, sizes % p
    counts = base + (rank < extra)
    first = starts + rank * base + torch.clamp(extra, max=rank)
    total = int(counts.sum())
    within = torch.arange(total) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return torch.repeat_interleave(first, counts) + within, counts


class _Epochs:
    """The order of an epoch and this rank's shares of its batches (shared by the sampler and loader)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool, seed: int, comm: Communicator):
        _check_batching(batch_size, drop_last)
        self.n, self.batch_size, self.shuffle, self.drop_last, self.seed, self.comm = n, batch_size, shuffle, drop_last, seed, comm
        self.epoch = 0
        self.sizes = batch_sizes(n, batch_size, drop_last)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next iteration (later iterations count on from it)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def indices(self):
        """Global sample indices of this rank's shares, in batch order, and the count per batch
        (collective when shuffling: the split permutation is read where this rank needs it)."""
        comm = self.comm
        positions, counts = shares(self.sizes, comm.size, comm.rank)
        epoch, self.epoch = self.epoch, self.epoch + 1
        if not self.shuffle:
            return positions, counts
        g = Generator().manual_seed(self.seed + epoch)
        perm = randperm(self.n, generator=g, split=0, comm=comm)
        everyone = [int(shares(self.sizes, comm.size, r)[1].sum()) for r in range(comm.size)]
        key = wrap(positions, 0, comm, torch.Size([sum(everyone)]), tuple(everyone))
        return perm[key].local, counts


class DistributedSampler(_Epochs):
    """A batch sampler: per global batch, the global indices of this rank's balanced share.

    Parameters
    ----------
    dataset : sized or int
        The dataset (``len(dataset)`` samples) or the number of samples.
    batch_size : int
        The global batch size (all ranks together).
    shuffle : bool
        Shuffle every epoch (the same order on any number of processes).
    seed : int
        The order of epoch ``e`` is ``th.randperm(n)`` with a generator seeded by ``seed + e``.
    drop_last : bool
        Drop the last, shorter global batch.
    comm : Communicator, optional

    Every iteration is one epoch (the next one; :meth:`set_epoch` chooses it); with
    ``shuffle`` starting it is collective. Every rank yields ``len(sampler)`` batches; a
    rank's share of a batch smaller than the number of ranks is empty, which torch's
    default collate cannot stack: for per-rank batches choose ``batch_size`` a multiple of
    the number of ranks and ``drop_last=True`` (equal shares: DataParallel's mean over ranks
    is then the mean over the global batch).

    Examples
    --------
    >>> import torch, torchheat as th
    >>> data = torch.utils.data.TensorDataset(torch.arange(10.))
    >>> sampler = th.utils.data.DistributedSampler(data, batch_size=4, shuffle=False)
    >>> loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    >>> len(loader) == 3
    True
    """

    def __init__(self, dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 comm: Optional[Communicator] = None):
        n = dataset if isinstance(dataset, int) else len(dataset)
        super().__init__(n, batch_size, shuffle, drop_last, seed, comm if comm is not None else get_comm())

    def __iter__(self):
        indices, counts = self.indices()
        yield from (part.tolist() for part in indices.split(counts.tolist()))


def _dataset_tensors(dataset) -> tuple:
    if isinstance(dataset, torch.utils.data.TensorDataset):
        dataset = dataset.tensors
    tensors = (dataset,) if isinstance(dataset, torch.Tensor) else tuple(dataset)
    if not tensors or not all(isinstance(t, DistTensor) and t.split_dim == 0 for t in tensors):
        what = [f"{type(t).__name__}(split={getattr(t, 'split_dim', None)})" for t in tensors]
        raise ValueError(f"DataLoader takes DistTensors split along axis 0 (a tensor, a tuple or a TensorDataset of them), got {what}")
    first = tensors[0]
    for t in tensors[1:]:
        if t.shape[0] != first.shape[0] or t.counts != first.counts or t.comm is not first.comm:
            raise ValueError(f"DataLoader's tensors must have the same rows on every rank: counts {first.counts} "
                             f"and {t.counts} (shapes {tuple(first.shape)} and {tuple(t.shape)})")
    return tensors


class DataLoader(_Epochs):
    """Batches of split DistTensors, themselves split along the batch axis.

    Parameters
    ----------
    dataset : DistTensor, tuple of DistTensors or TensorDataset of DistTensors
        Tensors split along axis 0 with the same rows on every rank (any layout).
    batch_size, shuffle, seed, drop_last :
        As for :class:`DistributedSampler` (``batch_size`` is the global batch size).

    Every iteration is one epoch; yields a DistTensor per batch for a single tensor, else a
    tuple. The batches follow the balanced layout, and each sample crosses ranks at most
    once per epoch (one exchange for all tensors). Memory per rank: its share of the data
    twice (the dataset and the epoch's order of it).

    Examples
    --------
    >>> import torch, torchheat as th
    >>> X = th.distribute(torch.randn(10, 3), split=0)
    >>> [xb.split_dim for xb in th.utils.data.DataLoader(X, batch_size=5)]
    [0, 0]
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, *, seed: int = 0, drop_last: bool = False):
        self.tensors = _dataset_tensors(dataset)
        self._single = isinstance(dataset, torch.Tensor)
        first = self.tensors[0]
        super().__init__(first.shape[0], batch_size, shuffle, drop_last, seed, first.comm)

    def __iter__(self):
        indices, counts = self.indices()
        columns = self._fetch(indices)
        comm = self.comm
        starts = (torch.cumsum(counts, 0) - counts).tolist()
        for b, size in enumerate(self.sizes.tolist()):
            batch_counts = layout.balanced_counts(size, comm.size)
            start, c = starts[b], int(counts[b])
            out = tuple(wrap(col[start:start + c], 0, comm, torch.Size([size, *t.shape[1:]]), batch_counts)
                        for col, t in zip(columns, self.tensors))
            yield out[0] if self._single else out

    def _fetch(self, indices: torch.Tensor) -> list:
        """The rows ``indices`` (global) of every tensor: asked from their owners, the rows of
        all tensors back as one buffer of bytes."""
        comm, first = self.comm, self.tensors[0]
        locals_ = [t.local.detach() for t in self.tensors]
        if comm.size == 1:
            return [t.index_select(0, indices) for t in locals_]
        route = Route(comm, indices, first.counts)
        asked = route.ask(indices.unsqueeze(1)).squeeze(1) - route.offset
        rows = [t.index_select(0, asked).reshape(len(asked), math.prod(t.shape[1:])).view(torch.uint8) for t in locals_]
        widths = [r.shape[1] for r in rows]
        back = route.answer(torch.cat(rows, 1))
        return [part.contiguous().view(t.dtype).reshape(len(indices), *t.shape[1:])
                for part, t in zip(back.split(widths, 1), locals_)]


class Partition(torch.utils.data.Dataset):
    """This rank's balanced, contiguous part of a map-style dataset (it reads only those samples).

    ``len()`` is the local number of samples and ``counts`` every rank's; :meth:`stack`
    makes split DistTensors of the samples' fields for :class:`DataLoader`.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> data = torch.utils.data.TensorDataset(torch.arange(10.), torch.arange(10))
    >>> X, y = th.utils.data.Partition(data).stack()
    >>> X.shape, y.split_dim
    (torch.Size([10]), 0)
    """

    def __init__(self, dataset, comm: Optional[Communicator] = None):
        self.dataset = dataset
        self.comm = comm if comm is not None else get_comm()
        self.counts = layout.balanced_counts(len(dataset), self.comm.size)
        self.offset = layout.offsets(self.counts)[self.comm.rank]

    def __len__(self) -> int:
        return self.counts[self.comm.rank]

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} is out of range for this rank's {len(self)} samples")
        return self.dataset[self.offset + i % len(self)]

    def stack(self, transform=None) -> tuple:
        """Split DistTensors (along axis 0), one per field of the samples (numbers, tensors;
        ``transform`` maps a sample first, e.g. a PIL image to a tensor), in the dataset's
        global order. Every rank reads its own samples and, for the fields' shapes, sample 0."""
        def fields(sample):
            sample = sample if transform is None else transform(sample)
            return [torch.as_tensor(f) for f in (sample if isinstance(sample, (tuple, list)) else (sample,))]

        probe = fields(self.dataset[0])
        samples = [fields(self[i]) for i in range(len(self))]
        out = []
        for f, like in enumerate(probe):
            local = torch.stack([s[f] for s in samples]) if samples else torch.empty((0, *like.shape), dtype=like.dtype)
            out.append(wrap(local, 0, self.comm, torch.Size([len(self.dataset), *like.shape]), self.counts))
        return tuple(out)
