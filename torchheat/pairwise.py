"""Pairwise computations between samples split across processes, one chunk at a time.

:func:`chunks` walks over the chunks of a split tensor: in turn, every rank's chunk is
handed to all ranks (a broadcast from its owner), so a computation between each local row
and every global row (silhouette coefficients, nearest neighbours) holds at most one other
chunk at a time: memory stays near ``n / p`` rows and the whole tensor is never gathered.
A replicated or plain tensor is one chunk. :func:`squared_distances` is the matmul form
``|x|^2 - 2 x . y + |y|^2`` used by the estimators, :func:`manhattan_distances` the L1 one.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.).reshape(3, 2), split=0)
>>> [(start, c.tolist()) for start, c in chunks(x)][0]
(0, [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
>>> squared_distances(x, torch.zeros(1, 2)).full()[:, 0].tolist()
[1.0, 13.0, 41.0]
"""
from __future__ import annotations

from typing import Iterator, Tuple

import torch

from .tensor import DistTensor

__all__ = ["chunks", "squared_distances", "manhattan_distances"]


def chunks(x: torch.Tensor) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(start, rows)`` for every rank's chunk of ``x`` along axis 0, rows as a plain tensor
    on every rank (collective: every rank must consume the whole iterator; the rows are not to
    be written to). Empty chunks are skipped."""
    if not isinstance(x, DistTensor) or x.split_dim is None:
        yield 0, x.full() if isinstance(x, DistTensor) else x
        return
    if x.split_dim != 0:
        raise ValueError(f"chunks() walks over the samples: expected a tensor split along axis 0, got split={x.split_dim}")
    start, comm, local = 0, x.comm, x.local
    for root, count in enumerate(x.counts):
        if count and x.requires_grad:  # the differentiable path: a gather of one chunk
            yield start, x[start:start + count].full()
        elif count:  # one broadcast from the owner, which hands out its own chunk (read-only)
            rows = local if comm.rank == root else local.new_empty((count,) + tuple(local.shape[1:]))
            yield start, comm.bcast(rows, root)
        start += count


def squared_distances(x: torch.Tensor, y: torch.Tensor, x_norms=None) -> torch.Tensor:
    """``(n, m)`` squared Euclidean distances between the rows of ``x`` (split or not) and of
    ``y`` (replicated), ``|x|^2 - 2 x . y + |y|^2`` clamped at 0 (one matmul)."""
    x_norms = (x * x).sum(1) if x_norms is None else x_norms
    return torch.addmm((y * y).sum(1), x, y.T, alpha=-2).add_(x_norms[:, None]).clamp_(min=0)


def manhattan_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n, m)`` L1 distances between the rows of ``x`` (split or not) and of ``y`` (replicated)."""
    return (x[:, None, :] - y[None]).abs().sum(-1)
