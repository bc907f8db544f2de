"""The batch-parallel rule shared by nn.functional layers, normalization, losses and RNNs.

Most of ``torch.nn.functional`` treats the samples of a batch independently: on an input
split along its batch axis, every rank computes its samples with plain torch and the
result keeps the split. A rule only says which tensor arguments carry the batch axis and
where (:class:`Batched`), and where the outputs carry it; :func:`local_call` does the rest:

* the first batched argument split along its batch axis sets the layout (its counts);
* every other batched argument is brought to that layout: a replicated or plain one is
  sliced to this rank's samples, one split otherwise is exchanged (never gathered); an
  argument whose batch axis has length 1 (broadcast) is used whole;
* every other tensor (weights, biases, running statistics, ...) is a replicated parameter:
  it enters through :func:`torchheat.comm.functional.enter_replicated`, so its gradient is
  summed over ranks in backward (one allreduce per parameter);
* a rank with no samples does not call torch (some kernels refuse an empty batch, in
  forward or in backward): it gets an empty result of the right shape that still holds
  every input in its autograd graph, so every rank runs the same collectives in backward.

No communication in forward, except one one-byte allreduce that agrees on errors where an
argument holds integer values torch checks (embedding indices, targets, ...): a rank that
sees a bad value raises, and so does every other rank, with torch's exception type and
message, instead of waiting in the next collective. With no argument split along its batch axis the call goes to
the fallback policy of :func:`torchheat.dispatch.no_rule` (a replicated call runs locally).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.randn(6, 4), split=0)
>>> torch.nn.Linear(4, 3)(x).split_dim
0
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from .. import dispatch as d, layout
from ..config import NotDistributedError
from ..tensor import DistTensor, wrap
from .random import _fill_range, _flat_range, _splitmix64, default_generator


class Batched(NamedTuple):
    """A tensor argument that carries the batch axis: its position (None: keyword only),
    its name, the batch axis in it, and how many of its rows make one sample (attention
    masks of ``N * heads`` rows)."""

    pos: Optional[int]
    name: str
    axis: int
    rows: int = 1


def arg(args, kwargs, pos: Optional[int], name: str, default=None):
    """The value of an argument given by position or by keyword."""
    if pos is not None and len(args) > pos:
        return args[pos]
    return kwargs.get(name, default)


def put(args: list, kwargs: dict, pos: Optional[int], name: str, value) -> None:
    """Replace an argument given by position or by keyword (in place)."""
    if pos is not None and len(args) > pos:
        args[pos] = value
    elif name in kwargs:
        kwargs[name] = value


def split_along(t, axis: int) -> bool:
    return isinstance(t, DistTensor) and t._split is not None and t._split == axis % max(len(t._gshape), 1)


def lead_of(args, kwargs, batched: Sequence[Batched]):
    """The first batched argument split along its batch axis, and its entry (or None, None)."""
    for b in batched:
        t = arg(args, kwargs, b.pos, b.name)
        if split_along(t, b.axis) and b.rows == 1:
            return t, b
    return None, None


def parameter(t, comm):
    """A replicated parameter's local tensor, entered so that its gradient is summed."""
    if isinstance(t, DistTensor):
        t = d.to_layout(t, None, None).local
    return d.replicated_operand(t, comm, -1, 0, 0)


def local_call(func: Callable, args: tuple, kwargs: dict, batched: Sequence[Batched], out_axes,
               local_func: Optional[Callable] = None, agree: Optional[bool] = None, random: Optional[int] = None):
    """Run a batch-parallel call on this rank's samples (see the module docstring).

    ``out_axes``: the batch axis of the output, or one entry per output (None for an output
    without it, which must then be the same on every rank). ``local_func`` computes on the
    local tensors in place of ``func`` (``func`` still names the call in errors). ``agree``:
    whether an error of the local call may depend on the values, so that only some ranks see
    it (an index out of range, a probability above 1): it is then agreed on (one one-byte
    allreduce), and every rank raises it. By default, when an argument is an integer or bool
    tensor (indices, targets, masks: the values torch checks); float-only layers communicate
    nothing in forward. ``random``: the call is an attention with dropout, whose masks then come
    from torchheat's stream (:class:`StreamDropout`), not from torch's generator; the value is
    the batch axis of its attention weights (None: no dropout).
    """
    lead, entry = lead_of(args, kwargs, batched)
    if lead is None:
        return d.no_rule(func, args, kwargs)
    comm, counts, axis = lead._comm, lead._counts, entry.axis % len(lead._gshape)
    n, start, count = lead._gshape[axis], layout.offsets(counts)[comm.rank], counts[comm.rank]
    batched_ids = {id(t) for b in batched for t in pytree.tree_leaves(arg(args, kwargs, b.pos, b.name))}
    largs, lkwargs = pytree.tree_map(lambda t: parameter(t, comm) if isinstance(t, torch.Tensor) and id(t) not in batched_ids
                                     else t, (list(args), dict(kwargs)))

    def to_local(t, b):
        if not isinstance(t, torch.Tensor):
            return t
        a = b.axis % t.dim() if t.dim() else 0
        if not t.dim() or d.shape_of(t)[a] != n * b.rows:  # broadcast along the batch axis
            return parameter(t, comm)
        if isinstance(t, DistTensor) and t._split is not None:
            return d.to_layout(t, a, tuple(c * b.rows for c in counts)).local
        return d.replicated_operand(t, comm, a, start * b.rows, count * b.rows)

    for b in batched:  # (a tuple of tensors, like an LSTM's (h, c), has the axis in each)
        put(largs, lkwargs, b.pos, b.name, pytree.tree_map(lambda t: to_local(t, b), arg(args, kwargs, b.pos, b.name)))
    run = local_func or func
    out, error = None, None
    try:
        with StreamDropout(default_generator._next_key(), random, counts, comm.rank) if random is not None \
                else contextlib.nullcontext():
            if not count:  # (not torch on an empty batch: some kernels refuse one, in forward or in backward)
                out = empty_result(run, largs, lkwargs, batched, out_axes)
            else:
                out = d.run_local(run, tuple(largs), lkwargs)
    except Exception as e:
        error = e if isinstance(e, NotDistributedError) else torch_error(func, args, kwargs, e)
    if agree if agree is not None else any(isinstance(t, torch.Tensor) and not (t.is_floating_point() or t.is_complex())
                                           for t in pytree.tree_leaves((args, kwargs))):
        d.agree(comm, error)
    elif error is not None:
        raise error
    return wrap_outputs(out, out_axes, comm, counts, n)


