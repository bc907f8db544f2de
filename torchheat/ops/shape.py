"""Shape ops that are views: only metadata changes while the split axis survives intact.

``expand``/``broadcast_to``, the splitting views (``split``, ``chunk``, ``tensor_split``,
``unbind``, ...), transposes and permutations (the split moves with its axis),
``squeeze``/``unsqueeze`` (and their in-place forms), ``narrow`` and ``select``. Each rank
applies the op to its own chunk, so the result aliases the input. Along the split axis,
pieces and narrowed ranges keep each rank's part of its rows (unbalanced counts); a row that
the result holds without the axis (``select``, ``squeeze`` of a split axis of length 1) is
sent from its owner, a replicated copy that refuses in-place writes (``_copy_of``).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(4.).reshape(4, 1), split=0)
>>> y = x.expand(4, 3)
>>> y.shape, y.split_dim
(torch.Size([4, 3]), 0)
>>> x.t().split_dim, x.unsqueeze(0).split_dim
(1, 1)
"""
from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..config import NotDistributedError
from ..tensor import DistTensor, relayout, wrap


def _target_shape(func, args, kwargs):
    """The requested global shape, checked by torch on a meta stand-in of the global input."""
    x = args[0]
    if func in (torch.Tensor.expand_as,):
        sizes = tuple(d.shape_of(args[1] if len(args) > 1 else kwargs["other"]))
        func, args, kwargs = torch.Tensor.expand, (x, sizes), {}
    elif len(args) > 1:
        sizes = args[1] if len(args) == 2 and not isinstance(args[1], int) else args[1:]
    else:
        sizes = kwargs.get("size", kwargs.get("shape"))
    probe = torch.empty(x._gshape, dtype=x.dtype, device="meta")
    try:
        out = (torch.Tensor.expand(probe, tuple(sizes)) if func is not torch.broadcast_to else torch.broadcast_to(probe, tuple(sizes)))
    except Exception as err:
        raise err.with_traceback(None) from None
    return out.shape


def shaped_as_other(func, args, kwargs):
    """``expand_as``/``reshape_as``/``view_as`` of a plain tensor to a DistTensor's shape: the
    plain input is whole on every rank, so each rank keeps its part of the result in the
    other's layout (a view of the input where torch gives one)."""
    x, other = args[0], args[1] if len(args) > 1 else kwargs["other"]
    method = {torch.Tensor.expand_as: torch.Tensor.expand, torch.Tensor.reshape_as: torch.Tensor.reshape,
              torch.Tensor.view_as: torch.Tensor.view}[func]
    if other._split is not None:  # each rank's gradient is a part of the input's
        x = cf.enter_replicated(x, other._comm)
    try:
        whole = method(x, tuple(other._gshape))
    except Exception as err:
        raise err.with_traceback(None) from None
    if other._split is None:
        return wrap(whole, None, other._comm, whole.shape, None)
    start = layout.offsets(other._counts)[other._comm.rank]
    local = whole.narrow(other._split, start, other._counts[other._comm.rank])
    return wrap(local, other._split, other._comm, whole.shape, other._counts)


def expand(func, args, kwargs):
    """``expand`` / ``expand_as`` / ``broadcast_to`` of a DistTensor."""
    x = args[0]
    if func is torch.Tensor.expand_as and not isinstance(x, DistTensor):
        return shaped_as_other(func, args, kwargs)
    gshape = _target_shape(func, args, kwargs)
    if not isinstance(x, DistTensor) or x._split is None:
        local = x.local if isinstance(x, DistTensor) else x
        return wrap(local.expand(gshape), None, x._comm, gshape, None)
    split = x._split + len(gshape) - len(x._gshape)
    if gshape[split] != x._gshape[x._split]:  # the split axis is broadcast: replicate its one row
        return wrap(relayout(x, None, None).local.expand(gshape), None, x._comm, gshape, None)
    lshape = list(gshape)
    lshape[split] = x._counts[x._comm.rank]
    return wrap(x.local.expand(lshape), split, x._comm, gshape, x._counts)


d.register([torch.Tensor.expand, torch.Tensor.expand_as, torch.broadcast_to, torch.Tensor.broadcast_to], expand)


