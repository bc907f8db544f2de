"""Ops that need a few rows of the next rank (a halo), and grids of 1-D tensors.

``diff`` and ``Tensor.unfold`` along the split axis: each rank receives the rows after its
chunk that its last differences or windows reach (one small exchange), then works
locally. ``unfold`` is a view when no window crosses a chunk boundary; otherwise its result
is a copy, which refuses in-place writes. ``meshgrid`` and ``broadcast_tensors`` are views
(each output is its input expanded; a split input keeps its rows).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.) ** 2, split=0)
>>> bool((torch.diff(x).full() == torch.diff(torch.arange(6.) ** 2)).all())
True
>>> x.unfold(0, 3, 1).shape
torch.Size([4, 3])
"""
from __future__ import annotations

from typing import Sequence

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from .shape import call, global_meta, is_split, split_rule, view_of


def _clip(a: int, b: int, lo: int, hi: int):
    """(start relative to lo, length) of [a, b) within [lo, hi), the start kept in range."""
    start = min(max(a, lo), hi)
    return start - lo, max(0, min(b, hi) - start)


def halo(x: DistTensor, extra: Sequence[int]) -> torch.Tensor:
    """The ``extra[r]`` global rows after rank r's chunk (fewer at the end), on each rank r."""
    n = x._gshape[x._split]
    return rows(x, [(o + c, min(n, o + c + e)) for o, c, e in zip(layout.offsets(x._counts), x._counts, extra)])


def rows(x: DistTensor, want: Sequence[tuple]) -> torch.Tensor:
    """The global rows ``[a, b) = want[r]`` of the split axis on each rank r, from whichever
    ranks hold them (one differentiable exchange; any window, any layout)."""
    axis, comm = x._split, x._comm
    start = layout.offsets(x._counts)
    me0, me1 = start[comm.rank], start[comm.rank] + x._counts[comm.rank]
    parts = [_clip(a, b, me0, me1) for a, b in want]
    send = tuple(((axis,) + tuple(p),) for p in parts)  # a row may go to several ranks
    a, b = want[comm.rank]
    recv = tuple(((axis,) + _clip(o, o + c, a, b),) for o, c in zip(start, x._counts))
    return cf.exchange(x.local, comm, send, recv, layout.local_shape(x._gshape, axis, b - a))


@split_rule("diff")
def diff(func, args, kwargs):
    """``diff(n, dim, prepend, append)``: along the split axis, ``n`` steps of one row of halo
    each; the rank holding the last row loses one row per step."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    n = args[1] if len(args) > 1 else kwargs.get("n", 1)
    dim = layout.normalize_axis(args[2] if len(args) > 2 else kwargs.get("dim", -1), len(d.shape_of(x)))
    prepend = args[3] if len(args) > 3 else kwargs.get("prepend")
    append = args[4] if len(args) > 4 else kwargs.get("append")
    if prepend is not None or append is not None:
        x = call(torch.cat, [t for t in (prepend, x, append) if t is not None], dim)
    if not is_split(x):
        return d.wrap_replicated(x.local.diff(n, dim), x._comm) if isinstance(x, DistTensor) else \
            d.wrap_replicated(torch.diff(x, n, dim), d.common_comm([t for t in (prepend, append) if isinstance(t, DistTensor)]))
    if dim != x._split:
        return wrap(x.local.diff(n, dim), x._split, x._comm, meta.shape, x._counts)
    for _ in range(n):
        rows = x._gshape[dim]
        ext = torch.cat([x.local, halo(x, [1] * x._comm.size)], dim)
        counts = tuple(c - (c > 0 and o + c == rows) for o, c in zip(layout.offsets(x._counts), x._counts))
        gshape = list(x._gshape)
        gshape[dim] = max(rows - 1, 0)
        x = wrap(ext.diff(1, dim) if ext.shape[dim] else ext, dim, x._comm, torch.Size(gshape), counts)
    return x


@split_rule(torch.Tensor.unfold)
def unfold(func, args, kwargs):
    """``Tensor.unfold(dim, size, step)``: each rank makes the windows that start in its rows,
    with the rows they reach past its chunk (a halo; without one, a view)."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    dim, size, step = (args[1:] + (None,) * 3)[:3] if len(args) > 1 else (kwargs["dimension"], kwargs["size"], kwargs["step"])
    dim = layout.normalize_axis(dim, len(x._gshape)) if len(x._gshape) else 0
    if dim != x._split:
        return view_of(x, x.local.unfold(dim, size, step), x._split, meta.shape, x._counts)
    windows = meta.shape[dim]
    first, counts, extra = [], [], []
    for o, c in zip(layout.offsets(x._counts), x._counts):
        w0, w1 = min(-(-o // step), windows), min(-(-(o + c) // step), windows)
        first.append(w0)
        counts.append(w1 - w0)
        extra.append(max(0, (w1 - 1) * step + size - (o + c)) if w1 > w0 else 0)
    r = x._comm.rank
    start = first[r] * step - x.offset
    span = (counts[r] - 1) * step + size if counts[r] else 0
    def windows_of(rows):  # (no windows: an empty chunk of the result's shape)
        if not counts[r]:
            return rows.narrow(dim, 0, 0).reshape(layout.local_shape(meta.shape, dim, 0))
        return rows.narrow(dim, start, span).unfold(dim, size, step)

    if not any(extra):
        return view_of(x, windows_of(x.local), dim, meta.shape, tuple(counts))
    out = wrap(windows_of(torch.cat([x.local, halo(x, extra)], dim)), dim, x._comm, meta.shape, tuple(counts))
    out._copy_of = f"x.unfold({dim}, {size}, {step}) along the split axis"
    return out


@split_rule("meshgrid")
def meshgrid(func, args, kwargs):
    """``meshgrid``: output k is input k expanded; split along the axis it varies on."""
    tensors = list(args[0]) if len(args) == 1 and isinstance(args[0], (list, tuple)) else list(args)
    metas = global_meta(torch.meshgrid, tuple(tensors), kwargs)
    shape = metas[0].shape
    xy = kwargs.get("indexing") == "xy" and len(tensors) > 1
    comm = d.common_comm([t for t in tensors if isinstance(t, DistTensor)])
    out = []
    for k, t in enumerate(tensors):
        axis = {0: 1, 1: 0}.get(k, k) if xy else k
        split = axis if is_split(t) else None
        local = t.local if isinstance(t, DistTensor) else t
        lshape = layout.local_shape(shape, split, t._counts[comm.rank] if split is not None else 0)
        view = [1] * len(shape)
        view[axis] = lshape[axis]
        result = local.reshape(view).expand(lshape)
        out.append(view_of(t, result, split, shape, t._counts if split is not None else None) if isinstance(t, DistTensor)
                   else wrap(result, None, comm, shape, None))
    return tuple(out)


@split_rule("broadcast_tensors")
def broadcast_tensors(func, args, kwargs):
    """``broadcast_tensors``: every operand expanded to the common shape (views)."""
    metas = global_meta(func, args, kwargs)
    comm = d.common_comm([t for t in args if isinstance(t, DistTensor)])
    return tuple(call(torch.broadcast_to, t, m.shape) if isinstance(t, DistTensor) else wrap(t.expand(m.shape), None, comm, m.shape)
                 for t, m in zip(args, metas))