def torch_error(func, args, kwargs, error: Exception) -> Exception:
    """torch's exception for the call on the global shapes, or ``error`` (the local one)
    where the global shapes alone raise nothing (an error that depends on the values)."""
    try:
        d.raise_global_error(func, args, kwargs)
    except Exception as global_error:
        if type(global_error) is RuntimeError and str(global_error).endswith("are not compatible"):
            return error
        return global_error
    return error


def wrap_outputs(out, out_axes, comm, counts, n: int):
    """Wrap local outputs: split along their batch axis (of global length ``n``) with
    ``counts``, or replicated where the axis is None."""
    single = isinstance(out, torch.Tensor)
    outs = [out] if single else list(out)
    axes = _axes(out, out_axes)
    wrapped = []
    for o, a in zip(outs, axes):
        if not isinstance(o, torch.Tensor):
            wrapped.append(o)
        elif a is None:
            wrapped.append(wrap(o, None, comm, o.shape, None))
        else:
            shape = list(o.shape)
            shape[a] = n
            wrapped.append(wrap(o, a, comm, torch.Size(shape), counts))
    if single:
        return wrapped[0]
    return type(out)(*wrapped) if hasattr(out, "_fields") else type(out)(wrapped)


def _axes(out, out_axes) -> list:
    n = 1 if isinstance(out, torch.Tensor) else len(out)
    return [out_axes] * n if isinstance(out_axes, int) or out_axes is None else list(out_axes)


def _differentiated(func, args, kwargs, stand_ins) -> list:
    """The inputs requiring grad that torch's ``func`` differentiates, found by a backward of
    one sample's stand-ins: the ranks with samples reach exactly these in backward (a target
    used only in comparisons is not reached, and its collective must not run here either)."""
    leaves = pytree.tree_leaves((list(args), dict(kwargs)))
    wanted = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not wanted:
        return []
    margs, mkwargs = stand_ins(None)
    flat, spec = pytree.tree_flatten((list(margs), mkwargs))
    try:
        for i in wanted:
            flat[i] = flat[i].detach().requires_grad_()
        margs, mkwargs = pytree.tree_unflatten(flat, spec)
        with torch.enable_grad():
            out = [o for o in pytree.tree_leaves(d.run_local(func, tuple(margs), mkwargs))
                   if isinstance(o, torch.Tensor) and o.requires_grad]
            if not out:
                return []
            grads = torch.autograd.grad(sum(o.real.sum() if o.is_complex() else o.sum() for o in out),
                                        [flat[i] for i in wanted], allow_unused=True)
    except Exception:  # the stand-ins are not valid values for func: every input, as before
        return [leaves[i] for i in wanted]
    return [leaves[i] for i, g in zip(wanted, grads) if g is not None]