# -- split, chunk, tensor_split, unbind: views of pieces, no communication -------------------
def _global_pieces(func, x: DistTensor, args, kwargs):
    """The pieces torch makes of a tensor of x's global shape (meta: shapes, offsets, errors)."""
    probe = torch.empty(x._gshape, dtype=x.dtype, device="meta")
    try:
        return func(probe, *args[1:], **kwargs)
    except Exception as err:
        raise err.with_traceback(None) from None


def _whole(a):
    return a.full() if isinstance(a, DistTensor) else a


def pieces(func, args, kwargs):
    """``split, chunk, tensor_split, split_with_sizes, unbind, hsplit, vsplit, dsplit``.

    Along an axis that is not split each rank splits its own chunk. Along the split axis a
    piece holds, on each rank, the part of the rank's rows that falls into it: views of the
    chunk, with the piece's (possibly empty, unbalanced) counts. ``unbind`` along the split
    axis would give tensors that live on one rank each and raises NotDistributedError.
    """
    comm = d.common_comm([a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, DistTensor)])
    # tensor_split's indices (or sections) as a tensor: torch reads its values on the host too
    args, kwargs = args[:1] + pytree.tree_map(_whole, args[1:]), pytree.tree_map(_whole, kwargs)
    x = args[0]
    if not isinstance(x, DistTensor) or x._split is None:
        return d.wrap_replicated(d.run_local(func, args, kwargs), comm)
    split = x._split
    meta = _global_pieces(func, x, args, kwargs)
    if all(p.dim() == len(x._gshape) and p.shape[split] == x._gshape[split] for p in meta):
        local = d.run_local(func, args, kwargs)  # the split axis is not cut: every rank splits its chunk
        return tuple(wrap(p, split, comm, m.shape, x._counts) for p, m in zip(local, meta))
    if any(p.dim() != len(x._gshape) for p in meta):  # unbind: the pieces lose the axis
        dim = layout.normalize_axis(args[1] if len(args) > 1 else kwargs.get("dim", 0), len(x._gshape))
        if dim != split:
            local = d.run_local(func, args, kwargs)
            return tuple(wrap(p, split - (dim < split), comm, m.shape, x._counts) for p, m in zip(local, meta))
        raise NotDistributedError(
            f"{d.func_name(func)} along the split axis {split} gives tensors without that axis, each on one rank; "
            "index the rows you need (or resplit to another axis) instead")
    return tuple(rows(x, lo, lo + m.shape[split]) for lo, m in ((_start_row(m, x._gshape, split), m) for m in meta))


d.register([f for name in ("split", "chunk", "tensor_split", "split_with_sizes", "unbind", "hsplit", "vsplit", "dsplit")
            for f in d.aliases(name)], pieces)


# -- shared by the shape modules -------------------------------------------------------------
def _stand_in(t):
    if isinstance(t, torch.Tensor):
        return torch.empty(d.shape_of(t), dtype=t.dtype, device="meta")
    return t


def global_meta(func, args, kwargs):
    """torch's result of ``func`` on meta stand-ins of the global shapes (shapes, dtypes, and
    torch's own errors, with CPU messages; nothing computed, no communication)."""
    try:
        return func(*pytree.tree_map(_stand_in, args), **pytree.tree_map(_stand_in, kwargs))
    except Exception:
        d.raise_global_error(func, args, kwargs)


def is_split(t) -> bool:
    return isinstance(t, DistTensor) and t._split is not None


def split_rule(*funcs):
    """Register a handler for calls with a split operand; the others run locally (replicated)."""
    def deco(handler):
        def rule(func, args, kwargs):
            if any(is_split(a) for a in pytree.tree_leaves((args, kwargs))):
                return handler(func, args, kwargs)
            return d.no_rule(func, args, kwargs)

        d.register([f for group in funcs for f in (d.aliases(group) if isinstance(group, str) else [group])], rule)
        return handler

    return deco


def call(func, *args, **kwargs):
    """Call a torch function on DistTensors from inside a handler (dispatch as for the user;
    plain torch when no operand is a DistTensor)."""
    if not any(isinstance(a, DistTensor) for a in pytree.tree_leaves((args, kwargs))):
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)
    return DistTensor.__torch_function__(func, (DistTensor,), args, kwargs)


def view_of(x: DistTensor, local: torch.Tensor, split, gshape, counts) -> DistTensor:
    """Wrap a view of ``x``'s chunk (a view of a copy stays a copy: see ``_copy_of``)."""
    out = wrap(local, split, x._comm, gshape, counts)
    out._copy_of = x._copy_of
    return out


