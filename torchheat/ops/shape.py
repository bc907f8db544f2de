"""Shape ops that only change metadata while the split axis survives intact.

So far: ``expand``, ``expand_as``, ``broadcast_to``. The split axis keeps its rows, so each
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

from .. import dispatch as d
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
