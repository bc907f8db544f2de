"""Diagonals with global offsets: diagonal, diag, diag_embed, diagflat, tril, triu, trace.

A chunk of rows (or columns) starting at global row ``o`` sees the global diagonal
``offset`` as its own diagonal ``offset + o`` (``offset - o`` for columns), so every rank
works on its chunk with that shifted offset and no communication: ``diagonal`` is a view
split along its last axis (each rank's stretch of the diagonal), ``tril``/``triu`` mask
each chunk, ``trace`` adds the chunks' stretches (one allreduce), ``diag`` of a vector
places each rank's entries in its rows of the matrix.

Examples
--------
>>> import torch, torchheat as th
>>> t = torch.arange(16.).reshape(4, 4)
>>> x = th.distribute(t, split=0)
>>> bool((x.diagonal(1).full() == t.diagonal(1)).all()), x.diagonal().split_dim
(True, 0)
>>> bool((x.triu(1).full() == t.triu(1)).all()), float(x.trace())
(True, 30.0)
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from .shape import call, global_meta, is_split, split_rule, view_of


def _diag_len(rows: int, cols: int, offset: int) -> int:
    return max(0, min(rows, cols - offset) if offset >= 0 else min(rows + offset, cols))


def _arg(args, kwargs, i, name, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _local_offset(x: DistTensor, offset: int, dim1: int, dim2: int) -> int:
    """The chunk's own offset of the global diagonal ``offset`` of axes (dim1, dim2)."""
    return offset + x.offset if x._split == dim1 else offset - x.offset if x._split == dim2 else offset


@split_rule("diagonal")
def diagonal(func, args, kwargs):
    """``diagonal(offset, dim1, dim2)``: a view of each chunk; when the split axis is one of the
    two, the result is split along its last axis, each rank holding its stretch."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    ndim = len(x._gshape)
    offset = _arg(args, kwargs, 1, "offset", 0)
    dim1 = layout.normalize_axis(_arg(args, kwargs, 2, "dim1", 0), ndim)
    dim2 = layout.normalize_axis(_arg(args, kwargs, 3, "dim2", 1), ndim)
    split = x._split
    local = x.local.diagonal(_local_offset(x, offset, dim1, dim2), dim1, dim2)
    if split not in (dim1, dim2):
        return view_of(x, local, split - (dim1 < split) - (dim2 < split), meta.shape, x._counts)
    counts = []
    for o, c in zip(layout.offsets(x._counts), x._counts):
        shape = list(x._gshape)
        shape[split] = c
        k = offset + o if split == dim1 else offset - o
        counts.append(_diag_len(shape[dim1], shape[dim2], k))
    return view_of(x, local, len(meta.shape) - 1, meta.shape, tuple(counts))


@split_rule("tril", "triu")
def tril(func, args, kwargs):
    """``tril``/``triu`` (and in-place forms): each chunk masked with its own offset."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    ndim = len(x._gshape)
    k = _local_offset(x, _arg(args, kwargs, 1, "diagonal", 0), ndim - 2, ndim - 1)
    out = d.run_local(func, (x if func in d.INPLACE else x.local, k), {})
    return x if func in d.INPLACE else wrap(out, x._split, x._comm, meta.shape, x._counts)


@split_rule("trace")
def trace(func, args, kwargs):
    """``trace``: each rank adds its stretch of the diagonal, then one allreduce."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    part = x.local.diagonal(_local_offset(x, 0, 0, 1)).sum(dtype=meta.dtype)
    return wrap(cf.all_reduce(part, x._comm), None, x._comm, meta.shape, None)


def _pad_axis(t: torch.Tensor, axis: int, before: int, after: int) -> torch.Tensor:
    widths = [0, 0] * (t.dim() - axis)
    widths[-2:] = [before, after]
    return torch.nn.functional.pad(t, widths)


def embedded(x: DistTensor, offset: int, dim1: int, dim2: int, meta) -> DistTensor:
    """``diag_embed`` of ``x`` split along its last axis: the result is split along ``dim1``;
    each rank's entries fill its rows, the |offset| extra rows go to the first or last rank."""
    comm, n = x._comm, x._gshape[-1]
    size = n + abs(offset)
    top, bottom = max(0, -offset), max(0, offset)
    counts = list(x._counts)
    counts[0] += top
    counts[-1] += bottom
    block = torch.diag_embed(x.local, 0, dim1, dim2)  # (..., c, c) at (dim1, dim2)
    left = x.offset + max(0, offset)
    block = _pad_axis(block, dim2, left, size - left - x._counts[comm.rank])
    block = _pad_axis(block, dim1, top if comm.rank == 0 else 0, bottom if comm.rank == comm.size - 1 else 0)
    return wrap(block, dim1, comm, meta.shape, tuple(counts))


@split_rule("diag_embed")
def diag_embed(func, args, kwargs):
    """``diag_embed(offset, dim1, dim2)``: local unless the last axis is split (see :func:`embedded`)."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    ndim = meta.dim()
    offset = _arg(args, kwargs, 1, "offset", 0)
    dim1 = layout.normalize_axis(_arg(args, kwargs, 2, "dim1", -2), ndim)
    dim2 = layout.normalize_axis(_arg(args, kwargs, 3, "dim2", -1), ndim)
    if x._split == len(x._gshape) - 1:
        return embedded(x, offset, dim1, dim2, meta)
    kept = [a for a in range(ndim) if a not in (dim1, dim2)]
    return wrap(torch.diag_embed(x.local, offset, dim1, dim2), kept[x._split], x._comm, meta.shape, x._counts)


@split_rule("diag")
def diag(func, args, kwargs):
    """``diag``: of a matrix, its diagonal (a copy); of a vector, the matrix (split by rows)."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    offset = _arg(args, kwargs, 1, "diagonal", 0)
    if len(x._gshape) == 2:
        return call(torch.clone, call(torch.diagonal, x, offset))
    return embedded(x, offset, 0, 1, meta)


@split_rule("diagflat")
def diagflat(func, args, kwargs):
    """``diagflat``: ``diag`` of the flattened input."""
    global_meta(func, args, kwargs)
    return call(torch.diag, call(torch.reshape, args[0], (-1,)), _arg(args, kwargs, 1, "offset", 0))


@split_rule("diagonal_scatter")
def diagonal_scatter(func, args, kwargs):
    """``diagonal_scatter(x, src, offset, dim1, dim2)``: a copy of x whose diagonal (the view
    of :func:`diagonal`) takes ``src`` in the diagonal's layout; a replicated x takes the
    whole of src."""
    x, src = args[0], args[1] if len(args) > 1 else kwargs["src"]
    rest = {k: v for k, v in kwargs.items() if k not in ("input", "src")}
    meta = global_meta(func, args, kwargs)
    if not is_split(x):
        comm = d.common_comm([t for t in (x, src) if isinstance(t, DistTensor)])
        whole = d.to_layout(src, None, None).local
        local = x.local if isinstance(x, DistTensor) else x
        return wrap(torch.diagonal_scatter(local, whole, *args[2:], **rest), None, comm, meta.shape, None)
    out = wrap(x.local.clone(), x._split, x._comm, x._gshape, x._counts)
    call(torch.Tensor.copy_, call(torch.diagonal, out, *args[2:], **rest), src)
    return out
