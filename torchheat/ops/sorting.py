"""Sorting and order statistics: a parallel sample sort, and selections built on it.

Along an axis that is not split every op is local. Along the split axis:

* ``sort, argsort, msort``: a sample sort. Strided samples of every chunk (about a thousand
  per rank and splitter, one allgather: ranks get nearly equal parts) give ``p - 1``
  splitters; every rank sends each element to the rank its splitters name, in chunk order
  (one all-to-all of values and int64 global indices), sorts
  what it received once (a stable sort: the runs arrive in global-index order) by one
  radix sort of int32 keys (torch sorts 1-D integers by radix sort, with a pass per key
  byte): floats of at most 32 bits by their order-preserving bits, integers by the top 32
  bits of ``value - min`` (the runs of equal keys that the low bits put out of order, rare
  unless many values are close, sorted again), integer values rebuilt from keys and low
  bits without a gather. Only the elements that change rank to make the result balanced
  move again (one more all-to-all); the others are written in place into the result.
  Every element is sorted once, and the full-size buffers (the send order, the sent and
  received elements) are freed as soon as they are used, or reused, so a rank's peak
  memory is a few times its share. Elements are ordered by (value, global index)
  throughout, so splitters cut between equal keys, the partition stays balanced for any
  number of duplicates, and the order of equal keys is the stable one (the one torch
  gives with ``stable=True``; also a valid unstable order). NaN goes last ascending, first
  descending, and ``-0.0`` ties ``0.0``, as in torch. The result is balanced along the
  split axis, with global indices.
* A tensor of several dimensions is a batch of 1-D sorts (one per "column"). When some
  other axis has at least ``p`` entries, the tensor is resplit along the longest one, each
  rank sorts whole columns locally, and the result is split back (two all-to-alls, no
  splitter round); otherwise (few columns) the sample sort runs on (column, value, index)
  triples, all columns at once: no collective per column.
* ``topk`` and ``kthvalue`` with a small ``k`` (``k * p**2 <= n``: the candidates of all
  ranks are at most one chunk) merge every rank's local candidates (one allgather); a
  larger ``k`` takes the sort. ``median, nanmedian, quantile, nanquantile`` (every
  interpolation) and ``mode`` are sort-based: the distributed sort, then the rank that
  holds each wanted position contributes it (one allgather of the results' size).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([3., 1., 2., 5., 4.]), split=0)
>>> v, i = torch.sort(x)
>>> v.tolist(), i.tolist(), v.split_dim
([1.0, 2.0, 3.0, 4.0, 5.0], [1, 2, 0, 4, 3], 0)
>>> torch.median(x).item(), torch.topk(x, 2).indices.tolist()
(3.0, [3, 4])
"""
from __future__ import annotations

import math
import warnings

import torch
from torch.utils import _pytree as pytree

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, relayout, wrap
from .pointwise import write_out
from .reductions import agree_on_errors, bind, extreme_identity, gather_parts, torch_error

# Strided samples per rank and splitter, and at most per rank: each rank's part of the sample
# sort is then within about 2% of its share at 2 ranks (a larger part is a longer local sort).
_SAMPLES, _MOST_SAMPLES = 1024, 1 << 14
_BLOCK = 1 << 16  # elements compared with the splitters at a time


# -- the order: (value, global index), NaN last ascending and first descending, as torch ----------
def _before(v: torch.Tensor, s: torch.Tensor, descending: bool) -> torch.Tensor:
    """Where ``v`` comes strictly before ``s`` in torch's sort order."""
    if v.dtype == torch.bool:
        v, s = v.to(torch.uint8), s.to(torch.uint8)
    out = v > s if descending else v < s
    if v.is_floating_point():
        out |= (v.isnan() & ~s.isnan()) if descending else (s.isnan() & ~v.isnan())
    return out


_KEY_BITS = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


def _order_key(v: torch.Tensor, descending: bool):
    """An int32 key of the 1-D floats ``v`` whose ascending order is torch's sort order of ``v``
    (NaN last ascending and first descending, ``-0.0`` tying ``0.0``), or None for float64.
    torch sorts 1-D int32 keys by radix sort, several times faster than it compares floats;
    a stable sort of the keys is a stable sort of ``v``."""
    if v.dtype not in _KEY_BITS:
        return None
    bits_type = _KEY_BITS[v.dtype]
    top = torch.iinfo(bits_type).max
    bits = (v + 0).view(bits_type)  # + 0 turns -0.0 into 0.0
    key = bits ^ ((bits >> (bits.element_size() * 8 - 1)) & top)  # negative floats: reverse the magnitude
    key = key.masked_fill_(v.isnan(), top).to(torch.int32)
    return ~key if descending else key


