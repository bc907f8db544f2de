"""Normalization layers on batch-split inputs: batch norm with global statistics, the rest local.

``batch_norm`` in training mode normalizes with the statistics of the GLOBAL batch
(SyncBatchNorm semantics): every rank takes the per-channel mean and sum of squared
deviations of its chunk, one allgather of those small parts and Chan's merge
(:func:`torchheat.ops.reductions.merge_moments`) give the global mean and variance on every
rank, and the running statistics are updated with them alike on every rank (unbiased
variance, as torch). The statistics enter the split data as replicated operands, so the
gradients of the input, weight and bias are exact. The input may be split along any axis
but the channels (spatial splits work alike). In eval mode batch norm is local.

``layer_norm``, ``rms_norm`` (split before the normalized axes), ``group_norm``,
``local_response_norm`` and ``instance_norm`` (batch axis) are local on each rank's
samples; ``instance_norm`` updating running statistics averages each rank's update weighted
by its samples (one allreduce).

Examples
--------
>>> import torch, torch.nn.functional as F, torchheat as th
>>> t = torch.randn(8, 3, 4)
>>> mean, var = torch.zeros(3), torch.ones(3)
>>> y = F.batch_norm(th.distribute(t, split=0), mean, var, training=True)
>>> bool(torch.allclose(y.full(), F.batch_norm(t, torch.zeros(3), torch.ones(3), training=True), atol=1e-5))
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dispatch as d
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from .batch import Batched, arg, local_call, parameter
from .nn_layers import layer, leading
from .reductions import chunk_moments, gather_parts, merge_moments

_BATCH_NORM = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")


def batch_norm(func, args, kwargs):
    """``F.batch_norm``: global batch statistics in training, local in eval."""
    v = {n: arg(args, kwargs, i, n) for i, n in enumerate(_BATCH_NORM)}
    x, training = v["input"], v["training"] or (v["running_mean"] is None and v["running_var"] is None)
    if not isinstance(x, DistTensor) or x._split is None or len(x._gshape) < 2 or x._split == 1:
        return d.no_rule(func, args, kwargs)
    if not training:
        return local_call(func, args, kwargs, [Batched(0, "input", x._split)], x._split)
    F._verify_batch_size(x._gshape)
    gshape, comm, local = x._gshape, x._comm, x.local
    channels = gshape[1]
    for name in ("running_mean", "running_var", "weight", "bias"):
        t = v[name]
        if t is not None and d.shape_of(t).numel() != channels:
            d.raise_global_error(func, args, kwargs)
    dims = [i for i in range(len(gshape)) if i != 1]
    per_row = gshape.numel() // gshape[x._split] // channels
    counts = [c * per_row for c in x._counts]
    means, m2s = gather_parts(chunk_moments(local, dims, counts[comm.rank]), comm)
    mean, m2 = merge_moments(means, m2s, counts)
    total = sum(counts)
    mean, var = cf.enter_replicated(mean, comm), cf.enter_replicated(m2 / total, comm)
    out = (local - mean.to(local.dtype)) * torch.rsqrt(var + v["eps"]).to(local.dtype)
    shape = (1, channels) + (1,) * (len(gshape) - 2)
    if v["weight"] is not None:
        out = out * parameter(v["weight"], comm).reshape(shape)
    if v["bias"] is not None:
        out = out + parameter(v["bias"], comm).reshape(shape)
    momentum = v["momentum"] if v["momentum"] is not None else 0.1
    with torch.no_grad():  # the same update on every rank: the statistics are replicated
        unbiased = m2 / max(total - 1, 1) if total > 1 else m2.new_full(m2.shape, float("nan"))
        for name, stat in (("running_mean", mean), ("running_var", unbiased)):
            if v[name] is not None:
                running = _mine(v[name], stat.reshape(-1))
                _plain(v[name]).mul_(1 - momentum).add_(running.to(v[name].dtype), alpha=momentum)
    return wrap(out, x._split, comm, gshape, x._counts)


def _plain(t):
    return t.local if isinstance(t, DistTensor) else t


def _mine(t, full: torch.Tensor) -> torch.Tensor:
    """The part of a replicated per-channel value ``full`` that ``t`` (a buffer, maybe split) holds."""
    if isinstance(t, DistTensor) and t._split is not None:
        return full.narrow(0, t.offset, t._counts[t._comm.rank])
    return full


_INSTANCE_NORM = ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps")


def instance_norm(func, args, kwargs):
    """``F.instance_norm``: local on the batch axis; an update of running statistics is the
    average of the ranks' updates weighted by their samples (one allreduce)."""
    v = {n: arg(args, kwargs, i, n, True if n == "use_input_stats" else None) for i, n in enumerate(_INSTANCE_NORM)}
    plan = leading(lambda ndim, a, k: ndim - 1)(args, kwargs)
    if plan is None:
        return d.no_rule(func, args, kwargs)
    stats = [v[n] for n in ("running_mean", "running_var") if v[n] is not None]
    if not (v["use_input_stats"] and stats):
        return local_call(func, args, kwargs, *plan)
    x = v["input"]
    comm = x._comm
    copies = [(d.to_layout(t, None, None).local if isinstance(t, DistTensor) else t).detach().clone() for t in stats]
    values = dict(v, running_mean=copies[0] if v["running_mean"] is not None else None,
                  running_var=copies[-1] if v["running_var"] is not None else None)
    out = local_call(func, (), values, [Batched(None, "input", 0)], 0)
    share = x._counts[comm.rank] / x._gshape[0]
    with torch.no_grad():
        updated = cf.all_reduce(torch.cat([c.reshape(-1) * share for c in copies]), comm)
        for t, new in zip(stats, updated.split([c.numel() for c in copies])):
            _plain(t).copy_(_mine(t, new))
    return out


def _normalized_axes(ndim, args, kwargs):
    shape = arg(args, kwargs, 1, "normalized_shape")
    return 1 if isinstance(shape, int) else len(shape)


d.register([F.batch_norm], batch_norm)
d.register([F.instance_norm], instance_norm)
d.register([F.layer_norm, torch.layer_norm], layer(leading(_normalized_axes)))
d.register([F.rms_norm, torch.rms_norm], layer(leading(_normalized_axes)))
d.register([F.group_norm, torch.group_norm], layer(leading(lambda ndim, a, k: ndim - 1)))
d.register([F.local_response_norm], layer(leading(lambda ndim, a, k: ndim - 1)))
