"""The rule every ``torch.linalg`` function shares: operands split along a batch axis
(an axis outside the matrices) are independent problems, so each rank solves its own
batches with plain torch and the result keeps the split.

Each function of :data:`CORE` is registered once here: batch-split calls run locally (other
operands aligned to the batch layout, replicated ones sliced), calls on a split matrix
axis go to the function's distributed algorithm (added with :func:`algorithm` by the
modules of this package), calls with no split operand run locally and are replicated.
Errors are agreed on every rank, with batch indices counted globally.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.eye(3).expand(4, 3, 3).clone(), split=0)
>>> d = torch.linalg.det(a)
>>> d.split_dim, d.full().tolist()
(0, [1.0, 1.0, 1.0, 1.0])
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Optional

import torch
from torch.utils import _pytree as pytree

from .. import dispatch as d, layout
from ..tensor import DistTensor, wrap

# Trailing core (non-batch) dims of each positional tensor operand; tensors passed by keyword
# take theirs from KEYWORD_CORE. The default is a matrix (2).
CORE = {
    "linalg.cholesky": (2,), "linalg.cholesky_ex": (2,), "linalg.cond": (2,), "linalg.det": (2,), "linalg.eig": (2,),
    "linalg.eigh": (2,), "linalg.eigvals": (2,), "linalg.eigvalsh": (2,), "linalg.householder_product": (2, 1),
    "linalg.inv": (2,), "linalg.inv_ex": (2,), "linalg.ldl_factor": (2,), "linalg.ldl_factor_ex": (2,),
    "linalg.ldl_solve": (2, 1, 2), "linalg.lstsq": (2, 2), "linalg.lu": (2,), "linalg.lu_factor": (2,),
    "linalg.lu_factor_ex": (2,), "linalg.lu_solve": (2, 1, 2), "linalg.matrix_exp": (2,), "linalg.matrix_power": (2,),
    "linalg.matrix_sqrth": (2,), "linalg.matrix_rank": (2, 0, 0), "linalg.pinv": (2, 0, 0), "linalg.polar": (2,),
    "linalg.qr": (2,), "linalg.slogdet": (2,),
    "linalg.solve": (2, 2), "linalg.solve_ex": (2, 2), "linalg.solve_triangular": (2, 2), "linalg.svd": (2,),
    "linalg.svdvals": (2,), "linalg.vander": (1,), "linalg.matrix_norm": (2,), "linalg.norm": (2,),
    "det": (2,), "logdet": (2,), "slogdet": (2,), "inverse": (2,), "cholesky_solve": (2, 2),
    "cholesky_inverse": (2,), "svd": (2,), "pinverse": (2,), "matrix_exp": (2,), "matrix_power": (2,),
    "triangular_solve": (2, 2), "lu_solve": (2, 2, 1), "lu_unpack": (2, 1), "geqrf": (2,), "ormqr": (2, 1, 2),
    "lu": (2,),
}
KEYWORD_CORE = {"pivots": 1, "LU_pivots": 1, "tau": 1, "atol": 0, "rtol": 0, "tol": 0}
# Distributed algorithms for a split matrix axis: name -> handler(func, args, kwargs).
ALGORITHMS: Dict[str, Callable] = {}


def algorithm(*names: str) -> Callable:
    """Decorator: the handler for calls of ``names`` with a matrix axis split."""
    def deco(fn):
        for name in names:
            ALGORITHMS[name] = fn
        return fn
    return deco


def _cores(name: str, args: tuple, kwargs: dict):
    """(tensor, core dims) for every tensor operand, in call order."""
    spec = CORE[name]
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            out.append((a, spec[i] if i < len(spec) else 2))
    for k, v in kwargs.items():
        if isinstance(v, torch.Tensor) and k != "out":
            out.append((v, KEYWORD_CORE.get(k, 2)))
    if name in ("linalg.solve", "linalg.solve_ex") and len(out) == 2:  # torch's rule for a vector B
        (a, _), (b, _) = out
        sa, sb = d.shape_of(a), d.shape_of(b)
        if len(sb) == 1 or (len(sb) == len(sa) - 1 and tuple(sb) == tuple(sa[:-1])):
            out[1] = (b, 1)
    return out


def batch_split(name: str, args: tuple, kwargs: dict):
    """The first operand split along a batch axis and its core dims, (None, 0) when no
    operand is split, or (False, 0) when one is split along a core axis."""
    ref = None
    for t, core in _cores(name, args, kwargs):
        if isinstance(t, DistTensor) and t._split is not None:
            if t._split >= len(t._gshape) - core:
                return False, 0
            ref = ref or (t, core)
    return ref if ref else (None, 0)


def run_batched(func, name: str, args: tuple, kwargs: dict, ref: DistTensor, ref_core: int):
    """Solve each rank's batches locally; the outputs keep the batch split."""
    comm = ref._comm
    k = len(ref._gshape) - ref_core - ref._split  # batch dims from the split axis to the core
    start, count = layout.offsets(ref._counts)[comm.rank], ref._counts[comm.rank]
    cores = {id(t): c for t, c in _cores(name, args, kwargs)}
    gbatch, lbatch, differentiable = [], [], []

    def local(t):
        if not isinstance(t, torch.Tensor) or id(t) not in cores:
            return t
        core, shape = cores[id(t)], d.shape_of(t)
        nb = len(shape) - core
        axis = nb - k
        gbatch.append(tuple(shape[:nb]))
        full_axis = axis >= 0 and shape[axis] == ref._gshape[ref._split]
        if isinstance(t, DistTensor) and t._split is not None and full_axis and t._split == axis:
            out = d.to_layout(t, axis, ref._counts).local
        else:
            if isinstance(t, DistTensor) and t._split is not None:
                t = d.to_layout(t, None, None)
            out = d.replicated_operand(t, comm, axis if full_axis else -1, start, count)
        lbatch.append(tuple(out.shape[:nb]))
        if out.requires_grad:
            differentiable.append(out)
        return out

    largs, lkwargs = pytree.tree_map(local, (args, kwargs))
    error = None
    try:
        out = d.run_local(func, largs, lkwargs)
    except Exception as e:  # a singular batch on one rank: every rank raises it
        error = _global_batch_index(e, start) if ref._split == 0 and k == 1 else e
    d.agree(comm, error)
    B, Bl = layout.broadcast_shapes(*gbatch), layout.broadcast_shapes(*lbatch)
    nb = len(B)

    def wrap_one(o):
        if not isinstance(o, torch.Tensor):
            return o
        if not o.numel() and differentiable and (o.is_floating_point() or o.is_complex()) and torch.is_grad_enabled():
            # torch's result for an empty batch has no graph (or one that gives no gradient); the
            # operands' exchanges must still be in this rank's backward (the other ranks wait there)
            o = o + sum(t.sum().real for t in differentiable) * 0
        if o.dim() >= nb and tuple(o.shape[:nb]) == tuple(Bl) and nb - k >= 0:
            return wrap(o, nb - k, comm, torch.Size(tuple(B) + tuple(o.shape[nb:])), ref._counts)
        return wrap(o, None, comm, o.shape)

    if isinstance(out, tuple) and hasattr(out, "_fields"):
        return type(out)(*(wrap_one(o) for o in out))
    return pytree.tree_map(wrap_one, out)


