"""Mechanics shared by the distributed decompositions: a differentiable broadcast of one
rank's block, the matrix view of a DistTensor operand, and the composition of torch calls
on DistTensors inside a handler.

Examples
--------
>>> import torch, torchheat as th
>>> from torchheat.linalg.common import broadcast
>>> comm = th.get_comm()
>>> broadcast(torch.ones(2) if comm.rank == 0 else None, comm, 0, (2,), torch.float32).tolist()
[1.0, 1.0]
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ..comm import functional as cf


class _Broadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, root):
        ctx.comm, ctx.root = comm, root
        out = t.detach().clone(memory_format=torch.contiguous_format)
        return comm.bcast(out, root)

    @staticmethod
    def backward(ctx, grad):
        # Each rank's use of the block adds to its gradient: the root takes the sum; the
        # others' placeholders take zeros (the same graph on every rank).
        grad = cf.all_reduce(grad, ctx.comm)
        return (grad if ctx.comm.rank == ctx.root else grad * 0), None, None


def broadcast(t: Optional[torch.Tensor], comm, root: int, shape, dtype, device=None, grad: bool = False,
              after: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rank ``root``'s tensor ``t`` on every rank (the others pass None; ``shape`` and
    ``dtype`` are the block's, known everywhere). Each rank uses the result with its own
    data, so its gradient is the sum of the ranks' parts (an allreduce in backward).
    ``grad`` (the same on every rank) says whether the result joins the autograd graph:
    every rank then holds the same node."""
    if comm.size == 1:
        return t
    if comm.rank != root or t is None:
        t = torch.empty(shape, dtype=dtype, device=device)
    grad = grad and torch.is_grad_enabled()
    if not grad:
        return comm.bcast(t.detach().clone(memory_format=torch.contiguous_format), root)
    if not t.requires_grad:  # a placeholder (or a constant): a leaf, so every rank has the node
        t = t.detach().requires_grad_()
    return _Broadcast.apply(tie(t, after), comm, root)


def tie(t: torch.Tensor, *others: Optional[torch.Tensor]) -> torch.Tensor:
    """``t`` plus zero from each of ``others`` that is on the autograd graph: the backward of
    ``t`` then runs theirs too, on every rank (a collective reached on one rank only hangs,
    or pairs with another one)."""
    for o in others:
        if o is not None and o.requires_grad:
            t = t + o.reshape(-1)[:0].sum()
    return t


@contextlib.contextmanager
def distributed():
    """Inside a handler (where torch functions see local chunks), run torch calls on
    DistTensors through their distributed rules again."""
    with torch._C._EnableTorchFunction():
        yield


def needs_grad(*tensors) -> bool:
    """Whether autograd records a call on these tensors (metadata: the same on every rank)."""
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def eye_rows(n: int, start: int, count: int, cols: int, dtype, device=None) -> torch.Tensor:
    """Rows ``[start, start + count)`` of the ``n x cols`` identity."""
    out = torch.zeros(count, cols, dtype=dtype, device=device)
    idx = torch.arange(start, max(start, min(start + count, cols)), device=device)
    out[idx - start, idx] = 1
    return out
