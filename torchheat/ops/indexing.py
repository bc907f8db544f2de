"""Indexing: keys in global coordinates, local selection, and one request-reply exchange.

``x[key]`` and ``x[key] = value`` take ints, slices (any positive step, negative bounds),
``None``, ``...``, boolean masks and integer tensors or lists, in torch's combinations,
with torch's result shape, order, dtype and gradients:

* basic keys (no tensors) are views: a slice along the split axis keeps on each rank the
  part of its rows the slice selects (unbalanced counts, no communication); an int along
  the split axis removes it, so the row is broadcast from its owner: a replicated copy;
* a boolean mask over the split axis selects locally (plain masks are sliced to the local
  rows, DistTensor masks laid out like the input): an unbalanced result whose counts come
  from one small allgather;
* integer keys along the split axis run one request-reply all-to-all (:func:`fetch`):
  every rank sends the keys it needs to the ranks that own their rows, and the owners
  reply with the rows, in key order (repeated and negative keys included). A plain key
  tensor is shared out balanced along its first axis; a DistTensor key keeps its layout.

``index_select, gather, take, take_along_dim, nonzero, argwhere, where(cond),
masked_select, equal`` and the scatter family are written with the same pieces.
An out-of-range key raises torch's IndexError on every rank, whichever rank holds it.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(10.).reshape(5, 2), split=0)
>>> x[1:4].split_dim, x[1:4].shape
(0, torch.Size([3, 2]))
>>> x[torch.tensor([4, 0, 4])].full().tolist()
[[8.0, 9.0], [0.0, 1.0], [8.0, 9.0]]
>>> x[x > 4].shape
torch.Size([5])
"""
from __future__ import annotations

import operator
import warnings
from typing import List, Optional

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, relayout, wrap
from .pointwise import elementwise  # (imported first: where(cond) is registered over its rule)

_INT_INDEX = (torch.int64, torch.int32, torch.int16, torch.int8)


# -- keys ----------------------------------------------------------------------------------------
class Item:
    """One entry of a normalized key: ``kind`` is "int", "slice", "none" (None or a Python
    bool: a new axis), "index" (an integer tensor) or "mask" (a boolean tensor); ``dim`` is
    the first input axis it consumes (None for "none")."""

    __slots__ = ("kind", "value", "dim")

    def __init__(self, kind, value, dim=None):
        self.kind, self.value, self.dim = kind, value, dim

    @property
    def ndim(self) -> int:
        """Input axes consumed."""
        if self.kind == "mask":
            return len(d.shape_of(self.value))
        return 0 if self.kind in ("none", "ellipsis") else 1


def _entry(k):
    if k is None or isinstance(k, bool):
        return Item("none", k)
    if k is Ellipsis:
        return Item("ellipsis", k)
    if isinstance(k, slice):
        return Item("slice", k)
    if isinstance(k, (list, tuple)) or (not isinstance(k, torch.Tensor) and hasattr(k, "__array__")):
        k = torch.as_tensor(k)
    if isinstance(k, torch.Tensor):
        if k.dtype in (torch.bool, torch.uint8):
            if not len(d.shape_of(k)):  # a 0-d mask is a new axis of length 1 or 0
                return Item("none", bool((k.local if isinstance(k, DistTensor) else k).item()))
            return Item("mask", k)
        if k.dtype not in _INT_INDEX:
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        if not len(d.shape_of(k)):  # a 0-d integer tensor indexes as an int (torch selects with it)
            return Item("int", int((k.local if isinstance(k, DistTensor) else k).item()))
        return Item("index", k)
    try:
        return Item("int", operator.index(k))
    except TypeError:
        raise IndexError(
            "only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables are valid indices "
            f"(got {type(k).__name__})") from None


def parse(key, gshape) -> List[Item]:
    """The key as a list of :class:`Item` with their input axes, ``...`` expanded, and
    torch's IndexError for too many indices or an int out of range."""
    entries = [_entry(k) for k in (key if isinstance(key, tuple) else (key,))]
    if sum(e.kind == "ellipsis" for e in entries) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(e.ndim for e in entries if e.kind != "ellipsis")
    ndim = len(gshape)
    if used > ndim:
        raise IndexError(f"too many indices for tensor of dimension {ndim}")
    items, dim = [], 0
    for e in entries:
        if e.kind == "ellipsis":
            for _ in range(ndim - used):
                items.append(Item("slice", slice(None), dim))
                dim += 1
            continue
        if e.kind != "none":
            e.dim = dim
            if e.kind == "int":
                n = gshape[dim]
                if not -n <= e.value < n:
                    raise IndexError(f"index {e.value} is out of bounds for dimension {dim} with size {n}")
                e.value %= n
            elif e.kind == "slice" and e.value.step is not None and operator.index(e.value.step) <= 0:
                raise ValueError("step must be greater than zero")
            elif e.kind == "mask":
                check_mask(e.value, gshape, dim)
            dim += e.ndim
        items.append(e)
    items += [Item("slice", slice(None), i) for i in range(dim, ndim)]
    return items


def check_mask(mask, gshape, dim: int) -> None:
    """torch's IndexError for a mask whose shape is not that of the axes it indexes."""
    mshape = d.shape_of(mask)
    for i, n in enumerate(mshape):
        if dim + i >= len(gshape) or gshape[dim + i] != n:
            raise IndexError(f"The shape of the mask {list(mshape)} at index {i} does not match the shape of the "
                             f"indexed tensor {list(gshape)} at index {dim + i}")


def covering(items: List[Item], axis: int) -> Item:
    """The item that consumes input axis ``axis``."""
    return next(i for i in items if i.dim is not None and i.dim <= axis < i.dim + i.ndim)


def out_axes(items: List[Item], nb: int):
    """Where the result axes go: ``(adv, place)``, where ``adv`` is the result axis of the
    first axis of the broadcast index shape (of ``nb`` axes; None without advanced items)
    and ``place(dim)`` the result axis of input axis ``dim`` taken by a slice. torch's rule:
    ints select first; the index axes stay in place when the advanced items are adjacent,
    else they go first."""
    slots = []  # the axes after the ints' selects: an input axis (slice), -1 (new axis), "adv"
    for it in items:
        if it.kind in ("index", "mask"):
            slots += ["adv"] * it.ndim
        elif it.kind != "int":
            slots.append(it.dim if it.kind == "slice" else -1)
    at = [i for i, v in enumerate(slots) if v == "adv"]
    if not at:
        return None, {v: i for i, v in enumerate(slots) if v != -1}.__getitem__
    adjacent = at == list(range(at[0], at[0] + len(at)))
    if adjacent:
        where = {v: (i if i < at[0] else i - len(at) + nb) for i, v in enumerate(slots) if v not in ("adv", -1)}
        return at[0], where.__getitem__
    basic = [v for v in slots if v != "adv"]
    return 0, {v: nb + i for i, v in enumerate(basic) if v != -1}.__getitem__


def n_index_axes(items) -> int:
    """Number of axes of the broadcast shape of the advanced items (a mask gives one)."""
    return max([len(d.shape_of(it.value)) for it in items if it.kind == "index"] + [1 if any(it.kind == "mask" for it in items) else 0])