def become(x: DistTensor, local_inplace, split, gshape, counts) -> DistTensor:
    """An in-place shape change of ``x`` (``t_``, ``squeeze_``, ...): new metadata, same storage."""
    local_inplace()
    x._split, x._gshape, x._counts = split, torch.Size(gshape), counts
    return x


def rows(x: DistTensor, lo: int, hi: int) -> DistTensor:
    """Global rows ``[lo, hi)`` of ``x`` along its split axis: on each rank the part of its own
    rows that falls inside, a view of the chunk; the counts say who holds what (unbalanced)."""
    split, comm = x._split, x._comm
    counts = tuple(max(0, min(hi, o + c) - max(lo, o)) for o, c in zip(layout.offsets(x._counts), x._counts))
    mine0, mine1 = x.offset, x.offset + x._counts[comm.rank]
    begin = min(max(lo, mine0), mine1) - mine0
    gshape = list(x._gshape)
    gshape[split] = hi - lo
    return view_of(x, x.local.narrow(split, begin, counts[comm.rank]), split, torch.Size(gshape), counts)


def owner_copy(x: DistTensor, row: int) -> torch.Tensor:
    """Row ``row`` of the split axis (the axis kept, length 1) as a replicated plain tensor,
    sent from the rank that holds it (an allgather of that one row)."""
    return relayout(rows(x, row, row + 1), None, None).local


# -- the split axis moves with its axis: transposes and permutations ---------------------------
def _tagged(x: DistTensor) -> torch.Tensor:
    """A meta stand-in whose strides name the axes (distinct powers of two)."""
    n = len(x._gshape)
    return torch.empty_strided(x._gshape, tuple(2 ** i for i in range(n)), dtype=x.dtype, device="meta")


PERMUTING = ("transpose", "swapaxes", "swapdims", "permute", "movedim", "moveaxis", "t", "adjoint", "squeeze")


@split_rule(*PERMUTING, *(getattr(torch.Tensor, p).__get__ for p in ("T", "mT", "H", "mH")))
def permuted(func, args, kwargs):
    """Transposes, permutations and ``squeeze``: where the split axis goes is read from the
    strides of a tagged meta stand-in (one tag per axis). A squeezed split axis (of global
    length 1) is replicated from the rank that holds its row (a copy: writes into it raise)."""
    x = args[0]
    tagged = _tagged(x)
    try:
        out = func(tagged, *args[1:], **kwargs)
    except Exception:
        d.raise_global_error(func, args, kwargs)
    strides = out.stride()
    kept = [i for i in range(len(x._gshape)) if 2 ** i in strides]
    if func in (torch.squeeze, torch.Tensor.squeeze, torch.Tensor.squeeze_):
        # the chunk squeezes exactly the global tensor's axes (a local row count of 1 stays)
        gone = tuple(i for i in range(len(x._gshape)) if i not in kept)
        args, kwargs = (x, gone), {}
        if x._split in gone:
            if func in d.INPLACE:
                raise NotDistributedError(f"{d.func_name(func)} would remove the split axis {x._split} (its one row lives "
                                          "on one rank); use x = x.squeeze(...) instead")
            result = wrap(owner_copy(x, 0).squeeze(gone), None, x._comm, out.shape, None)
            result._copy_of = f"x.squeeze() of the split axis {x._split}"
            return result
    split = strides.index(2 ** x._split)
    if func in d.INPLACE:
        return become(x, lambda: d.run_local(func, args, kwargs), split, out.shape, x._counts)
    return view_of(x, d.run_local(func, (x.local,) + tuple(args[1:]), kwargs), split, out.shape, x._counts)


@split_rule("unsqueeze")
def unsqueeze(func, args, kwargs):
    """``unsqueeze`` (and ``unsqueeze_``): a new axis of length 1; the split axis shifts past it."""
    x = args[0]
    out = global_meta(func, args, kwargs)
    dim = layout.normalize_axis(args[1] if len(args) > 1 else kwargs["dim"], len(out.shape))
    split = x._split + (dim <= x._split)
    if func in d.INPLACE:
        return become(x, lambda: d.run_local(func, args, kwargs), split, out.shape, x._counts)
    return view_of(x, x.local.unsqueeze(dim), split, out.shape, x._counts)


