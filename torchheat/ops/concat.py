"""Ops that place blocks of rows along the split axis: cat and stack, flip and roll, pad, repeat.

Along an axis that is not split, every rank works on its own chunk (operands are first
brought to one layout, as pointwise ops do). Along the split axis each rank's rows land at
known global positions of the result, so :func:`assemble` moves them there with one
exchange, into the balanced layout of the result (``cat``, ``repeat``) or the input's own
layout (``flip``, ``roll``); replicated operands are sliced locally and never sent.
Constant padding along the split axis grows the edge chunks (no communication).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.).reshape(3, 2), split=0)
>>> y = torch.cat([x, x], dim=0)
>>> y.shape, y.split_dim, y.is_balanced
(torch.Size([6, 2]), 0, True)
>>> bool((x.flip(0).full() == torch.arange(6.).reshape(3, 2).flip(0)).all())
True
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..config import NotDistributedError
from ..tensor import DistTensor, relayout, wrap
from .pointwise import write_out
from .shape import call, global_meta, is_split, rows, split_rule

Span = Tuple[int, int]  # (first global row of the result, number of rows)


def _rows_below(spans: Sequence[Span], pos: int) -> int:
    """How many rows of ``spans`` land before global row ``pos``."""
    return sum(min(max(pos - s, 0), n) for s, n in spans)


def assemble(parts: List[Tuple[int, torch.Tensor]], spans: Sequence[Sequence[Span]], axis: int, counts: layout.Counts,
             comm, fixed: Sequence[Tuple[int, torch.Tensor]] = ()) -> torch.Tensor:
    """This rank's chunk (``counts`` rows along ``axis``) of a result made of blocks of rows.

    ``parts`` are this rank's blocks, ``(first result row, local tensor)``; ``spans[i]`` lists
    rank i's blocks as ``(first row, rows)`` (metadata every rank knows). ``fixed`` are blocks
    every rank holds (replicated): each rank takes its rows of them locally. One exchange;
    differentiable.
    """
    start = layout.offsets(counts)
    lo, hi = start[comm.rank], start[comm.rank] + counts[comm.rank]
    parts = sorted(parts, key=lambda p: p[0])
    mine = spans[comm.rank]
    send = []
    for j in range(comm.size):
        a = _rows_below(mine, start[j])
        send.append(((axis, a, _rows_below(mine, start[j] + counts[j]) - a),))
    took = [_rows_below(s, hi) - _rows_below(s, lo) for s in spans]
    at = layout.offsets(tuple(took))
    recv = tuple(((axis, at[i], took[i]),) for i in range(comm.size))
    buf = torch.cat([t for _, t in parts], axis)  # (a fresh tensor: the result may take its memory)
    shape = list(buf.shape)
    shape[axis] = sum(took)
    got = cf.exchange(buf, comm, tuple(send), recv, torch.Size(shape), consume=True)
    pieces = []
    for i, s in enumerate(spans):  # where each received block goes in the result
        for first, n in s:
            a, b = max(first, lo), min(first + n, hi)
            if b > a:
                pieces.append((a, got.narrow(axis, at[i] + _rows_below(s, a) - _rows_below(s, lo), b - a)))
    for first, t in fixed:  # (every rank uses every one, if only for no rows: its gradient sum is collective)
        n = t.shape[axis]
        a = min(max(first, lo), first + n)
        pieces.append((a, cf.enter_replicated(t, comm).narrow(axis, a - first, max(0, min(first + n, hi) - a))))
    if not fixed and _in_order(pieces, got, axis):  # the received rows are the result already
        return got
    # The received buffer is always part of the result, if only with no rows: the exchange's
    # backward is collective, so it must be in every rank's graph.
    pieces.append((lo, got.narrow(axis, 0, 0)))
    pieces.sort(key=lambda p: p[0])
    return torch.cat([t for _, t in pieces], axis)


def _in_order(pieces, got: torch.Tensor, axis: int) -> bool:
    """Whether ``pieces`` (first result row, a narrow of ``got`` along ``axis``) are ``got``'s
    rows in order."""
    at = 0
    for _, t in sorted(pieces, key=lambda p: p[0]):
        if t.shape[axis] and t.storage_offset() != got.storage_offset() + at * got.stride(axis):
            return False
        at += t.shape[axis]
    return at == got.shape[axis]


def _spans_of(x: DistTensor, first: int = 0) -> List[List[Span]]:
    """Every rank's rows of ``x`` as one block each, placed from result row ``first``."""
    return [[(first + o, c)] for o, c in zip(layout.offsets(x._counts), x._counts)]


