"""Sorting and order statistics: a parallel sample sort, and selections built on it.

Along an axis that is not split every op is local. Along the split axis:

* ``sort, argsort, msort``: a sample sort. Every rank sorts its chunk, takes regular samples
  of it, and the samples of all ranks (a few per rank, one allgather) give ``p - 1``
  splitters; every rank sends each run between two splitters to its rank (one all-to-all of
  values and int64 global indices), sorts the received runs (already sorted, so cheap) and
  the result is rebalanced (one more all-to-all). Elements are ordered by (value, global
  index) throughout, so splitters cut between equal keys, the partition stays balanced for
  any number of duplicates, and the order of equal keys is the stable one (the one torch
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

import torch
from torch.utils import _pytree as pytree

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, relayout, wrap
from .pointwise import write_out
from .reductions import agree_on_errors, bind, gather_parts, torch_error

_SAMPLES = 4  # regular samples per rank and splitter: a better balance costs only a small allgather


# -- the order: (value, global index), NaN last ascending and first descending, as torch ----------
def _before(v: torch.Tensor, s: torch.Tensor, descending: bool) -> torch.Tensor:
    """Where ``v`` comes strictly before ``s`` in torch's sort order."""
    if v.dtype == torch.bool:
        v, s = v.to(torch.uint8), s.to(torch.uint8)
    out = v > s if descending else v < s
    if v.is_floating_point():
        out |= (v.isnan() & ~s.isnan()) if descending else (s.isnan() & ~v.isnan())
    return out


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
    return _route([t[order] for t in parts], counts, comm)[0]


# -- the sample sort -------------------------------------------------------------------------------
def sample_sort(local: torch.Tensor, comm, counts, descending: bool):
    """Sort an ``(N, B)`` problem column by column: ``local`` holds this rank's ``counts[rank]``
    rows (any counts). Returns this rank's rows ``(values, global row indices)`` of the sorted
    columns in the balanced layout of N rows.

    The elements are ordered by (column, value, global row) in the column-major flattening of
    the problem, which each rank's locally sorted columns already are: one sample sort of
    that 1-D sequence sorts every column, and a position q of the sorted sequence is row
    ``q % N`` of column ``q // N``. Differentiable in the values.
    """
    p, rank = comm.size, comm.rank
    n, width = local.shape
    total = sum(counts)
    start = layout.offsets(tuple(counts))[rank]
    values, rows = torch.sort(local, dim=0, stable=True, descending=descending)
    rows = rows + start
    if width > 1:
        values, rows = values.t().reshape(-1), rows.t().reshape(-1)
    else:
        values, rows = values.reshape(-1), rows.reshape(-1)
    size = n * width
    cols = torch.arange(width, device=local.device).repeat_interleave(n) if width > 1 else None

    # Splitters: the regular samples of every rank that holds data, sorted, at every p-th position.
    s = _SAMPLES * p - 1
    at = (torch.arange(1, s + 1) * size // (s + 1)).clamp(max=max(size - 1, 0))
    keys = torch.stack([rows[at], at // max(n, 1)]) if size else torch.zeros(2, s, dtype=torch.int64)
    sample = values.detach()[at] if size else torch.zeros(s, dtype=local.dtype, device=local.device)
    all_values, all_keys = cf.all_gather_parts([sample, keys], comm)
    holders = [r for r in range(p) if counts[r]]
    all_values, all_keys = all_values[holders].reshape(-1), all_keys[holders].transpose(0, 1).reshape(2, -1)
    order = _lexsort([all_keys[0], all_values, all_keys[1]], descending)
    m = order.numel()
    picks = order[[min((k + 1) * m // p, m - 1) for k in range(p - 1)]]
    split_values, split_rows, split_cols = all_values[picks], all_keys[0][picks], all_keys[1][picks]

    # This rank's sorted sequence cut before the first element after each splitter.
    cuts, plain = [], values.detach()
    for k in range(p - 1):
        upto = _before(plain, split_values[k], descending) | (_tie(plain, split_values[k]) & (rows <= split_rows[k]))
        if cols is not None:
            upto = (cols < split_cols[k]) | ((cols == split_cols[k]) & upto)
        cuts.append(int(upto.sum()))
    cuts = [0] + cuts + [size]
    send = [cuts[j + 1] - cuts[j] for j in range(p)]
    keys = rows.unsqueeze(1) if cols is None else torch.stack([rows, cols], 1)
    (values, keys), matrix = _route([values, keys], send, comm)

    # Merge the received runs (sorted runs, in rank order: ties stay in global-row order).
    order = torch.sort(values.detach(), stable=True, descending=descending).indices
    if cols is not None:
        order = order[torch.sort(keys[order, 1], stable=True).indices]
    values, rows = values[order], keys[order, 0]

    # Rebalance: position q of the sorted sequence is row q % N of column q // N.
    have = matrix.sum(0).tolist()
    target = layout.balanced_counts(total, p)
    if width == 1:
        plan = layout.exchange_plan((total,), 0, tuple(have), 0, target, rank)
        values, rows = cf.exchange(values, comm, *plan), cf.exchange(rows, comm, *plan)
        return values.unsqueeze(1), rows.unsqueeze(1)
    q = layout.offsets(tuple(have))[rank] + torch.arange(values.numel(), device=values.device)
    row, col = q % total, q // total
    ends = torch.tensor(layout.offsets(target)[1:] + (total,), device=q.device)
    dest = torch.searchsorted(ends, row, right=True)
    place = (row - torch.tensor(layout.offsets(target), device=q.device)[dest]) * width + col
    values, keys = _route_to([values, torch.stack([rows, place], 1)], dest, comm)
    order = torch.argsort(keys[:, 1])
    shape = (target[rank], width)
    return values[order].reshape(shape), keys[order, 0].reshape(shape)


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


def bind_k(signature, func, args, kwargs):
    """The arguments of a call with a ``k`` (topk, kthvalue): torch's checks on an empty chunk's
    stand-in would see a shorter axis, so the checks are made here, on the global shape."""
    try:
        bound = signature(*args, **kwargs)
    except TypeError:
        d.raise_global_error(func, args, kwargs)
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
