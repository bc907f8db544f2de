"""nn.functional activations and softmax: local where the math is per element or per row.

Activations (``relu``, ``gelu``, ``elu``, ...) are pointwise: the chunk is computed
locally and keeps its layout; ``inplace=True`` writes the chunk and returns the input
itself, as torch does. ``prelu``'s weight is replicated and enters the split data like
any replicated operand (its gradient is summed over ranks). ``glu`` halves an axis: along
a non-split axis it is local, along the split axis both halves are redistributed to the
balanced layout of the result first. ``softmax``, ``log_softmax`` and ``softmin`` are local
along a non-split axis; along the split axis every rank exponentiates its chunk against its
own maximum and one allgather of the chunks' logsumexps gives the global normalizer (one
allreduce backward; gradients of any order are exact). Dropout in training mode (``dropout``,
``dropout1d/2d/3d``, ``alpha_dropout``, ``feature_alpha_dropout`` and torch's own forms) draws
its mask from torchheat's random stream (:mod:`torchheat.ops.random`), so the output does not
depend on the number of processes; the mask is multiplied into the chunk (exact gradients).

Examples
--------
>>> import torch, torch.nn.functional as F, torchheat as th
>>> t = torch.linspace(-3, 3, 24).reshape(6, 4)  # the same global tensor on every rank
>>> x = th.distribute(t, split=0)
>>> bool(torch.allclose(F.softmax(x, dim=0).full(), F.softmax(t, dim=0)))
True
>>> F.relu(x).split_dim, F.glu(x, dim=0).shape
(0, torch.Size([3, 4]))
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..config import NotDistributedError
from ..tensor import DistTensor, wrap
from .pointwise import elementwise, write_out
from .random import draw
from .reductions import gather_parts

# Single-input activations with scalar parameters only.
ACTIVATIONS = [
    "relu", "relu6", "gelu", "silu", "mish", "sigmoid", "tanh", "softplus", "softsign", "elu", "selu", "celu",
    "leaky_relu", "hardtanh", "hardsigmoid", "hardswish", "logsigmoid", "threshold", "tanhshrink", "softshrink",
    "hardshrink",
]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _funcs(name: str):
    """Every alias of an activation, with nn.functional's in-place form (``F.elu_``)."""
    extra = getattr(F, name + "_", None)
    return d.aliases(name) + ([extra] if extra is not None else [])


def _has_tensor(args, kwargs) -> bool:
    for a in args:
        if isinstance(a, torch.Tensor):
            return True
    for v in kwargs.values():
        if isinstance(v, torch.Tensor):
            return True
    return False


# -- activations ---------------------------------------------------------------------------
def activation(func, args, kwargs):
    """Handler of single-input activations: compute the chunk, keep the layout.

    In-place calls (``F.relu(x, inplace=True)``, ``x.relu_()``) return ``x`` itself. Any
    other call pattern (tensor parameters, keyword input) goes to the pointwise handler.
    """
    x = args[0] if args else None
    if not isinstance(x, DistTensor) or _has_tensor(args[1:], kwargs):
        return elementwise(func, args, kwargs)
    out = d.run_local(func, args, kwargs)
    if out is x:  # written in place
        return x
    return wrap(out, x._split, x._comm, x._gshape, x._counts)


def rrelu(func, args, kwargs):
    """``rrelu``: deterministic in eval mode; training mode draws noise per negative element,
    which no layout can reproduce independently of the number of processes."""
    training = args[3] if len(args) > 3 else kwargs.get("training", False)
    split = [a for a in args if isinstance(a, DistTensor) and a._split is not None]
    if training and split:
        raise NotDistributedError(
            f"{d.func_name(func)}(training=True) draws random slopes per negative element and has no distributed "
            f"rule for a tensor split along {split[0]._split}; use training=False, or resplit to None first"
        )
    return activation(func, args, kwargs)


