"""reshape, view, flatten, unflatten, ravel, view_as, reshape_as: local where the rows survive.

Each rank's rows are a block of the global C-order index. When the split axis maps onto
one result axis whose rows are whole blocks of every chunk (``(n, a, b) -> (n, a*b)``, or
``(n*a, b) -> (n, a, b)`` with every chunk boundary a multiple of ``a``), every rank reshapes
its own chunk: no communication, and ``view`` returns a view. Otherwise ``reshape`` copies:
the result is balanced along its first axis of length > 1, moved there by one exchange of
flat ranges (an input split after a leading axis of length > 1 is first moved to that axis),
and ``view`` raises torch's error for a view that cannot be made. The input never changes.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(24.).reshape(4, 3, 2), split=0)
>>> x.reshape(4, 6).split_dim, x.view(4, 6).counts == x.counts
(0, True)
>>> bool((x.reshape(3, 8).full() == torch.arange(24.).reshape(3, 8)).all())
True
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..config import NotDistributedError
from ..tensor import DistTensor, relayout, wrap
from .shape import global_meta, shaped_as_other, split_rule, view_of

VIEW_ERROR = ("view size is not compatible with input tensor's size and stride (at least one dimension spans across "
              "two contiguous subspaces). Use .reshape(...) instead.")


@functools.lru_cache(maxsize=1024)
def local_reshape(gshape: Tuple[int, ...], split: int, counts: layout.Counts, shape: Tuple[int, ...]) -> Optional[tuple]:
    """``(split, counts)`` of ``shape`` if every chunk reshapes on its own, else None.

    The result axis t takes the split when the axes before it hold as many elements as the
    axes before the split, and every chunk is a whole number of its rows. A tensor held by
    one rank (always so on one process) reshapes there.

    >>> local_reshape((4, 3, 2), 0, (2, 2), (4, 6)), local_reshape((6, 2), 0, (4, 2), (3, 2, 2))
    ((0, (2, 2)), (0, (2, 1)))
    >>> local_reshape((6, 2), 0, (3, 3), (3, 4)) is None
    True
    """
    before, inner = torch.Size(gshape[:split]).numel(), torch.Size(gshape[split + 1:]).numel()
    found, prefix = None, 1
    for t, n in enumerate(shape):
        rest = torch.Size(shape[t + 1:]).numel()
        if prefix == before and n * rest == gshape[split] * inner and rest and all(c * inner % rest == 0 for c in counts):
            found = (t, tuple(c * inner // rest for c in counts))
            if n > 1 or gshape[split] <= 1:
                return found
        prefix *= n
    if found is None and max(counts) == gshape[split] and shape:
        t = first_long_axis(shape)
        found = (t, tuple(shape[t] if c else 0 for c in counts))
    return found


def first_long_axis(shape) -> Optional[int]:
    """The axis a copied result is balanced along: the first of length > 1 (0, or None for 0-d)."""
    return next((i for i, n in enumerate(shape) if n > 1), 0 if len(shape) else None)


def reshaped(x: DistTensor, shape: torch.Size, view: bool = False) -> DistTensor:
    """``x`` reshaped to the global ``shape`` (already checked by torch on the global shapes)."""
    comm = x._comm
    if shape.numel() == 0:  # nothing moves: every chunk is empty
        split = first_long_axis(shape)
        counts = layout.balanced_counts(shape[split], comm.size) if split is not None else None
        return view_of(x, x.local.reshape(layout.local_shape(shape, split, counts[comm.rank]) if counts else shape),
                       split, shape, counts)
    found = local_reshape(tuple(x._gshape), x._split, x._counts, tuple(shape))
    if found is not None:
        split, counts = found
        lshape = layout.local_shape(shape, split, counts[comm.rank])
        if not view:
            return view_of(x, x.local.reshape(lshape), split, shape, counts)
        error = None
        try:
            local = x.local.view(lshape)
        except RuntimeError as err:  # the chunk's strides; ranks with 0 or 1 rows may not see it
            error = err
        d.agree(comm, error)
        return view_of(x, local, split, shape, counts)
    if view:
        raise RuntimeError(VIEW_ERROR)
    return _flat_exchange(x, shape)


def _flat_exchange(x: DistTensor, shape: torch.Size) -> DistTensor:
    """Reshape by one exchange of flat index ranges into the balanced layout of ``shape``."""
    comm = x._comm
    lead = first_long_axis(x._gshape)
    if torch.Size(x._gshape[:x._split]).numel() != 1:  # rows are flat ranges only when nothing precedes them
        x = relayout(x, lead, layout.balanced_counts(x._gshape[lead], comm.size))
    split = first_long_axis(shape)
    if split is None:  # a 0-d result: its one element, replicated
        return wrap(relayout(x, None, None).local.reshape(shape), None, comm, shape, None)
    inner, out_inner = x._gshape[x._split + 1:].numel(), shape[split + 1:].numel()
    counts = layout.balanced_counts(shape[split], comm.size)
    n = shape.numel()
    send, recv, flat_shape = layout.exchange_plan((n,), 0, tuple(c * inner for c in x._counts), 0,
                                                  tuple(c * out_inner for c in counts), comm.rank)
    flat = cf.exchange(x.local.reshape(-1), comm, send, recv, flat_shape)
    return wrap(flat.reshape(layout.local_shape(shape, split, counts[comm.rank])), split, comm, shape, counts)


@split_rule("reshape", "flatten", "unflatten", "ravel", torch.Tensor.reshape_as)
def reshape(func, args, kwargs):
    """``reshape``, ``flatten``, ``unflatten``, ``ravel``, ``reshape_as``: a view of each chunk
    where the rows survive, otherwise one exchange into the balanced layout."""
    if not isinstance(args[0], DistTensor):
        return shaped_as_other(func, args, kwargs)
    return reshaped(args[0], global_meta(func, args, kwargs).shape)


@split_rule(torch.Tensor.view, torch.Tensor.view_as)
def view(func, args, kwargs):
    """``view`` and ``view_as``: a view of each chunk, or torch's error where the rows would
    span ranks. ``view(dtype)`` reinterprets each chunk (not along a split last axis when the
    element size changes)."""
    x = args[0]
    if not isinstance(x, DistTensor):
        return shaped_as_other(func, args, kwargs)
    meta = global_meta(func, args, kwargs)
    dtype = args[1] if len(args) > 1 and isinstance(args[1], torch.dtype) else kwargs.get("dtype")
    if dtype is None:
        return reshaped(x, meta.shape, view=True)
    if x._split == len(x._gshape) - 1 and meta.shape[-1] != x._gshape[-1]:
        raise NotDistributedError(f"view({dtype}) changes the length of the split axis {x._split}; resplit to another "
                                  "axis first")
    return view_of(x, x.local.view(dtype), x._split, meta.shape, x._counts)
