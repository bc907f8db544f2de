"""Pointwise ops: align operands to one split, compute locally, keep the split.

Broadcasting, type promotion and errors follow torch on the global shapes. A replicated
operand (plain tensor or ``split=None``) is sliced to the local rows; an operand split
along another axis is redistributed (one all-to-all), never gathered; one split along a
broadcast axis is replicated first. In-place forms and ``out=`` keep the layout of the
written tensor.

The op list is torch's own: every aten op tagged ``torch.Tag.pointwise``, under all its
Python names (``torch``, ``torch.special``, ``Tensor`` methods, in-place forms, operators),
plus the short list of pointwise functions whose aten names carry no tag.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.).reshape(3, 2), split=0)
>>> y = (x * 2 + torch.tensor([1., -1.])).exp()
>>> y.split_dim, y.shape
(0, torch.Size([3, 2]))
>>> torch.where(x > 2, x, 0.).split_dim
0
"""
from __future__ import annotations

import torch
from torch._C import DisableTorchFunctionSubclass

from .. import dispatch as d
from ..tensor import DistTensor, adopt, is_fresh, wrap

# Pointwise functions torch does not tag: composite aliases and decompositions (their aten
# names carry no tags) and the complex views.
UNTAGGED = (
    "absolute", "negative", "subtract", "multiply", "divide", "floor_divide", "greater", "greater_equal", "less",
    "less_equal", "not_equal", "isclose", "isreal", "fix", "arccos", "arccosh", "arcsin", "arcsinh", "arctan",
    "arctan2", "arctanh", "expit", "gammaln", "psi", "multigammaln", "ndtr", "gammainc", "gammaincc", "real",
    "imag", "conj", "complex", "polar",
)
# Tagged names whose Python functions mean more than the pointwise overload.
NOT_HERE = {
    "max": "max(x) and max(x, dim) are reductions (ops/reductions.py)",
    "min": "min(x) and min(x, dim) are reductions (ops/reductions.py)",
    "equal": "one bool for the whole tensors: a reduction",
    "rrelu": "random slopes in training mode (ops/nn_functional.py)",
    "clone": "a copy in the layout of self (ops/tensor_api.py)",
    "where": "where(cond) alone is nonzero: registered below with that check",
}


def tagged_pointwise() -> list:
    """Python-level names of the aten ops that torch tags ``pointwise`` (any overload).

    Read from every registered schema, not from ``dir(torch.ops.aten)``, which lists only
    the ops some code has touched so far: the table must not depend on import order.

    >>> "atan2" in tagged_pointwise() and "bessel_j0" in tagged_pointwise()
    True
    """
    names = set()
    for schema in torch._C._jit_get_all_schemas():
        if schema.name.startswith("aten::"):
            found = torch._C._get_operation_overload(schema.name, schema.overload_name)  # (op, op_dk, tags)
            if found is not None and torch.Tag.pointwise in found[2]:
                name = schema.name[len("aten::"):].removeprefix("special_")  # torch.special.X is aten's special_X
                names.add(name[:-1] if name.endswith("_") and not name.endswith("__") else name)
    return sorted(names)


def elementwise(func, args, kwargs):
    """Handler for every pointwise torch function (unary, binary, ternary, in-place, ``out=``)."""
    # Fast path: DistTensors of one layout, scalars, and plain tensors that need no slicing:
    # nothing to align or communicate; any error is rerun below to get torch's global one.
    # (Handlers run with torch-function dispatch off, so func computes on the local chunks.
    # Layouts are compared by identity first: balanced counts come from one cache.)
    ref, plain = None, False
    for a in (*args, *kwargs.values()) if kwargs else args:
        if type(a) is DistTensor:
            if ref is None:
                ref = a
            elif (a._counts is not ref._counts and a._counts != ref._counts) or a._split != ref._split \
                    or (a._gshape is not ref._gshape and a._gshape != ref._gshape) or a._comm is not ref._comm:
                break
        elif isinstance(a, torch.Tensor):
            plain = True
    else:
        if ref is not None and "out" not in kwargs and not (plain and _needs_alignment(ref, args, kwargs)):
            try:
                if func in d.INPLACE:
                    if args[0] is ref:
                        return func(*args, **kwargs)
                else:
                    out = func(*args, **kwargs)
                    if out is ref:  # F.relu(x, True) and friends return their input
                        return ref
                    if plain:
                        split, gshape = _broadcast_layout(ref, out)
                        return d.wrap_result(out, split, ref._comm, gshape, ref._counts)
                    if is_fresh(out, (*args, *kwargs.values()) if kwargs else args):
                        return adopt(out, ref._split, ref._comm, ref._gshape, ref._counts)
                    return d.wrap_result(out, ref._split, ref._comm, ref._gshape, ref._counts)
            except Exception:
                pass
    return _elementwise(func, args, kwargs)


def _needs_alignment(ref, args, kwargs) -> bool:
    """Whether a plain tensor operand must be sliced to ``ref``'s rows or enter with a
    gradient sum over ranks (see :func:`torchheat.dispatch.align`)."""
    split = ref._split
    if split is None:
        return False
    rows, local_rows = ref._gshape[split], ref.shape[split]  # (shape is local in a handler)
    for t in (*args, *kwargs.values()):
        if isinstance(t, torch.Tensor) and type(t) is not DistTensor:
            axis = split - len(ref._gshape) + t.dim()  # ref's split axis in t, right-aligned
            if axis >= 0 and t.shape[axis] != 1 and not t.shape[axis] == rows == local_rows:
                return True
            if t.requires_grad and ref._comm.size > 1:
                return True
    return False