def prelu(func, args, kwargs):
    """``prelu(x, weight)``: weight (1 or C values for the channels of axis 1) is replicated;
    along a split channel axis each rank uses its channels' slice of it."""
    x = args[0] if args else kwargs["input"]
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    gshape, wshape = d.shape_of(x), d.shape_of(weight)
    channels = gshape[1] if len(gshape) >= 2 else 1
    if len(wshape) > 1 or wshape.numel() not in (1, channels):
        d.raise_global_error(func, args, kwargs)
    comm = d.common_comm(t for t in (x, weight) if isinstance(t, DistTensor))
    if isinstance(weight, DistTensor):
        weight = d.to_layout(weight, None, None).local
    if not isinstance(x, DistTensor) or x._split is None:
        local = x.local if isinstance(x, DistTensor) else x
        return wrap(d.run_local(func, (local, weight), {}), None, comm, gshape, None)
    weight = cf.enter_replicated(weight, comm)
    if x._split == 1 and weight.numel() > 1:
        weight = weight.narrow(0, x.offset, x._counts[comm.rank])
    return wrap(d.run_local(func, (x.local, weight), {}), x._split, comm, gshape, x._counts)


# -- glu -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def halves_plan(gshape, axis: int, counts: layout.Counts, rank: int):
    """How the two halves of a split axis move to the balanced layout of one half.

    Returns, for the first and the second half, ``(start, length, send, recv, out_shape)``:
    the rows of this rank's chunk that belong to it and the exchange plan that brings it
    to the balanced layout (see :func:`torchheat.layout.exchange_plan`).

    >>> [p[:2] for p in halves_plan((4, 3), 0, (3, 1), 0)]
    [(0, 2), (2, 1)]
    """
    half = gshape[axis] // 2
    shape = gshape[:axis] + (half,) + gshape[axis + 1:]
    first = tuple(max(0, min(c, half - o)) for o, c in zip(layout.offsets(counts), counts))
    second = tuple(c - f for c, f in zip(counts, first))
    target = layout.balanced_counts(half, len(counts))
    return tuple(
        (start, part[rank]) + layout.exchange_plan(shape, axis, part, axis, target, rank)
        for start, part in ((0, first), (first[rank], second))
    )


