"""Scans: ``cumsum, cumprod, logcumsumexp, cummax, cummin`` along any axis.

Along an axis that is not split, a scan is local. Along the split axis every rank scans its
chunk, the chunks' carries (one slice per rank: the last row of the local scan, i.e. the
chunk's sum, product or logsumexp, or its last running extreme with that element's global
index) are gathered in one collective, and every rank folds in the carries of the ranks
before it. The gathered carries feed split results, so they enter through
``enter_replicated``: in backward a carry's gradient is summed over the ranks that used it
(for cumsum: the reverse cumsum across ranks), and gradients of any order are exact.
Results keep the input's layout; cummax/cummin indices are global; NaN propagates as in
torch. Every rank raises torch's errors before the collective, a rank with an empty chunk
included.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([1., 3., 2., 5., 4.]), split=0)
>>> x.cumsum(0).tolist()
[1.0, 4.0, 6.0, 11.0, 15.0]
>>> torch.cummax(x, 0).indices.tolist()
[0, 1, 1, 3, 3]
"""
from __future__ import annotations

import math

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from .pointwise import write_out
from .reductions import acc_dtype, bind, extreme_identity, gather_parts, needs_grad, real_or_complex, sum_dtype, torch_error


def _scan_sig(input, dim, *, dtype=None, out=None):
    return input, dim, dtype


def _plain_sig(input, dim, *, out=None):
    return input, dim, None


def scan(func, args, kwargs):
    """``cumsum``, ``cumprod``, ``logcumsumexp`` and the in-place ``cumsum_``, ``cumprod_``
    (on a tensor that requires grad, the scan reads a copy: torch's gradient, as for its own
    in-place scans)."""
    name = _NAMES[func]
    x, dim, dtype = bind(_plain_sig if name == "logcumsumexp" else _scan_sig, func, args, kwargs)
    dim = axis_of(dim, x, func, args, kwargs)
    if name == "logcumsumexp" and not real_or_complex(x.dtype):
        torch_error(func, x, args, kwargs)
    if is_local(x, dim):
        return local_scan(func, args, kwargs, x)
    inplace = func in d.INPLACE
    dtype = dtype or (x.dtype if inplace or name == "logcumsumexp" else sum_dtype(x.dtype))
    source = wrap(x.clone(), x._split, x._comm, x._gshape, x._counts) if inplace and needs_grad(x) else x
    result = _SCANS[name](source, dim, dtype)
    if inplace:
        return torch.Tensor.copy_(x, result)
    return keep_layout(result, x, func, args, kwargs)


def cumulative_extreme(func, args, kwargs):
    """``cummax``/``cummin``: running extremes and their global indices."""
    x, dim, _ = bind(_plain_sig, func, args, kwargs)
    dim = axis_of(dim, x, func, args, kwargs)
    if x.dtype.is_complex:
        torch_error(func, x, args, kwargs)
    if is_local(x, dim):
        return local_scan(func, args, kwargs, x)
    largest = func in _LARGEST
    kind = torch.return_types.cummax if largest else torch.return_types.cummin
    return keep_layout(kind(running_extreme(x, dim, largest)), x, func, args, kwargs)


# -- shared mechanics ----------------------------------------------------------------------
def is_local(x: DistTensor, dim: int) -> bool:
    """Whether a scan along ``dim`` needs no communication: the axis is not split, one rank
    holds it all, or the tensor is empty."""
    return x._split != dim or x._comm.size == 1 or not x._gshape.numel()


def axis_of(dim, x: DistTensor, func, args, kwargs) -> int:
    """The normalized scan axis; torch's error for a bad one."""
    try:
        return layout.normalize_axis(dim, len(x._gshape))
    except (IndexError, TypeError):
        d.raise_global_error(func, args, kwargs)


def local_scan(func, args, kwargs, x: DistTensor):
    """The scan of the local chunk by torch itself (the scan axis is not split)."""
    if func in d.INPLACE:
        return func(*args, **kwargs)  # (handlers run with torch-function dispatch off)
    out = kwargs.get("out")
    local = func(*args, **(kwargs if out is None else {k: v for k, v in kwargs.items() if k != "out"}))
    result = d.wrap_result(local, x._split, x._comm, x._gshape, x._counts)
    return result if out is None else write_out(out, result, func, (args, kwargs))