def _global_batch_index(error: Exception, start: int) -> Exception:
    """torch names a failing batch by its index: make it the global one."""
    message = re.sub(r"\(Batch element (\d+)\)", lambda m: f"(Batch element {int(m.group(1)) + start})", str(error))
    try:
        return type(error)(message)
    except Exception:
        return error


def _trailing_matrices(name: str, args: tuple, kwargs: dict) -> bool:
    """Whether a norm's ``dim`` names the last two axes (``linalg.norm`` never: its
    ``dim=None`` is the flattened vector norm, so it goes to its own rule)."""
    if name == "linalg.norm":
        return False
    if name != "linalg.matrix_norm":
        return True
    dim = args[2] if len(args) > 2 else kwargs.get("dim", (-2, -1))
    nd = len(d.shape_of(args[0] if args else kwargs["A"]))
    return isinstance(dim, (tuple, list)) and len(dim) == 2 and sorted(x % nd for x in dim) == [nd - 2, nd - 1]


def _to_batch_axis(name: str, args: tuple, kwargs: dict):
    """Batches of matrices split along a matrix axis, moved (one all-to-all each) to the
    split of their first batch axis, so the batch rule applies; None for single matrices."""
    cores = _cores(name, args, kwargs)
    split = [(t, c) for t, c in cores if isinstance(t, DistTensor) and t._split is not None]
    if not all(len(t._gshape) > c for t, c in split):
        return None
    ids = {id(t) for t, _ in split}
    return pytree.tree_map(lambda a: a.resplit(0) if id(a) in ids else a, (args, kwargs))


def _handler(name: str) -> Callable:
    def handler(func, args, kwargs):
        if kwargs.get("out") is not None:
            return d.no_rule(func, args, kwargs)
        ref, core = batch_split(name, args, kwargs)
        if ref is None:
            return d.no_rule(func, args, kwargs)
        if not _trailing_matrices(name, args, kwargs):  # a norm over other dims: not a batch of matrices
            return ALGORITHMS[name](func, args, kwargs)
        if ref is not False:
            return run_batched(func, name, args, kwargs, ref, core)
        moved = _to_batch_axis(name, args, kwargs)
        if moved is not None:
            args, kwargs = moved
            ref, core = batch_split(name, args, kwargs)
            return run_batched(func, name, args, kwargs, ref, core)
        fn = ALGORITHMS.get(name)
        return fn(func, args, kwargs) if fn is not None else d.no_rule(func, args, kwargs)
    handler.__name__ = name.replace(".", "_")
    return handler


def _callables(name: str):
    if name.startswith("linalg."):
        return [getattr(torch.linalg, name[len("linalg."):])]
    return [f for f in (getattr(torch, name, None), getattr(torch.Tensor, name, None)) if f is not None]


def _removed(func, args, kwargs):
    """Functions torch has removed (``torch.qr``, ``torch.cholesky``): torch's error."""
    d.raise_global_error(func, args, kwargs)


def install() -> None:
    """Register every function of :data:`CORE` (called once the algorithms are known)."""
    for name in CORE:
        d.register(_callables(name), _handler(name))
    d.register([torch.qr, torch.Tensor.qr, torch.cholesky, torch.Tensor.cholesky], _removed)