# -- cat and stack ---------------------------------------------------------------------------
def concat(tensors: Sequence[torch.Tensor], dim: int, meta: torch.Tensor, comm) -> DistTensor:
    """``torch.cat`` of DistTensors and plain tensors (global shapes already checked)."""
    tensors = [t for t in tensors if not (meta.dim() > 1 and tuple(d.shape_of(t)) == (0,))]  # torch skips these
    tensors = [t if t.dtype == meta.dtype else _to(t, meta.dtype) for t in tensors]
    ref = next((t for t in tensors if is_split(t) and t._split != dim), None)
    if ref is not None:  # along an axis that is not split: one layout, then each rank cats its chunks
        split, counts = ref._split, ref._counts
        start, count = layout.offsets(counts)[comm.rank], counts[comm.rank]
        local = [d.to_layout(t, split, counts).local if is_split(t) else d.replicated_operand(t, comm, split, start, count)
                 for t in tensors]
        return wrap(torch.cat(local, dim), split, comm, meta.shape, counts)
    parts, spans, fixed, first = [], [[] for _ in range(comm.size)], [], 0
    for t in tensors:
        n = d.shape_of(t)[dim]
        if is_split(t):
            parts.append((first + t.offset, t.local))
            for r, s in enumerate(_spans_of(t, first)):
                spans[r] += s
        else:
            fixed.append((first, t.local if isinstance(t, DistTensor) else t))
        first += n
    counts = layout.balanced_counts(meta.shape[dim], comm.size)
    return wrap(assemble(parts, spans, dim, counts, comm, fixed), dim, comm, meta.shape, counts)


def _to(t, dtype):
    return call(torch.Tensor.to, t, dtype) if isinstance(t, DistTensor) else t.to(dtype)


