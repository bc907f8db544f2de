"""Shape ops that only change metadata while the split axis survives intact.

So far: ``expand``, ``expand_as``, ``broadcast_to``, and the splitting views (``split``,
``chunk``, ``tensor_split``, ``unbind``, ...), whose pieces along the split axis are views of
each rank's rows with their own counts. The split axis keeps its rows, so each
rank expands its own chunk; a split axis of size 1 that gets broadcast is replicated first
(it is one row).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(4.).reshape(4, 1), split=0)
>>> y = x.expand(4, 3)
>>> y.shape, y.split_dim
(torch.Size([4, 3]), 0)
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
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


def expand(func, args, kwargs):
    """``expand`` / ``expand_as`` / ``broadcast_to`` of a DistTensor."""
    x = args[0]
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


def pieces(func, args, kwargs):
    """``split, chunk, tensor_split, split_with_sizes, unbind, hsplit, vsplit, dsplit``.

    Along an axis that is not split each rank splits its own chunk. Along the split axis a
    piece holds, on each rank, the part of the rank's rows that falls into it: views of the
    chunk, with the piece's (possibly empty, unbalanced) counts. ``unbind`` along the split
    axis would give tensors that live on one rank each and raises NotDistributedError.
    """
    x = args[0]
    if not isinstance(x, DistTensor) or x._split is None:
        return d.wrap_replicated(d.run_local(func, args, kwargs), x._comm)
    split, comm = x._split, x._comm
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
    stride = x._gshape[split + 1:].numel()
    mine0, mine1 = x.offset, x.offset + x._counts[comm.rank]
    out = []
    for m in meta:
        lo = m.storage_offset() // stride if stride else 0  # the piece's first global row
        hi = lo + m.shape[split]
        counts = tuple(max(0, min(hi, o + c) - max(lo, o)) for o, c in zip(layout.offsets(x._counts), x._counts))
        begin = min(max(lo, mine0), mine1) - mine0
        out.append(wrap(x.local.narrow(split, begin, counts[comm.rank]), split, comm, m.shape, counts))
    return tuple(out)


d.register([f for name in ("split", "chunk", "tensor_split", "split_with_sizes", "unbind", "hsplit", "vsplit", "dsplit")
            for f in d.aliases(name)], pieces)
