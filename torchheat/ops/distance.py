"""Distances: ``cdist``, ``pdist``, ``F.pairwise_distance`` and ``F.cosine_similarity``.

``torch.cdist(X (..., P, M), Y (..., R, M))`` by the layouts of X and Y (rows, features or
a batch axis split, or replicated):

* **local**: X split along its rows and Y replicated (result split along X's rows), X
  replicated and Y split along its rows (result split along Y's), or a batch axis split
  (the other operand joins that layout; :func:`torchheat.ops.linalg._batch_product`);
* **ring**: X and Y both split along their rows: Y's row blocks travel around the ring of
  ranks (the ring of the matrix products, next block received while the current one is
  used) and each rank fills its rows of the result block by block (on torch's
  matrix-product path for ``p = 2`` each block's product is written straight into the
  preallocated result, which is then clamped and rooted in place, as torch does: no
  temporary per block); the backward runs the same ring, with Y's gradient blocks
  travelling one step behind their blocks;
* **partial distances**: an operand split along the feature axis M: each rank computes
  the distances over its features, and the powers ``d_r ** p`` are summed over ranks (``p =
  0``: counts summed; ``p = inf``: maxima) by one allreduce, then rooted. Gradients flow
  through each rank's local distances weighted by ``(d_r / d) ** (p - 1)`` (for inf: 1 where
  ``d_r`` is the maximum), by one reduce-scatter, which is the exact gradient of the global
  distance. This holds a ``P x R`` partial per rank, so it is used only where it moves less
  than resplitting the feature-split operands along their rows (``P * R <= M * rows
  moved``); otherwise those operands move to a row split and the rules above apply.

``compute_mode`` is decided on the global sizes as torch does (the matrix-product path for
``p = 2`` when P or R exceeds 25), so every rank computes what one process would.

``torch.pdist(X)`` on X split along its rows uses the ring of cdist for the rows each rank
holds, keeps the pairs ``i < j`` (a contiguous range of the condensed result per rank) and
balances that range by one exchange. ``F.pairwise_distance`` and ``F.cosine_similarity``
are written with the pointwise and reduction rules (local for a batch split, a reduction
along a split feature axis).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([[0., 0.], [3., 4.], [6., 8.], [0., 1.]]), split=0)
>>> torch.cdist(x, x).full()[0].tolist()
[0.0, 5.0, 10.0, 1.0]
>>> torch.pdist(x).shape
torch.Size([6])
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch.autograd.function import once_differentiable
from torch._C import DisableTorchFunctionSubclass

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, relayout, wrap
from .shape import call
from .linalg import Operand, _batch_product, _global_result, _mine, _move, _operand, _ring

_MODES = ("use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist")


def _local_mode(mode: Optional[str], p: float, rows1: int, rows2: int) -> str:
    """torch's choice of the matrix-product path, made on the global sizes."""
    mode = mode or _MODES[0]
    if mode == _MODES[0]:
        return _MODES[1] if p == 2 and (rows1 > 25 or rows2 > 25) else _MODES[2]
    return mode


def _padded(a: torch.Tensor, b: torch.Tensor):
    """``(a', b')`` with ``a' @ b'^T = ||a_i||^2 - 2 a_i.b_j + ||b_j||^2``, padded as torch's
    matrix-product path for ``p = 2`` pads them (so the distances are torch's, bit for bit)."""
    na, nb = a.pow(2).sum(-1, keepdim=True), b.pow(2).sum(-1, keepdim=True)
    return torch.cat([a.mul(-2), na, torch.ones_like(na)], -1), torch.cat([b, torch.ones_like(nb), nb], -1)


class _RingCdist(torch.autograd.Function):
    """Rows of ``cdist(a, B)`` for this rank's rows ``a``, B's row blocks ``b`` travelling
    around the ring (``counts``: B's rows per rank)."""

    @staticmethod
    def forward(ctx, a, b, p, mode, counts, comm):
        ctx.meta = (p, mode, counts, comm)
        ctx.save_for_backward(a, b)
        if comm.size == 1:
            return torch.cdist(a, b, p, mode)
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        out = torch.empty(batch + (a.shape[-2], sum(counts)), dtype=a.dtype, device=a.device)
        off = layout.offsets(counts)
        if p == 2 and mode == _MODES[1] and a.dtype in (torch.float32, torch.float64):
            # torch's own matrix-product path, each block's product written in place into the result
            a, b = _padded(a, b)
            for q, bq in _ring(b, counts, -2, comm):
                torch.matmul(a, bq.mT, out=out.narrow(-1, off[q], counts[q]))
            return out.clamp_min_(0).sqrt_()
        for q, bq in _ring(b, counts, -2, comm):
            out.narrow(-1, off[q], counts[q]).copy_(torch.cdist(a, bq, p, mode))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        p, mode, counts, comm = ctx.meta
        a, b = ctx.saved_tensors
        da, db = torch.zeros_like(a), torch.empty_like(b) if ctx.needs_input_grad[1] else None
        off = layout.offsets(counts)
        for q, bq, *part in _ring(b, counts, -2, comm, acc=db):  # B's gradient blocks travel only if wanted
            if not (a.numel() and bq.numel()):
                continue
            with torch.enable_grad():  # the local distances again: torch's own gradient of each block
                ad, bd = a.detach().requires_grad_(), bq.detach().requires_grad_()
                ga, gb = torch.autograd.grad(torch.cdist(ad, bd, p, mode), (ad, bd), grad.narrow(-1, off[q], counts[q]))
            da += ga
            if part:
                part[0] += gb
        return da if ctx.needs_input_grad[0] else None, db, None, None, None, None