def _broadcast_layout(ref, out):
    """Split axis and global shape of a result that plain operands broadcast beyond ``ref``."""
    local = out if isinstance(out, torch.Tensor) else out[0]
    if ref._split is None:
        return None, local.shape
    shape = list(local.shape)
    split = ref._split + len(shape) - len(ref._gshape)
    shape[split] = ref._gshape[ref._split]
    return split, torch.Size(shape)


def _elementwise(func, args, given):
    call = (args, given)  # as given, for torch's own errors
    kwargs = dict(given)
    out = kwargs.pop("out", None)
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    keys = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    operands = [args[i] for i in positions] + [kwargs[k] for k in keys]
    comm = d.common_comm([t for t in operands + [out] if isinstance(t, DistTensor)])
    inplace = func in d.INPLACE
    gshape = d.layout.broadcast_shapes(*[d.shape_of(t) for t in operands])
    target = args[0] if inplace else None
    if gshape is None or (target is not None and gshape != d.shape_of(target)):
        d.raise_global_error(func, *call)
    # The written tensor decides the layout; out= of the result's shape is written directly.
    direct_out = isinstance(out, DistTensor) and out._gshape == gshape
    if target is not None:
        ref = target if isinstance(target, DistTensor) else None
    else:
        ref = out if direct_out else d.pick_ref(operands, gshape)
    local, split, counts = d.align(operands, gshape, ref, comm)
    if target is not None:
        local[0] = target  # written in place, in its own layout
    args = list(args)
    for i, t in zip(positions, local):
        args[i] = t
    for k, t in zip(keys, local[len(positions):]):
        kwargs[k] = t
    if direct_out:
        kwargs["out"] = out  # torch checks the dtype and writes the local chunk
    result = d.run_local(func, args, kwargs)
    if inplace or direct_out:
        return result
    if args and result is args[0] and isinstance(result, DistTensor):  # F.relu(x, inplace=True)
        return result
    result = d.wrap_result(result, split, comm, gshape, counts)
    return result if out is None else write_out(out, result, func, call)


def write_out(out, result, func=None, call=None):
    """Store ``result`` into the ``out=`` DistTensor(s), in ``out``'s layout when it has one.

    A result dtype that torch would not cast to ``out``'s dtype raises torch's error for
    ``func`` called as ``call = (args, kwargs)``.
    """
    if isinstance(out, (tuple, list)):
        return type(out)(write_out(o, r, func, call) for o, r in zip(out, result))
    if not isinstance(out, DistTensor):
        raise TypeError(
            f"out= got a plain {type(out).__name__} for a distributed result of shape {tuple(result.shape)}; "
            "expected a DistTensor (use th.empty(..., split=...) or *_like)"
        )
    if func is not None and not torch.can_cast(result.dtype, out.dtype):
        d.raise_global_error(func, *call)
    if out._split is not None and out._gshape == result._gshape:
        result = d.to_layout(result, out._split, out._counts)
        split, counts = out._split, out._counts
    else:
        split, counts = result._split, result._counts
    with DisableTorchFunctionSubclass():
        if out.shape != result.shape:
            out.resize_(result.shape)
        out.copy_(result)
    out._split, out._gshape, out._counts = split, result._gshape, counts
    return out


def integer_division(func, args, kwargs):
    """``//``, ``%``, ``fmod``, ``div(rounding_mode=...)``: torch raises for an integer division
    by zero on the ranks whose chunk holds the zero (an empty chunk never raises), so the
    ranks agree on the outcome. Only integer operands with a split one and a divisor that is
    not a nonzero number pay for that (one small allreduce)."""
    if not _may_divide_by_zero(func, args, kwargs):
        return elementwise(func, args, kwargs)
    error = result = None
    try:
        result = elementwise(func, args, kwargs)
    except Exception as e:  # noqa: BLE001 -- agreed on below, then raised on every rank
        error = e
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, DistTensor)]
    d.agree(d.common_comm(tensors), error)
    return result


def _may_divide_by_zero(func, args, kwargs) -> bool:
    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
    if any(t.is_floating_point() or t.is_complex() for t in tensors):
        return False
    if not any(type(t) is DistTensor and t._split is not None and t._comm.size > 1 for t in tensors):
        return False
    if func in _TRUE_DIVISION and kwargs.get("rounding_mode") is None:
        return False  # true division of integers gives floats
    reflected = getattr(func, "__name__", "").startswith("__r")
    divisor = args[0] if reflected else (args[1] if len(args) > 1 else kwargs.get("other"))
    return not (isinstance(divisor, (int, float)) and divisor != 0)


def where(func, args, kwargs):
    """``where(cond, a, b)`` is pointwise; ``where(cond)`` alone is ``nonzero``, not pointwise."""
    if len(args) + len(kwargs) == 1:
        return d.no_rule(func, args, kwargs)
    return elementwise(func, args, kwargs)


for _name in [n for n in tagged_pointwise() if n not in NOT_HERE] + list(UNTAGGED):
    d.register(d.aliases(_name), elementwise)
d.register(d.aliases("where"), where)
_TRUE_DIVISION = set(d.aliases("div") + d.aliases("divide"))
d.register(d.aliases("floor_divide") + d.aliases("remainder") + d.aliases("fmod") + list(_TRUE_DIVISION), integer_division)
# Not functions of torch: the conversion to complex32 (torch.chalf is the dtype), the
# properties x.real and x.imag, and copy_ (an in-place, casting, broadcasting write).
d.register([torch.Tensor.chalf, torch.Tensor.real.__get__, torch.Tensor.imag.__get__, torch.Tensor.copy_], elementwise)