def empty_result(func, args: List, kwargs: dict, batched: Sequence[Batched], out_axes):
    """The outputs of ``func`` for an empty local batch where torch refuses one: their shapes
    come from a meta run on one sample; they are zeros that depend on every input that
    requires grad (with zero gradient), so this rank's backward reaches the same collectives."""
    def one_sample(t, b, device):
        if not isinstance(t, torch.Tensor) or not t.dim():
            return t
        shape = list(t.shape)
        a = b.axis % t.dim()
        if shape[a] == 0:
            shape[a] = b.rows
        return torch.zeros(shape, dtype=t.dtype, device=device or t.device)

    def stand_ins(device):
        margs, mkwargs = pytree.tree_map(lambda t: t.detach().to(device or t.device) if isinstance(t, torch.Tensor) else t,
                                         (list(args), dict(kwargs)))
        for b in batched:
            put(margs, mkwargs, b.pos, b.name,
                pytree.tree_map(lambda t: one_sample(t, b, device), arg(args, kwargs, b.pos, b.name)))
        return tuple(margs), mkwargs

    try:
        meta = d.run_local(func, *stand_ins("meta"))
    except Exception:  # no meta kernel, or a check of the values (var < 0 ...): zeros on the device
        meta = d.run_local(func, *stand_ins(None))
    inputs = _differentiated(func, args, kwargs, stand_ins)
    device = inputs[0].device if inputs else "cpu"

    def zeros(m, a):
        if not isinstance(m, torch.Tensor):
            return m
        shape = list(m.shape)
        if a is not None:
            shape[a] = 0
        z = torch.zeros(shape, dtype=m.dtype, device=device)
        if z.is_floating_point() or z.is_complex():
            for t in inputs:
                z = z + 0 * t.sum()
        return z

    if isinstance(meta, torch.Tensor):
        return zeros(meta, _axes(meta, out_axes)[0])
    out = [zeros(m, a) for m, a in zip(meta, _axes(meta, out_axes))]
    return type(meta)(*out) if hasattr(meta, "_fields") else type(meta)(out)


class StreamDropout(TorchFunctionMode):
    """The local call of an attention with dropout (``scaled_dot_product_attention`` or
    ``multi_head_attention_forward``, intercepted as it runs) drops its attention weights with
    a mask from torchheat's stream: this rank's mask is its part of the mask one process draws
    for the global batch.

    The weights hold this rank's samples along the batch axis ``axis``, a fixed number of rows
    each. ``key`` (one call of the stream, drawn on every rank) keys the masks; a rank with no
    samples runs stand-ins and draws nothing. No communication.
    """

    def __init__(self, key: int, axis: int, counts, rank: int):
        super().__init__()
        self.key, self.axis, self.counts, self.rank, self.calls = key, axis, counts, rank, 0

    def keep(self, shape, p: float, like: torch.Tensor) -> torch.Tensor:
        """The scaled keep mask (``bernoulli(1 - p) / (1 - p)``) of a local tensor of ``shape``."""
        count = self.counts[self.rank]
        if not count:
            return like.new_ones(shape)
        axis = self.axis if len(shape) > self.axis else 0
        rows = shape[axis] // count
        gshape = list(shape)
        gshape[axis] = sum(self.counts) * rows
        flat = _flat_range(gshape, axis, tuple(c * rows for c in self.counts), self.rank)
        if flat is None:
            raise NotDistributedError(f"dropout inside attention draws a mask split along axis {axis} of {tuple(gshape)}, "
                                      "which is not contiguous; split the input along its first axis")
        key = _splitmix64(self.key ^ self.calls)
        self.calls += 1
        mask = like.new_empty(flat[1] - flat[0])
        if p < 1:
            _fill_range(mask, flat[0], torch.Size(gshape).numel(), key, lambda t, g: t.bernoulli_(1 - p, generator=g))
        return (mask.zero_() if p == 1 else mask.div_(1 - p)).view(shape)

    def dropout(self, input, p: float = 0.5, training: bool = True, inplace: bool = False):
        """``F.dropout`` of the attention weights, with the stream's mask."""
        if p < 0.0 or p > 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if not training or p == 0:
            return input
        mask = self.keep(input.shape, p, input)
        return input.mul_(mask) if inplace else input * mask

    def attention(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """``F.scaled_dot_product_attention`` whose weights are dropped with the stream's mask."""
        if not dropout_p > 0:
            return F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale=scale,
                                                  enable_gqa=enable_gqa)
        _, weights = torch.ops.aten._scaled_dot_product_attention_math(
            query, key, value, attn_mask, 0.0, bool(is_causal), None, scale=scale, enable_gqa=bool(enable_gqa))
        if enable_gqa and value.dim() > 2 and value.shape[-3] != query.shape[-3]:
            value = value.repeat_interleave(query.shape[-3] // value.shape[-3], -3)
        return (weights * self.keep(weights.shape, dropout_p, weights)) @ value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self.attention(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return with_stream_dropout(func, self)(*args, **kwargs)
        return func(*args, **kwargs)


def with_stream_dropout(func: Callable, stream: StreamDropout) -> Callable:
    """A copy of torch's Python ``func`` whose ``dropout`` and ``scaled_dot_product_attention``
    are the stream's. (``multi_head_attention_forward`` hands itself to the active mode before
    its body runs, so its body never sees a mode: the copy runs that body without the hand-off.)"""
    names = dict(func.__globals__, has_torch_function=lambda *_: False, dropout=stream.dropout,
                 scaled_dot_product_attention=stream.attention)
    copy = types.FunctionType(func.__code__, names, func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    return copy