def _tie(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Where ``v`` ties ``s`` (NaN ties NaN)."""
    eq = v == s
    return eq | (v.isnan() & s.isnan()) if v.is_floating_point() else eq


def _lexsort(keys, descending: bool) -> torch.Tensor:
    """The permutation that sorts by ``keys`` (int64 tensors, most significant last; the last
    but one is the value, sorted in ``descending`` order) lexicographically."""
    order = torch.arange(keys[0].numel(), device=keys[0].device)
    for j, key in enumerate(keys):
        order = order[torch.sort(key[order], stable=True, descending=descending and j == len(keys) - 2).indices]
    return order


# -- moving elements between ranks ---------------------------------------------------------------
def _route(parts, send_counts, comm):
    """Send consecutive runs of the rows of ``parts`` (tensors with the same number of rows):
    ``send_counts[j]`` rows to rank j, in order. Returns the received rows of each part,
    concatenated in source-rank order, and the ``(p, p)`` matrix of who sent how many rows
    to whom (the same on every rank). One small allgather, one all-to-all per part."""
    p, rank = comm.size, comm.rank
    sent = torch.as_tensor(send_counts, dtype=torch.int64)
    matrix = comm.allgather(sent) if p > 1 else sent.reshape(1, 1)
    recv_counts = matrix[:, rank].tolist()
    send = tuple(((0, o, c),) for o, c in zip(layout.offsets(tuple(sent.tolist())), sent.tolist()))
    recv = tuple(((0, o, c),) for o, c in zip(layout.offsets(tuple(recv_counts)), recv_counts))
    out = [cf.exchange(t, comm, send, recv, (sum(recv_counts),) + tuple(t.shape[1:])) for t in parts]
    return out, matrix


def _route_to(parts, dest, comm):
    """Send row e of each of ``parts`` to rank ``dest[e]`` (rows of one source keep their order)."""
    order = torch.sort(dest, stable=True).indices
    counts = torch.bincount(dest, minlength=comm.size).tolist()
    return _route([t.index_select(0, order) for t in parts], counts, comm)[0]


# -- the sample sort -------------------------------------------------------------------------------
def _destinations(values: torch.Tensor, n: int, start: int, splitters, descending: bool) -> torch.Tensor:
    """For each element of the column-major ``(n, width)`` chunk ``values`` (flattened), the
    number of splitters ``(value, global row, column)`` that come before it: its rank.
    Compared in blocks, so that the temporary masks stay small."""
    p = len(splitters[0]) + 1
    dest = torch.zeros(values.numel(), dtype=torch.uint8 if p < 256 else torch.int32, device=values.device)
    for value, row, col in zip(*(t.tolist() for t in splitters)):
        value = torch.tensor(value, dtype=values.dtype)
        dest[(col + 1) * n:] += 1  # the later columns all come after the splitter
        for lo in range(col * n, (col + 1) * n, _BLOCK):
            seg = values[lo:min(lo + _BLOCK, (col + 1) * n)]
            upto = _before(seg, value, descending)
            tied = _tie(seg, value).nonzero().squeeze(1)
            upto[tied] = tied + (lo - col * n + start) <= row  # equal values: the global row decides
            dest[lo:lo + seg.numel()] += ~upto
    return dest


def _send_order(dest: torch.Tensor, p: int, dtype) -> torch.Tensor:
    """The chunk positions of the elements for rank 0, then rank 1, ... (each in chunk order),
    written part by part into one buffer of ``dtype`` (int32 when the positions fit)."""
    order = torch.empty(dest.numel(), dtype=dtype, device=dest.device)
    at = 0
    for j in range(p):
        part = (dest == j).nonzero().squeeze(1)
        order[at:at + part.numel()] = part
        at += part.numel()
    return order


# -- sorting what a rank received --------------------------------------------------------------
_LOW = ((8, torch.uint8), (15, torch.int16), (31, torch.int32), (64, torch.int64))  # bits, and a dtype that holds them


def _int_run(v: torch.Tensor, rows: torch.Tensor, descending: bool):
    """Stable sort of the 1-D integers ``v`` (with their global ``rows``) by one int32 radix
    sort; returns its ``emit`` for :func:`_balanced`. The memory of ``v`` and ``rows`` is reused.

    The key is the top 32 bits of ``v - min(v)`` (all of it when ``v`` spans less than
    2**32). The low bits it leaves out decide only between equal keys: they show the (rare)
    runs of equal keys that are out of order, and only those runs are sorted again. Where
    rows and low bits fit in 32 bits together, they are packed into the int32 rows, so that
    one gather in sorted order brings both (else the low bits are gathered on their own).
    The values are rebuilt from keys and low bits, without a gather of the values."""
    n, dtype = v.numel(), v.dtype
    lo, hi = (int(t) for t in torch.aminmax(v)) if n else (0, 0)
    shift = max(0, (hi - lo).bit_length() - 32)
    mask = (1 << shift) - 1
    packed = bool(shift) and rows.dtype == torch.int32 and int(rows.max()).bit_length() + shift <= 32
    key = torch.empty(n, dtype=torch.int32)
    low = torch.empty(n, dtype=next(t for bits, t in _LOW if shift <= bits)) if shift and not packed else None
    for s in range(0, n, _BLOCK):  # (in blocks: small temporaries)
        d = v[s:s + _BLOCK].to(torch.int64) - lo  # (wraps beyond 2**63, with the right bits)
        key[s:s + _BLOCK] = ((d >> shift) & 0xFFFFFFFF) - 2 ** 31
        if packed:  # (the int32 wraps: the row's top bit may land in the sign)
            rows[s:s + _BLOCK] = (rows[s:s + _BLOCK].to(torch.int64) << shift | d & mask).to(torch.int32)
        elif low is not None:
            low[s:s + _BLOCK] = d & mask
    if descending:
        key.bitwise_not_()
    order = v if v.dtype == torch.int64 else torch.empty(n, dtype=torch.int64)
    torch.sort(key, stable=True, out=(key, order))
    del v
    if low is not None:
        low = low.index_select(0, order)

    def low_at(at):  # the low bits of sorted positions ``at``
        return rows.index_select(0, order[at]).to(torch.int64) & mask if packed else low[at].to(torch.int64)

    if shift:
        at = (key[1:] == key[:-1]).nonzero().squeeze(1)  # equal keys: their low bits decide
        first, second = low_at(at), low_at(at + 1)
        at = at[second > first if descending else second < first]
        if at.numel():  # runs of equal keys out of order: sorted again by (key, low bits)
            run = torch.unique_consecutive(key[at])
            first, count = torch.searchsorted(key, run), torch.searchsorted(key, run, right=True)
            count -= first
            pos = torch.repeat_interleave(first - count.cumsum(0) + count, count)
            pos += torch.arange(pos.numel())
            again = pos[_lexsort([low_at(pos), key[pos].to(torch.int64)], descending)]
            order[pos] = order[again]
            if low is not None:
                low[pos] = low[again]

    def emit(a, b, out_values=None, out_rows=None):
        if out_values is None:
            out_values, out_rows = torch.empty(b - a, dtype=dtype), torch.empty(b - a, dtype=torch.int64)
        for s in range(a, b, _BLOCK):
            e = min(s + _BLOCK, b)
            k = key[s:e].to(torch.int64)
            value = ((~k if descending else k) + 2 ** 31 << shift) + lo
            tag = rows.index_select(0, order[s:e])
            if packed:
                tag = tag.to(torch.int64) & 0xFFFFFFFF
                value += tag & mask
                tag >>= shift
            elif low is not None:
                value += low[s:e]
            out_values[s - a:e - a], out_rows[s - a:e - a] = value, tag
        return out_values, out_rows
    return emit


def _float_run(v: torch.Tensor, rows: torch.Tensor, descending: bool):
    """Stable sort of the 1-D floats ``v`` (with their global ``rows``), through an int32 key
    where one exists; returns its ``emit`` for :func:`_balanced` (differentiable in ``v``)."""
    key = _order_key(v.detach(), descending)
    if key is None:
        v, order = torch.sort(v, stable=True, descending=descending)
    else:
        order = torch.empty(v.numel(), dtype=torch.int64)
        torch.sort(key, stable=True, out=(key, order))
    gather = key is not None
    del key

    def emit(a, b, out_values=None, out_rows=None):
        if out_values is None:
            values = v.index_select(0, order[a:b]) if gather else v[a:b]
            out_values, out_rows = values, torch.empty(b - a, dtype=torch.int64)
        elif gather:
            torch.index_select(v, 0, order[a:b], out=out_values)
        else:
            out_values.copy_(v[a:b])
        for s in range(a, b, _BLOCK):
            e = min(s + _BLOCK, b)
            out_rows[s - a:e - a] = rows.index_select(0, order[s:e])
        return out_values, out_rows
    return emit


def _balanced(emit, have, comm, dtype, grad: bool):
    """This rank's chunk ``(values, int64 rows)`` of the balanced layout of a sorted sequence
    held in runs, ``have[r]`` elements on rank r, in rank order. ``emit(a, b, out_values,
    out_rows)`` writes this rank's elements a..b-1 (without outs: returns them). Only the
    elements that change rank move (one all-to-all); the others are written in place, or
    concatenated when ``grad`` (the values need a gradient)."""
    rank = comm.rank
    target = layout.balanced_counts(sum(have), comm.size)
    send, recv, _ = layout.exchange_plan((sum(have),), 0, tuple(have), 0, target, rank)
    send = [spec[0][1:] for spec in send]  # (first, count) of this rank's elements for each rank
    recv = [0 if i == rank else spec[0][2] for i, spec in enumerate(recv)]
    (first, kept), before = send[rank], sum(recv[:rank])
    counts = [0 if j == rank else c for j, (_, c) in enumerate(send)]
    parts = [emit(o, o + c) for j, (o, c) in enumerate(send) if j != rank] or [emit(first, first)]  # (on the graph if grad)
    leaving = [torch.cat([t[i] for t in parts]) for i in range(2)]
    plan = (tuple(((0, o, c),) for o, c in zip(layout.offsets(tuple(counts)), counts)),
            tuple(((0, o, c),) for o, c in zip(layout.offsets(tuple(recv)), recv)), (sum(recv),))
    arrived = [cf.exchange(t, comm, *plan) for t in leaving]
    if grad:
        return tuple(torch.cat([t[:before], mine, t[before:]]) for t, mine in zip(arrived, emit(first, first + kept)))
    out = torch.empty(target[rank], dtype=dtype), torch.empty(target[rank], dtype=torch.int64)
    for o, t in zip(out, arrived):
        o[:before], o[before + kept:] = t[:before], t[before:]
    emit(first, first + kept, *(o[before:before + kept] for o in out))
    return out


def sample_sort(local: torch.Tensor, comm, counts, descending: bool):
    """Sort an ``(N, B)`` problem column by column: ``local`` holds this rank's ``counts[rank]``
    rows (any counts). Returns this rank's rows ``(values, global row indices)`` of the sorted
    columns in the balanced layout of N rows.

    The elements are ordered by (column, value, global row) in the column-major flattening of
    the problem. Splitters come from a strided sample of every chunk; each element goes to
    the rank its splitters give it, in chunk order (one all-to-all of values and global
    rows), so a stable sort of what a rank receives gives the global order, and a position
    q of the sorted sequence is row ``q % N`` of column ``q // N``. Each element is sorted
    once, and no full-size buffer lives longer than it must. Differentiable in the values.
    """
    p, rank = comm.size, comm.rank
    n, width = local.shape
    total = sum(counts)
    start = layout.offsets(tuple(counts))[rank]
    if not total * width:  # nothing to sort
        shape = (layout.balanced_counts(total, p)[rank], width)
        return local.new_empty(shape), torch.empty(shape, dtype=torch.int64, device=local.device)
    values = local.t().reshape(-1) if width > 1 else local.reshape(-1)
    size = n * width

    # Splitters: the samples of every rank that holds data, sorted, at every p-th position
    # (at most 1/16 of a share: small sorts stay cheap).
    s = max(p, min(_SAMPLES * p, _MOST_SAMPLES, total * width // (16 * p)))
    at = torch.arange(s) * size // s
    keys = torch.stack([at % max(n, 1) + start, at // max(n, 1)]) if size else torch.zeros(2, s, dtype=torch.int64)
    sample = values.detach()[at] if size else torch.zeros(s, dtype=local.dtype, device=local.device)
    all_values, all_keys = cf.all_gather_parts([sample, keys], comm)
    holders = [r for r in range(p) if counts[r]]
    all_values, all_keys = all_values[holders].reshape(-1), all_keys[holders].transpose(0, 1).reshape(2, -1)
    order = _lexsort([all_keys[0], all_values, all_keys[1]], descending)
    m = order.numel()
    picks = order[[min((k + 1) * m // p, m - 1) for k in range(p - 1)]]
    splitters = (all_values[picks], all_keys[0][picks], all_keys[1][picks])

    # Every element to its rank, in chunk order (so each run arrives sorted by global row).
    dest = _destinations(values.detach(), n, start, splitters, descending)
    send = torch.bincount(dest, minlength=p).tolist()
    index = torch.int32 if total * width < 2 ** 31 else torch.int64  # (int32 halves the index buffers)
    order = _send_order(dest, p, index)
    del dest
    sent = values.index_select(0, order)  # (index_select: a plain gather, several times faster than [])
    if width == 1:  # the global rows, in the order buffer itself when no gradient needs it
        keys = (order + start if values.requires_grad else order.add_(start)).unsqueeze(1)
    else:
        keys = torch.stack([order % n + start, order // n], 1)
    del order
    (values, keys), matrix = _route([sent, keys], send, comm)
    del sent

    have = matrix.sum(0).tolist()
    if width == 1:  # one stable sort of the received elements, written where the balanced layout wants them
        emit = (_int_run if not values.is_floating_point() else _float_run)(values, keys.squeeze(1), descending)
        values, rows = _balanced(emit, have, comm, values.dtype, values.requires_grad and torch.is_grad_enabled())
        return values.unsqueeze(1), rows.unsqueeze(1)

    # One stable sort of the received elements by value, then by column.
    values, order = torch.sort(values, stable=True, descending=descending)
    by_col = torch.sort(keys[:, 1].index_select(0, order), stable=True).indices
    values, order = values.index_select(0, by_col), order.index_select(0, by_col)
    rows = keys[:, 0].index_select(0, order)
    del keys, order

    # Rebalance: position q of the sorted sequence is row q % N of column q // N.
    target = layout.balanced_counts(total, p)
    q = layout.offsets(tuple(have))[rank] + torch.arange(values.numel(), device=values.device)
    row, col = q % total, q // total
    ends = torch.tensor(layout.offsets(target)[1:] + (total,), device=q.device)
    dest = torch.searchsorted(ends, row, right=True)
    place = (row - torch.tensor(layout.offsets(target), device=q.device)[dest]) * width + col
    values, keys = _route_to([values, torch.stack([rows, place], 1)], dest, comm)
    order = torch.argsort(keys[:, 1])
    shape = (target[rank], width)
    return values.index_select(0, order).reshape(shape), keys[:, 0].index_select(0, order).reshape(shape)


def dist_sort(x: DistTensor, dim: int, descending: bool):
    """``(values, indices)`` local chunks of ``x`` sorted along its split axis ``dim``, in the
    balanced layout along ``dim``. See the module docstring for the choice of algorithm."""
    comm, split, gshape = x._comm, x._split, x._gshape
    others = [a for a in range(len(gshape)) if a != dim]
    longest = max(others, key=lambda a: gshape[a], default=None)
    target = layout.balanced_counts(gshape[dim], comm.size)
    if longest is not None and gshape[longest] >= comm.size:
        # Whole columns on each rank: resplit, sort locally, split back.
        y = relayout(x, longest, layout.balanced_counts(gshape[longest], comm.size))
        values, indices = torch.sort(y, dim=dim, stable=True, descending=descending)
        y_counts = y._counts
        back = [relayout(wrap(t, longest, comm, gshape, y_counts), split, target).local for t in (values, indices)]
        return tuple(back)
    local = x.movedim(dim, 0)
    rest = local.shape[1:]
    values, rows = sample_sort(local.reshape(local.shape[0], math.prod(rest)), comm, x._counts, descending)
    shape = (target[comm.rank],) + tuple(rest)
    return values.reshape(shape).movedim(0, dim), rows.reshape(shape).movedim(0, dim)


# -- sort, argsort, msort ------------------------------------------------------------------------
def _sort_sig(input, dim=-1, descending=False, stable=False, *, out=None):
    return input, dim, descending, stable


def _msort_sig(input, *, out=None):
    return input, 0, False, False


def axis_of(dim, x: DistTensor, func, args, kwargs) -> int:
    """The normalized axis (a 0-d tensor's only axis is -1 or 0); torch's error for a bad one."""
    try:
        return layout.normalize_axis(dim, max(len(x._gshape), 1))
    except (IndexError, TypeError):
        d.raise_global_error(func, args, kwargs)


def is_local(x: DistTensor, dim: int) -> bool:
    """Whether an op along ``dim`` needs no communication."""
    return x._split != dim or x._comm.size == 1 or not x._gshape.numel()


def _finish(result, func, args, kwargs):
    out = kwargs.get("out")
    return result if out is None else write_out(out, result, func, (args, kwargs))


def sort(func, args, kwargs):
    """``sort``, ``argsort``, ``msort`` (``stable``, ``descending``, ``out=``)."""
    name = _NAMES[func]
    x, dim, descending, stable = bind(_msort_sig if name == "msort" else _sort_sig, func, args, kwargs)
    if x.dtype.is_complex:
        torch_error(func, x, args, kwargs)
    dim = axis_of(dim, x, func, args, kwargs)
    if is_local(x, dim):
        local = func(*args, **{k: v for k, v in kwargs.items() if k != "out"})
        return _finish(d.wrap_result(local, x._split, x._comm, x._gshape, x._counts), func, args, kwargs)
    values, indices = dist_sort(x, dim, bool(descending))
    counts = layout.balanced_counts(x._gshape[dim], x._comm.size)
    values, indices = (wrap(t, dim, x._comm, x._gshape, counts) for t in (values, indices))
    result = indices if name == "argsort" else values if name == "msort" else torch.return_types.sort((values, indices))
    return _finish(result, func, args, kwargs)


_NAMES = {f: name for name in ("sort", "argsort", "msort") for f in d.aliases(name)}
d.register(list(_NAMES), sort)


# -- order statistics ------------------------------------------------------------------------------
def sorted_columns(x: DistTensor, dim):
    """``x`` sorted ascending along its split axis ``dim`` (None: all its elements), as
    ``(values, indices)`` of shape ``(rows, columns)`` (this rank's rows of the balanced
    layout; the other axes flattened into columns) and the counts of that layout."""
    comm = x._comm
    if dim is None:
        counts = tuple(x._counts[r] * (math.prod(x._gshape) // max(x._gshape[x._split], 1)) for r in range(comm.size))
        values, indices = sample_sort(x.reshape(-1, 1), comm, counts, False)
    else:
        values, indices = dist_sort(x, dim, False)
        values, indices = values.movedim(dim, 0), indices.movedim(dim, 0)
        counts = layout.balanced_counts(x._gshape[dim], comm.size)
        width = math.prod(values.shape[1:])
        values, indices = values.reshape(values.shape[0], width), indices.reshape(indices.shape[0], width)
    return values, indices, layout.balanced_counts(sum(counts), comm.size)


def pick(values: torch.Tensor, indices: torch.Tensor, counts, pos: torch.Tensor, comm):
    """Elements at global positions ``pos`` (``(K, columns)``, the same on every rank) of
    sorted columns held as :func:`sorted_columns` returns them: ``(values, indices)`` of
    ``pos``'s shape, replicated. Each rank contributes the positions it holds; one allgather.
    Differentiable in the values."""
    rank = comm.rank
    start, mine = layout.offsets(counts)[rank], counts[rank]
    if not mine:  # one row of zeros, on the autograd graph like the other ranks' picks
        values = torch.cat([values, values.new_zeros((1,) + values.shape[1:])])
        indices = torch.cat([indices, indices.new_zeros((1,) + indices.shape[1:])])
    at = (pos - start).clamp(0, max(mine - 1, 0))
    v, i = gather_parts([values.gather(0, at), indices.gather(0, at)], comm)
    ends = torch.tensor(layout.offsets(counts)[1:] + (sum(counts),), device=pos.device)
    owner = torch.searchsorted(ends, pos, right=True).unsqueeze(0)
    return v.gather(0, owner).squeeze(0), i.gather(0, owner).squeeze(0)


def nan_counts(values: torch.Tensor, comm) -> torch.Tensor:
    """NaNs per column of sorted columns (zeros for data without NaN); one allreduce."""
    if not values.is_floating_point():
        return torch.zeros(values.shape[1], dtype=torch.int64, device=values.device)
    return comm.allreduce(values.isnan().sum(0), "sum")


def reduced(result: torch.Tensor, x: DistTensor, dim, keepdim: bool, lead=()):
    """``(K, columns)`` results of a selection along ``dim`` (None: all) shaped as torch's:
    ``lead`` (the quantiles' axis, if any), then ``x``'s shape with ``dim`` reduced; replicated."""
    dims = tuple(range(len(x._gshape))) if dim is None else (dim,)
    shape = tuple(lead) + tuple(layout.reduced_shape(x._gshape, dims, keepdim))
    return wrap(result.reshape(shape), None, x._comm, torch.Size(shape))


def _topk_sig(input, k, dim=-1, largest=True, sorted=True, *, out=None):
    return input, k, dim, largest, sorted


def _kthvalue_sig(input, k, dim=-1, keepdim=False, *, out=None):
    return input, k, dim, keepdim


def _median_sig(input, dim=None, keepdim=False, *, out=None):
    return input, dim, keepdim


def _quantile_sig(input, q, dim=None, keepdim=False, *, interpolation="linear", out=None):
    return input, q, dim, keepdim, interpolation


def _few(k: int, x: DistTensor, dim: int) -> bool:
    """Whether ``k`` candidates per rank are few: all ranks' together at most one chunk."""
    return k * x._comm.size ** 2 <= x._gshape[dim]


def candidates(x: DistTensor, dim: int, k: int, largest: bool):
    """Every rank's ``k`` largest (or smallest) elements along the split axis ``dim`` (all of
    its rows if it has fewer) with their global indices, gathered in rank order (one
    allgather each; the values differentiable)."""
    comm = x._comm
    values, indices = torch.topk(x, min(k, x.shape[dim]), dim, largest=largest, sorted=False)
    indices = indices + x.offset
    counts = tuple(min(k, c) for c in x._counts)
    return cf.all_gather(values, comm, counts, dim), cf.all_gather(indices, comm, counts, dim)


def call_args(signature, func, args, kwargs):
    """The arguments of a call bound by ``signature``; torch's error for a call it rejects."""
    try:
        return signature(*args, **kwargs)
    except TypeError:
        d.raise_global_error(func, args, kwargs)


def bind_k(signature, func, args, kwargs):
    """The arguments of a call with a ``k`` (topk, kthvalue): torch's checks on an empty chunk's
    stand-in would see a shorter axis, so the checks are made here, on the global shape."""
    bound = call_args(signature, func, args, kwargs)
    x = bound[0]
    if x.dtype.is_complex or x.dtype == torch.bool:
        torch_error(func, x, args, kwargs)
    return bound


def _check_k(k, n, func, x, args, kwargs, low):
    if not isinstance(k, int) or not low <= k <= n:
        torch_error(func, x, args, kwargs)


def topk(func, args, kwargs):
    """``topk``: merged local candidates for a small ``k``, else the first ``k`` of the sort
    (then split like the sort, with the counts of its first ``k`` rows)."""
    x, k, dim, largest, sorted_ = bind_k(_topk_sig, func, args, kwargs)
    dim = axis_of(dim, x, func, args, kwargs)
    if is_local(x, dim):
        return _local(func, args, kwargs, x, dim, size=k)
    _check_k(k, x._gshape[dim], func, x, args, kwargs, 0)
    gshape = x._gshape[:dim] + (k,) + x._gshape[dim + 1:]
    if _few(k, x, dim):
        values, indices = candidates(x, dim, k, largest)
        best, which = torch.topk(values, k, dim, largest=largest, sorted=sorted_)
        result = (best, indices.gather(dim, which))
        result = d.wrap_result(torch.return_types.topk(result), None, x._comm, torch.Size(gshape), None)
        return _finish(result, func, args, kwargs)
    values, indices = dist_sort(x, dim, largest)
    full = layout.balanced_counts(x._gshape[dim], x._comm.size)
    counts = tuple(max(0, min(o + c, k) - o) for o, c in zip(layout.offsets(full), full))
    result = torch.return_types.topk((values.narrow(dim, 0, counts[x._comm.rank]), indices.narrow(dim, 0, counts[x._comm.rank])))
    return _finish(d.wrap_result(result, dim, x._comm, torch.Size(gshape), counts), func, args, kwargs)


def _local(func, args, kwargs, x: DistTensor, dim, size=None, keepdim=None, lead=()):
    """The op on the local chunk (its axis ``dim`` is not split, or nothing needs moving):
    the split survives, shifted by the axes the op adds (``lead``) or removes. ``size`` is the
    new length of ``dim``; ``keepdim`` not None: ``dim`` is reduced."""
    call = {k: v for k, v in kwargs.items() if k != "out"}
    padded = x._split is not None and x._split != dim and not x.shape[x._split] and x._gshape.numel()
    if padded:  # torch refuses some empty inputs (quantile): one row of zeros, dropped after
        row = list(x.shape)
        row[x._split] = 1
        pad = torch.cat([x, x.new_zeros(row)], x._split)
        args = tuple(pad if a is x else a for a in args)
        call = {k: (pad if v is x else v) for k, v in call.items()}
    local = func(*args, **call)
    if keepdim is None:
        split, gshape = x._split, x._gshape[:dim] + (x._gshape[dim] if size is None else size,) + x._gshape[dim + 1:]
    else:
        split, gshape = layout.reduced_split(x._split, (dim,), keepdim), layout.reduced_shape(x._gshape, (dim,), keepdim)
    gshape = torch.Size(tuple(lead) + tuple(gshape))
    if split is not None:
        split += len(lead)
    counts = None if split is None else x._counts if x._split != dim else layout.balanced_counts(gshape[split], x._comm.size)
    if padded:
        local = pytree.tree_map(lambda t: t.narrow(split, 0, 0) if isinstance(t, torch.Tensor) else t, local)
    return _finish(d.wrap_result(local, split, x._comm, gshape, counts), func, args, kwargs)


def kthvalue(func, args, kwargs):
    """``kthvalue``: merged local candidates when ``k`` (from either end) is small, else sort-based."""
    x, k, dim, keepdim = bind_k(_kthvalue_sig, func, args, kwargs)
    dim = axis_of(dim, x, func, args, kwargs)
    if is_local(x, dim):
        return _local(func, args, kwargs, x, dim, keepdim=keepdim)
    n = x._gshape[dim]
    _check_k(k, n, func, x, args, kwargs, 1)
    if _few(k, x, dim) or _few(n - k + 1, x, dim):
        smallest = _few(k, x, dim)
        values, indices = candidates(x, dim, k if smallest else n - k + 1, not smallest)
        m = values.shape[dim]
        value, which = torch.kthvalue(values, k if smallest else m - (n - k), dim, keepdim=True)
        result = (value, indices.gather(dim, which))
        if not keepdim:
            result = tuple(t.squeeze(dim) for t in result)
        shape = layout.reduced_shape(x._gshape, (dim,), keepdim)
        return _finish(d.wrap_result(torch.return_types.kthvalue(result), None, x._comm, shape, None), func, args, kwargs)
    values, indices, counts = sorted_columns(x, dim)
    pos = torch.full((1, values.shape[1]), k - 1, dtype=torch.int64)
    result = [reduced(t, x, dim, keepdim) for t in pick(values, indices, counts, pos, x._comm)]
    return _finish(torch.return_types.kthvalue(result), func, args, kwargs)


def median(func, args, kwargs):
    """``median``/``nanmedian`` (the lower median; NaN as torch: ``median`` of a column with a
    NaN is its first NaN, ``nanmedian`` skips them): sort-based."""
    x, dim, keepdim = bind(_median_sig, func, args, kwargs)
    nan = func in _NANMEDIAN
    if dim is not None:
        dim = axis_of(dim, x, func, args, kwargs)
    if x.dtype.is_complex or x.dtype == torch.bool or (dim is None and (x._split is None or x._comm.size == 1)) \
            or (dim is not None and is_local(x, dim)) or not x._gshape.numel():
        if dim is None:
            local = func(*args, **{k: v for k, v in kwargs.items() if k != "out"})
            return _finish(wrap(local, None, x._comm, local.shape), func, args, kwargs)
        return _local(func, args, kwargs, x, dim, keepdim=keepdim)
    values, indices, counts = sorted_columns(x, dim)
    n = sum(counts)
    nans = nan_counts(values, x._comm)
    if nan:
        kept = n - nans
        pos = torch.where(kept > 0, (kept - 1).clamp(min=0) // 2, 0)
    else:
        pos = torch.where(nans > 0, n - nans, (n - 1) // 2)
    value, index = pick(values, indices, counts, pos.unsqueeze(0), x._comm)
    if dim is None:
        return _finish(reduced(value, x, None, False), func, args, kwargs)
    kind = torch.return_types.nanmedian if nan else torch.return_types.median
    return _finish(kind([reduced(t, x, dim, keepdim) for t in (value, index)]), func, args, kwargs)


def quantile(func, args, kwargs):
    """``quantile``/``nanquantile`` with every interpolation: sort-based, the ranks and the
    interpolation computed as torch computes them (the same values to the bit)."""
    x, q, dim, keepdim, interpolation = bind(_quantile_sig, func, args, kwargs)
    if isinstance(q, DistTensor):
        q = q.full()
    if dim is not None:
        dim = axis_of(dim, x, func, args, kwargs)
    if x._split is not None and x._gshape.numel():
        agree_on_errors(func, args, kwargs, x)
    lead = (q.numel(),) if isinstance(q, torch.Tensor) and q.dim() == 1 else ()
    if (dim is None and (x._split is None or x._comm.size == 1)) or (dim is not None and is_local(x, dim)) \
            or not x._gshape.numel():
        if dim is None:
            local = func(*args, **{k: v for k, v in kwargs.items() if k != "out"})
            return _finish(wrap(local, None, x._comm, local.shape), func, args, kwargs)
        return _local(func, args, kwargs, x, dim, keepdim=keepdim, lead=lead)
    q = torch.as_tensor(q, dtype=x.dtype).reshape(-1, 1)
    values, indices, counts = sorted_columns(x, dim)
    n = sum(counts)
    nans = nan_counts(values, x._comm)
    if func in _NANQUANTILE:
        ranks = q * (n - nans - 1)
        ranks = ranks.masked_fill(ranks < 0, 0)
    else:
        ranks, nan = torch.broadcast_tensors(q * (n - 1), (nans > 0).unsqueeze(0))
        ranks = ranks.masked_fill(nan, n - 1)
    if interpolation in ("lower", "higher", "nearest"):
        ranks = {"lower": torch.floor, "higher": torch.ceil, "nearest": torch.round}[interpolation](ranks)
    below, _ = pick(values, indices, counts, ranks.long(), x._comm)
    if interpolation in ("linear", "midpoint"):
        weights = torch.full_like(ranks, 0.5) if interpolation == "midpoint" else ranks - ranks.long()
        above, _ = pick(values, indices, counts, ranks.ceil().long(), x._comm)
        below = below.lerp(above, weights)
    return _finish(reduced(below, x, dim, keepdim, lead), func, args, kwargs)


def _mode_sig(input, dim=-1, keepdim=False, *, out=None):
    return input, dim, keepdim


def mode(func, args, kwargs):
    """``mode``: sort-based. Runs of equal values in the sorted columns may cross chunk
    boundaries: every rank's first and last run (value, length, whether it is the whole
    chunk) are gathered, a run is counted whole by the rank where it ends, and the longest
    run wins, ties to the smaller value, as in torch; the index is that of its last element
    (the largest index holding the value)."""
    x, dim, keepdim = bind(_mode_sig, func, args, kwargs)
    dim = axis_of(dim, x, func, args, kwargs)
    if x.dtype.is_complex or is_local(x, dim):
        return _local(func, args, kwargs, x, dim, keepdim=keepdim)
    comm, p = x._comm, x._comm.size
    values, indices, counts = sorted_columns(x, dim)
    c, width = values.shape
    flat = values.detach()
    new = torch.ones_like(flat, dtype=torch.bool)
    new[1:] = ~_tie(flat[1:], flat[:-1])
    run = new.long().cumsum(0) - 1
    lengths = torch.zeros_like(run).scatter_add_(0, run, torch.ones_like(run))
    if c:
        edge = [flat[0], flat[-1], lengths[0], lengths.gather(0, run[-1:])[0], run[-1] == 0]
    else:
        edge = [flat.new_zeros(width)] * 2 + [torch.zeros(width, dtype=torch.int64)] * 2 + [torch.zeros(width, dtype=torch.bool)]
    first, last, first_len, last_len, whole = gather_parts(edge, comm)
    holders = [r for r in range(p) if counts[r]]
    carry_in = torch.zeros(p, width, dtype=torch.int64)
    goes_on = torch.zeros(p, width, dtype=torch.bool)  # whether rank r's last run continues on the next holder
    carry, previous = torch.zeros(width, dtype=torch.int64), None
    for r in holders:
        if previous is not None:
            joined = _tie(first[r], last[previous])
            carry_in[r] = torch.where(joined, carry, 0)
            goes_on[previous] = joined
        carry = torch.where(whole[r], carry_in[r] + last_len[r], last_len[r])
        previous = r
    rank = comm.rank
    total = lengths.clone()
    if c:
        total[0] += carry_in[rank]
    ends = torch.ones_like(new)
    ends[:-1] = new[1:]
    length = total.gather(0, run)
    last_run = run == run[-1:] if c else run.bool()
    score = torch.where(ends & ~(last_run & goes_on[rank]), length * (c + 1) + (c - torch.arange(c).unsqueeze(1)), -1)
    padded = [torch.cat([t, t.new_zeros((1, width))]) for t in (values, indices, score)]
    best = padded[2].argmax(0, keepdim=True)
    parts = [padded[0].gather(0, best), padded[1].gather(0, best), length.new_full((1, width), -1) if not c else
             torch.where(padded[2].gather(0, best) >= 0, torch.cat([length, length.new_zeros((1, width))]).gather(0, best), -1)]
    value, index, size = gather_parts(parts, comm)
    winner = (size * p + (p - 1 - torch.arange(p).reshape(p, 1, 1))).argmax(0, keepdim=True)
    result = [reduced(t.gather(0, winner)[0], x, dim, keepdim) for t in (value, index)]
    return _finish(torch.return_types.mode(result), func, args, kwargs)


_NANMEDIAN = set(d.aliases("nanmedian"))
_NANQUANTILE = set(d.aliases("nanquantile"))
d.register(d.aliases("topk"), topk)
d.register(d.aliases("kthvalue"), kthvalue)
d.register(d.aliases("median") + d.aliases("nanmedian"), median)
d.register(d.aliases("quantile") + d.aliases("nanquantile"), quantile)
d.register(d.aliases("mode"), mode)


# -- counting: histograms, bincount ----------------------------------------------------------------
def _global_range(x: DistTensor):
    """The global ``(min, max)`` of a split tensor as Python numbers (one allgather)."""
    if x.numel():
        low, high = torch.aminmax(x.detach())
    else:
        low, high = (torch.tensor(extreme_identity(x.dtype, largest), dtype=x.dtype) for largest in (False, True))
    lows, highs = gather_parts([low.reshape(1), high.reshape(1)], x._comm)
    return lows.amin().item(), highs.amax().item()


def _aligned(w, x: DistTensor):
    """``w`` (a weight of ``x``'s shape) in ``x``'s layout: a DistTensor moved, a plain one sliced."""
    if w is None or x._split is None:
        return w.local if isinstance(w, DistTensor) else w
    if isinstance(w, DistTensor) and w._split is not None:
        return d.to_layout(w, x._split, x._counts)
    w = w.local if isinstance(w, DistTensor) else w
    return w.narrow(x._split, x.offset, x.shape[x._split])


def _split_input(args, kwargs, name="input"):
    x = args[0] if args else kwargs.get(name)
    return x if isinstance(x, DistTensor) and x._split is not None and x._comm.size > 1 else None


def agreed(comm, compute):
    """``compute()``, or the error that any rank's raised, raised on every rank (torch skips
    its checks on an empty chunk)."""
    try:
        result, error = compute(), None
    except Exception as e:
        result, error = None, e
    d.agree(comm, error)
    return result


def _histc_sig(input, bins=100, min=0, max=0, *, out=None):
    return input, bins, min, max


def histc(func, args, kwargs):
    """``histc``: the global range when ``min == max``, local counts, one allreduce."""
    x, bins, low, high = call_args(_histc_sig, func, args, kwargs)
    if _split_input(args, kwargs) is None:
        return _replicated(func, args, kwargs, x)
    if low == high and x._gshape.numel():
        low, high = _global_range(x)
        if low == high:
            low, high = low - 1, high + 1
    local = agreed(x._comm, lambda: torch.histc(x, bins, low, high))
    return _finish(wrap(x._comm.allreduce(local, "sum"), None, x._comm, local.shape), func, args, kwargs)


def _replicated(func, args, kwargs, x):
    """The op on every rank's whole operands (``x`` is replicated, or one rank holds it all;
    another operand that is split is brought whole, as ``x`` is)."""
    def whole(t):
        return t.full() if isinstance(t, DistTensor) and t._split is not None and t is not x else t

    comm = d.common_comm(t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, DistTensor))
    args, call = pytree.tree_map(whole, (args, {k: v for k, v in kwargs.items() if k != "out"}))
    local = func(*args, **call)
    return _finish(d.wrap_replicated(local, comm), func, args, kwargs)


def _histogram_sig(input, bins=100, *, range=None, weight=None, density=False, out=None):
    return input, bins, range, weight, density


def histogram(func, args, kwargs):
    """``histogram``: the global range for a number of bins, local counts, one allreduce;
    ``density`` normalized after the sum."""
    x, bins, range_, weight, density = call_args(_histogram_sig, func, args, kwargs)
    if _split_input(args, kwargs) is None:
        return _replicated(func, args, kwargs, x)
    if isinstance(bins, DistTensor):
        bins = bins.full()
    if not isinstance(bins, torch.Tensor) and range_ is None and x._gshape.numel():
        range_ = _global_range(x)
    call = {"range": range_} if range_ is not None and not isinstance(bins, torch.Tensor) else {}
    weight = _aligned(weight, x)
    local = agreed(x._comm, lambda: torch.histogram(x, bins, weight=weight, **call))
    hist = x._comm.allreduce(local.hist, "sum")
    if density:
        hist = hist / (hist.sum() * local.bin_edges.diff())
    result = torch.return_types.histogram(d.wrap_replicated((hist, local.bin_edges), x._comm))
    return _finish(result, func, args, kwargs)


def _histogramdd_sig(input, bins=10, *, range=None, weight=None, density=False, out=None):
    return input, bins, range, weight, density


def _global_box(x: DistTensor):
    """The global ``[min_0, max_0, min_1, max_1, ...]`` of the points (last axis: coordinates;
    one allgather)."""
    points = x.local.detach().reshape(-1, x._gshape[-1])
    if points.shape[0]:
        low, high = points.amin(0), points.amax(0)
    else:
        low, high = (torch.full(points.shape[1:], extreme_identity(x.dtype, top), dtype=x.dtype) for top in (False, True))
    lows, highs = (t.reshape(-1, low.numel()) for t in gather_parts([low[None], high[None]], x._comm))
    return tuple(v for pair in zip(lows.amin(0).tolist(), highs.amax(0).tolist()) for v in pair)


def histogramdd(func, args, kwargs):
    """``histogramdd``: the global box of the points (unless ``bins`` are edges or ``range``
    is given), local counts over the same edges, one allreduce; ``density`` after the sum."""
    x, bins, range_, weight, density = call_args(_histogramdd_sig, func, args, kwargs)
    if _split_input(args, kwargs) is None:
        return _replicated(func, args, kwargs, x)
    if x._split == len(x._gshape) - 1:  # split coordinates: move whole points to the ranks
        x = relayout(x, 0, layout.balanced_counts(x._gshape[0], x._comm.size))
    if isinstance(bins, (list, tuple)):
        bins = [b.full() if isinstance(b, DistTensor) else b for b in bins]
    edges_given = isinstance(bins, torch.Tensor) or (isinstance(bins, (list, tuple)) and isinstance(bins[0], torch.Tensor))
    if not edges_given and range_ is None and x._gshape[:-1].numel():
        range_ = _global_box(x)
    call = {"range": range_} if range_ is not None and not edges_given else {}
    weight = _aligned(weight, x)
    local = agreed(x._comm, lambda: torch.histogramdd(x.local, bins, weight=weight, **call))
    hist = x._comm.allreduce(local.hist, "sum")
    if density:  # counts over the total and over each bin's volume
        hist = hist / hist.sum()
        for k, e in enumerate(local.bin_edges):
            hist = hist / e.diff().reshape([-1 if j == k else 1 for j in range(hist.dim())])
    result = torch.return_types.histogramdd((d.wrap_replicated(hist, x._comm), d.wrap_replicated(local.bin_edges, x._comm)))
    return _finish(result, func, args, kwargs)


def _bincount_sig(input, weights=None, minlength=0):
    return input, weights, minlength


def bincount(func, args, kwargs):
    """``bincount``: the global length (max + 1), local counts, one allreduce."""
    x, weights, minlength = call_args(_bincount_sig, func, args, kwargs)
    if _split_input(args, kwargs) is None or x.dim() != 1 or x.dtype.is_floating_point or x.dtype == torch.bool:
        return _replicated(func, args, kwargs, x)
    low, high = _global_range(x) if x._gshape.numel() else (0, -1)
    if low < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    weights = _aligned(weights, x)
    local = agreed(x._comm, lambda: torch.bincount(x, weights, minlength=max(minlength, high + 1)))
    if weights is not None:  # (torch counts an empty input in int64 whatever the weights)
        local = local.to(torch.bincount(x.new_zeros(1), weights.new_zeros(1)).dtype)
    return wrap(x._comm.allreduce(local, "sum"), None, x._comm, local.shape)


# -- searching: searchsorted, bucketize, isin --------------------------------------------------------
def _ask(queries: torch.Tensor, dest: torch.Tensor, comm, answer):
    """Send every query (a row) to rank ``dest[e]``, which answers the rows it gets with
    ``answer(rows)`` (one result row per query); returns the answers in query order. Two
    all-to-alls (request and reply)."""
    order = torch.sort(dest, stable=True).indices
    (asked,), matrix = _route([queries[order]], torch.bincount(dest, minlength=comm.size).tolist(), comm)
    (replies,), _ = _route([answer(asked)], matrix[:, comm.rank].tolist(), comm)
    out = torch.empty_like(replies)
    out[order] = replies
    return out


def _chunk_ends(chunk: torch.Tensor, counts, comm):
    """The last element of every rank's chunk of a sorted 1-D split tensor (one allgather),
    and the ranks that hold data."""
    last = chunk[-1:] if chunk.numel() else chunk.new_zeros(1)
    return gather_parts([last.detach()], comm)[0].reshape(-1), [r for r in range(comm.size) if counts[r]]


def _owner(v: torch.Tensor, lasts, holders, right: bool) -> torch.Tensor:
    """For queries ``v``: the first rank holding data whose last element is >= v (> v with
    ``right``), or the last holder: the only rank that can answer a search for v."""
    ends = lasts[holders]
    below = torch.searchsorted(ends.contiguous(), v.reshape(-1).contiguous(), right=right)
    return torch.tensor(holders, device=v.device)[below.clamp(max=len(holders) - 1)]


def _searchsorted_sig(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None, out=None):
    return sorted_sequence, input, out_int32, right, side, sorter


def _bucketize_sig(input, boundaries, *, out_int32=False, right=False, out=None):
    return boundaries, input, out_int32, right, None, None


def searchsorted(func, args, kwargs):
    """``searchsorted``/``bucketize``. Split values, replicated sequence: local. A split 1-D
    sequence: each query goes to the one rank whose chunk can hold its position, which
    adds its chunk's offset (request and reply; replicated queries: local counts summed by
    one allreduce instead)."""
    bucket = func in _BUCKETIZE
    try:
        seq, v, out_int32, right, side, sorter = (_bucketize_sig if bucket else _searchsorted_sig)(*args, **kwargs)
    except TypeError:
        d.raise_global_error(func, args, kwargs)
    right = right or side == "right"
    dtype = torch.int32 if out_int32 else torch.int64
    seq_split = isinstance(seq, DistTensor) and seq._split is not None and seq._comm.size > 1
    v_split = isinstance(v, DistTensor) and v._split is not None and v._comm.size > 1
    if seq_split and len(seq._gshape) != 1:
        return d.no_rule(func, args, kwargs)
    comm = (seq if isinstance(seq, DistTensor) else v)._comm
    plain_v = v.local if isinstance(v, DistTensor) else v
    if not seq_split:
        seq = seq.full() if isinstance(seq, DistTensor) else seq
        sorter = sorter.full() if isinstance(sorter, DistTensor) else sorter
        if v_split and seq.dim() > 1 and v._split < v.dim() - 1:
            seq = seq.narrow(v._split, v.offset, v.shape[v._split])
            sorter = None if sorter is None else sorter.narrow(v._split, v.offset, v.shape[v._split])
        local = torch.searchsorted(seq, plain_v, right=right, out_int32=out_int32, sorter=sorter)
        if isinstance(v, DistTensor):
            result = wrap(local, v._split, comm, v._gshape, v._counts)
        else:
            result = wrap(local, None, comm, local.shape)
        return _finish(result, func, args, kwargs)
    chunk, start = seq.local, seq.offset
    if sorter is not None:  # seq[sorter] is seq sorted: the positions depend only on the sorted values
        chunk = sample_sort(chunk.reshape(-1, 1), comm, seq._counts, False)[0].reshape(-1)
        seq = wrap(chunk, 0, comm, seq._gshape, layout.balanced_counts(seq._gshape[0], comm.size))
        start = seq.offset
    if not v_split:
        local = torch.searchsorted(chunk, plain_v, right=right) if chunk.numel() else torch.zeros_like(plain_v, dtype=torch.int64)
        total = comm.allreduce(local, "sum").to(dtype)
        return _finish(wrap(total, None, comm, total.shape), func, args, kwargs)
    lasts, holders = _chunk_ends(chunk, seq._counts, comm)
    flat = plain_v.reshape(-1)
    if not holders:
        found = torch.zeros_like(flat, dtype=torch.int64)
    else:
        found = _ask(flat, _owner(flat, lasts, holders, right), comm,
                     lambda q: torch.searchsorted(chunk, q, right=right) + start)
    result = wrap(found.to(dtype).reshape(plain_v.shape), v._split, comm, v._gshape, v._counts)
    return _finish(result, func, args, kwargs)


def _isin_sig(elements, test_elements, *, assume_unique=False, invert=False):
    return elements, test_elements, assume_unique, invert


def isin(func, args, kwargs):
    """``isin``. Replicated test elements: local. Split test elements: sorted (the sample
    sort), then every element asks the one rank whose sorted chunk could hold it (request
    and reply; replicated elements: local answers combined by one allreduce)."""
    try:
        elements, test, assume_unique, invert = _isin_sig(*args, **kwargs)
    except TypeError:
        d.raise_global_error(func, args, kwargs)
    test_split = isinstance(test, DistTensor) and test._split is not None and test._comm.size > 1
    e_dist = isinstance(elements, DistTensor)
    comm = (elements if e_dist else test)._comm
    plain = elements.local if e_dist else torch.as_tensor(elements)
    if not test_split:
        test = test.full() if isinstance(test, DistTensor) else test
        local = torch.isin(plain, test, invert=invert)
        if e_dist:
            return wrap(local, elements._split, comm, elements._gshape, elements._counts)
        return wrap(local, None, comm, local.shape)
    n = [c * (test._gshape.numel() // max(test._gshape[test._split], 1)) for c in test._counts]
    chunk = sample_sort(test.local.reshape(-1, 1).detach(), comm, n, False)[0].reshape(-1)
    counts = layout.balanced_counts(sum(n), comm.size)
    flat = plain.reshape(-1)
    if e_dist and elements._split is not None:
        lasts, holders = _chunk_ends(chunk, counts, comm)
        if not holders:
            found = torch.zeros_like(flat, dtype=torch.bool)
        else:
            found = _ask(flat, _owner(flat, lasts, holders, False), comm, lambda q: torch.isin(q, chunk))
        local = (found ^ invert).reshape(plain.shape)
        return wrap(local, elements._split, comm, elements._gshape, elements._counts)
    found = comm.allreduce(torch.isin(flat, chunk), "lor")
    local = (found ^ invert).reshape(plain.shape)
    return wrap(local, None, comm, local.shape)


# -- unique values: runs of the sorted (or given) sequence ------------------------------------------
def runs(values: torch.Tensor, counts, comm):
    """Runs of equal values in a 1-D sequence split with ``counts`` (``values`` is this rank's
    part). Returns the first value of each run that starts here, every element's global run
    id, the global length of each run that starts here, and the number of runs that start on
    every rank. NaN is never equal to NaN, as in torch. Two small allgathers: a run may cross chunks (it belongs to the rank where
    it starts)."""
    p, rank, c = comm.size, comm.rank, values.numel()
    holders = [r for r in range(p) if counts[r]]
    new = torch.ones(c, dtype=torch.bool, device=values.device)
    new[1:] = values[1:] != values[:-1]  # NaN never equals NaN: each is a value of its own, as in torch
    lasts = gather_parts([values[-1:] if c else values.new_zeros(1)], comm)[0].reshape(-1)
    before = [r for r in holders if r < rank]
    if c and before:
        new[0] = values[0] != lasts[before[-1]]
    starts = new.nonzero().reshape(-1)
    lead = starts[0] if len(starts) else torch.tensor(c)
    numbers, leads = gather_parts([torch.tensor([len(starts)]), lead.reshape(1)], comm)
    numbers, leads = numbers.reshape(-1).tolist(), leads.reshape(-1).tolist()
    ids = sum(numbers[:rank]) + new.long().cumsum(0) - 1
    lengths = torch.diff(starts, append=torch.tensor([c], device=starts.device))
    if len(starts):
        for r in holders:  # the last run goes on over the leading elements of the next ranks
            if r > rank:
                lengths[-1] += leads[r]
                if numbers[r]:
                    break
    return values[new], ids, lengths, numbers


def _unique_sig(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    return input, return_inverse, return_counts, dim


def _consecutive_sig(input, return_inverse=False, return_counts=False, dim=None):
    return input, return_inverse, return_counts, dim


def unique(func, args, kwargs):
    """``unique`` (sorted, as torch on CPU; ``dim=None``): the sample sort of all elements,
    then its runs (:func:`runs`); ``return_inverse`` sends every element's run id back to
    where the element came from (one all-to-all). ``unique_consecutive``: the runs of the
    row-major sequence (split along axis 0 first when split along another axis). Results
    are split with the counts of the unique values each rank holds. ``dim=int``: see
    :func:`unique_dim`."""
    consecutive = func in _CONSECUTIVE
    x, inverse, with_counts, dim = call_args(_consecutive_sig if consecutive else _unique_sig, func, args, kwargs)
    if _split_input(args, kwargs) is None:
        return _replicated(func, args, kwargs, x)
    if dim is not None and not consecutive and not x.dtype.is_complex:
        return unique_dim(x, axis_of(dim, x, func, args, kwargs), inverse, with_counts)
    if dim is not None or x.dtype.is_complex:
        return d.no_rule(func, args, kwargs)
    comm = x._comm
    if consecutive and x._split != 0:
        x = relayout(x, 0, layout.balanced_counts(x._gshape[0], comm.size))
    per_row = x._gshape.numel() // max(x._gshape[x._split], 1)
    n = tuple(c * per_row for c in x._counts)
    if consecutive:
        values, rows = x.detach().reshape(-1), None
    else:
        values, rows = sample_sort(x.detach().reshape(-1, 1), comm, n, False)
        values, rows = values.reshape(-1), rows.reshape(-1)
    found, ids, lengths, numbers = runs(values, layout.balanced_counts(sum(n), comm.size) if rows is not None else n, comm)
    total = (sum(numbers),)
    result = [wrap(found, 0, comm, torch.Size(total), tuple(numbers))]
    if inverse:
        if rows is not None:  # back to where each element came from
            ends = torch.tensor(layout.offsets(n)[1:] + (sum(n),))
            dest = torch.searchsorted(ends, rows, right=True)
            place = rows - torch.tensor(layout.offsets(n))[dest]
            got, where = _route_to([ids, place], dest, comm)
            ids = torch.empty_like(got)
            ids[where] = got
        result.append(wrap(ids.reshape(x.shape), x._split, comm, x._gshape, x._counts))
    if with_counts:
        result.append(wrap(lengths, 0, comm, torch.Size(total), tuple(numbers)))
    return result[0] if len(result) == 1 else tuple(result)


def _after(rows: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """Where the rows of ``rows`` come lexicographically after ``row`` (their first differing entry decides)."""
    if rows.dtype == torch.bool:
        rows, row = rows.to(torch.uint8), row.to(torch.uint8)
    differ = rows != row
    first = differ.to(torch.uint8).argmax(1, keepdim=True)
    return differ.any(1) & (rows.gather(1, first).squeeze(1) > row[first.squeeze(1)])


def unique_dim(x: DistTensor, dim: int, inverse: bool, with_counts: bool):
    """``unique(dim=dim)``: the distinct slices along ``dim``, sorted lexicographically.

    The split moves to ``dim`` first (one all-to-all, none if it is there). Every rank takes
    the distinct slices of its chunk (torch), a strided sample of them from every rank gives
    ``p - 1`` splitter slices, and each distinct slice goes, with its count, to the rank of
    its range (one all-to-all), which merges what it receives (torch again, counts added).
    Rank r then holds the r-th range of the sorted distinct slices; ``return_inverse`` sends
    each slice's position back to the ranks that sent it (one all-to-all). The result is split
    along the input's split axis (balanced when that is not ``dim``)."""
    comm, p, split = x._comm, x._comm.size, x._split
    if split != dim:
        x = relayout(x, dim, layout.balanced_counts(x._gshape[dim], p))
    local = x.local.detach()
    rows = local.movedim(dim, 0).reshape(local.shape[dim], x._gshape.numel() // max(x._gshape[dim], 1))
    empty = torch.empty(0, dtype=torch.int64, device=local.device)
    mine, mine_inverse, mine_counts = torch.unique(rows, dim=0, return_inverse=True, return_counts=True) \
        if rows.shape[0] else (rows, empty, empty)

    # Splitters: every p-th slice of the sorted, distinct samples of all ranks.
    k = _SAMPLES * p
    at = torch.arange(k) * mine.shape[0] // k
    sample = mine[at.clamp(max=max(mine.shape[0] - 1, 0))] if mine.shape[0] else rows.new_zeros((k, rows.shape[1]))
    samples, held = cf.all_gather_parts([sample, torch.tensor([mine.shape[0] > 0] * k)], comm)
    samples = samples[held]
    splitters = torch.unique(samples, dim=0) if samples.shape[0] else samples
    m = splitters.shape[0]
    splitters = splitters[[min((j + 1) * m // p, m - 1) for j in range(p - 1)]] if m else splitters[:0]

    # Each distinct slice (and its count) to the rank of its range; that rank merges them.
    dest = sum((_after(mine, s).to(torch.int64) for s in splitters), torch.zeros(mine.shape[0], dtype=torch.int64))
    order = torch.sort(dest, stable=True).indices
    send = torch.bincount(dest, minlength=p).tolist()
    (got, got_counts), matrix = _route([mine[order], mine_counts[order]], send, comm)
    merged, where = torch.unique(got, dim=0, return_inverse=True) if got.shape[0] else (got, empty)
    counts = torch.zeros(merged.shape[0], dtype=torch.int64).index_add_(0, where, got_counts)
    numbers = tuple(comm.allgather_obj(merged.shape[0]))
    gshape = list(x._gshape)
    gshape[dim] = sum(numbers)
    out = merged.reshape((merged.shape[0],) + local.movedim(dim, 0).shape[1:]).movedim(0, dim)
    result = [wrap(out, dim, comm, torch.Size(gshape), numbers)]
    if split != dim:
        result[0] = relayout(result[0], split, layout.balanced_counts(gshape[split], p))
    if inverse:  # each distinct slice's global position, back to the rank it came from
        ids = where + layout.offsets(numbers)[comm.rank]
        (back,), _ = _route([ids], matrix[:, comm.rank].tolist(), comm)
        positions = torch.empty_like(back)
        positions[order] = back
        result.append(wrap(positions[mine_inverse], 0, comm, torch.Size([x._gshape[dim]]), x._counts))
    if with_counts:
        result.append(wrap(counts, 0, comm, torch.Size([sum(numbers)]), numbers))
    return result[0] if len(result) == 1 else tuple(result)


_CONSECUTIVE = set(d.aliases("unique_consecutive"))
d.register(d.aliases("unique") + d.aliases("unique_consecutive"), unique)
# -- covariance: a local product and one allreduce along the observations -----------------------------
def _cov_sig(input, *, correction=1, fweights=None, aweights=None):
    return input, correction, fweights, aweights


def _observations(w, x: DistTensor):
    """A weight per observation in ``x``'s layout along its observations (split along them)."""
    if w is None:
        return None
    if isinstance(w, DistTensor) and w._split is not None:
        return d.to_layout(w, 0, x._counts).local
    return d.replicated_operand(w, x._comm, 0, x.offset, x.shape[x._split])


def covariance(x: DistTensor, correction, fweights=None, aweights=None) -> torch.Tensor:
    """The replicated covariance matrix of ``x`` (variables by observations, or one variable),
    split along the observations first if needed (one all-to-all), with torch's formula:
    global (weighted) means and weight sums (one allreduce), then the product of the centred
    chunk with itself summed over ranks (one allreduce). Differentiable."""
    comm, axis = x._comm, x.dim() - 1
    if x._split != axis:
        x = relayout(x, axis, layout.balanced_counts(x._gshape[axis], comm.size))
    local = x.local.reshape(1 if axis == 0 else x._gshape[0], x.shape[axis])
    if not (local.is_floating_point() or local.is_complex()):
        local = local.to(torch.get_default_dtype())
    fweights, aweights = _observations(fweights, x), _observations(aweights, x)
    w = fweights if aweights is None else aweights if fweights is None else fweights * aweights
    n = x._gshape[axis]
    if w is None:
        mean = cf.all_reduce(local.sum(1, keepdim=True), comm) / n
        dof = n - correction
    else:
        parts = [(local * w).sum(1), w.sum().reshape(1).to(local.dtype)]
        if aweights is not None:
            parts.append((w * aweights).sum().reshape(1).to(local.dtype))
        sums = cf.all_reduce(torch.cat(parts), comm)
        w_sum = sums[local.shape[0]]
        mean = (sums[:local.shape[0]] / w_sum).unsqueeze(1)
        if correction == 0:
            dof = w_sum
        elif aweights is None:
            dof = w_sum - correction
        else:
            dof = w_sum - correction * sums[-1] / w_sum
    centred = local - cf.enter_replicated(mean, comm)
    if (dof <= 0).item() if isinstance(dof, torch.Tensor) else dof <= 0:
        warnings.warn("cov(): degrees of freedom is <= 0. Correction should be strictly less than the number of "
                      "observations.", stacklevel=4)
        dof = dof * 0 if isinstance(dof, torch.Tensor) else 0
    right = centred if w is None else centred * w
    return (cf.all_reduce(centred @ right.t().conj(), comm) / dof).squeeze()


def cov(func, args, kwargs):
    """``cov`` and ``corrcoef`` without weights (as torch computes them from the covariance)."""
    x, correction, fweights, aweights = call_args(_cov_sig, func, args, kwargs)
    if _split_input(args, kwargs) is None:
        return _replicated(func, args, kwargs, x)
    if x.dim() > 2:
        return d.no_rule(func, args, kwargs)
    c = covariance(x, correction, fweights, aweights) if func in _COV else covariance(x, 1)
    if func in _COV:
        return wrap(c, None, x._comm, c.shape)
    if c.dim() == 0:
        c = c / c
    else:
        diagonal = c.diagonal()
        stddev = torch.sqrt(diagonal.real if diagonal.is_complex() else diagonal)
        c = c / stddev.reshape(-1, 1) / stddev.reshape(1, -1)
    c = torch.complex(c.real.clip(-1, 1), c.imag.clip(-1, 1)) if c.is_complex() else c.clip(-1, 1)
    return wrap(c, None, x._comm, c.shape)


_COV = set(d.aliases("cov"))
d.register(d.aliases("cov") + d.aliases("corrcoef"), cov)
_BUCKETIZE = set(d.aliases("bucketize"))
d.register(d.aliases("histc"), histc)
d.register(d.aliases("histogram"), histogram)
d.register(d.aliases("histogramdd"), histogramdd)
d.register(d.aliases("bincount"), bincount)
d.register(d.aliases("searchsorted") + d.aliases("bucketize"), searchsorted)
d.register(d.aliases("isin"), isin)
