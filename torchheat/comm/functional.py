"""Differentiable collectives on plain tensors (DESIGN.md section 3).

A replicated tensor's gradient is the full gradient, the same on every rank. Hence:

* ``all_reduce`` (sum of partial results) passes the gradient through unchanged;
* ``enter_replicated`` (a replicated tensor joining split data) sums the gradient over ranks;
* ``all_gather`` (split -> replicated) keeps this rank's part of the gradient;
* ``scatter`` (replicated -> split) gathers the gradient back;
* ``exchange`` (split -> another split layout) runs the reverse exchange.

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