def glu(func, args, kwargs):
    """``glu(x, dim)``: first half of ``dim`` times the sigmoid of the second half."""
    x = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", -1)
    gshape, ndim = x._gshape, len(x._gshape)
    if ndim == 0 or not -ndim <= dim < ndim or gshape[dim] % 2:
        d.raise_global_error(func, args, kwargs)
    dim %= ndim
    out_shape = gshape[:dim] + (gshape[dim] // 2,) + gshape[dim + 1:]
    if dim != x._split:
        return wrap(d.run_local(func, (x, dim), {}), x._split, x._comm, torch.Size(out_shape), x._counts)
    # Row i of the result needs rows i and i + n/2: move both halves to the result's layout.
    comm, local = x._comm, x.local
    halves = [cf.exchange(local.narrow(dim, start, n), comm, send, recv, shape)
              for start, n, send, recv, shape in halves_plan(tuple(gshape), dim, x._counts, comm.rank)]
    out = d.run_local(func, (torch.cat(halves, dim), dim), {})
    return wrap(out, dim, comm, torch.Size(out_shape), layout.balanced_counts(out_shape[dim], comm.size))


# -- softmax -------------------------------------------------------------------------------
def _global_softmax(t: torch.Tensor, dim: int, comm, log: bool) -> torch.Tensor:
    """(log-)softmax of the chunks ``t`` of a tensor split along ``dim`` (no autograd).

    ``exp(t - shift)`` with this chunk's maximum as ``shift`` (0 where the chunk is all
    ``-inf``: it then adds nothing), the chunk's logsumexp ``shift + log(sum)``, and the
    global logsumexp of those (one allgather; torch's logsumexp propagates NaN and inf).
    """
    if t.shape[dim]:
        shift = t.amax(dim, keepdim=True)
        shift = shift.masked_fill(shift == -math.inf, 0)
    else:  # an empty chunk: its logsumexp is -inf
        shift = t.new_zeros(layout.local_shape(t.shape, dim, 1))
    out = (t - shift).exp_()
    part = out.sum(dim, keepdim=True).log_().add_(shift)
    total = torch.logsumexp(gather_parts([part], comm)[0], 0)
    if log:
        return torch.sub(t, total, out=out)
    return out.mul_(shift.sub_(total).exp_())


def _global_sum(t: torch.Tensor, dim: int, comm) -> torch.Tensor:
    """The sum of the split tensor ``t`` over its split axis ``dim`` (keepdim), entering the
    split data again: differentiable, one allreduce."""
    return cf.enter_replicated(cf.all_reduce(t.sum(dim, keepdim=True), comm), comm)


class _GlobalSoftmax(torch.autograd.Function):
    """Backward needs the sum over the whole split axis of grad * softmax (or of grad for
    log_softmax): one allreduce, written with differentiable collectives so that second
    derivatives are exact too."""

    @staticmethod
    def forward(ctx, t, dim, comm, log):
        out = _global_softmax(t, dim, comm, log)
        ctx.save_for_backward(out)
        ctx.args = (dim, comm, log)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        dim, comm, log = ctx.args
        if log:
            return grad - out.exp() * _global_sum(grad, dim, comm), None, None, None
        return out * (grad - _global_sum(grad * out, dim, comm)), None, None, None


_FAMILY = {}  # func -> "softmax" | "log_softmax" | "softmin"


def softmax(func, args, kwargs):
    """``softmax`` / ``log_softmax`` / ``softmin`` along ``dim``, in ``dtype`` if given."""
    name = _FAMILY[func]
    if kwargs.get("out") is not None:  # computed as usual, then written in out's layout
        kwargs = dict(kwargs)
        out = kwargs.pop("out")
        return write_out(out, softmax(func, args, kwargs), func, (args, {**kwargs, "out": out}))
    x = args[0] if args else kwargs["input"]
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    dtype = args[2] if len(args) > 2 else kwargs.get("dtype")
    ndim = len(x._gshape)
    if dim is None:  # nn.functional's legacy implicit dim (it warns)
        dim = F._get_softmax_dim(name, ndim, kwargs.get("_stacklevel", 3) + 3)
        kwargs = {**kwargs, "dim": dim}
    if x._gshape.numel() and not (dtype or x.dtype).is_floating_point:
        # torch raises this for non-empty tensors only: raise it on every rank alike
        stand_in = torch.zeros((1,) * ndim, dtype=x.dtype)
        d.run_local(func, (stand_in,) + tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "input"})
    along_split = x._split is not None and isinstance(dim, int) and -ndim <= dim < ndim and dim % ndim == x._split
    if not along_split or x._comm.size == 1 or not x._gshape.numel():  # the chunk holds the whole axis, or nothing
        return wrap(d.run_local(func, args, kwargs), x._split, x._comm, x._gshape, x._counts)
    t = x.local if dtype is None else x.local.to(dtype)
    out_dtype = t.dtype
    if out_dtype in _LOW_PRECISION:  # accumulate in float32, like torch's kernels
        t = t.float()
    if name == "softmin":
        t = -t
    log = name == "log_softmax"
    if t.requires_grad and torch.is_grad_enabled():
        out = _GlobalSoftmax.apply(t, x._split, x._comm, log)
    else:
        out = _global_softmax(t, x._split, x._comm, log)
    return wrap(out.to(out_dtype), x._split, x._comm, x._gshape, x._counts)


# -- dropout -------------------------------------------------------------------------------
_SELU_ALPHA = 1.7580993408473766  # ATen's alpha dropout constant


