"""Differentiable collectives on plain tensors (DESIGN.md section 3).

A replicated tensor's gradient is the full gradient, the same on every rank. Hence:

* ``all_reduce`` (sum of partial results) passes the gradient through unchanged;
* ``enter_replicated`` (a replicated tensor joining split data) sums the gradient over ranks;
* ``all_gather`` (split -> replicated) keeps this rank's part of the gradient;
* ``scatter`` (replicated -> split) gathers the gradient back;
* ``exchange`` (split -> another split layout) runs the reverse exchange;
* ``reduce_scatter`` (per-rank partial sums -> split sum) gathers the gradient;
* ``all_gather_parts`` (per-rank partial results -> stacked, replicated) keeps this rank's row.

Each one skips autograd entirely when its input does not require grad.
"""
from __future__ import annotations

import torch

from .. import layout
from .base import Communicator


def _needs_grad(t: torch.Tensor) -> bool:
    return t.requires_grad and torch.is_grad_enabled()


class _AllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, op):
        return comm.allreduce(t, op)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def all_reduce(t: torch.Tensor, comm: Communicator, op: str = "sum") -> torch.Tensor:
    """Sum (or ``op``) over ranks; the result is replicated.

    >>> import torch, torchheat as th
    >>> all_reduce(torch.ones(2), th.get_comm()).tolist() == [th.get_comm().size * 1.0] * 2
    True
    """
    if comm.size == 1:
        return t
    if _needs_grad(t):
        return _AllReduce.apply(t, comm, op)
    return comm.allreduce(t, op)


class _EnterReplicated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm):
        ctx.comm = comm
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return ctx.comm.allreduce(grad, "sum"), None


def enter_replicated(t: torch.Tensor, comm: Communicator) -> torch.Tensor:
    """Identity whose backward sums the gradient over ranks (for replicated operands of split ops)."""
    if comm.size > 1 and _needs_grad(t):
        return _EnterReplicated.apply(t, comm)
    return t


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, counts, axis):
        ctx.span = (axis, layout.offsets(counts)[comm.rank], counts[comm.rank])
        return comm.allgatherv(t, counts, axis)

    @staticmethod
    def backward(ctx, grad):
        axis, start, n = ctx.span
        return grad.narrow(axis, start, n), None, None, None


def all_gather(t: torch.Tensor, comm: Communicator, counts: layout.Counts, axis: int) -> torch.Tensor:
    """Concatenate the chunks of all ranks along ``axis``; replicated result."""
    if _needs_grad(t):
        return _AllGather.apply(t, comm, counts, axis)
    return comm.allgatherv(t, counts, axis)


class _Scatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, counts, axis):
        ctx.args = (comm, counts, axis)
        return t.narrow(axis, layout.offsets(counts)[comm.rank], counts[comm.rank]).clone()

    @staticmethod
    def backward(ctx, grad):
        comm, counts, axis = ctx.args
        return comm.allgatherv(grad, counts, axis), None, None, None


def scatter(t: torch.Tensor, comm: Communicator, counts: layout.Counts, axis: int) -> torch.Tensor:
    """This rank's chunk (a copy) of a replicated tensor."""
    if _needs_grad(t):
        return _Scatter.apply(t, comm, counts, axis)
    return t.narrow(axis, layout.offsets(counts)[comm.rank], counts[comm.rank]).clone()


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, send, recv, out_shape):
        ctx.args = (comm, recv, send, t.shape)
        return comm.exchange(t, send, out_shape, recv)

    @staticmethod
    def backward(ctx, grad):
        comm, send, recv, shape = ctx.args
        return comm.exchange(grad, send, shape, recv), None, None, None, None


def exchange(t: torch.Tensor, comm: Communicator, send, recv, out_shape) -> torch.Tensor:
    """Move chunks by an all-to-all plan from :func:`torchheat.layout.exchange_plan`."""
    if _needs_grad(t):
        return _Exchange.apply(t, comm, send, recv, out_shape)
    return comm.exchange(t, send, out_shape, recv)


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, counts, axis):
        ctx.args = (comm, counts, axis)
        return comm.reduce_scatter(t, counts, axis, "sum")

    @staticmethod
    def backward(ctx, grad):
        comm, counts, axis = ctx.args
        return comm.allgatherv(grad, counts, axis), None, None, None


def reduce_scatter(t: torch.Tensor, comm: Communicator, counts: layout.Counts, axis: int = 0) -> torch.Tensor:
    """This rank's chunk (``counts`` along ``axis``) of the sum over ranks of ``t``.

    Every rank's ``t`` is a partial result of the full shape; each rank's part of the
    gradient is the whole gradient of the sum, so backward is an allgather.

    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> counts = th.layout.balanced_counts(3, comm.size)
    >>> bool((reduce_scatter(torch.ones(3), comm, counts) == comm.size).all())
    True
    """
    if _needs_grad(t):
        return _ReduceScatter.apply(t, comm, counts, axis)
    return comm.reduce_scatter(t, counts, axis, "sum")


def _gather_packed(parts, comm: Communicator):
    # Tensors of any dtypes travel as one byte buffer: one collective instead of one per part.
    flat = [p.detach().contiguous().reshape(-1).view(torch.uint8) for p in parts]
    buf = comm.allgather(flat[0] if len(flat) == 1 else torch.cat(flat))
    out, start = [], 0
    for p, f in zip(parts, flat):
        n = f.numel()
        out.append(buf[:, start:start + n].contiguous().view(p.dtype).reshape((comm.size,) + tuple(p.shape)))
        start += n
    return out


class _AllGatherParts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, comm, *parts):
        ctx.rank = comm.rank
        ctx.set_materialize_grads(False)
        out = _gather_packed(parts, comm)
        ctx.mark_non_differentiable(*(o for o in out if not (o.is_floating_point() or o.is_complex())))
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        wanted = ctx.needs_input_grad[1:]
        return (None,) + tuple(g[ctx.rank] if g is not None and w else None for g, w in zip(grads, wanted))


def all_gather_parts(parts, comm: Communicator) -> list:
    """Every rank's ``parts`` (small tensors of any dtypes), each stacked along a new leading
    axis of length ``comm.size``, in one collective; replicated results.

    Used to combine per-rank partial results (a value and its index, a mean and its
    spread). As for :func:`all_gather`, backward keeps this rank's row of each gradient.

    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> v, i = all_gather_parts([torch.ones(2), torch.arange(2)], comm)
    >>> v.shape == (comm.size, 2) and i.dtype == torch.int64
    True
    """
    if any(_needs_grad(p) for p in parts):
        return list(_AllGatherParts.apply(comm, *parts))
    return _gather_packed(parts, comm)
