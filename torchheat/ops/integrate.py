"""trapezoid, cumulative_trapezoid and gradient on split tensors.

trapezoid and cumulative_trapezoid are torch's formulas written with distributed ops.

Along an axis that is not split every rank integrates its own chunk. Along the split axis
the formulas need neighbouring rows: ``y[1:] + y[:-1]`` aligns two shifted views of the
chunk (one small exchange of the rows at the chunk boundaries), a global ``sum`` or
``cumsum`` finishes, and the end rows of the scalar-``dx`` formula come from their owners.
No rank ever holds the whole tensor; gradients follow from the pieces.

``gradient`` along the split axis: each rank receives ``edge_order`` rows on either side of
its chunk (one exchange, from as many ranks as those rows span), runs torch's stencil on
the window and keeps its own rows; along other axes it is local.

Examples
--------
>>> import torch, torchheat as th
>>> t = torch.arange(10.) ** 2
>>> y = th.distribute(t, split=0)
>>> bool(torch.allclose(torch.trapezoid(y).full(), torch.trapezoid(t)))
True
>>> bool(torch.allclose(torch.cumulative_trapezoid(y, dx=0.5).full(), torch.cumulative_trapezoid(t, dx=0.5)))
True
>>> bool(torch.allclose(torch.gradient(y, edge_order=2)[0].full(), torch.gradient(t, edge_order=2)[0]))
True
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..tensor import DistTensor, wrap
from .halo import rows
from .shape import call, global_meta, is_split, split_rule


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


@split_rule("gradient")
def gradient(func, args, kwargs):
    """``gradient(input, *, spacing, dim, edge_order)``: the rows ``edge_order`` either side
    of each chunk come in one exchange; torch's stencil on that window, the own rows kept."""
    metas = global_meta(func, args, kwargs)
    x = args[0]
    if not is_split(x):  # only coordinates are split: each rank needs them whole (1-D)
        spacing = [t.full() if isinstance(t, DistTensor) else t for t in kwargs["spacing"]]
        return tuple(d.wrap_replicated(t, d.common_comm([c for c in kwargs["spacing"] if isinstance(c, DistTensor)])) for t in
                     torch.gradient(x.local if isinstance(x, DistTensor) else x, **{**kwargs, "spacing": spacing}))
    axis, comm, counts, ndim = x._split, x._comm, x._counts, len(x._gshape)
    spacing, dim = kwargs.get("spacing"), kwargs.get("dim")
    order = kwargs.get("edge_order", 1)
    dims = list(range(ndim)) if dim is None else [dim] if isinstance(dim, int) else list(dim)
    dims = [layout.normalize_axis(k, ndim) for k in dims]
    n, o, c = x._gshape[axis], layout.offsets(counts)[comm.rank], counts[comm.rank]
    want = [(max(0, s - order), min(n, s + k + order)) if k else (s, s) for s, k in zip(layout.offsets(counts), counts)]
    a, b = want[comm.rank]
    window = rows(x, want) if axis in dims else x.local  # (an empty chunk still joins the exchange)
    if isinstance(spacing, (list, tuple)) and spacing and isinstance(spacing[0], torch.Tensor):
        spacing = [_coordinates(t, want[comm.rank], want) if k == axis else
                   t.full() if is_split(t) else t.local if isinstance(t, DistTensor) else t for t, k in zip(spacing, dims)]
    if not c:  # no rows: empty results of the local shape, still on the graph of the exchanges
        tie = sum(t.sum() * 0 for t in spacing if isinstance(t, torch.Tensor)) if isinstance(spacing, list) else 0
        outs = [window.to(m.dtype) * 1 + tie for m in metas]
    else:
        given = {} if spacing is None else {"spacing": spacing}  # (None is not one of torch's overloads)
        local = torch.gradient(window, dim=dims, edge_order=order, **given)
        outs = [t.narrow(axis, o - a, c) if axis in dims else t for t in local]
    return tuple(wrap(t, axis, comm, m.shape, counts) for t, m in zip(outs, metas))


def _coordinates(t, mine, want):
    """This rank's window ``mine`` (``want`` of every rank) of the coordinates along the split axis."""
    if is_split(t):
        return rows(t, want)
    return (t.local if isinstance(t, DistTensor) else t)[mine[0]:mine[1]]
