"""How a torch call on DistTensors becomes distributed: one registry, shared mechanics.

``DistTensor.__torch_function__`` looks the called function up in :data:`REGISTRY`
(``func -> handler(func, args, kwargs)``). Handlers are registered per rule family by
the modules of :mod:`torchheat.ops`; this module holds what they share: operand
metadata, alignment of operands to one layout, wrapping of results, torch's own errors
for the global shapes, and the policy for functions with no rule.

Examples
--------
>>> import torch, torchheat as th
>>> torch.exp in th.dispatch.REGISTRY
True
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch
from torch._C import DisableTorchFunctionSubclass
from torch.utils import _pytree as pytree

from . import layout
from .comm import functional as cf
from .config import NotDistributedError, config
from .tensor import DistTensor, relayout, wrap

Handler = Callable[[Callable, tuple, dict], object]
REGISTRY: Dict[Callable, Handler] = {}
INPLACE: set = set()

# Python operators that stand for a torch function (forward, reflected, in-place).
DUNDERS = {
    "add": ("__add__", "__radd__", "__iadd__"),
    "sub": ("__sub__", "__rsub__", "__isub__"),
    "mul": ("__mul__", "__rmul__", "__imul__"),
    "div": ("__truediv__", "__rtruediv__", "__itruediv__", "__div__", "__rdiv__", "__idiv__"),
    "floor_divide": ("__floordiv__", "__rfloordiv__", "__ifloordiv__"),
    "remainder": ("__mod__", "__rmod__", "__imod__"),
    "pow": ("__pow__", "__rpow__", "__ipow__"),
    "neg": ("__neg__",),
    "positive": ("__pos__",),
    "abs": ("__abs__",),
    "bitwise_not": ("__invert__",),
    "bitwise_and": ("__and__", "__rand__", "__iand__"),
    "bitwise_or": ("__or__", "__ror__", "__ior__"),
    "bitwise_xor": ("__xor__", "__rxor__", "__ixor__"),
    "bitwise_left_shift": ("__lshift__", "__rlshift__", "__ilshift__"),
    "bitwise_right_shift": ("__rshift__", "__rrshift__", "__irshift__"),
    "eq": ("__eq__",),
    "ne": ("__ne__",),
    "lt": ("__lt__",),
    "le": ("__le__",),
    "gt": ("__gt__",),
    "ge": ("__ge__",),
}
_NAMESPACES = (torch, torch.special, torch.nn.functional, torch.linalg, torch.fft)


def _is_inplace(f: Callable) -> bool:
    name = getattr(f, "__name__", "")
    return (name.endswith("_") and not name.endswith("__")) or (name.startswith("__i") and name.endswith("__") and name not in ("__index__", "__int__", "__invert__", "__iter__"))


def _same_meaning(namespace, name: str) -> bool:
    """Whether ``namespace.name`` means torch's ``name``. torch.linalg and torch.fft functions
    are ops of their own (``linalg.polar`` is a matrix decomposition, ``torch.polar`` a
    complex number; ``linalg.cross`` and ``linalg.diagonal`` have other defaults), so they
    count only where torch has no function of that name."""
    return namespace not in (torch.linalg, torch.fft) or getattr(torch, name, None) is None


def aliases(name: str) -> List[Callable]:
    """Every callable that means the torch function ``name``: namespaces, Tensor methods,
    in-place forms and Python operators.

    >>> torch.Tensor.__radd__ in aliases("add")
    True
    """
    found = [getattr(ns, name, None) for ns in _NAMESPACES if _same_meaning(ns, name)]
    found += [getattr(torch.Tensor, n, None) for n in (name, name + "_") + DUNDERS.get(name, ())]
    found += [getattr(ns, name + "_", None) for ns in _NAMESPACES if _same_meaning(ns, name)]  # torch.relu_, F.elu_, ...
    return [f for f in dict.fromkeys(found) if f is not None]


def register(funcs: Iterable[Callable], handler: Handler) -> None:
    """Route each of ``funcs`` to ``handler``."""
    for f in funcs:
        REGISTRY[f] = handler
        if _is_inplace(f):
            INPLACE.add(f)


def implements(*names: str) -> Callable[[Handler], Handler]:
    """Decorator: register a handler for the torch functions ``names`` and all their aliases."""

    def deco(handler: Handler) -> Handler:
        for name in names:
            funcs = aliases(name)
            if not funcs:
                raise AttributeError(f"torch has no function {name!r}")
            register(funcs, handler)
        return handler

    return deco


def _view_names() -> set:
    """Names of the aten ops whose result aliases an input (a view), read from their schemas."""
    names = set()
    for schema in torch._C._jit_get_all_schemas():
        if schema.name.startswith("aten::") and any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns):
            names.add(schema.name[len("aten::"):])
    return names


# Functions that return a view of (or may alias) an input in torch: Tensor properties and methods
# whose aten ops' schemas say so, under all their Python names. A gathered copy would not alias.
VIEWS: set = {f for name in _view_names() for f in aliases(name) if not _is_inplace(f)}
VIEWS |= {getattr(torch.Tensor, p).__get__ for p in ("T", "mT", "H", "mH", "real", "imag")}
VIEWS |= {torch.Tensor.__getitem__, torch.Tensor.view, torch.Tensor.view_as, torch.Tensor.unfold}


# Public torch callables that never reach ``__torch_function__`` (found by tests/test_api.py,
# which calls every public function and Tensor method on a split DistTensor): they see the
# local chunk only. They cannot be intercepted from Python; use what the reason says.
BYPASSES = {
    "torch.tensor": "copies the local chunk into a plain tensor; use x.full() (global) or x.local (chunk)",
    "torch.to_dlpack": "exports the local chunk's memory (as x.__dlpack__ does); use x.full() for the global tensor",
    "Tensor.set_": "replaces the local storage without updating the global shape; build a new DistTensor instead",
}


def writes(func: Callable, kwargs: dict) -> bool:
    """Whether a call writes into one of its arguments (in-place form, ``out=``, setitem)."""
    return func in INPLACE or _is_inplace(func) or kwargs.get("out") is not None or func is torch.Tensor.__setitem__


def func_name(func: Callable) -> str:
    """A readable name for a torch callable (``torch.add``, ``Tensor.__radd__``)."""
    if type(func).__name__ == "method-wrapper" and func.__name__ in ("__get__", "__set__"):  # a property: Tensor.T
        return f"Tensor.{func.__self__.__name__}" + (" (set)" if func.__name__ == "__set__" else "")
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if qual.startswith("TensorBase."):
        qual = "Tensor." + qual[len("TensorBase."):]
    qual = qual.removeprefix("_VariableFunctionsClass.")  # torch.where, not torch._VariableFunctionsClass.where
    mod = getattr(func, "__module__", None) or ""
    if not qual.startswith("Tensor.") and mod.startswith("torch"):
        mod = {"torch._C._special": "torch.special", "torch._C._linalg": "torch.linalg", "torch._C._nn": "torch.nn.functional",
               "torch._C._fft": "torch.fft", "torch._C._VariableFunctions": "torch"}.get(mod, mod)
        qual = qual.removeprefix(mod.rpartition(".")[2] + "_")  # torch.linalg.polar, not torch.linalg.linalg_polar
        return f"{mod}.{qual}" if mod not in ("", "builtins") else qual
    return qual


# -- calling torch on local chunks -----------------------------------------------------------
def run_local(func: Callable, args: tuple, kwargs: dict):
    """Call ``func`` with torch-function dispatch off: C++ kernels see the local chunks."""
    with DisableTorchFunctionSubclass():
        return func(*args, **kwargs)


def shape_of(t: torch.Tensor) -> torch.Size:
    """Global shape of a DistTensor, shape of a plain tensor."""
    return t._gshape if isinstance(t, DistTensor) else t.shape


def raise_global_error(func: Callable, args: tuple, kwargs: dict):
    """Raise the exception torch raises for this call on tensors of the global shapes.

    The call is replayed on stand-ins with the global shapes and no data: meta tensors
    first (nothing is computed), then zero-stride CPU tensors, whose messages are the
    ones users know from CPU torch. No communication.
    """
    def stand_ins(device):
        def one(a):
            if isinstance(a, torch.Tensor):
                with DisableTorchFunctionSubclass():
                    if device == "meta":
                        return torch.empty(shape_of(a), dtype=a.dtype, device="meta")
                    return torch.zeros((), dtype=a.dtype).expand(shape_of(a))
            return a
        return pytree.tree_map(one, (args, kwargs))

    try:
        run_local(func, *stand_ins("meta"))
    except Exception as meta_error:
        try:
            run_local(func, *stand_ins("cpu"))
        except Exception as cpu_error:
            if "written-to tensor" not in str(cpu_error):  # an artefact of the zero-stride stand-in
                raise cpu_error.with_traceback(None) from None
            raise meta_error.with_traceback(None) from None
        if "meta" not in str(meta_error).lower():  # (CPU stand-ins pass: an error about meta tensors is an artefact)
            raise meta_error.with_traceback(None) from None
    shapes = [tuple(shape_of(a)) for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
    raise RuntimeError(f"{func_name(func)}: operands of global shapes {shapes} are not compatible")


def agree(comm, error: Optional[BaseException]) -> None:
    """Raise on every rank if any rank saw ``error`` (one one-byte allreduce when none did).

    For data-dependent errors that only the ranks holding the offending values see (integer
    division by zero): every rank raises the exception of the lowest failing rank, naming
    the ranks that saw it, so no rank runs ahead into the next collective.
    """
    if comm.size == 1:
        if error is not None:
            raise error
        return
    flag = torch.tensor([error is not None], dtype=torch.uint8)
    if not comm.allreduce(flag, "max").item():
        return
    seen = [(r, e) for r, e in enumerate(comm.allgather_obj(None if error is None else (type(error), str(error)))) if e]
    kind, message = seen[0][1]
    ranks = [r for r, _ in seen]
    if error is not None and len(ranks) == 1:
        raise error
    try:
        agreed = kind(f"{message} (on rank(s) {ranks})")
    except Exception:  # an exception type that takes other arguments
        agreed = RuntimeError(f"{kind.__name__}: {message} (on rank(s) {ranks})")
    raise agreed from error


def common_comm(tensors: Iterable[DistTensor]):
    """The communicator shared by the DistTensor operands (their sizes must agree)."""
    comm = None
    for t in tensors:
        if comm is None:
            comm = t._comm
        elif t._comm is not comm and t._comm.size != comm.size:
            raise ValueError(
                f"operands live on communicators of different sizes ({comm.size} and {t._comm.size}); "
                "expected DistTensors on the same communicator"
            )
    return comm


def wrap_result(out, split: Optional[int], comm, gshape, counts):
    """Wrap a local result (a tensor, or a tuple/list of same-layout tensors)."""
    if isinstance(out, torch.Tensor):
        return wrap(out, split, comm, gshape, counts)
    if isinstance(out, (tuple, list)):
        return type(out)(wrap_result(o, split, comm, gshape, counts) for o in out) if not hasattr(out, "_fields") else \
            type(out)(*(wrap_result(o, split, comm, gshape, counts) for o in out))
    return out


def wrap_replicated(out, comm):
    """Wrap every tensor in a local result as a replicated DistTensor of its own shape."""
    def one(o):
        if isinstance(o, torch.Tensor) and not isinstance(o, DistTensor):
            return wrap(o, None, comm, o.shape, None)
        return o

    return pytree.tree_map(one, out)


# -- aligning operands of elementwise ops ----------------------------------------------------
def to_layout(t: DistTensor, split: Optional[int], counts, consume: bool = False) -> torch.Tensor:
    """``t``'s local chunk in the layout (split, counts): no communication when it already is
    (``consume``: see :func:`torchheat.tensor.relayout`)."""
    if t._split == split and (split is None or t._counts == counts):
        return t
    return relayout(t, split, counts, consume)


def replicated_operand(t: torch.Tensor, comm, axis: int, start: int, count: int) -> torch.Tensor:
    """A replicated operand of a split op: its local rows (if it has ``axis`` unbroadcast).

    Its gradient is then a partial sum per rank, so it enters through
    :func:`torchheat.comm.functional.enter_replicated`.
    """
    if isinstance(t, DistTensor):
        t = t.local
    t = cf.enter_replicated(t, comm)
    if axis >= 0 and t.shape[axis] != count:  # (count: all rows are local)
        t = t.narrow(axis, start, count)
    return t


def align(operands: List[torch.Tensor], gshape: torch.Size, ref: Optional[DistTensor], comm) -> Tuple[list, Optional[int], Optional[layout.Counts]]:
    """Bring elementwise operands to one layout: that of ``ref`` (a split DistTensor whose
    split axis is not broadcast), or replicated when ``ref`` is None.

    Returns the local operands, the result's split axis and its counts. Only the operands
    that are in another layout move; a replicated operand is sliced, never communicated.
    """
    ndim = len(gshape)
    if ref is None or ref._split is None:
        out = [to_layout(t, None, None) if isinstance(t, DistTensor) else t for t in operands]
        return out, None, None
    split = ref._split + ndim - len(ref._gshape)
    counts = ref._counts
    start, count = layout.offsets(counts)[comm.rank], counts[comm.rank]
    out = []
    for t in operands:
        tshape = shape_of(t)
        axis = split - (ndim - len(tshape))
        full_axis = axis >= 0 and tshape[axis] == gshape[split]
        if isinstance(t, DistTensor) and t._split is not None:
            if full_axis:
                out.append(to_layout(t, axis, counts))
                continue
            t = to_layout(t, None, None)
        out.append(replicated_operand(t, comm, axis if full_axis else -1, start, count))
    return out, split, counts


def pick_ref(operands: List[torch.Tensor], gshape: torch.Size) -> Optional[DistTensor]:
    """The operand whose layout the result takes: the first split DistTensor whose split
    axis is not broadcast in the result."""
    ndim = len(gshape)
    for t in operands:
        if isinstance(t, DistTensor) and t._split is not None:
            if t._gshape[t._split] == gshape[t._split + ndim - len(t._gshape)]:
                return t
    return None


# -- ops with no rule ------------------------------------------------------------------------
_warned: set = set()


def no_rule(func: Callable, args: tuple, kwargs: dict):
    """Policy for a torch function with no registered handler (see ``th.config.fallback``)."""
    flat = pytree.tree_leaves((args, kwargs))
    dists = [a for a in flat if isinstance(a, DistTensor)]
    comm = common_comm(dists)
    split = [a for a in dists if a._split is not None]
    if not split:
        out = run_local(func, args, kwargs)
        copy_of = args[0]._copy_of if func in VIEWS and args and isinstance(args[0], DistTensor) else None
        for a in dists:  # an in-place shape change (t_, unsqueeze_, resize_, ...) of a replicated tensor
            a._gshape = a.lshape
        out = wrap_replicated(out, comm)
        if copy_of is not None and isinstance(out, DistTensor):  # a view of a copy is a copy too
            out._copy_of = copy_of
        return out
    name = func_name(func)
    splits = [a._split for a in dists]
    aliasing = func in VIEWS or writes(func, kwargs)
    if config.fallback == "error" or aliasing:
        why = " (it returns a view of, or writes into, its input: a gathered copy would not alias it)" if aliasing else ""
        raise NotDistributedError(
            f"{name} has no distributed rule for operands split along {splits}{why} "
            f"(th.config.fallback={config.fallback!r}); resplit them to None first, or add a rule"
        )
    if name not in _warned:
        _warned.add(name)
        nbytes = sum(a._gshape.numel() * a.element_size() for a in split)
        warnings.warn(f"torchheat: {name} has no distributed rule; gathering {nbytes} bytes onto every rank", stacklevel=3)
    args, kwargs = pytree.tree_map(lambda a: a.full() if isinstance(a, DistTensor) else a, (args, kwargs))
    return wrap_replicated(run_local(func, args, kwargs), comm)


def refuse_write(func: Callable, args: tuple, kwargs: dict) -> None:
    """Raise if ``func`` writes into ``args[0]``, a copy standing in for a view (``_copy_of``)."""
    if writes(func, kwargs):
        raise NotDistributedError(
            f"{func_name(func)} writes into a copy of {args[0]._copy_of}, not a view of it (that row lives on one "
            "rank); write through the original instead (e.g. x[i] = value)"
        )


DistTensor._handlers = REGISTRY
DistTensor._no_rule = staticmethod(no_rule)
DistTensor._refuse_write = staticmethod(refuse_write)