def _combine(partial: torch.Tensor, p: float, comm, axis: int, counts: layout.Counts) -> torch.Tensor:
    """This rank's chunk (``counts`` along ``axis``) of the distances whose per-rank parts
    over disjoint features are ``partial``; differentiable (see the module docstring)."""
    with torch.no_grad():
        part = partial.detach()
        if p == math.inf:
            full = cf.all_reduce(part, comm, "max")
        elif p == 0:
            full = cf.all_reduce(part, comm)
        else:
            full = cf.all_reduce(part ** p, comm) ** (1 / p)
    axis %= partial.dim()
    start, count = _mine(counts, comm)
    out = full.narrow(axis, start, count)
    if partial.requires_grad and torch.is_grad_enabled():
        with torch.no_grad():  # (p = 0: counts have zero gradient)
            if p == math.inf:
                weight = (part == full).to(part.dtype)
            elif p == 0:
                weight = torch.zeros_like(part)
            else:
                weight = torch.where(part > 0, (part / full) ** (p - 1), torch.zeros((), dtype=part.dtype))
        out = out + cf.reduce_scatter(weight * (partial - part), comm, counts, axis)
    return out


def _features_alike(x: Operand, counts, comm) -> torch.Tensor:
    """``x``'s local chunk split along its features with ``counts``."""
    if x.split is None:
        start, count = _mine(counts, comm)
        return d.replicated_operand(x.t, comm, x.t.dim() - 1, start, count)
    return _move(x, -1, counts, comm).t


def _cdist_shape(s1, s2, p) -> Optional[torch.Size]:
    if len(s1) < 2 or len(s2) < 2 or s1[-1] != s2[-1] or not isinstance(p, (int, float)) or p < 0:
        return None
    batch = layout.broadcast_shapes(tuple(s1[:-2]), tuple(s2[:-2]))
    return None if batch is None else torch.Size(tuple(batch) + (s1[-2], s2[-2]))


def _cdist_sig(x1, x2, p=2.0, compute_mode=None):
    return x1, x2, p, compute_mode


def cdist(func, args, kwargs):
    """``torch.cdist`` for every pair of layouts (see the module docstring)."""
    x1, x2, p, mode = _cdist_sig(*args, **kwargs)
    s1, s2 = d.shape_of(x1), d.shape_of(x2)
    shape = _global_result(func, (x1, x2), {"p": p, "compute_mode": mode},
                           _cdist_shape(s1, s2, p) if mode in (None,) + _MODES and x1.dtype.is_floating_point else None)
    comm = d.common_comm(t for t in (x1, x2) if isinstance(t, DistTensor))
    p = float(p)
    rows1, rows2, feats = s1[-2], s2[-2], s1[-1]
    mode = _local_mode(mode, p, rows1, rows2)
    nd = len(shape)
    with DisableTorchFunctionSubclass():
        A, B = _operand(x1, None), _operand(x2, None)

        def fn(a, b):
            return torch.cdist(a, b, p, mode)

        if (A.split is not None and A.split >= 0) or (B.split is not None and B.split >= 0):
            out = _batch_product(A, B, shape, nd, comm, fn)
        else:
            if -1 in (A.split, B.split):
                moved = sum(rows for x, rows in ((A, rows1), (B, rows2)) if x.split == -1) * feats
                if rows1 * rows2 <= moved:
                    counts = (A if A.split == -1 else B).counts
                    rows = layout.balanced_counts(rows1, comm.size)
                    local = _combine(fn(_features_alike(A, counts, comm), _features_alike(B, counts, comm)), p, comm, -2, rows)
                    return wrap(local, nd - 2, comm, shape, rows)
                A, B = (_move(x, -2, layout.balanced_counts(n, comm.size), comm) if x.split == -1 else x
                        for x, n in ((A, rows1), (B, rows2)))
            out = _rows(A, B, p, mode, comm, fn)
        split = None if out.split is None else out.split % nd
        return wrap(out.t, split, comm, shape, out.counts)