# -- narrow and select: rows along the split axis are each rank's intersection -----------------
def _start_row(meta: torch.Tensor, gshape, axis: int) -> int:
    stride = torch.Size(gshape)[axis + 1:].numel()
    return meta.storage_offset() // stride if stride else 0


@split_rule("narrow", "narrow_copy")
def narrow(func, args, kwargs):
    """``narrow`` (a view) and ``narrow_copy``. Along the split axis each rank keeps the part of
    its rows inside the range: a view of the chunk with unbalanced counts, no communication."""
    x = args[0]
    if len(args) > 2 and isinstance(args[2], torch.Tensor):  # a 0-d start: the same on every rank
        args = args[:2] + (int(args[2]),) + args[3:]
    meta = global_meta(torch.Tensor.narrow, args, kwargs)
    dim = layout.normalize_axis(args[1] if len(args) > 1 else kwargs["dim"], len(x._gshape))
    copy = func in (torch.narrow_copy, torch.Tensor.narrow_copy)
    if dim != x._split:
        return view_of(x, d.run_local(func, (x.local,) + tuple(args[1:]), kwargs), x._split, meta.shape, x._counts)
    lo = _start_row(meta, x._gshape, dim)
    out = rows(x, lo, lo + meta.shape[dim])
    return wrap(out.local.clone(), out._split, out._comm, out._gshape, out._counts) if copy else out


@split_rule("select")
def select(func, args, kwargs):
    """``select(dim, index)``. Along another axis a view; along the split axis the row is
    broadcast from the rank that holds it: a replicated copy, which refuses in-place writes
    (write through ``x`` instead)."""
    x = args[0]
    meta = global_meta(func, args, kwargs)
    dim = layout.normalize_axis(args[1] if len(args) > 1 else kwargs["dim"], len(x._gshape))
    if dim != x._split:
        return view_of(x, d.run_local(func, (x.local,) + tuple(args[1:]), kwargs), x._split - (dim < x._split), meta.shape,
                       x._counts)
    row = _start_row(meta, x._gshape, dim)
    out = wrap(owner_copy(x, row).select(dim, 0), None, x._comm, meta.shape, None)
    out._copy_of = f"x.select({dim}, {row}) along the split axis"
    return out


# -- the ``*_copy`` variants: the view op, then a clone --------------------------------------------
def _slice(x, dim=0, start=None, end=None, step=1):
    key = (slice(None),) * layout.normalize_axis(dim, len(d.shape_of(x))) + (slice(start, end, step),)
    return call(torch.Tensor.__getitem__, x, key)


def _view(x, *shape, **kwargs):
    """``view`` (its copy never needs to alias: by shape it is ``reshape``)."""
    if shape and isinstance(shape[0], torch.dtype) or "dtype" in kwargs:
        return call(torch.Tensor.view, x, *shape, **kwargs)
    return call(torch.reshape, x, *shape, **kwargs)


COPIES = {
    torch.view_copy: _view, torch.transpose_copy: torch.transpose, torch.permute_copy: torch.permute,
    torch.select_copy: torch.select, torch.diagonal_copy: torch.diagonal, torch.unsqueeze_copy: torch.unsqueeze,
    torch.squeeze_copy: torch.squeeze, torch.expand_copy: torch.Tensor.expand, torch.t_copy: torch.t,
    torch.unfold_copy: torch.Tensor.unfold, torch.alias_copy: torch.Tensor.view_as, torch.detach_copy: torch.detach,
    torch.slice_copy: _slice, torch.split_copy: torch.split, torch.split_with_sizes_copy: torch.split_with_sizes,
    torch.unbind_copy: torch.unbind,
}


@split_rule(*COPIES)
def view_copy(func, args, kwargs):
    """``view_copy, transpose_copy, ..., unbind_copy``: the view op's result, cloned (a new
    DistTensor in the view's layout, sharing no storage with the input)."""
    kwargs = {k: v for k, v in kwargs.items() if k != "implicit"}  # (expand_copy's tracing flag)
    out = kwargs.pop("out", None)
    if func is torch.alias_copy:
        args = (args[0], args[0])
    view = COPIES[func](*args, **kwargs) if COPIES[func] in (_slice, _view) else call(COPIES[func], *args, **kwargs)
    result = type(view)(call(torch.clone, v) for v in view) if isinstance(view, (tuple, list)) else call(torch.clone, view)
    if out is None:
        return result
    from .pointwise import write_out

    return write_out(out, result, func, (args, kwargs))