def local_slice(s: slice, n: int, counts, rank: int):
    """This rank's part of the global slice ``s`` of an axis of ``n`` rows split by
    ``counts``: the local slice and the selected rows per rank."""
    start, stop, step = s.indices(n)
    stop = max(stop, start)
    picked, mine = [], None
    for r, (o, c) in enumerate(zip(layout.offsets(counts), counts)):
        lo, hi = max(start, o), min(stop, o + c)
        first = start + -(-(lo - start) // step) * step  # first selected row >= lo
        k = max(0, -(-(hi - first) // step)) if hi > first else 0
        picked.append(k)
        if r == rank:
            mine = slice(first - o, first - o + (k - 1) * step + 1, step) if k else slice(0, 0, step)
    return mine, tuple(picked)


def local_key(items: List[Item], values=None):
    """The key torch runs on a local chunk: each item's (local) value, in order."""
    values = values or {}
    out = []
    for it in items:
        v = values.get(id(it), it.value)
        out.append(v.local if isinstance(v, DistTensor) else v)
    return tuple(out)


# -- __getitem__ ---------------------------------------------------------------------------------
def getitem(func, args, kwargs):
    """``x[key]`` with the key in global coordinates (see the module docstring)."""
    x, key = args
    if not isinstance(x, DistTensor):  # a plain tensor indexed by DistTensor keys is replicated
        x = _as_dist(x, _comm_of(*(key if isinstance(key, tuple) else (key,))))
    items = parse(key, x._gshape)
    comm = x._comm
    adv = [it for it in items if it.kind in ("index", "mask")]
    if x._split is None:
        return _getitem_replicated(x, items, adv)
    s = x._split
    own = covering(items, s) if x._gshape else None
    if own.kind == "int":
        return _getitem_int(x, items, own, adv)
    if own.kind == "slice":
        return _getitem_slice(x, items, own, adv)
    if own.kind == "mask" and len(adv) == 1:
        if own.dim != s:  # the selection runs in row-major order: split along the mask's first axis
            return getitem(func, (relayout(x, own.dim, layout.balanced_counts(x._gshape[own.dim], comm.size)), key), kwargs)
        mask = own.value
        if isinstance(mask, DistTensor) and mask._split is not None:
            mask = d.to_layout(mask, 0, x._counts).local
        else:
            mask = (mask.local if isinstance(mask, DistTensor) else mask).narrow(0, x.offset, x._counts[comm.rank])
        out = d.run_local(torch.Tensor.__getitem__, (x, local_key(items, {id(own): mask})), {})
        pos = out_axes(items, 1)[0]
        return wrap_counted(out, pos, comm)
    return _getitem_fetch(x, items, adv)


def wrap_counted(out: torch.Tensor, axis: int, comm) -> DistTensor:
    """Wrap a local result of data-dependent length along ``axis`` (one allgather of counts)."""
    counts = gather_counts(out.shape[axis], comm)
    shape = list(out.shape)
    shape[axis] = sum(counts)
    return wrap(out, axis, comm, torch.Size(shape), counts)


def gather_counts(n: int, comm) -> layout.Counts:
    """Every rank's ``n`` (one small allgather)."""
    if comm.size == 1:
        return (n,)
    return tuple(comm.allgather(torch.tensor([n], dtype=torch.int64)).reshape(-1).tolist())


def _getitem_replicated(x: DistTensor, items, adv):
    comm = x._comm
    split_keys = [it for it in adv if isinstance(it.value, DistTensor) and it.value._split is not None]
    if not split_keys:
        return d.wrap_replicated(d.run_local(torch.Tensor.__getitem__, (x, local_key(items)), {}), comm)
    first = split_keys[0]
    if first.kind == "mask":  # x takes the mask's layout: a local narrow, then a split selection
        m = first.value
        x = relayout(x, first.dim + m._split, m._counts)
        return getitem(None, (x, tuple(it.value for it in items)), {})
    return _getitem_fetch(x, items, adv)


def _getitem_slice(x: DistTensor, items, own: Item, adv):
    """The split axis is taken by a slice: every rank slices its rows; the rest is local."""
    comm = x._comm
    mine, counts = local_slice(own.value, x._gshape[own.dim], x._counts, comm.rank)
    values = {id(own): mine}
    for it in adv:  # keys along other axes must be whole on every rank
        if isinstance(it.value, DistTensor):
            values[id(it)] = d.to_layout(it.value, None, None)
        if it.kind == "index":  # (an empty chunk would not check them)
            check_range(local_key([it], values)[0], x._gshape[it.dim], ordinal(items, it))
    out = d.run_local(torch.Tensor.__getitem__, (x, local_key(items, values)), {})
    pos = out_axes(items, n_index_axes(items))[1](own.dim)
    shape = list(out.shape)
    shape[pos] = sum(counts)
    return wrap(out, pos, comm, torch.Size(shape), counts)


def _getitem_int(x: DistTensor, items, own: Item, adv):
    """An int along the split axis: its owner's row, broadcast (a replicated copy)."""
    comm = x._comm
    if adv:  # torch selects first: the selected hyperplane, then the rest of the key on it
        plane = _getitem_int(x, [Item("slice", slice(None), i) for i in range(own.dim)] + [own], own, [])
        plane._copy_of = None
        rest = [Item(it.kind, it.value, None if it.dim is None else it.dim - (it.dim > own.dim)) for it in items if it is not own]
        return _getitem_replicated(plane, rest, [it for it in rest if it.kind in ("index", "mask")])
    one = Item("slice", slice(own.value, own.value + 1), own.dim)
    sliced = _getitem_slice(x, [one if it is own else it for it in items], one, [])
    full = broadcast_row(sliced.local, comm, sliced._counts, sliced._split).select(sliced._split, 0)
    out = wrap(full, None, comm, full.shape, None)
    out._copy_of = "x[i] along the split axis"
    return out


def _bcast_row(t, comm, counts, axis):
    root = counts.index(1)
    out = t.clone(memory_format=torch.contiguous_format) if comm.rank == root else torch.empty(layout.local_shape(t.shape, axis, 1), dtype=t.dtype, device=t.device)
    return comm.bcast(out, root)


class _BroadcastRow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t, comm, counts, axis):
        ctx.args = (comm, counts, axis)
        return _bcast_row(t, comm, counts, axis)

    @staticmethod
    def backward(ctx, grad):
        return (cf.scatter(grad, *ctx.args),) + (None,) * 3


def broadcast_row(t: torch.Tensor, comm, counts, axis: int) -> torch.Tensor:
    """The one row along ``axis`` that one rank holds (``counts`` is 1 there, 0 elsewhere),
    broadcast from it: replicated. Backward keeps the owner's gradient (as ``all_gather``)."""
    if comm.size == 1:
        return t
    if t.requires_grad and torch.is_grad_enabled():
        return _BroadcastRow.apply(t, comm, counts, axis)
    return _bcast_row(t, comm, counts, axis)


def _index_shape(items) -> torch.Size:
    """The broadcast shape of the integer items; torch's IndexError when they do not broadcast."""
    shapes = [tuple(d.shape_of(it.value)) for it in items if it.kind == "index"]
    out = layout.broadcast_shapes(*shapes)
    if out is None:
        raise IndexError("shape mismatch: indexing tensors could not be broadcast together with shapes "
                         + ", ".join(str(list(s)) for s in shapes))
    return out


# -- the request-reply exchange -------------------------------------------------------------------
def _index_items(items):
    """Masks become integer items (their nonzero coordinates), one per axis they cover."""
    out = []
    for it in items:
        if it.kind != "mask":
            out.append(it)
            continue
        m = it.value
        if isinstance(m, DistTensor) and m._split is not None:
            nz = nonzero_split(m)
            cols = [wrap(nz.local[:, c], 0, m._comm, torch.Size([nz._gshape[0]]), nz._counts) for c in range(nz._gshape[1])]
        else:
            cols = list((m.local if isinstance(m, DistTensor) else m).nonzero().unbind(1))
        out += [Item("index", c, it.dim + k) for k, c in enumerate(cols)]
    return out


def _requests(x: DistTensor, items):
    """Bring the index tensors to this rank's share of the keys: returns (items with flat
    local index values, the local share's shape, the result's split axis within the index
    shape and its counts, the global index shape). Checks ranges; no communication except
    aligning DistTensor keys."""
    comm = x._comm
    idx = [it for it in items if it.kind == "index"]
    tensors = [it.value for it in idx]
    bshape = _index_shape(idx)
    ref = d.pick_ref(tensors, bshape)
    if ref is not None:
        local, bsplit, bcounts = d.align(tensors, bshape, ref, comm)
    else:  # plain keys: every rank asks for its balanced share along their first axis
        bsplit, bcounts = 0, layout.balanced_counts(bshape[0], comm.size)
        start = layout.offsets(bcounts)[comm.rank]
        local = [(t.local if isinstance(t, DistTensor) else t).expand(bshape).narrow(0, start, bcounts[comm.rank]) for t in tensors]
    lshape = layout.local_shape(bshape, bsplit, bcounts[comm.rank])
    error, flat = None, {}
    for it, t in zip(idx, local):
        t = t.expand(lshape).reshape(-1).long()
        n = x._gshape[it.dim]
        error = error or check_range(t, n, ordinal(items, it), raise_it=False)
        flat[id(it)] = torch.where(t < 0, t + n, t)
    return flat, lshape, bsplit, bcounts, bshape, error


def ordinal(items, item) -> int:
    """The position of an advanced item among the indexed axes, as torch's messages count."""
    return sum(it.ndim for it in items[:items.index(item)] if it.kind in ("index", "mask"))


def check_range(t: torch.Tensor, n: int, dim: int, raise_it: bool = True) -> Optional[IndexError]:
    """torch's IndexError for the first key of ``t`` outside ``[-n, n)`` (returned or raised)."""
    bad = (t < -n) | (t >= n)
    if not bool(bad.any()):
        return None
    error = IndexError(f"index {int(t[bad].reshape(-1)[0])} is out of bounds for dimension {dim} with size {n}")
    if raise_it:
        raise error
    return error


def check_keys(comm, error, signature) -> None:
    """Agree on an error seen by some ranks, and on the shapes of plain keys (which must
    be the same on every rank: ValueError otherwise). One small allgather."""
    if comm.size == 1:
        d.agree(comm, error)
        return
    sig = hash(signature) & ((1 << 62) - 1)
    seen = comm.allgather(torch.tensor([error is not None, sig], dtype=torch.int64))
    if len(set(seen[:, 1].tolist())) > 1:
        raise ValueError(f"the index keys differ between ranks (their shapes, on this rank {signature}); "
                         "a plain tensor key must be the same on every rank (use a DistTensor for per-rank keys)")
    if bool(seen[:, 0].any()):
        d.agree(comm, error)


def owners(keys: torch.Tensor, counts) -> torch.Tensor:
    """The rank that holds each global row ``keys`` (rows split by ``counts``)."""
    ends = torch.tensor(list(layout.offsets(counts)[1:]) + [sum(counts)], dtype=torch.int64, device=keys.device)
    return torch.bucketize(keys.contiguous(), ends, right=True)


class Route:
    """Where each requested key goes: sent to the ranks that own it, replies back in key order.

    ``send``/``recv`` are the exchange plans of the requests (rows of keys, by owner) and
    ``order`` sorts the keys by owner. :meth:`ask` moves requests to owners, :meth:`answer`
    moves the owners' rows back and restores the key order. Both are differentiable.
    """

    def __init__(self, comm, keys: torch.Tensor, counts):
        self.comm, self.offset = comm, layout.offsets(counts)[comm.rank]
        if comm.size == 1:  # every key is local
            return
        owner = owners(keys, counts)
        self.order = torch.argsort(owner, stable=True)
        sent = torch.bincount(owner, minlength=comm.size)
        got = comm.exchange(sent, tuple(((0, j, 1),) for j in range(comm.size)), (comm.size,),
                            tuple(((0, i, 1),) for i in range(comm.size))) if comm.size > 1 else sent
        self.sent, self.got = sent.tolist(), got.tolist()

    @staticmethod
    def _plan(counts):
        return tuple(((0, o, c),) for o, c in zip(layout.offsets(tuple(counts)), counts))

    def ask(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of ``t`` (one per key, in key order) delivered to their keys' owners."""
        if self.comm.size == 1:
            return t
        t = t.index_select(0, self.order)
        return cf.exchange(t, self.comm, self._plan(self.sent), self._plan(self.got), (sum(self.got),) + tuple(t.shape[1:]))

    def answer(self, rows: torch.Tensor) -> torch.Tensor:
        """The owners' ``rows`` (one per received key) back to the askers, in key order."""
        if self.comm.size == 1:
            return rows
        back = cf.exchange(rows, self.comm, self._plan(self.got), self._plan(self.sent),
                           (sum(self.sent),) + tuple(rows.shape[1:]))
        return back.index_select(0, torch.argsort(self.order))


def _getitem_fetch(x: DistTensor, items, adv):
    """Integer keys along the split axis (or into a replicated tensor with a split key)."""
    comm = x._comm
    items = _index_items(items)
    flat, lshape, bsplit, bcounts, bshape, error = _requests(x, items)
    signature = (tuple(bshape),)
    check_keys(comm, error, signature)
    idx = [it for it in items if it.kind == "index"]
    adv_pos, _ = out_axes(items, 1)
    if x._split is None:  # every rank has every row: local
        rows = d.run_local(torch.Tensor.__getitem__, (x, local_key(items, flat)), {})
    else:
        own = covering(items, x._split)
        route = Route(comm, flat[id(own)], x._counts)
        keys = route.ask(torch.stack([flat[id(it)] for it in idx], 1))
        values = {id(it): keys[:, k] - (route.offset if it is own else 0) for k, it in enumerate(idx)}
        rows = d.run_local(torch.Tensor.__getitem__, (x, local_key(items, values)), {})
        rows = route.answer(rows.movedim(adv_pos, 0)).movedim(0, adv_pos)
    out = rows.unflatten(adv_pos, lshape) if len(lshape) != 1 else rows
    shape = list(out.shape)
    shape[adv_pos:adv_pos + len(bshape)] = list(bshape)
    return wrap(out, adv_pos + bsplit, comm, torch.Size(shape), bcounts)


# -- __setitem__ ---------------------------------------------------------------------------------
def setitem(func, args, kwargs):
    """``x[key] = value`` with the key in global coordinates; value a number, a plain tensor
    (replicated) or a DistTensor of any layout, brought to the layout of the selected
    region. Everything is checked on every rank before anything is written."""
    x, key, value = args
    items = parse(key, x._gshape)
    comm = x._comm
    if torch.is_grad_enabled() and x.requires_grad and x.is_leaf:
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    if isinstance(value, (list, tuple)):
        value = torch.as_tensor(value)
    adv = [it for it in items if it.kind in ("index", "mask")]
    own = covering(items, x._split) if x._split is not None else None
    if own is None or own.kind in ("slice", "int"):
        values = {}
        for it in adv:  # keys along other axes are whole on every rank
            if isinstance(it.value, DistTensor):
                values[id(it)] = d.to_layout(it.value, None, None)
            if it.kind == "index":
                check_range(local_key([it], values)[0], x._gshape[it.dim], ordinal(items, it))
        region = _region_shape(x._gshape, items, values)
        if own is None or own.kind == "int":
            v = align_value(value, region, None, None, comm, basic=not adv)
            if own is not None:  # the owner writes; the others write nothing, but with the value
                v = cf.enter_replicated(v, comm) if isinstance(v, torch.Tensor) else v  # in their graphs
                lo = x.offset
                if lo <= own.value < lo + x._counts[comm.rank]:
                    values[id(own)] = own.value - lo
                else:
                    values[id(own)] = slice(0, 0)
                    if isinstance(v, torch.Tensor):
                        v = v.reshape(-1)[:0].reshape(_region_shape(x.shape, items, values))
        else:
            values[id(own)], counts = local_slice(own.value, x._gshape[own.dim], x._counts, comm.rank)
            v = align_value(value, region, out_axes(items, n_index_axes(items))[1](own.dim), counts, comm, basic=not adv)
        d.run_local(torch.Tensor.__setitem__, (x, local_key(items, values), v), {})
        return None
    if own.kind == "mask" and len(adv) == 1 and own.dim == x._split:
        mask = own.value
        if isinstance(mask, DistTensor) and mask._split is not None:
            mask = d.to_layout(mask, 0, x._counts).local
        else:
            mask = (mask.local if isinstance(mask, DistTensor) else mask).narrow(0, x.offset, x._counts[comm.rank])
        counts = gather_counts(int(mask.count_nonzero()), comm)
        region = _region_shape(x._gshape, items, {id(own): sum(counts)})
        v = align_value(value, region, out_axes(items, 1)[0], counts, comm, basic=False)
        d.run_local(torch.Tensor.__setitem__, (x, local_key(items, {id(own): mask}), v), {})
        return None
    _setitem_fetch(x, items, value)


def _region_shape(gshape, items, values) -> torch.Size:
    """Global shape of ``x[key]`` (meta stand-ins; a mask counts its selected elements,
    or is given as that count in ``values``)."""
    key = []
    for it in items:
        v = values.get(id(it), it.value)
        if isinstance(v, int) and it.kind == "mask":
            key += [torch.empty(v, dtype=torch.int64, device="meta")] * it.ndim
        elif isinstance(v, torch.Tensor):
            v = v.local if isinstance(v, DistTensor) else v
            if v.dtype in (torch.bool, torch.uint8):
                key += [torch.empty(int(v.count_nonzero()), dtype=torch.int64, device="meta")] * v.dim()
            else:
                key.append(torch.empty(d.shape_of(it.value) if it.kind == "index" else v.shape, dtype=torch.int64, device="meta"))
        else:
            key.append(v)
    return torch.empty(gshape, device="meta")[tuple(key)].shape


def align_value(value, region: torch.Size, split, counts, comm, basic: bool):
    """``value`` as this rank's part of a region of global shape ``region`` split along
    ``split`` by ``counts`` (None: replicated); torch's error when it does not broadcast."""
    if not isinstance(value, torch.Tensor):
        return value
    vshape = list(d.shape_of(value))
    while len(vshape) > len(region) and vshape[0] == 1:  # torch drops leading ones of the value
        vshape.pop(0)
    if layout.broadcast_shapes(tuple(vshape), tuple(region)) != region:
        if basic:
            try:
                torch.empty(vshape, device="meta").expand(region)
            except RuntimeError as err:
                raise err.with_traceback(None) from None
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(d.shape_of(value))} cannot be broadcast "
                           f"to indexing result of shape {list(region)}")
    if len(vshape) < len(d.shape_of(value)):
        value = (d.to_layout(value, None, None).local if isinstance(value, DistTensor) else value).reshape(vshape)
    ref = None if split is None else _Layout(split, region, counts)
    (v,), _, _ = d.align([value], region, ref, comm)
    return v.local if isinstance(v, DistTensor) else v


class _Layout:
    """The metadata :func:`torchheat.dispatch.align` reads from its reference operand."""

    def __init__(self, split, gshape, counts):
        self._split, self._gshape, self._counts = split, gshape, counts


def _setitem_fetch(x: DistTensor, items, value):
    """Integer keys along the split axis: the values travel to the owners of their rows."""
    comm = x._comm
    items = _index_items(items)
    flat, lshape, bsplit, bcounts, bshape, error = _requests(x, items)
    check_keys(comm, error, (tuple(bshape),))
    idx = [it for it in items if it.kind == "index"]
    adv_pos, _ = out_axes(items, len(bshape))
    region = _region_shape(x._gshape, items, {})
    v = align_value(value, region, adv_pos + bsplit, bcounts, comm, basic=False)
    own = covering(items, x._split)
    route = Route(comm, flat[id(own)], x._counts)
    keys = route.ask(torch.stack([flat[id(it)] for it in idx], 1))
    if isinstance(v, torch.Tensor):
        local = list(region)
        local[adv_pos + bsplit] = bcounts[comm.rank]
        v = v.expand(local).flatten(adv_pos, adv_pos + len(bshape) - 1).movedim(adv_pos, 0)
        v = route.ask(v).movedim(0, adv_pos)
    values = {id(it): keys[:, k] - (route.offset if it is own else 0) for k, it in enumerate(idx)}
    d.run_local(torch.Tensor.__setitem__, (x, local_key(items, values), v), {})


d.register([torch.Tensor.__setitem__], setitem)


# -- nonzero ------------------------------------------------------------------------------------------
def nonzero_split(x: DistTensor) -> DistTensor:
    """``nonzero(x)`` of a split x: (count, ndim) int64 split along 0 with its counts, in
    row-major order (x is moved to split 0 first when it is split along another axis)."""
    comm = x._comm
    if x._split != 0:
        x = relayout(x, 0, layout.balanced_counts(x._gshape[0], comm.size))
    nz = d.run_local(torch.nonzero, (x.local,), {})
    nz[:, 0] += x.offset
    return wrap_counted(nz, 0, comm)


def _nonzero(func, args, kwargs):
    """``nonzero``, ``argwhere``, and ``where(cond)`` with one argument."""
    x = args[0]
    as_tuple = kwargs.get("as_tuple", False) or func in _WHERE
    if not isinstance(x, DistTensor) or x._split is None or not len(x._gshape):
        return d.no_rule(func, args, kwargs)
    nz = nonzero_split(x)
    if not as_tuple:
        return nz
    n = torch.Size([nz._gshape[0]])
    return tuple(wrap(nz.local[:, c], 0, x._comm, n, nz._counts) for c in range(nz._gshape[1]))


_WHERE = set(d.aliases("where"))


def _nonzero_static(func, args, kwargs):
    """``nonzero_static(x, size=, fill_value=-1)``: the first ``size`` rows of ``nonzero``,
    padded with ``fill_value`` rows on the last rank."""
    x = args[0]
    if not isinstance(x, DistTensor) or x._split is None or not len(x._gshape):
        return d.no_rule(func, args, kwargs)
    _check_on_meta(func, args, kwargs)
    size, fill = kwargs["size"], kwargs.get("fill_value", -1)
    nz = nonzero_split(x)
    n, ndim = nz._gshape
    if n >= size:
        return getitem(None, (nz, slice(0, size)), {})
    counts = nz._counts[:-1] + (nz._counts[-1] + size - n,)
    local = nz.local
    if x._comm.rank == x._comm.size - 1:
        local = torch.cat([local, local.new_full((size - n, ndim), fill)])
    return wrap(local, 0, x._comm, torch.Size([size, ndim]), counts)


def _where(func, args, kwargs):
    if len(args) + len(kwargs) == 1:
        return _nonzero(func, args, kwargs)
    return elementwise(func, args, kwargs)


# -- index_select, gather, take, take_along_dim, masked_select, equal --------------------------
def agree_range(comm, index, n: int, error, negative: bool = True) -> None:
    """Raise ``error(bad_key)`` on every rank if ``index`` (plain: the same on every rank, or a
    DistTensor: each rank its chunk) has a key outside ``[-n, n)`` (``[0, n)`` without
    ``negative``)."""
    t = index.local if isinstance(index, DistTensor) else index
    bad = (t < (-n if negative else 0)) | (t >= n)
    found = error(int(t[bad].reshape(-1)[0])) if bool(bad.any()) else None
    if isinstance(index, DistTensor) and index._split is not None:
        d.agree(comm, found)
    elif found is not None:
        raise found


def torch_error(func, *args) -> Exception:
    """The exception torch raises for ``func(*args)`` (small stand-ins of the real operands)."""
    try:
        func(*args)
    except Exception as err:  # noqa: BLE001 -- returned for agreement, then raised
        return err.with_traceback(None)
    return RuntimeError(f"{d.func_name(func)}: bad index")


def _check_on_meta(func, args, kwargs):
    """torch's own error for the call on stand-ins of the global shapes (metadata only)."""
    try:
        d.run_local(func, *_meta_call(args, kwargs))
    except Exception:
        d.raise_global_error(func, args, kwargs)


def _check_slices(func, args):
    """torch's error for the slice shapes of ``index_add_``/``index_reduce_`` (``args``: x, dim,
    index, source, ...), which their meta kernels skip (a 0-d source into a vector): the CPU
    kernel on zero-stride stand-ins checks them first, then refuses the aliased output (ignored)."""
    def one(a):
        return torch.zeros((), dtype=a.dtype).expand(d.shape_of(a)) if isinstance(a, torch.Tensor) else a
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # index_reduce's beta warning
            d.run_local(func, tuple(map(one, args)), {})
    except Exception as error:
        if "written-to tensor" not in str(error):
            raise error.with_traceback(None) from None


def _meta_call(args, kwargs):
    def one(a):
        return torch.empty(d.shape_of(a), dtype=a.dtype, device="meta") if isinstance(a, torch.Tensor) else a
    return tuple(map(one, args)), {k: one(v) for k, v in kwargs.items()}


def _bind(names, args, kwargs):
    """The positional-or-keyword arguments ``names`` of a call (None when absent)."""
    out = list(args) + [None] * (len(names) - len(args))
    for i, name in enumerate(names):
        if name in kwargs:
            out[i] = kwargs[name]
    return out[:len(names)]


def _comm_of(*ts):
    return d.common_comm(t for t in ts if isinstance(t, DistTensor))


def _as_dist(t, comm):
    return t if isinstance(t, DistTensor) else wrap(t, None, comm, t.shape, None)


def index_select(func, args, kwargs):
    """``index_select(x, dim, index)``: ``x[:, ..., index]`` (the index axis in place)."""
    x, dim, index = _bind(("input", "dim", "index"), args, kwargs)
    _check_on_meta(torch.index_select, (x, dim, index), {})
    comm = _comm_of(x, index)
    if not len(d.shape_of(x)):  # (a 0-d x is never split)
        return replicated_call(func, args, kwargs)
    dim = layout.normalize_axis(dim, len(d.shape_of(x)))
    n = d.shape_of(x)[dim] if len(d.shape_of(x)) else 1
    small = torch.zeros([min(m, 1) if k != dim else m for k, m in enumerate(d.shape_of(x))], dtype=x.dtype)
    agree_range(comm, index, n, lambda k: torch_error(torch.index_select, small, dim, torch.tensor([k])), negative=False)
    if not len(d.shape_of(index)):
        index = (index.local if isinstance(index, DistTensor) else index).reshape(1)
    return getitem(None, (_as_dist(x, comm), (slice(None),) * dim + (index,)), {})


def _grid_key(index, dim: int, ndim: int):
    """The advanced key that picks ``x[i0, .., index[i], .., ik]`` for every position i of
    ``index``: aranges along the other axes, shaped to broadcast (gather's rule)."""
    shape = d.shape_of(index)
    key = []
    for k in range(ndim):
        if k == dim:
            key.append(index)
        else:
            view = [1] * ndim
            view[k] = shape[k]
            key.append(torch.arange(shape[k]).reshape(view))
    return tuple(key)


def gather(func, args, kwargs):
    """``gather(x, dim, index)``: local where x and index share their rows (the split axis is
    not ``dim``); otherwise the request-reply exchange with x's rows."""
    x, dim, index = _bind(("input", "dim", "index"), args, kwargs)[:3]
    if kwargs.get("sparse_grad") or kwargs.get("out") is not None:
        return d.no_rule(func, args, kwargs)
    _check_on_meta(torch.gather, (x, dim, index), {})
    if index.dtype != torch.int64:  # an int32 index, or an empty one of any dtype: not a mask
        index = (wrap(index.local.long(), index._split, index._comm, index._gshape, index._counts)
                 if isinstance(index, DistTensor) else index.long())
    comm = _comm_of(x, index)
    shape, ishape = d.shape_of(x), d.shape_of(index)
    dim = layout.normalize_axis(dim, max(len(shape), 1))
    if not len(shape):  # (a 0-d x is never split)
        return d.no_rule(func, args, kwargs)
    n = shape[dim]
    agree_range(comm, index, n, lambda k: RuntimeError(f"index {k} is out of bounds for dimension {dim} with size {n}"), negative=False)
    x = _as_dist(x, comm)
    s = x._split
    isplit = index._split if isinstance(index, DistTensor) else None
    if s is not None and s != dim and ishape[s] == shape[s] and isplit in (None, s):  # the same rows: local
        idx = d.to_layout(index, s, x._counts).local if isplit is not None else index.narrow(s, x.offset, x._counts[comm.rank])
        return wrap(d.run_local(torch.gather, (x.local, dim, idx), {}), s, comm, ishape, x._counts)
    if s is None and isplit is not None:
        start, count = index.offset, index._counts[comm.rank]
        local = d.replicated_operand(x, comm, isplit if isplit != dim else -1, start, count)
        if isplit != dim and local.shape[isplit] != count:
            local = local.narrow(isplit, start, count)
        return wrap(d.run_local(torch.gather, (local, dim, index.local), {}), isplit, comm, ishape, index._counts)
    return getitem(None, (x, _grid_key(index, dim, len(shape))), {})


def take(func, args, kwargs):
    """``take(x, index)``: x's flat element ``index`` (global row-major order), as x[coords]."""
    x, index = _bind(("input", "index"), args, kwargs)
    _check_on_meta(torch.take, (x, index), {})
    comm = _comm_of(x, index)
    shape = d.shape_of(x)
    n = shape.numel()
    agree_range(comm, index, n, lambda k: IndexError(f"out of range: tried to access index {k} on a tensor of {n} elements."))
    x = _as_dist(x, comm)
    if x._split is None:
        if isinstance(index, DistTensor) and index._split is not None:  # each rank takes its own indices
            local = torch.take(cf.enter_replicated(x.local, comm), index.local)
            return wrap(local, index._split, comm, index._gshape, index._counts)
        return d.wrap_replicated(d.run_local(torch.take, (x.local, index), {}), comm)
    t = index.local if isinstance(index, DistTensor) else index
    t = torch.where(t < 0, t + n, t)
    coords = []
    for size in reversed(shape):
        coords.append(t % size if size else t)
        t = t // size if size else t
    if isinstance(index, DistTensor):
        coords = [wrap(c, index._split, comm, index._gshape, index._counts) for c in coords]
    return getitem(None, (x, tuple(reversed(coords))), {})


def take_along_dim(func, args, kwargs):
    """``take_along_dim(x, index, dim)``: ``gather`` after torch's broadcast of x and index."""
    x, index, dim = _bind(("input", "indices", "dim"), args, kwargs)
    _check_on_meta(torch.take_along_dim, (x, index, dim), {})
    comm = _comm_of(x, index)
    if dim is None:  # gather from the flattened tensors
        x, index = (_flatten(t, comm) if isinstance(t, DistTensor) else t.reshape(-1) for t in (x, index))
        return gather(torch.gather, (x, 0, index), {})
    shape, ishape = d.shape_of(x), d.shape_of(index)
    dim = layout.normalize_axis(dim, len(shape))
    common = list(layout.broadcast_shapes(tuple(shape[:dim]) + (1,) + tuple(shape[dim + 1:]),
                                          tuple(ishape[:dim]) + (1,) + tuple(ishape[dim + 1:])))
    x = _expand(x, common[:dim] + [shape[dim]] + common[dim + 1:], comm)
    index = _expand(index, common[:dim] + [ishape[dim]] + common[dim + 1:], comm)
    return gather(torch.gather, (x, dim, index), {})


def _expand(t, sizes, comm):
    from .shape import expand
    if tuple(d.shape_of(t)) == tuple(sizes):
        return t
    if not isinstance(t, DistTensor):
        return t.expand(sizes)
    return expand(torch.Tensor.expand, (t, tuple(sizes)), {})


def _flatten(t: DistTensor, comm) -> DistTensor:
    """``t`` flattened: a view when it is split along 0 (row blocks stay contiguous) or
    replicated; one exchange to split 0 first otherwise."""
    if t._split not in (None, 0):
        t = relayout(t, 0, layout.balanced_counts(t._gshape[0], comm.size))
    rest = t._gshape[1:].numel() if len(t._gshape) else 1
    local = t.local.reshape(-1)
    if t._split is None:
        return wrap(local, None, comm, local.shape, None)
    return wrap(local, 0, comm, torch.Size([t._gshape.numel()]), tuple(c * rest for c in t._counts))


def masked_select(func, args, kwargs):
    """``masked_select(x, mask)``: ``x[mask]`` after broadcasting both; global row-major order."""
    x, mask = _bind(("input", "mask"), args, kwargs)
    if mask.dtype != torch.bool:
        raise RuntimeError("masked_select: expected BoolTensor for mask")
    comm = _comm_of(x, mask)
    common = layout.broadcast_shapes(tuple(d.shape_of(x)), tuple(d.shape_of(mask)))
    if common is None:
        d.raise_global_error(torch.broadcast_tensors, (x, mask), {})
    common = list(common)
    if not common:
        return d.wrap_replicated(d.run_local(torch.masked_select, (_local(x), _local(mask)), {}), comm)
    return getitem(None, (_as_dist(_expand(x, common, comm), comm), _expand(mask, common, comm)), {})


def _local(t):
    return t.local if isinstance(t, DistTensor) else t


def equal(func, args, kwargs):
    """``torch.equal(a, b)``: same global shape and all elements equal (one allreduce)."""
    a, b = _bind(("input", "other"), args, kwargs)
    comm = _comm_of(a, b)
    if d.shape_of(a) != d.shape_of(b):
        return False
    ref = a if isinstance(a, DistTensor) and a._split is not None else b
    if not isinstance(ref, DistTensor) or ref._split is None:
        return d.run_local(torch.equal, (_local(a), _local(b)), {})
    (la, lb), _, _ = d.align([a, b], ref._gshape, ref, comm)
    same = torch.tensor([d.run_local(torch.equal, (_local(la).detach(), _local(lb).detach()), {})])
    return bool(comm.allreduce(same, "land").item()) if comm.size > 1 else bool(same.item())


# -- the scatter family: values sent to the owners of their elements ---------------------------
_REDUCE = {"add": "sum", "multiply": "prod"}  # scatter's reduce= names


def put_elements(x: DistTensor, coords, values, reduce=None, include_self=True) -> None:
    """Write ``values`` into x at the global coordinates ``coords`` (one tensor per axis, in
    one layout or plain; values broadcast to them), in place: plain writes (``reduce=None``,
    repeated keys: the last wins, as torch on CPU) or a ``scatter_reduce`` reduction. Along
    the split axis each element travels to its owner (the request-reply exchange)."""
    comm = x._comm
    operands = list(coords) + ([values] if isinstance(values, torch.Tensor) else [])
    shape = layout.broadcast_shapes(*[tuple(d.shape_of(t)) for t in operands])
    ref = d.pick_ref(operands, shape) if x._split is not None else None
    local, _, _ = d.align(operands, shape, ref, comm)
    local = [t.local if isinstance(t, DistTensor) else t for t in local]
    lshape = layout.broadcast_shapes(*[tuple(t.shape) for t in local])
    flat = [t.expand(lshape).reshape(-1) for t in local]
    if ref is None and x._split is not None:  # plain keys: every rank sends its balanced share
        flat = [cf.enter_replicated(t, comm) for t in flat]  # (each rank's share adds its part of the gradient)
        counts = layout.balanced_counts(flat[0].numel(), comm.size)
        flat = [t.narrow(0, layout.offsets(counts)[comm.rank], counts[comm.rank]) for t in flat]
    keys, vals = flat[:len(coords)], (flat[-1] if isinstance(values, torch.Tensor) else values)
    keys = [k.long() for k in keys]
    if x._split is not None:
        route = Route(comm, keys[x._split], x._counts)
        got = route.ask(torch.stack(keys, 1))
        keys = [got[:, k] - (route.offset if k == x._split else 0) for k in range(len(keys))]
        if isinstance(vals, torch.Tensor):
            vals = route.ask(vals)
    target = x if x.is_contiguous() else d.run_local(torch.Tensor.contiguous, (x,), {})
    index = sum((k * st for k, st in zip(keys, target.stride())), torch.zeros((), dtype=torch.int64))
    index = index.expand(keys[0].shape) if keys else index
    if not isinstance(vals, torch.Tensor):
        vals = torch.full(index.shape, vals, dtype=x.dtype, device=x.device)
    vals = vals.to(x.dtype)
    with torch._C.DisableTorchFunctionSubclass():
        view = target.view(-1)
        if reduce is None:
            view.index_put_((index,), vals)
        else:
            view.scatter_reduce_(0, index, vals, reduce, include_self=include_self)
        if target is not x:
            x.copy_(target)


def _arange_grid(shape, dim: int, index):
    """Coordinates of every element of a tensor of ``shape`` whose axis ``dim`` is mapped by
    ``index`` (aranges along the other axes, broadcastable)."""
    out = []
    for k, n in enumerate(shape):
        view = [1] * len(shape)
        view[k] = n
        out.append(index if k == dim else torch.arange(n).reshape(view))
    return out


def replicated_call(func, args, kwargs):
    """``func`` on a replicated input: the other operands replicated too, computed locally."""
    def one(a):
        return d.to_layout(a, None, None).local if isinstance(a, DistTensor) and a is not args[0] else a
    out = d.run_local(func, tuple(map(one, args)), {k: one(v) for k, v in kwargs.items()})
    return out if out is args[0] else d.wrap_replicated(out, _comm_of(*args, *kwargs.values()))


def _clone_unless_inplace(func, x):
    if func in d.INPLACE:
        return x
    return wrap(d.run_local(torch.clone, (x,), {}), x._split, x._comm, x._gshape, x._counts)


def scatter(func, args, kwargs):
    """``scatter, scatter_add, scatter_reduce`` and their in-place forms."""
    name = func.__name__.rstrip("_")
    if name == "scatter_reduce":
        x, dim, index, src, reduce, include_self = _bind(("input", "dim", "index", "src", "reduce", "include_self"), args, kwargs)
        include_self = True if include_self is None else include_self
    else:
        x, dim, index, src = _bind(("input", "dim", "index", "src"), args, kwargs)
        if src is None:
            src = kwargs.get("value")
        reduce, include_self = ("sum" if name == "scatter_add" else _REDUCE.get(kwargs.get("reduce"))), True
        if len(args) > 4:
            reduce = _REDUCE.get(args[4], reduce)
    if kwargs.get("out") is not None:
        return d.no_rule(func, args, kwargs)
    if not isinstance(x, DistTensor) or x._split is None:
        return replicated_call(func, args, kwargs)
    _check_on_meta(func, args, kwargs)
    comm = _comm_of(x, index, src)
    one = (1,) * len(x._gshape)  # torch reads a 0-d index or src as one element of x's rank
    index = index.reshape(one) if isinstance(index, torch.Tensor) and not len(d.shape_of(index)) else index
    src = src.reshape(one) if isinstance(src, torch.Tensor) and not len(d.shape_of(src)) else src
    ishape = d.shape_of(index)
    dim = layout.normalize_axis(dim, len(x._gshape))
    n = x._gshape[dim]
    agree_range(comm, index, n, lambda k: RuntimeError(f"index {k} is out of bounds for dimension {dim} with size {n}"), negative=False)
    out = _clone_unless_inplace(func, x)
    if isinstance(src, torch.Tensor) and tuple(d.shape_of(src)) != tuple(ishape):
        src = getitem(None, (_as_dist(src, comm), tuple(slice(0, m) for m in ishape)), {})
    put_elements(out, _arange_grid(ishape, dim, index), src, reduce, include_self)
    return out


def index_update(func, args, kwargs):
    """``index_add, index_copy, index_fill, index_reduce`` (and in-place forms) along ``dim``."""
    name = func.__name__.rstrip("_")
    names = {"index_add": ("input", "dim", "index", "source", "alpha"), "index_copy": ("input", "dim", "index", "source"),
             "index_fill": ("input", "dim", "index", "value"),
             "index_reduce": ("input", "dim", "index", "source", "reduce", "include_self")}[name]
    bound = _bind(names, args, kwargs)
    x, dim, index, source = bound[:4]
    if kwargs.get("out") is not None:
        return d.no_rule(func, args, kwargs)
    if name in ("index_add", "index_reduce") and isinstance(source, torch.Tensor) and isinstance(index, torch.Tensor) and \
            any(isinstance(t, DistTensor) and t._split is not None for t in (x, index, source)):
        _check_slices(getattr(torch.Tensor, name + "_"), bound[:4] + (["prod"] if name == "index_reduce" else []))
    if name == "index_add" and (not isinstance(x, DistTensor) or x._split is None) and x.dtype != torch.bool and \
            _along_split(index, source, dim, len(d.shape_of(x))):
        return _index_add_partial_sums(func, x, dim, index, source, 1 if bound[4] is None else bound[4])
    if not isinstance(x, DistTensor) or x._split is None:
        return replicated_call(func, args, kwargs)
    _check_on_meta(func, args, kwargs)
    comm = _comm_of(x, index, source)
    dim = layout.normalize_axis(dim, max(len(x._gshape), 1))
    n = x._gshape[dim] if len(x._gshape) else 1
    agree_range(comm, index, n, lambda k: torch_error(getattr(torch.Tensor, name + "_"), torch.zeros(n), 0, torch.tensor([k]),
                                                       *([torch.zeros(1)] if name != "index_fill" else [0.0]),
                                                       *(["prod"] if name == "index_reduce" else [])), negative=name == "index_fill")
    out = _clone_unless_inplace(func, x)
    index = index.reshape(-1) if not isinstance(index, DistTensor) else index
    if isinstance(index, torch.Tensor) and not isinstance(index, DistTensor):
        index = torch.where(index < 0, index + n, index)
    reduce, include_self = None, True
    if name == "index_add":
        reduce = "sum"
        alpha = bound[4] if bound[4] is not None else 1
        if alpha != 1:
            source = source * alpha if not isinstance(source, DistTensor) else \
                wrap(source.local * alpha, source._split, comm, source._gshape, source._counts)
    elif name == "index_reduce":
        reduce, include_self = bound[4], True if bound[5] is None else bound[5]
    region = list(x._gshape)
    region[dim] = d.shape_of(index)[0]
    grid_index = index
    if isinstance(index, DistTensor):
        view = [1] * len(region)
        view[dim] = region[dim]
        grid_index = wrap(index.local.reshape([index.lshape[0] if k == dim else 1 for k in range(len(region))]),
                          dim if index._split is not None else None, comm, torch.Size(view), index._counts)
    else:
        grid_index = index.reshape([region[dim] if k == dim else 1 for k in range(len(region))])
    coords = _arange_grid(region, dim, grid_index)
    if name == "index_fill":
        value = source.local if isinstance(source, DistTensor) else source
        coords = [_expand(c, region, comm) for c in coords]
        put_elements(out, coords, value)
    else:
        put_elements(out, coords, source, reduce, include_self)
    return out


def _along_split(index, source, dim, ndim: int) -> bool:
    """Whether the entries of an ``index_add`` are split: the index, or the source along ``dim``."""
    if isinstance(index, DistTensor) and index._split is not None:
        return True
    return isinstance(source, DistTensor) and source._split is not None and \
        source._split == layout.normalize_axis(dim, max(ndim, 1))


def _index_add_partial_sums(func, x, dim, index, source, alpha):
    """``index_add`` into a replicated ``x`` from split entries (a per-cluster sum of split
    samples): each rank adds its entries into zeros, one allreduce sums the parts, and ``x``
    gets the total. No entry moves; the index takes the split of whichever is split."""
    _check_on_meta(func, (x, dim, index, source), {})
    comm = _comm_of(x, index, source)
    ndim = max(len(d.shape_of(x)), 1)
    dim = layout.normalize_axis(dim, ndim)
    n = d.shape_of(x)[dim] if len(d.shape_of(x)) else 1
    error = lambda k: torch_error(torch.Tensor.index_add_, torch.zeros(n), 0, torch.tensor([k]), torch.zeros(1))  # noqa: E731
    split_keys = isinstance(index, DistTensor) and index._split is not None
    found = None
    if split_keys:  # checked within the sum's allreduce below
        bad = (index.local < 0) | (index.local >= n)
        found = error(int(index.local[bad][0])) if bool(bad.any()) else None
    else:
        agree_range(comm, index, n, error, negative=False)
    if split_keys:
        counts, keys = index._counts, index.local
    else:
        counts = source._counts
        keys = (index.local if isinstance(index, DistTensor) else index).reshape(-1)
        keys = keys.narrow(0, layout.offsets(counts)[comm.rank], counts[comm.rank])
    start, count = layout.offsets(counts)[comm.rank], counts[comm.rank]
    if isinstance(source, DistTensor) and source._split is not None:
        entries = d.to_layout(source, dim if len(source._gshape) else 0, counts).local
    else:
        entries = d.replicated_operand(source, comm, dim if len(d.shape_of(source)) else -1, start, count)
    target = x.local if isinstance(x, DistTensor) else x
    with torch._C.DisableTorchFunctionSubclass():
        if not target.dim() or not entries.dim():  # torch reads a 0-d x or source as one row: so must the chunks
            entries = entries.reshape(-1).narrow(0, start, count) if not entries.dim() else entries.reshape(-1)
        keys = torch.where((keys < 0) | (keys >= n), 0, keys)
        part = torch.zeros_like(target)
        try:  # (an error here is agreed on in the sum's allreduce, as a bad key)
            part.view(target.shape or (1,)).index_add_(dim, keys, entries, alpha=alpha)
        except Exception as error:
            found = found or error
        # one allreduce: the parts and a flag of bad keys (then every rank raises the same error)
        flag = torch.ones(1, dtype=part.dtype, device=part.device) * (found is not None)
        summed = cf.all_reduce(torch.cat([part.reshape(-1), flag]), comm)
        if bool(summed[-1] > 0):
            d.agree(comm, found)
        total = summed[:-1].view_as(part)
        if func in d.INPLACE:
            target.add_(total)
            return x
        out = target + total
    return wrap(out, None, comm, out.shape, None)


def put(func, args, kwargs):
    """``put(x, index, source, accumulate)``: flat global indices, as ``take``."""
    x, index, source, accumulate = _bind(("input", "index", "source", "accumulate"), args, kwargs)
    if not isinstance(x, DistTensor) or x._split is None:
        return replicated_call(func, args, kwargs)
    _check_on_meta(func, args, kwargs)
    comm = _comm_of(x, index, source)
    n = x._gshape.numel()
    agree_range(comm, index, n, lambda k: IndexError(f"out of range: tried to access index {k} on a tensor of {n} elements."))
    out = _clone_unless_inplace(func, x)
    t = _local(index)
    t = torch.where(t < 0, t + n, t)
    coords = []
    for size in reversed(x._gshape):
        coords.append(t % size)
        t = t // size
    coords = coords[::-1]
    if isinstance(index, DistTensor):
        coords = [wrap(c, index._split, comm, index._gshape, index._counts) for c in coords]
    src = source
    if tuple(d.shape_of(source)) != tuple(d.shape_of(index)):  # same number of elements: flat order
        src = _flatten(source, comm) if isinstance(source, DistTensor) else source.reshape(d.shape_of(index))
        coords = [_flatten(c, comm) if isinstance(c, DistTensor) else c.reshape(-1) for c in coords]
    put_elements(out, coords, src, "sum" if accumulate else None)
    return out


def index_put(func, args, kwargs):
    """``index_put(x, indices, values, accumulate)``: ``x[indices] = values``, or added."""
    x, indices, values, accumulate = _bind(("input", "indices", "values", "accumulate"), args, kwargs)
    if not isinstance(x, DistTensor):
        return d.no_rule(func, args, kwargs)
    if x._split is None and accumulate:
        return replicated_call(func, (x, [d.to_layout(i, None, None).local if isinstance(i, DistTensor) else i for i in indices])
                               + tuple(args[2:]), kwargs)
    out = _clone_unless_inplace(func, x)
    if not accumulate:
        setitem(None, (out, tuple(indices), values), {})
        return out
    items = _index_items(parse(tuple(indices), x._gshape))
    idx = [it for it in items if it.kind == "index"]
    bshape = _index_shape(idx)
    rest = list(x._gshape[len(idx):])
    region = list(bshape) + rest
    comm = x._comm
    for it in idx:
        agree_range(comm, it.value, x._gshape[it.dim], lambda k, it=it: IndexError(
            f"index {k} is out of bounds for dimension {ordinal(items, it)} with size {x._gshape[it.dim]}"))
    coords = []
    for it in idx:
        v = it.value
        tail = (1,) * len(rest)
        coords.append(wrap(v.local.reshape(tuple(v.lshape) + tail), v._split, comm, torch.Size(tuple(v._gshape) + tail), v._counts)
                      if isinstance(v, DistTensor) else v.reshape(tuple(v.shape) + tail))
    for k, m in enumerate(rest):
        view = [1] * len(region)
        view[len(bshape) + k] = m
        coords.append(torch.arange(m).reshape(view))
    coords = [c if isinstance(c, DistTensor) else torch.where(c < 0, c + n, c) for c, n in zip(coords, x._gshape)]
    v = values if isinstance(values, DistTensor) else values.expand(region)
    put_elements(out, coords, v, "sum")
    return out


def masked_scatter(func, args, kwargs):
    """``masked_scatter(x, mask, source)``: the masked elements, in row-major order, take
    source's first elements."""
    x, mask, source = _bind(("input", "mask", "source"), args, kwargs)
    if not isinstance(x, DistTensor) or x._split is None:
        return replicated_call(func, args, kwargs)
    _check_on_meta(func, args, kwargs)
    comm = x._comm
    if func not in d.INPLACE:  # the out-of-place form broadcasts the input with the mask
        x = _expand(x, layout.broadcast_shapes(tuple(x._gshape), tuple(d.shape_of(mask))), comm)
        if x._split is None:
            return replicated_call(func, (x, mask, source), {})
    mask = _expand(mask, x._gshape, comm)
    nz = nonzero_split(_as_dist(mask, comm) if isinstance(mask, DistTensor) else
                       wrap(mask.narrow(x._split, x.offset, x._counts[comm.rank]), x._split, comm, x._gshape, x._counts))
    n = nz._gshape[0]
    if d.shape_of(source).numel() < n:
        raise RuntimeError("masked_scatter: expected source to have at least as many elements as ones in mask")
    src = _flatten(source, comm) if isinstance(source, DistTensor) else source.reshape(-1)
    src = getitem(None, (_as_dist(src, comm), slice(0, n)), {})
    if src._split is not None:
        src = d.to_layout(src, 0, nz._counts)
    else:  # each rank writes its part of a replicated source: its gradient is summed over ranks
        src = d.replicated_operand(src, comm, 0, nz.offset, nz._counts[comm.rank])
    coords = [wrap(nz.local[:, k], 0, comm, torch.Size([n]), nz._counts) for k in range(len(x._gshape))]
    out = _clone_unless_inplace(func, x)
    put_elements(out, coords, src if isinstance(src, DistTensor) else wrap(src, 0, comm, torch.Size([n]), nz._counts))
    return out


def select_scatter(func, args, kwargs):
    """``select_scatter(x, src, dim, index)`` and ``slice_scatter(x, src, dim, start, end,
    step)``: a copy of x with ``src`` written into the selected part (as ``setitem``)."""
    if func is torch.select_scatter:
        x, src, dim, index = _bind(("input", "src", "dim", "index"), args, kwargs)
        sel = index
    else:
        x, src, dim, start, end, step = _bind(("input", "src", "dim", "start", "end", "step"), args, kwargs)
        sel = slice(start, end, step or 1)
    if not isinstance(x, DistTensor):
        return d.no_rule(func, args, kwargs)
    _check_on_meta(func, args, kwargs)
    dim = layout.normalize_axis(dim or 0, len(x._gshape))
    out = _clone_unless_inplace(func, x)
    setitem(None, (out, (slice(None),) * dim + (sel,), src), {})
    return out


d.register([torch.Tensor.__getitem__], getitem)
d.register(d.aliases("nonzero") + d.aliases("argwhere"), _nonzero)
d.register(d.aliases("nonzero_static"), _nonzero_static)
d.register(d.aliases("where"), _where)
d.register(d.aliases("index_select"), index_select)
d.register(d.aliases("gather"), gather)
d.register(d.aliases("take"), take)
d.register(d.aliases("take_along_dim"), take_along_dim)
d.register(d.aliases("masked_select"), masked_select)
d.register(d.aliases("equal"), equal)
d.register(d.aliases("scatter") + d.aliases("scatter_add") + d.aliases("scatter_reduce"), scatter)
d.register(d.aliases("index_add") + d.aliases("index_copy") + d.aliases("index_fill") + d.aliases("index_reduce"), index_update)
d.register(d.aliases("put"), put)
d.register(d.aliases("index_put"), index_put)
d.register(d.aliases("masked_scatter"), masked_scatter)
d.register(d.aliases("select_scatter") + d.aliases("slice_scatter"), select_scatter)
