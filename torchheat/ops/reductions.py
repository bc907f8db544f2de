"""Reductions: reduce the local chunk, then combine over ranks if the split axis was reduced.

The result is split along the surviving split axis, or replicated when the split axis was
reduced. 16-bit floats are accumulated and combined in float32.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(12.).reshape(4, 3), split=0)
>>> x.sum().item(), x.sum(1).split, x.mean(0).split
(66.0, 0, None)
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def reduce_args(args, kwargs):
    """``(x, dims, keepdim)`` of a reduction call ``f(x, dim=None, keepdim=False, ...)``."""
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    return x, layout.reduced_dims(dim, len(x._gshape)), bool(keepdim)


def wrap_reduced(local, x: DistTensor, dims, keepdim):
    """Wrap a reduction's local result with the layout that survives the reduction."""
    split = layout.reduced_split(x._split, dims, keepdim)
    return d.wrap_result(local, split, x._comm, layout.reduced_shape(x._gshape, dims, keepdim),
                         None if split is None else x._counts)


def _sum_over(x: DistTensor, dims, keepdim, dtype):
    """Global sum over ``dims`` (which include the split axis), accumulated in ``dtype``."""
    acc = torch.float32 if dtype in _LOW_PRECISION else dtype
    with torch._C.DisableTorchFunctionSubclass():
        part = torch.sum(x, dim=dims, keepdim=keepdim, dtype=acc)
    return cf.all_reduce(part, x._comm, "sum")


def _out_dtype(x, kwargs, integral_to_long: bool):
    dtype = kwargs.get("dtype")
    if dtype is not None:
        return dtype
    if integral_to_long and (x.dtype == torch.bool or not (x.dtype.is_floating_point or x.dtype.is_complex)):
        return torch.int64
    return x.dtype


def sum_(func, args, kwargs):
    """``sum`` / ``nansum``-style: partial sums per rank, then an allreduce."""
    x, dims, keepdim = reduce_args(args, kwargs)
    if x._split not in dims:
        return wrap_reduced(d.run_local(func, args, kwargs), x, dims, keepdim)
    if "out" in kwargs:
        raise TypeError(f"{d.func_name(func)}: out= is not supported when reducing the split axis")
    dtype = _out_dtype(x, kwargs, integral_to_long=True)
    total = _sum_over(x, dims, keepdim, dtype)
    return wrap_reduced(total if total.dtype == dtype else total.to(dtype), x, dims, keepdim)


def mean(func, args, kwargs):
    """``mean``: the global sum divided by the global number of reduced elements."""
    x, dims, keepdim = reduce_args(args, kwargs)
    if x._split not in dims:
        return wrap_reduced(d.run_local(func, args, kwargs), x, dims, keepdim)
    dtype = _out_dtype(x, kwargs, integral_to_long=False)
    if not (dtype.is_floating_point or dtype.is_complex):
        d.raise_global_error(func, args, kwargs)
    if "out" in kwargs:
        raise TypeError(f"{d.func_name(func)}: out= is not supported when reducing the split axis")
    n = 1
    for i in dims:
        n *= x._gshape[i]
    total = _sum_over(x, dims, keepdim, dtype)
    return wrap_reduced((total / n).to(dtype), x, dims, keepdim)


d.register(d.aliases("sum"), sum_)
d.register(d.aliases("mean"), mean)