def dropout_mask(x: DistTensor, p: float, training: bool, inplace: bool, channels=None, alpha: bool = False):
    """ATen's dropout on a DistTensor, the mask drawn from the global random stream.

    ``channels``: the number of leading axes the mask varies over (feature dropout: 2, or 1
    for an unbatched input; None: every axis). The mask is split like ``x`` when ``x``'s split
    axis is among them, otherwise replicated (every rank draws all of it).
    """
    if not 0 <= p <= 1:
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")
    gshape, ndim = x._gshape, len(x._gshape)
    if not training:  # (torch checks nothing else then)
        return x
    if channels is not None and ndim < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    if p == 0 or gshape.numel() == 0:
        return x
    k = ndim if channels is None else channels
    split = x._split if x._split is not None and x._split < k else None
    counts = x._counts if split is not None else None
    shift = None
    if p == 1:
        noise = x.local.new_zeros(())
    else:
        noise = draw(gshape[:k] + (1,) * (ndim - k), split, counts, x._comm, x.dtype, x.device,
                     lambda t, g: t.bernoulli_(1 - p, generator=g))
        if alpha:
            a = 1.0 / math.sqrt((_SELU_ALPHA ** 2 * p + 1) * (1 - p))
            shift = noise.add(-1).mul_(_SELU_ALPHA * a).add_(_SELU_ALPHA * a * p)
            noise.mul_(a)
        else:
            noise.div_(1 - p)
    if inplace:  # (dispatch is off: x is its local chunk)
        x.mul_(noise)
        return x if shift is None else x.add_(shift)
    out = x.local * noise
    return wrap(out if shift is None else out + shift, x._split, x._comm, gshape, x._counts)


def _dropout_args(func, args, kwargs, training_default):
    names = ("input", "p", "training", "inplace")
    values = dict(zip(names, args), **kwargs)
    return values["input"], values.get("p", 0.5), values.get("training", training_default), values.get("inplace", False)


def _channels(name: str, ndim: int):
    """Leading axes of a feature dropout's mask, as nn.functional treats the input (with its warnings)."""
    if name == "dropout1d":
        if ndim not in (2, 3):
            raise RuntimeError(f"dropout1d: Expected 2D or 3D input, but received a {ndim}D input. Note that dropout1d "
                               "exists to provide channel-wise dropout on inputs with 1 spatial dimension, a channel "
                               "dimension, and an optional batch dimension (i.e. 2D or 3D inputs).")
        return 2 if ndim == 3 else 1
    expected = (3, 4) if name == "dropout2d" else (4, 5)
    if ndim not in expected:
        warnings.warn(f"{name}: Received a {ndim}-D input to {name}, which is deprecated and will result in an error "
                      "in a future release. To retain the behavior and silence this warning, please use dropout "
                      "instead.", stacklevel=4)
    if name == "dropout2d" and ndim == 3:
        warnings.warn("dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior "
                      "is desired - input is interpreted as shape (N, C, L), where C is the channel dim.", stacklevel=4)
    return 2 if name == "dropout2d" or ndim == 5 else 1


def functional_dropout(func, args, kwargs):
    """``F.dropout``, ``F.dropout1d/2d/3d``, ``F.alpha_dropout``, ``F.feature_alpha_dropout``."""
    name = func.__name__
    x, p, training, inplace = _dropout_args(func, args, kwargs, name not in ("alpha_dropout", "feature_alpha_dropout"))
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    channels = _channels(name, len(x._gshape)) if name in ("dropout1d", "dropout2d", "dropout3d") else None
    if name == "feature_alpha_dropout":
        channels = 2
    return dropout_mask(x, p, training, inplace, channels, alpha="alpha" in name)


def aten_dropout(func, args, kwargs):
    """``torch.dropout(input, p, train)`` and its feature / alpha / in-place forms."""
    name = func.__name__
    values = dict(zip(("input", "p", "train"), args), **kwargs)
    if set(values) != {"input", "p", "train"}:
        d.run_local(func, args, kwargs)  # torch's TypeError for the call
    channels = 2 if "feature" in name else None
    return dropout_mask(values["input"], values["p"], values["train"], name.endswith("_"), channels, alpha="alpha" in name)


d.register([F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout],
           functional_dropout)
d.register([getattr(torch, kind + suffix) for kind in ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
            for suffix in ("", "_")], aten_dropout)
for _name in ACTIVATIONS:
    d.register(_funcs(_name), activation)
d.register(_funcs("rrelu"), rrelu)
d.register(d.aliases("prelu"), prelu)
d.register(d.aliases("glu"), glu)
for _name in ("softmax", "log_softmax", "softmin"):
    _FAMILY.update(dict.fromkeys(d.aliases(_name), _name))
    d.register(d.aliases(_name), softmax)