def _tensors_and_dim(args, kwargs, default=0):
    tensors = args[0] if args else kwargs["tensors"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", kwargs.get("axis", default))
    return list(tensors), dim


@split_rule("cat", "concat", "concatenate")
def cat(func, args, kwargs):
    """``cat``/``concat``/``concatenate``: local along an axis that is not split; along the split
    axis one exchange into the balanced layout of the result (no rank gathers the operands)."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    tensors, dim = _tensors_and_dim(args, kwargs)
    meta = global_meta(torch.cat, (tensors, dim), {})
    result = concat(tensors, layout.normalize_axis(dim, meta.dim()), meta, d.common_comm([t for t in tensors if isinstance(t, DistTensor)]))
    return result if out is None else write_out(out, result)


@split_rule("stack")
def stack(func, args, kwargs):
    """``stack``: every operand gets the new axis (never a split one), then a local cat."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    tensors, dim = _tensors_and_dim(args, kwargs)
    meta = global_meta(torch.stack, (tensors, dim), {})
    dim = layout.normalize_axis(dim, meta.dim())
    result = call(torch.cat, [call(torch.unsqueeze, t, dim) if isinstance(t, DistTensor) else t.unsqueeze(dim) for t in tensors], dim)
    return result if out is None else write_out(out, result)


def _atleast(n: int):
    def handler(func, args, kwargs):
        tensors = args[0] if len(args) == 1 and isinstance(args[0], (list, tuple)) else args
        out = [_at_least(t, n) for t in tensors]
        return out[0] if len(args) == 1 and not isinstance(args[0], (list, tuple)) else tuple(out)
    return handler


def _at_least(t, n: int):
    ndim = len(d.shape_of(t))
    if ndim >= n:
        return t
    if ndim == 0:
        return call(torch.reshape, t, (1,) * n)
    if n == 2 or ndim == 2:  # (k,) -> (1, k); (k,) -> (1, k, 1); (a, b) -> (a, b, 1)
        t = call(torch.unsqueeze, t, 0 if ndim == 1 else -1)
    if n == 3 and ndim == 1:
        t = call(torch.unsqueeze, call(torch.unsqueeze, t, 0), -1)
    return t


for _n in (1, 2, 3):
    split_rule(f"atleast_{_n}d")(_atleast(_n))


def _stacker(n: int, dim_of):
    def handler(func, args, kwargs):
        kwargs = dict(kwargs)
        out = kwargs.pop("out", None)
        tensors, _ = _tensors_and_dim(args, kwargs)
        global_meta(func, (tensors,), {})
        tensors = [_at_least(t, n) if n else t for t in tensors]
        result = call(torch.cat, tensors, dim_of(tensors))
        return result if out is None else write_out(out, result)
    return handler


def _column(t):
    return call(torch.reshape, t, (d.shape_of(t).numel(), 1)) if len(d.shape_of(t)) < 2 else t


split_rule("hstack")(_stacker(1, lambda ts: 0 if all(len(d.shape_of(t)) == 1 for t in ts) else 1))
split_rule("vstack", "row_stack")(_stacker(2, lambda ts: 0))
split_rule("dstack")(_stacker(3, lambda ts: 2))


@split_rule("column_stack")
def column_stack(func, args, kwargs):
    """``column_stack``: 0-d and 1-d operands become columns, then a cat along axis 1."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    tensors, _ = _tensors_and_dim(args, kwargs)
    global_meta(func, (tensors,), {})
    result = call(torch.cat, [_column(t) for t in tensors], 1)
    return result if out is None else write_out(out, result)


# -- flip, roll, rot90 -----------------------------------------------------------------------
@split_rule("flip", "fliplr", "flipud")
def flip(func, args, kwargs):
    """``flip``: each rank flips its chunk; along the split axis its rows then belong to the
    mirrored ranks, one exchange back into the input's layout."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    if func in (torch.fliplr, torch.Tensor.fliplr):
        dims = (1,)
    elif func in (torch.flipud, torch.Tensor.flipud):
        dims = (0,)
    else:
        dims = args[1:] if len(args) > 2 or (len(args) == 2 and isinstance(args[1], int)) else \
            (args[1] if len(args) > 1 else kwargs["dims"])
        dims = tuple(layout.normalize_axis(a, len(x._gshape)) for a in dims)
    local = x.local.flip(dims) if dims else x.local.clone()
    split, counts, n = x._split, x._counts, x._gshape[x._split]
    if split not in dims:
        return wrap(local, split, x._comm, meta.shape, counts)
    spans = [[(n - o - c, c)] for o, c in zip(layout.offsets(counts), counts)]
    return wrap(assemble([(spans[x._comm.rank][0][0], local)], spans, split, counts, x._comm), split, x._comm,
                meta.shape, counts)


@split_rule("roll")
def roll(func, args, kwargs):
    """``roll``: local along the other axes; along the split axis each rank's rows move to
    their shifted positions (one exchange, the input's layout). ``dims=None`` rolls the
    flattened tensor (a reshape there and back)."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    shifts = args[1] if len(args) > 1 else kwargs["shifts"]
    dims = args[2] if len(args) > 2 else kwargs.get("dims")
    if dims is None or dims == ():
        flat = call(torch.reshape, x, (-1,))
        return call(torch.reshape, call(torch.roll, flat, shifts, 0), tuple(x._gshape))
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    dims = [layout.normalize_axis(a, len(x._gshape)) for a in dims]
    split, counts, n = x._split, x._counts, x._gshape[x._split]
    others = [(s, a) for s, a in zip(shifts, dims) if a != split]
    local = x.local.roll(tuple(s for s, _ in others), tuple(a for _, a in others)) if others else x.local
    shift = sum(s for s, a in zip(shifts, dims) if a == split) % n if n else 0
    if shift == 0:
        return wrap(local if others else local.clone(), split, x._comm, meta.shape, counts)
    spans = []
    for o, c in zip(layout.offsets(counts), counts):  # rows [o, o+c) go to (i + shift) mod n: at most two blocks
        head = max(0, min(o + c, n - shift) - o)
        spans.append([(o + shift, head), (max(o, n - shift) + shift - n, c - head)])
    me, head = x._comm.rank, spans[x._comm.rank][0][1]
    parts = [(spans[me][0][0], local.narrow(split, 0, head)), (spans[me][1][0], local.narrow(split, head, counts[me] - head))]
    return wrap(assemble(parts, spans, split, counts, x._comm), split, x._comm, meta.shape, counts)


@split_rule("rot90")
def rot90(func, args, kwargs):
    """``rot90`` as torch composes it: flips and a transpose."""
    x = args[0]
    global_meta(func, args, kwargs)
    k = args[1] if len(args) > 1 else kwargs.get("k", 1)
    dims = args[2] if len(args) > 2 else kwargs.get("dims", (0, 1))
    k %= 4
    if k == 0:
        return call(torch.clone, x)
    if k == 2:
        return call(torch.flip, x, tuple(dims))
    flipped = call(torch.flip, x, (dims[1] if k == 1 else dims[0],))
    return call(torch.transpose, flipped, dims[0], dims[1])


# -- block_diag -------------------------------------------------------------------------------
@split_rule("block_diag")
def block_diag(func, args, kwargs):
    """``block_diag``: every operand (as a matrix) zero-padded to the result's width (locally,
    or by growing the edge chunks where its columns are split), then one ``cat`` of the
    blocks along the rows."""
    meta = global_meta(func, args, kwargs)
    blocks, first = [], 0
    for t in args:
        t = call(torch.atleast_2d, t if t.dtype == meta.dtype else _to(t, meta.dtype))
        width = d.shape_of(t)[1]
        blocks.append(call(torch.nn.functional.pad, t, (first, meta.shape[1] - first - width)))
        first += width
    return call(torch.cat, blocks, 0)


# -- pad --------------------------------------------------------------------------------------
@split_rule(torch.nn.functional.pad, torch.constant_pad_nd)
def pad(func, args, kwargs):
    """``F.pad`` and ``constant_pad_nd``: local when the split axis is not padded; constant
    padding of the split axis grows the first and last chunks (cropping takes the rows in
    range); other modes pad the split axis after moving the split to an unpadded axis."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    widths = list(args[1] if len(args) > 1 else kwargs["pad"])
    constant = func is torch.constant_pad_nd or (args[2] if len(args) > 2 else kwargs.get("mode", "constant")) == "constant"
    ndim, split, comm = len(x._gshape), x._split, x._comm
    slot = 2 * (ndim - 1 - split)
    if slot >= len(widths) or widths[slot:slot + 2] == [0, 0]:
        return _pad_chunk(func, x, args, kwargs, meta.shape)
    if not constant:
        free = next((a for a in range(ndim) if 2 * (ndim - 1 - a) >= len(widths)), None)
        if free is None:
            raise NotDistributedError(f"{d.func_name(func)}: every axis is padded, the split one {split} included")
        moved = relayout(x, free, layout.balanced_counts(x._gshape[free], comm.size))
        padded = _pad_chunk(func, moved, args, kwargs, meta.shape)
        return relayout(padded, split, layout.balanced_counts(meta.shape[split], comm.size))
    before, after = widths[slot:slot + 2]
    n = x._gshape[split]
    if before < 0 or after < 0:  # cropping: the rows that remain
        x = rows(x, max(-before, 0), max(n + min(after, 0), max(-before, 0)))
        before, after = max(before, 0), max(after, 0)
    first, last = 0, comm.size - 1
    counts = list(x._counts)
    counts[first] += before
    counts[last] += after
    widths[slot:slot + 2] = [before if comm.rank == first else 0, after if comm.rank == last else 0]
    args = (x.local, widths) + tuple(args[2:])
    return wrap(d.run_local(func, args, kwargs), split, comm, meta.shape, tuple(counts))


