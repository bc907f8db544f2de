"""Differentiable collectives on plain tensors (DESIGN.md section 3).

A replicated tensor's gradient is the full gradient, the same on every rank. Hence:

* ``all_reduce`` (sum of partial results) passes the gradient through unchanged;
* ``enter_replicated`` (a replicated tensor joining split data) sums the gradient over ranks;
* ``all_gather`` (split -> replicated) keeps this rank's part of the gradient;
* ``scatter`` (replicated -> split) gathers the gradient back;
* ``exchange`` (split -> another split layout) runs the reverse exchange;
* ``reduce_scatter`` (per-rank partial sums -> split sum) gathers the gradient;
* ``all_gather_parts`` (per-rank partial results -> stacked, replicated) keeps this rank's row.

The pairs are each other's adjoints (all_reduce / enter_replicated, all_gather / scatter,
reduce_scatter / enter_replicated after all_gather, exchange / its reverse), and every
backward is written with these differentiable functions themselves, so gradients of
gradients (``create_graph=True``, double and triple backward) are exact too. Each one
skips autograd entirely when its input does not require grad (always so in a first-order
backward).
"""
from __future__ import annotations

import torch

from .. import layout
from .base import Communicator


def _needs_grad(t: torch.Tensor) -> bool:
    return t.requires_grad and torch.is_grad_enabled()


class _AllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm):
        ctx.comm = comm
        return comm.allreduce(t, "sum")

    @staticmethod
    def backward(ctx, grad):
        return enter_replicated(grad, ctx.comm), None


def all_reduce(t: torch.Tensor, comm: Communicator, op: str = "sum") -> torch.Tensor:
    """Sum (or ``op``) over ranks; the result is replicated.

    Differentiable for ``op="sum"``: every rank's part gets the (replicated) gradient of the
    sum. Another ``op`` on a tensor that requires grad raises ValueError on every rank.

    >>> import torch, torchheat as th
    >>> all_reduce(torch.ones(2), th.get_comm()).tolist() == [th.get_comm().size * 1.0] * 2
    True
    """
    if _needs_grad(t):
        if op != "sum":
            raise ValueError(f"all_reduce is differentiable for op='sum' only, got op={op!r} on a tensor that requires grad")
        return t if comm.size == 1 else _AllReduce.apply(t, comm)
    return t if comm.size == 1 else comm.allreduce(t, op)


class _EnterReplicated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm):
        ctx.comm = comm
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return all_reduce(grad, ctx.comm), None


def enter_replicated(t: torch.Tensor, comm: Communicator) -> torch.Tensor:
    """Identity whose backward sums the gradient over ranks (for replicated operands of split ops).

    >>> import torch, torchheat as th
    >>> w = torch.ones(2, requires_grad=True)
    >>> enter_replicated(w, th.get_comm()).sum().backward()   # each rank's use adds its part
    >>> w.grad.tolist() == [float(th.get_comm().size)] * 2
    True
    """
    if comm.size > 1 and _needs_grad(t):
        return _EnterReplicated.apply(t, comm)
    return t


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, counts, axis):
        ctx.args = (comm, counts, axis)
        return comm.allgatherv(t, counts, axis)

    @staticmethod
    def backward(ctx, grad):
        return (scatter(grad, *ctx.args),) + (None,) * 3


def all_gather(t: torch.Tensor, comm: Communicator, counts: layout.Counts, axis: int) -> torch.Tensor:
    """Concatenate the chunks of all ranks along ``axis`` (rank i holds ``counts[i]`` rows);
    replicated result. Backward keeps this rank's part of the gradient (:func:`scatter`).

    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> counts = th.layout.balanced_counts(5, comm.size)
    >>> all_gather(torch.ones(counts[comm.rank], 2), comm, counts, 0).shape
    torch.Size([5, 2])
    """
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
        return (all_gather(grad, *ctx.args),) + (None,) * 3


def scatter(t: torch.Tensor, comm: Communicator, counts: layout.Counts, axis: int) -> torch.Tensor:
    """This rank's chunk (a copy) of a replicated tensor; backward gathers the gradient
    (:func:`all_gather`). No communication forward.

    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> counts = th.layout.balanced_counts(5, comm.size)
    >>> scatter(torch.arange(5.), comm, counts, 0).shape[0] == counts[comm.rank]
    True
    """
    if _needs_grad(t):
        return _Scatter.apply(t, comm, counts, axis)
    return t.narrow(axis, layout.offsets(counts)[comm.rank], counts[comm.rank]).clone()


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, send, recv, out_shape):
        ctx.reverse = (comm, recv, send, t.shape)
        return comm.exchange(t, send, out_shape, recv)

    @staticmethod
    def backward(ctx, grad):
        return (exchange(grad, *ctx.reverse),) + (None,) * 4


def exchange(t: torch.Tensor, comm: Communicator, send, recv, out_shape, consume: bool = False) -> torch.Tensor:
    """Move chunks by an all-to-all plan from :func:`torchheat.layout.exchange_plan` (send
    ``narrow(t, send[j])`` to rank j, receive part ``recv[i]`` of the ``out_shape`` result
    from rank i); backward is the reverse exchange. ``consume``: the result may take ``t``'s
    memory (see :meth:`Communicator.exchange`), outside autograd only.

    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> rows, cols = th.layout.balanced_counts(4, comm.size), th.layout.balanced_counts(3, comm.size)
    >>> send, recv, shape = th.layout.exchange_plan((4, 3), 0, rows, 1, cols, comm.rank)
    >>> exchange(torch.ones(rows[comm.rank], 3), comm, send, recv, shape).shape == (4, cols[comm.rank])
    True
    """
    if _needs_grad(t):
        return _Exchange.apply(t, comm, send, recv, out_shape)
    return comm.exchange(t, send, out_shape, recv, consume=consume)


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, counts, axis):
        ctx.args = (comm, counts, axis)
        return comm.reduce_scatter(t, counts, axis, "sum")

    @staticmethod
    def backward(ctx, grad):
        comm, counts, axis = ctx.args
        return (enter_replicated(all_gather(grad, comm, counts, axis), comm),) + (None,) * 3


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
        ctx.comm = comm
        ctx.set_materialize_grads(False)
        out = _gather_packed(parts, comm)
        ctx.mark_non_differentiable(*(o for o in out if not (o.is_floating_point() or o.is_complex())))
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        wanted, comm = ctx.needs_input_grad[1:], ctx.comm
        ones = (1,) * comm.size  # row r of the stacked gradient is rank r's part
        return (None,) + tuple(scatter(g, comm, ones, 0)[0] if g is not None and w else None for g, w in zip(grads, wanted))


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
