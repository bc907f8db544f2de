"""trapezoid and cumulative_trapezoid: torch's formulas written with distributed ops.

Along an axis that is not split every rank integrates its own chunk. Along the split axis
the formulas need neighbouring rows: ``y[1:] + y[:-1]`` aligns two shifted views of the
chunk (one small exchange of the rows at the chunk boundaries), a global ``sum`` or
``cumsum`` finishes, and the end rows of the scalar-``dx`` formula come from their owners.
No rank ever holds the whole tensor; gradients follow from the pieces.

Examples
--------
>>> import torch, torchheat as th
>>> t = torch.arange(10.) ** 2
>>> y = th.distribute(t, split=0)
>>> bool(torch.allclose(torch.trapezoid(y).full(), torch.trapezoid(t)))
True
>>> bool(torch.allclose(torch.cumulative_trapezoid(y, dx=0.5).full(), torch.cumulative_trapezoid(t, dx=0.5)))
True
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from .shape import call, global_meta, split_rule


def _parts(args, kwargs):
    """``(y, x, dx, dim)`` of a call ``(y, x=None, *, dx=None, dim=-1)`` (torch's overloads)."""
    y = args[0]
    x = args[1] if len(args) > 1 else kwargs.get("x")
    dx = kwargs.get("dx")
    if x is not None and not isinstance(x, torch.Tensor):  # trapezoid(y, 0.5): a spacing
        x, dx = None, x
    dim = kwargs.get("dim", args[2] if len(args) > 2 else -1)
    return y, x, 1 if dx is None else dx, layout.normalize_axis(dim, len(d.shape_of(y)))


def _pairs(y, dim):
    """``y[1:] + y[:-1]`` along ``dim`` (the rows at chunk boundaries move once)."""
    n = d.shape_of(y)[dim]
    return call(torch.add, call(torch.narrow, y, dim, 1, n - 1), call(torch.narrow, y, dim, 0, n - 1))


def _spacing(x, y, dim):
    """The differences of the sample points, broadcast against ``y`` along ``dim``."""
    if x.dim() == 1:
        shape = [1] * len(d.shape_of(y))
        shape[dim] = d.shape_of(x)[0]
        x = call(torch.reshape, x, shape)
    return call(torch.diff, x, dim=dim)


@split_rule("trapezoid", "trapz")
def trapezoid(func, args, kwargs):
    """``trapezoid``/``trapz``: the trapezoidal rule, along the split axis with halo rows."""
    meta = global_meta(func, args, kwargs)
    y, x, dx, dim = _parts(args, kwargs)
    if d.shape_of(y)[dim] == 0:  # torch: zeros of the reduced shape
        return call(torch.Tensor.to, call(torch.sum, y, dim), meta.dtype)
    if x is None:
        ends = call(torch.add, call(torch.select, y, dim, 0), call(torch.select, y, dim, -1))
        return call(torch.mul, call(torch.sub, call(torch.sum, y, dim), call(torch.mul, ends, 0.5)), dx)
    return call(torch.sum, call(torch.div, call(torch.mul, _spacing(x, y, dim), _pairs(y, dim)), 2.0), dim)


@split_rule("cumulative_trapezoid")
def cumulative_trapezoid(func, args, kwargs):
    """``cumulative_trapezoid``: the running trapezoidal rule (a distributed cumsum)."""
    global_meta(func, args, kwargs)
    y, x, dx, dim = _parts(args, kwargs)
    if x is None:
        return call(torch.cumsum, call(torch.mul, _pairs(y, dim), dx / 2.0), dim)
    return call(torch.cumsum, call(torch.div, call(torch.mul, _spacing(x, y, dim), _pairs(y, dim)), 2.0), dim)