def _pad_chunk(func, x: DistTensor, args, kwargs, shape) -> DistTensor:
    """Pad each chunk alike (the split axis is not padded); an empty chunk stays empty
    (torch's non-constant modes refuse empty inputs)."""
    lshape = layout.local_shape(shape, x._split, x._counts[x._comm.rank])
    local = x.local.reshape(lshape) if not lshape.numel() else d.run_local(func, (x.local,) + tuple(args[1:]), kwargs)
    return wrap(local, x._split, x._comm, shape, x._counts)


# -- repeat, tile, repeat_interleave ---------------------------------------------------------
@split_rule(torch.Tensor.repeat)
def repeat(func, args, kwargs):
    """``repeat``: each rank repeats its chunk along the other axes; copies along the split axis
    are blocks of the result, assembled by one exchange into its balanced layout."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    sizes = list(args[1] if len(args) == 2 and not isinstance(args[1], int) else args[1:] if len(args) > 1 else kwargs["repeats"])
    split = x._split + len(sizes) - len(x._gshape)
    times, sizes[split] = sizes[split], 1
    local = x.local.repeat(sizes)
    if times <= 1:  # (no copies: every chunk empties)
        return wrap(local if times else local.narrow(split, 0, 0), split, x._comm, meta.shape,
                    x._counts if times else (0,) * x._comm.size)
    n = x._gshape[x._split]
    spans = [[(k * n + o, c) for k in range(times)] for o, c in zip(layout.offsets(x._counts), x._counts)]
    parts = [(k * n + x.offset, local) for k in range(times)]
    counts = layout.balanced_counts(meta.shape[split], x._comm.size)
    return wrap(assemble(parts, spans, split, counts, x._comm), split, x._comm, meta.shape, counts)


@split_rule("tile")
def tile(func, args, kwargs):
    """``tile``: ``repeat`` with the repetitions padded with leading ones."""
    x = args[0]
    reps = tuple(args[1] if len(args) == 2 and not isinstance(args[1], int) else args[1:] if len(args) > 1 else kwargs["dims"])
    global_meta(func, args, kwargs)
    return call(torch.Tensor.repeat, x, (1,) * (len(x._gshape) - len(reps)) + reps)


@split_rule("repeat_interleave")
def repeat_interleave(func, args, kwargs):
    """``repeat_interleave``: along the split axis each rank repeats its own rows (the counts
    follow the repetitions, no communication); ``dim=None`` works on the flattened tensor."""
    x = args[0]
    repeats = args[1] if len(args) > 1 else kwargs["repeats"]
    dim = args[2] if len(args) > 2 else kwargs.get("dim")
    if not isinstance(x, DistTensor) or x._split is None:  # split repeats of a replicated tensor: they are small
        return d.no_rule(func, (x.local if isinstance(x, DistTensor) else x, _plain(repeats), dim), {})
    if dim is None:
        x, dim = call(torch.reshape, x, (-1,)), 0
    dim = layout.normalize_axis(dim, len(x._gshape))
    repeats = _plain(repeats)
    n = x._gshape[dim]
    if isinstance(repeats, torch.Tensor):
        if repeats.dim() > 1 or (repeats.numel() not in (1, n)):
            raise RuntimeError(f"repeats must be 0-dim or 1-dim tensor with the same size as input along dim, "
                               f"but got repeats.size(0) = {repeats.numel()} and input.size({dim}) = {n}")
        if (repeats < 0).any():
            raise RuntimeError("repeats can not be negative")
        if repeats.numel() == 1:
            repeats = int(repeats.reshape(()))
    elif repeats < 0:
        raise RuntimeError("repeats can not be negative")
    comm, split = x._comm, x._split
    gshape = list(x._gshape)
    gshape[dim] = int(repeats.sum()) if isinstance(repeats, torch.Tensor) else n * repeats
    if dim != split:
        return wrap(x.local.repeat_interleave(repeats, dim), split, comm, torch.Size(gshape), x._counts)
    if isinstance(repeats, torch.Tensor):
        counts = tuple(int(repeats[o:o + c].sum()) for o, c in zip(layout.offsets(x._counts), x._counts))
        mine = repeats[x.offset:x.offset + x._counts[comm.rank]]
    else:
        counts, mine = tuple(c * repeats for c in x._counts), repeats
    return wrap(x.local.repeat_interleave(mine, dim), split, comm, torch.Size(gshape), counts)


def _plain(t):
    if isinstance(t, DistTensor):
        return relayout(t, None, None).local if t._split is not None else t.local
    return t
