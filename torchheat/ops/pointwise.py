"""Pointwise ops: align operands to one split, compute locally, keep the split.

Broadcasting follows torch on the global shapes. A replicated operand (plain tensor or
``split=None``) is sliced to the local rows; an operand split along another axis is
redistributed (one all-to-all), never gathered; one split along a broadcast axis is
replicated first. In-place forms and ``out=`` keep the layout of the written tensor.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.).reshape(3, 2), split=0)
>>> y = (x * 2 + torch.tensor([1., -1.])).exp()
>>> y.split, y.shape
(0, torch.Size([3, 2]))
"""
from __future__ import annotations

import torch
from torch._C import DisableTorchFunctionSubclass

from .. import dispatch as d
from ..tensor import DistTensor

# The slice of the family the foundation ships; the full table extends these lists.
UNARY = ["exp", "neg", "negative", "abs", "absolute"]
BINARY = ["add", "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide"]


def _tensor_slots(args, kwargs):
    """Positions of the tensor operands: ('a', i) for args, ('k', name) for kwargs."""
    slots = [("a", i) for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    slots += [("k", k) for k, v in kwargs.items() if k != "out" and isinstance(v, torch.Tensor)]
    return slots


def elementwise(func, args, kwargs):
    """Handler for every pointwise torch function (unary, binary, ternary, in-place, ``out=``)."""
    if not kwargs:
        # Fast path: positional DistTensors of one layout and Python scalars: nothing to align.
        ref = None
        for a in args:
            if type(a) is DistTensor:
                if ref is None:
                    ref = a
                elif a._gshape != ref._gshape or a._split != ref._split or a._counts != ref._counts or a._comm is not ref._comm:
                    break
            elif isinstance(a, torch.Tensor):
                break
        else:
            if func in d.INPLACE:
                if args[0] is ref:
                    return d.run_local(func, args, kwargs)
            else:
                with DisableTorchFunctionSubclass():
                    out = func(*args)
                return d.wrap_result(out, ref._split, ref._comm, ref._gshape, ref._counts)
    return _elementwise(func, args, dict(kwargs))


def _elementwise(func, args, kwargs):
    out = kwargs.pop("out", None)
    slots = _tensor_slots(args, kwargs)
    operands = [args[i] if kind == "a" else kwargs[i] for kind, i in slots]
    comm = d.common_comm(t for t in operands if isinstance(t, DistTensor))
    inplace = func in d.INPLACE
    gshape = d.layout.broadcast_shapes(*(tuple(d.shape_of(t)) for t in operands))
    target = args[0] if inplace else None
    if gshape is None or (target is not None and gshape != d.shape_of(target)):
        if out is not None:
            kwargs["out"] = out
        d.raise_global_error(func, args, kwargs)
    if target is not None:
        ref = target if isinstance(target, DistTensor) else None
    else:
        ref = d.pick_ref(operands, gshape)
    local, split, counts = d.align(operands, gshape, ref, comm)
    if target is not None:
        local[0] = target  # written in place, in its own layout
    args = list(args)
    for (kind, i), t in zip(slots, local):
        if kind == "a":
            args[i] = t
        else:
            kwargs[i] = t
    result = d.run_local(func, tuple(args), kwargs)
    if inplace:
        return result
    result = d.wrap_result(result, split, comm, gshape, counts)
    return result if out is None else write_out(out, result)


def write_out(out, result):
    """Store ``result`` into the ``out=`` DistTensor(s), in ``out``'s layout when it has one."""
    if isinstance(out, (tuple, list)):
        return type(out)(write_out(o, r) for o, r in zip(out, result))
    if not isinstance(out, DistTensor):
        raise TypeError(
            f"out= got a plain {type(out).__name__} for a distributed result of shape {tuple(result.shape)}; "
            "expected a DistTensor (use th.empty(..., split=...) or *_like)"
        )
    if out._split is not None and out._gshape == result._gshape:
        result = d.to_layout(result, out._split, out._counts)
        split, counts = out._split, out._counts
    else:
        split, counts = result._split, result._counts
    with torch._C.DisableTorchFunctionSubclass():
        if out.shape != result.shape:
            out.resize_(result.shape)
        out.copy_(result)
    out._split, out._gshape, out._counts = split, result._gshape, counts
    return out


for _name in UNARY + BINARY:
    d.register(d.aliases(_name), elementwise)
