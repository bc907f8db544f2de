"""Creating DistTensors: from global data, from local chunks, and factories.

Factories build only this rank's chunk (balanced layout) and return leaves.

Examples
--------
>>> import torch, torchheat as th
>>> th.arange(10, split=0).full().tolist() == list(range(10))
True
>>> th.zeros(4, 3, split=1).shape
torch.Size([4, 3])
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import layout
from ..comm import Communicator, functional as cf, get_comm
from ..tensor import DistTensor, make_leaf, relayout, wrap

__all__ = [
    "distribute", "from_local", "zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye",
    "zeros_like", "ones_like", "empty_like", "full_like",
]


def _comm(comm: Optional[Communicator]) -> Communicator:
    if comm is None:
        return get_comm()
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a torchheat Communicator or None, got {type(comm).__name__}")
    return comm


def distribute(t, split: Optional[int] = None, comm: Optional[Communicator] = None, counts: Optional[Sequence[int]] = None) -> DistTensor:
    """Distribute a global tensor that every rank holds: each rank keeps its chunk.

    Parameters
    ----------
    t : torch.Tensor or array-like
        The full tensor, the same on every rank (a DistTensor is resplit instead).
    split : int or None
        Axis to split along; None keeps a replicated tensor (sharing ``t``'s memory).
    comm : Communicator, optional
        Defaults to :func:`torchheat.get_comm`.
    counts : sequence of int, optional
        Rows per rank along ``split`` (default: the balanced layout).

    Returns
    -------
    DistTensor
        Differentiable with respect to ``t``; a leaf when ``t`` does not require grad.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> x = th.distribute(torch.ones(50, 3), split=0)
    >>> x.shape
    torch.Size([50, 3])
    """
    comm = _comm(comm)
    if isinstance(t, DistTensor):
        split = layout.normalize_split(split, len(t._gshape))
        if counts is None:
            return t.resplit(split)
        return relayout(t, split, layout.check_counts(counts, t._gshape[split], comm.size))
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    split = layout.normalize_split(split, t.dim())
    if split is None:
        if counts is not None:
            raise ValueError("counts= needs a split axis (got split=None)")
        local, counts = t, None
    else:
        n = t.shape[split]
        counts = layout.balanced_counts(n, comm.size) if counts is None else layout.check_counts(counts, n, comm.size)
        local = cf.scatter(t, comm, counts, split)
    if t.requires_grad:
        return wrap(local, split, comm, t.shape, counts)
    return make_leaf(local, split, comm, t.shape, counts)


def from_local(t: torch.Tensor, split: Optional[int], comm: Optional[Communicator] = None) -> DistTensor:
    """Make a DistTensor from the chunk each rank holds (any counts: the layout may be unbalanced).

    The chunks' number of dimensions, sizes outside ``split``, dtype, device type and
    ``requires_grad``, and the ``split`` argument, must agree on all ranks; otherwise every
    rank raises ValueError. With ``split=None`` all chunks must have the same shape.
    Differentiable with respect to ``t``.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> z = th.from_local(torch.ones(comm.rank + 1, 3), split=0)
    >>> z.counts == tuple(range(1, comm.size + 1))
    True
    """
    comm = _comm(comm)
    if not isinstance(t, torch.Tensor) or isinstance(t, DistTensor):
        raise TypeError(f"from_local expects this rank's chunk as a plain torch.Tensor, got {type(t).__name__}")
    # Everything is compared before anything is checked: a check that only some ranks fail
    # (a split axis valid for one rank's ndim only) would otherwise leave the others waiting.
    mine = (tuple(t.shape), str(t.dtype), t.device.type, t.requires_grad, split)
    metas = comm.allgather_obj(mine)
    problems = [f"{what} differ: {[m[i] for m in metas]}" for i, what in
                ((4, "split axes"), (1, "dtypes"), (2, "devices"), (3, "requires_grad flags")) if len({m[i] for m in metas}) > 1]
    shapes = [m[0] for m in metas]
    if len({len(s) for s in shapes}) > 1:
        problems.insert(0, f"number of dimensions differs: {shapes}")
    if problems:
        raise ValueError("from_local: the chunks of the ranks do not fit together (" + "; ".join(problems) + ")")
    split = layout.normalize_split(split, t.dim())
    if any(tuple(n for i, n in enumerate(s) if i != split) != tuple(n for i, n in enumerate(shapes[0]) if i != split) for s in shapes):
        what = "shapes" if split is None else f"sizes outside split axis {split}"
        raise ValueError(f"from_local: the chunks of the ranks do not fit together ({what} differ: {shapes})")
    if split is None:
        return wrap(t, None, comm, t.shape, None) if t.requires_grad else make_leaf(t, None, comm, t.shape)
    counts = tuple(s[split] for s in shapes)
    gshape = layout.local_shape(t.shape, split, sum(counts))
    return wrap(t, split, comm, gshape, counts) if t.requires_grad else make_leaf(t, split, comm, gshape, counts)


def _probe(torch_fn, *args, **kwargs) -> torch.Tensor:
    """``torch_fn`` called on the meta device: torch's shape, dtype and argument checks, no data.

    Bad input is replayed on the CPU for the exception CPU users know (torch rejects
    it before allocating anything).
    """
    try:
        return torch_fn(*args, device="meta", **kwargs)
    except Exception:
        torch_fn(*args, **kwargs)
        raise


def _factory(torch_fn, size, split, comm, requires_grad, **kw) -> DistTensor:
    """Build this rank's chunk with ``torch_fn(local_shape, **kw)`` and wrap it as a leaf.

    The call is first checked by torch on the meta device, so bad sizes and dtypes get
    torch's own exceptions, on every rank alike.
    """
    device = kw.pop("device", None)
    probe = _probe(torch_fn, *size, requires_grad=requires_grad, **kw)
    comm = _comm(comm)
    split = layout.normalize_split(split, probe.dim())
    counts = None if split is None else layout.balanced_counts(probe.shape[split], comm.size)
    lshape = layout.local_shape(probe.shape, split, None if split is None else counts[comm.rank])
    kw["dtype"] = probe.dtype
    return make_leaf(torch_fn(lshape, device=device, **kw), split, comm, probe.shape, counts, requires_grad)


def zeros(*size, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Global tensor of zeros; see :func:`torch.zeros`.

    >>> zeros(3, 2, split=0).shape
    torch.Size([3, 2])
    """
    return _factory(torch.zeros, size, split, comm, requires_grad, dtype=dtype, device=device)


def ones(*size, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Global tensor of ones; see :func:`torch.ones`.

    >>> ones(3, split=0).sum().item()
    3.0
    """
    return _factory(torch.ones, size, split, comm, requires_grad, dtype=dtype, device=device)


def empty(*size, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Uninitialised global tensor; see :func:`torch.empty`.

    >>> empty(2, 5, split=1).shape
    torch.Size([2, 5])
    """
    return _factory(torch.empty, size, split, comm, requires_grad, dtype=dtype, device=device)


def full(size, fill_value, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Global tensor filled with ``fill_value`` (dtype inferred as torch does); see :func:`torch.full`.

    >>> full((2, 2), 7, split=0).dtype
    torch.int64
    """
    return _factory(torch.full, (size,), split, comm, requires_grad, fill_value=fill_value, dtype=dtype, device=device)


def _like(x, split, dtype, device, comm):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(x).__name__}")
    shape = x._gshape if isinstance(x, DistTensor) else x.shape
    comm = comm if comm is not None else (x._comm if isinstance(x, DistTensor) else None)
    keep = isinstance(x, DistTensor) and split == "same"
    split = (x._split if isinstance(x, DistTensor) else None) if split == "same" else split
    return shape, split, dtype or x.dtype, device or x.device, comm, keep


def _like_factory(torch_like, x, split, dtype, device, comm, requires_grad, **kw):
    shape, split, dtype, device, comm, keep = _like(x, split, dtype, device, comm)
    if keep:  # same layout as x, even an unbalanced one
        with torch._C.DisableTorchFunctionSubclass():
            local = torch_like(x, dtype=dtype, device=device, **kw)
        return make_leaf(local, x._split, x._comm, x._gshape, x._counts, requires_grad)
    maker = {torch.zeros_like: zeros, torch.ones_like: ones, torch.empty_like: empty}.get(torch_like)
    if maker is None:
        return full(tuple(shape), kw["fill_value"], split=split, dtype=dtype, device=device, comm=comm, requires_grad=requires_grad)
    return maker(*shape, split=split, dtype=dtype, device=device, comm=comm, requires_grad=requires_grad)


def zeros_like(x, split="same", dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Zeros with ``x``'s global shape (and layout, unless ``split`` is given).

    >>> zeros_like(ones(4, split=0)).split_dim
    0
    """
    return _like_factory(torch.zeros_like, x, split, dtype, device, comm, requires_grad)


def ones_like(x, split="same", dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Ones with ``x``'s global shape (and layout, unless ``split`` is given)."""
    return _like_factory(torch.ones_like, x, split, dtype, device, comm, requires_grad)


def empty_like(x, split="same", dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Uninitialised tensor with ``x``'s global shape (and layout, unless ``split`` is given)."""
    return _like_factory(torch.empty_like, x, split, dtype, device, comm, requires_grad)


def full_like(x, fill_value, split="same", dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """``fill_value`` with ``x``'s global shape (and layout, unless ``split`` is given)."""
    return _like_factory(torch.full_like, x, split, dtype, device, comm, requires_grad, fill_value=fill_value)


def _index_chunk(n: int, split, comm):
    """Global indices ``[start, stop)`` of this rank's part of a 1-D tensor of length n."""
    comm = _comm(comm)
    split = layout.normalize_split(split, 1)
    if split is None:
        return comm, None, None, 0, n
    counts = layout.balanced_counts(n, comm.size)
    start = layout.offsets(counts)[comm.rank]
    return comm, split, counts, start, start + counts[comm.rank]


def arange(start, end=None, step=1, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Values ``start, start+step, ...`` below ``end``; dtype and length as :func:`torch.arange`.

    >>> arange(1, 7, 2, split=0).full().tolist()
    [1, 3, 5]
    """
    if end is None:
        start, end = 0, start
    probe = _probe(torch.arange, start, end, step, dtype=dtype, requires_grad=requires_grad)  # torch's length, dtype, errors
    n, dtype = probe.numel(), probe.dtype
    comm, split, counts, lo, hi = _index_chunk(n, split, comm)
    if dtype.is_floating_point or dtype.is_complex:
        local = (torch.arange(lo, hi, dtype=torch.float64, device=device) * step + start).to(dtype)
    else:  # torch truncates start and step to the integer dtype (the length comes from the true values)
        local = (torch.arange(lo, hi, dtype=torch.int64, device=device) * int(step) + int(start)).to(dtype)
    return make_leaf(local, split, comm, torch.Size([n]), counts, requires_grad)


def _linspace_chunk(start, end, steps, lo, hi, device):
    # torch's formula: the first half counts up from start, the second half down from end.
    # In double precision (complex128 for complex bounds), cast by the caller.
    start, end = (complex(start), complex(end)) if isinstance(start, complex) or isinstance(end, complex) else (float(start), float(end))
    wide = torch.complex128 if isinstance(start, complex) else torch.float64
    idx = torch.arange(lo, hi, dtype=torch.float64, device=device)
    if steps == 1:
        return torch.full(idx.shape, start, dtype=wide, device=device)
    step = (end - start) / (steps - 1)
    return torch.where(idx < steps // 2, start + step * idx, end - step * (steps - 1 - idx)).to(wide)


def _number(value):
    """A Python number from a number or a 0-d tensor bound (complex stays complex)."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    return value if isinstance(value, complex) else float(value)


def linspace(start, end, steps, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """``steps`` evenly spaced values from ``start`` to ``end``; see :func:`torch.linspace`.

    >>> linspace(0, 1, 5, split=0).full().tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    dtype = _probe(torch.linspace, start, end, steps, dtype=dtype, requires_grad=requires_grad).dtype
    comm, split, counts, lo, hi = _index_chunk(steps, split, comm)
    local = _linspace_chunk(_number(start), _number(end), steps, lo, hi, device).to(dtype)
    return make_leaf(local, split, comm, torch.Size([steps]), counts, requires_grad)


def logspace(start, end, steps, base=10.0, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """``base ** linspace(start, end, steps)``; see :func:`torch.logspace`.

    >>> logspace(0, 2, 3, split=0).full().tolist()
    [1.0, 10.0, 100.0]
    """
    dtype = _probe(torch.logspace, start, end, steps, base, dtype=dtype, requires_grad=requires_grad).dtype
    comm, split, counts, lo, hi = _index_chunk(steps, split, comm)
    local = torch.pow(float(base), _linspace_chunk(_number(start), _number(end), steps, lo, hi, device)).to(dtype)
    return make_leaf(local, split, comm, torch.Size([steps]), counts, requires_grad)


def eye(n, m=None, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """The ``n x m`` identity matrix; see :func:`torch.eye`.

    >>> eye(3, split=1).full().diagonal().tolist()
    [1.0, 1.0, 1.0]
    """
    m = n if m is None else m
    probe = _probe(torch.eye, n, m, dtype=dtype, requires_grad=requires_grad)  # torch's checks and dtype
    comm = _comm(comm)
    split = layout.normalize_split(split, 2)
    counts = None if split is None else layout.balanced_counts(probe.shape[split], comm.size)
    # This rank's [begin, end) of rows and of columns; ones where the global indices agree.
    ranges = [[0, n], [0, m]]
    if split is not None:
        lo = layout.offsets(counts)[comm.rank]
        ranges[split] = [lo, lo + counts[comm.rank]]
    rows, cols = (torch.arange(a, b, device=device) for a, b in ranges)
    local = (rows[:, None] == cols[None, :]).to(probe.dtype)
    return make_leaf(local, split, comm, probe.shape, counts, requires_grad)