def _rows(A: Operand, B: Operand, p, mode, comm, fn) -> Operand:
    """cdist of operands that are replicated or split along their rows."""
    if A.split is None and B.split is None:
        return Operand(fn(A.t, B.t), None, None)
    if B.split is None:
        return Operand(fn(A.t, cf.enter_replicated(B.t, comm)), -2, A.counts)
    if A.split is None:
        return Operand(fn(cf.enter_replicated(A.t, comm), B.t), -1, B.counts)
    return Operand(_RingCdist.apply(A.t, B.t, p, mode, B.counts, comm), -2, A.counts)


# -- pdist ------------------------------------------------------------------------------------
def _condensed_counts(counts: layout.Counts, n: int) -> layout.Counts:
    """Entries of the condensed distance vector that belong to each rank's rows (row i has the
    pairs (i, j > i): n - 1 - i of them)."""
    return tuple(c * (n - 1) - c * (2 * o + c - 1) // 2 for o, c in zip(layout.offsets(counts), counts))


def _pdist_sig(input, p=2):
    return input, p


def pdist(func, args, kwargs):
    """``torch.pdist`` of a matrix split along its rows (ring of cdist, then the pairs i < j,
    balanced) or its features (partial distances)."""
    x, p = _pdist_sig(*args, **kwargs)
    s = d.shape_of(x)
    valid = len(s) == 2 and isinstance(p, (int, float)) and p >= 0 and x.dtype.is_floating_point
    shape = _global_result(func, (x,), {"p": p}, torch.Size((s[0] * (s[0] - 1) // 2,)) if valid else None)
    comm, n, p = x._comm, s[0], float(p)
    out_counts = layout.balanced_counts(shape[0], comm.size)
    with DisableTorchFunctionSubclass():
        if x._split is None:
            return wrap(torch.pdist(x.local, p), None, comm, shape)
        if x._split == 1:
            return wrap(_combine(torch.pdist(x.local, p), p, comm, 0, out_counts), 0, comm, shape, out_counts)
        rows = _RingCdist.apply(x.local, x.local, p, _MODES[2], x._counts, comm)
        first = layout.offsets(x._counts)[comm.rank]
        upper = torch.arange(n, device=rows.device) > torch.arange(first, first + rows.shape[0], device=rows.device)[:, None]
        mine = wrap(rows[upper], 0, comm, shape, _condensed_counts(x._counts, n))
    return relayout(mine, 0, out_counts)


# -- compositions of pointwise ops and reductions -----------------------------------------------
def _pairwise_sig(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    return x1, x2, p, eps, keepdim


def pairwise_distance(func, args, kwargs):
    """``F.pairwise_distance``: ``norm(x1 - x2 + eps, p, last dim)``, as torch computes it."""
    x1, x2, p, eps, keepdim = _pairwise_sig(*args, **kwargs)
    both = layout.broadcast_shapes(tuple(d.shape_of(x1)), tuple(d.shape_of(x2)))
    shape = None if both is None else layout.reduced_shape(tuple(both), (len(both) - 1,) if both else (), keepdim)
    _global_result(func, (x1, x2), {"p": p, "eps": eps, "keepdim": keepdim}, shape)
    dim = max(len(d.shape_of(x1)), len(d.shape_of(x2))) - 1
    return call(torch.norm, call(torch.add, call(torch.sub, x1, x2), eps), p, dim, keepdim)


def _cosine_sig(x1, x2, dim=1, eps=1e-8):
    return x1, x2, dim, eps


def cosine_similarity(func, args, kwargs):
    """``F.cosine_similarity``: the operands broadcast, divided by their norms clamped at
    ``eps`` (the clamp outside autograd, as torch does), multiplied and summed over ``dim``."""
    x1, x2, dim, eps = _cosine_sig(*args, **kwargs)
    both = layout.broadcast_shapes(tuple(d.shape_of(x1)), tuple(d.shape_of(x2)))
    valid = both is not None and isinstance(dim, int) and -max(len(both), 1) <= dim < max(len(both), 1)
    _global_result(func, (x1, x2), {"dim": dim, "eps": eps}, both if valid else None)
    if not (x1.dtype.is_floating_point or x1.dtype.is_complex):
        x1, x2 = (call(torch.Tensor.to, x, torch.get_default_dtype()) for x in (x1, x2))
    if tuple(d.shape_of(x1)) != tuple(both) or tuple(d.shape_of(x2)) != tuple(both):
        x1, x2 = call(torch.broadcast_tensors, x1, x2)

    def normalized(x):
        norm = call(torch.linalg.vector_norm, x, 2, dim, keepdim=True)
        clamped = call(torch.add, norm, call(torch.Tensor.detach, call(torch.sub, call(torch.clamp_min, norm, eps), norm)))
        return call(torch.div, x, clamped)

    return call(torch.sum, call(torch.mul, normalized(x1), normalized(x2)), dim)


d.register(d.aliases("cdist"), cdist)
d.register(d.aliases("pdist"), pdist)
d.register(d.aliases("pairwise_distance"), pairwise_distance)
d.register(d.aliases("cosine_similarity"), cosine_similarity)