def keep_layout(result, x: DistTensor, func, args, kwargs):
    """Wrap a scan's local result in ``x``'s layout; write ``out=``."""
    result = d.wrap_result(result, x._split, x._comm, x._gshape, x._counts)
    out = kwargs.get("out")
    return result if out is None else write_out(out, result, func, (args, kwargs))


def carries(carry: torch.Tensor, x: DistTensor) -> torch.Tensor:
    """Every rank's ``carry`` stacked along a new leading axis (one allgather).

    They feed this rank's split result, so the gradient of each is summed over ranks.
    """
    return cf.enter_replicated(gather_parts([carry], x._comm)[0], x._comm)


def _last(t: torch.Tensor, dim: int, fill) -> torch.Tensor:
    """The last row of ``t`` along ``dim``; ``fill`` for an empty chunk (kept on the autograd
    graph, so that every rank runs the same backward collectives)."""
    if t.shape[dim] == 0:
        shape = list(t.shape)
        shape[dim] = 1
        t = torch.cat([t, torch.full(shape, fill, dtype=t.dtype, device=t.device)], dim)
    return t.narrow(dim, t.shape[dim] - 1, 1)


def _earlier(x: DistTensor) -> torch.Tensor:
    """The ranks before this one that hold rows of ``x``, as an index tensor."""
    ranks = [r for r in range(x._comm.rank) if x._counts[r]]
    return torch.tensor(ranks, dtype=torch.int64, device=x.device)


# -- the scans along the split axis: local scan, then fold in the carries of earlier ranks ----
def _cumsum(x: DistTensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    local = torch.cumsum(x, dim, dtype=acc_dtype(dtype))
    before = carries(_last(local, dim, 0), x)[:x._comm.rank].sum(0)
    return local.add_(before).to(dtype)  # in place: no second allocation (cumsum's backward keeps no output)


def _cumprod(x: DistTensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    local = torch.cumprod(x, dim, dtype=acc_dtype(dtype))
    before = carries(_last(local, dim, 1), x)[:x._comm.rank].prod(0)
    return (local * before).to(dtype)


def _logcumsumexp(x: DistTensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    local = torch.logcumsumexp(x.to(acc_dtype(dtype)), dim)
    last, earlier = carries(_last(local, dim, -math.inf), x), _earlier(x)
    if not len(earlier):  # nothing to fold in: logaddexp(local, -inf) has NaN second derivatives.
        # Zero, on the autograd graph as on the other ranks (non-linearly: also in gradients of gradients)
        return (local + last[:0].square().sum(0)).to(dtype)
    return torch.logaddexp(local, torch.logsumexp(last[earlier], 0)).to(dtype)


def running_extreme(x: DistTensor, dim: int, largest: bool):
    """``(values, global indices)`` of cummax (``largest``) or cummin along the split axis.

    Each rank's last running extreme and its global index are gathered; the running
    extreme over the earlier ranks that hold data is folded in where it wins. Ties go to
    the later element and NaN sticks, as in torch.
    """
    comm, kernel = x._comm, torch.cummax if largest else torch.cummin
    start = layout.offsets(x._counts)[comm.rank]
    if x.shape[dim]:
        values, indices = kernel(x, dim)
    else:  # (torch's cummax of no rows drops off the graph of gradients of gradients)
        values, indices = x.clone(), torch.empty_like(x, dtype=torch.int64)
    indices = indices + start
    identity = extreme_identity(x.dtype, largest)
    last_values, last_indices = gather_parts([_last(values, dim, identity), _last(indices, dim, -1)], comm)
    last_values = cf.enter_replicated(last_values, comm)
    earlier = _earlier(x)
    seed = torch.full_like(last_values[:1], identity)  # loses to every element, so rank 0 keeps its own
    run, which = kernel(torch.cat([seed, last_values[earlier]]), 0)
    prev_value = run[-1]
    prev_index = torch.cat([torch.full_like(last_indices[:1], -1), last_indices[earlier]]).gather(0, which[-1:])[0]
    mine = (values >= prev_value if largest else values <= prev_value) | values.isnan()
    return torch.where(mine, values, prev_value), torch.where(mine, indices, prev_index)


_SCANS = {"cumsum": _cumsum, "cumprod": _cumprod, "logcumsumexp": _logcumsumexp}
_NAMES = {f: name for name in _SCANS for f in d.aliases(name)}
_LARGEST = set(d.aliases("cummax"))

d.register(list(_NAMES), scan)
d.register(d.aliases("cummax") + d.aliases("cummin"), cumulative_extreme)
