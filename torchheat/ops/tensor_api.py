"""The Tensor API that is not math: shape queries, attributes, conversions, Python protocol.

Shape queries answer with the global shape; attributes that do not depend on the shape
(dtype, device, requires_grad, ...) read the local chunk; conversions (``to``, ``clone``,
``detach``, ``*_like``) keep the layout; ``.grad`` comes back as a DistTensor; values
leave the distributed world only through collectives (``item``, ``tolist``, ``numpy``).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.zeros(7, 3), split=0)
>>> x.shape, x.size(0), x.dim(), x.numel(), len(x)
(torch.Size([7, 3]), 7, 2, 21, 7)
"""
from __future__ import annotations

import torch

from .. import dispatch as d
from ..tensor import DistTensor, wrap

T = torch.Tensor


def _prop(name: str, *which: str):
    return [getattr(getattr(T, name), w) for w in which]


# -- shape queries: the global shape ---------------------------------------------------------
def _shape(func, args, kwargs):
    return args[0]._gshape


def _size(func, args, kwargs):
    x, dim = args[0], (args[1] if len(args) > 1 else kwargs.get("dim"))
    if dim is None:
        return x._gshape
    return x._gshape[d.layout.normalize_axis(dim, len(x._gshape))]


def _dim(func, args, kwargs):
    return len(args[0]._gshape)


def _numel(func, args, kwargs):
    return args[0]._gshape.numel()


def _len(func, args, kwargs):
    shape = args[0]._gshape
    if not shape:
        raise TypeError("len() of a 0-d tensor")
    return shape[0]


d.register(_prop("shape", "__get__"), _shape)
d.register([T.size], _size)
d.register([T.dim, T.ndimension] + _prop("ndim", "__get__"), _dim)
d.register([T.numel, T.nelement, torch.numel], _numel)
d.register([T.__len__], _len)


# -- attributes and autograd plumbing: the local chunk answers -------------------------------
_LOCAL_ATTRS = (
    "dtype", "device", "layout", "requires_grad", "is_leaf", "grad_fn", "is_cuda", "is_cpu", "is_meta",
    "is_sparse", "is_quantized", "is_nested", "is_mps", "is_xpu", "_version", "output_nr", "_base", "names",
    "itemsize", "nbytes", "_backward_hooks", "_post_accumulate_grad_hooks",
)
_LOCAL_METHODS = (
    "is_floating_point", "is_complex", "is_signed", "element_size", "is_contiguous", "data_ptr", "storage_offset",
    "stride", "get_device", "untyped_storage", "storage", "_typed_storage", "is_pinned", "has_names", "_is_view",
    "is_inference", "retain_grad", "register_hook", "register_post_accumulate_grad_hook",
    "__dlpack_device__", "is_shared", "dim_order", "_is_zerotensor", "is_conj", "is_neg", "_is_all_true",
)


def _local(func, args, kwargs):
    return d.run_local(func, args, kwargs)


d.register([getattr(getattr(T, a), "__get__") for a in _LOCAL_ATTRS if hasattr(T, a)], _local)
d.register(_prop("requires_grad", "__set__") + _prop("grad", "__set__"), _local)
d.register([getattr(T, m) for m in _LOCAL_METHODS if hasattr(T, m)], _local)
d.register([torch.is_floating_point, torch.is_complex, torch.is_tensor], _local)


# -- same layout as self: conversions, copies, fresh tensors of the same shape ---------------
def like_self(func, args, kwargs):
    """Results laid out exactly like the first argument (a DistTensor)."""
    x = args[0]
    out = d.run_local(func, args, kwargs)
    if out is x or not isinstance(out, torch.Tensor):
        return out
    return wrap(out, x._split, x._comm, x._gshape, x._counts)


_LIKE_SELF_METHODS = (
    "to", "cpu", "cuda", "type", "float", "double", "half", "bfloat16", "bool", "int", "long", "short", "char", "byte",
    "cfloat", "cdouble", "clone", "detach", "detach_", "contiguous", "requires_grad_", "zero_", "pin_memory",
    "share_memory_", "type_as", "resolve_conj", "resolve_neg", "conj_physical",
)
d.register([getattr(T, m) for m in _LIKE_SELF_METHODS if hasattr(T, m)], like_self)
d.register([torch.clone, torch.detach, torch.zeros_like, torch.ones_like, torch.empty_like, torch.full_like,
            torch.resolve_conj, torch.resolve_neg], like_self)
d.register(_prop("data", "__get__"), like_self)


def _fill(func, args, kwargs):
    """``fill_(value)`` and ``torch.fill``: a tensor value must be 0-d, so it is the same on every rank."""
    x, value = args[0], args[1] if len(args) > 1 else kwargs["value"]
    if isinstance(value, DistTensor):
        value = value.full() if value._split is not None else value.local
        args = (x, value) + tuple(args[2:])
    out = d.run_local(func, args, kwargs)
    if out is x or not isinstance(x, DistTensor):
        return out
    return wrap(out, x._split, x._comm, x._gshape, x._counts)  # torch.fill: a new tensor like x


d.register([T.fill_, torch.fill], _fill)


def _grad(func, args, kwargs):
    x = args[0]
    g = d.run_local(func, args, kwargs)
    return None if g is None else wrap(g, x._split, x._comm, x._gshape, x._counts)


d.register(_prop("grad", "__get__"), _grad)


def _set_data(func, args, kwargs):
    x, new = args
    d.run_local(func, args, kwargs)
    if isinstance(new, DistTensor):
        x._split, x._gshape, x._counts = new._split, new._gshape, new._counts
    else:
        x._split, x._gshape, x._counts = None, new.shape, None


d.register(_prop("data", "__set__"), _set_data)


def _new_tensor(func, args, kwargs):
    """``x.new_zeros(size)`` and friends: a replicated tensor of the given shape."""
    out = d.run_local(func, args, kwargs)
    return wrap(out, None, args[0]._comm, out.shape, None)


d.register([T.new_zeros, T.new_ones, T.new_empty, T.new_full, T.new_tensor], _new_tensor)


# -- values out of the distributed world (collectives) -----------------------------------
def _global_value(func, args, kwargs):
    """``item``, ``tolist``, ``numpy``, ``bool()``, ``float()``, ...: computed on the global tensor."""
    x = args[0]
    if x._split is not None and func in _SCALAR and x._gshape.numel() != 1:
        n = x._gshape.numel()
        if func is T.__bool__:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        raise RuntimeError(f"a Tensor with {n} elements cannot be converted to Scalar")
    full = x.full()
    return d.run_local(func, (full,) + tuple(args[1:]), kwargs)


_SCALAR = {T.item, T.__bool__, T.__float__, T.__int__, T.__index__, T.__complex__}
d.register(_SCALAR | {T.tolist, T.numpy, T.__array__}, _global_value)


def _format(func, args, kwargs):
    x = args[0]
    if x._split is None and not x._gshape:
        return d.run_local(func, (x.local,) + tuple(args[1:]), kwargs)
    return repr(x)


d.register([T.__format__], _format)
