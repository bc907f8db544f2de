"""nn.functional losses on batch-split inputs: per-sample losses locally, global reductions.

Every loss is computed in two steps. First ``reduction="none"`` on this rank's samples
(:func:`torchheat.ops.batch.local_call`: targets, masks and per-element weights are sliced
to the input's layout; class weights are replicated parameters). Then the reduction is
global: ``"none"`` keeps the split per-sample losses, ``"sum"`` is one allreduce of the
local sums, ``"mean"`` divides that by the global denominator torch uses: the number of
per-sample losses; for ``cross_entropy``/``nll_loss`` with class indices the sum of the
weights of the non-ignored targets (summed in the same allreduce); for ``kl_div``'s
``"batchmean"`` the global batch size; for ``ctc_loss`` the batch size after dividing each
sample's loss by its target length. All of it is differentiable (the allreduce's backward
hands the replicated gradient to every rank's samples). An error only some ranks see (a
class index out of range on one rank) is agreed on (one one-byte allreduce) before the sum.

Examples
--------
>>> import torch, torch.nn.functional as F, torchheat as th
>>> logits, labels = torch.randn(6, 4), torch.tensor([0, 3, 1, 1, 2, 0])
>>> loss = F.cross_entropy(th.distribute(logits, split=0), labels)   # plain labels are sliced
>>> loss.split_dim, bool(torch.allclose(loss.full(), F.cross_entropy(logits, labels)))
(None, True)
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.nn import _reduction

from .. import dispatch as d
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from .batch import Batched, local_call, parameter


def _input_split(values, name):
    x = values.get(name)
    return x._split if isinstance(x, DistTensor) and x._split is not None else None


def elementwise(*names, first="input"):
    """Plan of an elementwise loss: split along any axis; ``names`` carry it right-aligned
    (a broadcast one is used whole); the per-element losses keep it."""
    def plan(v):
        s = _input_split(v, first)
        if s is None:
            return None
        ndim = v[first].dim()
        batched = [Batched(None, first, s)]
        for n in names:
            t = v.get(n)
            if isinstance(t, torch.Tensor) and s - ndim + t.dim() >= 0:
                batched.append(Batched(None, n, s - ndim + t.dim()))
        return batched, s
    return plan


def per_sample(*names, first="input", axis=0, aligned=()):
    """Plan of a loss of whole samples (batch axis ``axis``, the others mixed): ``names``
    carry the batch axis first, ``aligned`` ones (broadcast to the input) right-aligned;
    the per-sample losses are split along 0."""
    def plan(v):
        if _input_split(v, first) != axis or v[first].dim() < 2:
            return None
        ndim = v[first].dim()
        batched = [Batched(None, first, axis)] + [Batched(None, n, 0) for n in names if isinstance(v.get(n), torch.Tensor)]
        batched += [Batched(None, n, axis - ndim + v[n].dim()) for n in aligned
                    if isinstance(v.get(n), torch.Tensor) and axis - ndim + v[n].dim() >= 0]
        return batched, 0
    return plan


def classes(v):
    """Plan of ``cross_entropy``/``nll_loss``: input ``(N, C, d...)`` split along any axis but
    the classes; index targets ``(N, d...)`` or probabilities ``(N, C, d...)`` alike."""
    s = _input_split(v, "input")
    x, target = v["input"], v["target"]
    if s is None or x.dim() < 2 or s == 1 or not isinstance(target, torch.Tensor):
        return None
    t = 0 if s == 0 else s - x.dim() + target.dim()
    return [Batched(None, "input", s), Batched(None, "target", t)], max(s - 1, 0)  # (the losses have no class axis)


def linear_classes(v):
    """Plan of ``linear_cross_entropy``: input ``(..., features)`` split before the features,
    index targets ``(...)`` alike."""
    s = _input_split(v, "input")
    if s is None or s == v["input"].dim() - 1 or not isinstance(v["target"], torch.Tensor):
        return None
    return [Batched(None, "input", s), Batched(None, "target", s)], s


def gaussian(v):
    """``gaussian_nll_loss``: ``var`` may have one axis fewer than the input (it is then
    unsqueezed at the end), so it carries the split axis from the left."""
    plan = elementwise("target")(v)
    var = v.get("var")
    if plan is None or not isinstance(var, torch.Tensor):
        return plan
    s = plan[1]
    if var.dim() == v["input"].dim() - 1:
        return (plan[0] + [Batched(None, "var", s)] if s < var.dim() else plan[0]), s
    return (plan[0] + [Batched(None, "var", s - v["input"].dim() + var.dim())]), s


def ctc(v):
    """``ctc_loss``: log_probs ``(T, N, C)`` split along N; padded targets ``(N, S)``."""
    if _input_split(v, "log_probs") != 1 or v["log_probs"].dim() != 3 or v["targets"].dim() != 2:
        return None
    names = ("targets", "input_lengths", "target_lengths")
    for n in names[1:]:  # lengths given as lists of ints are per-sample too
        if isinstance(v[n], (list, tuple)):
            v[n] = torch.tensor(v[n], dtype=torch.long)
    return [Batched(None, "log_probs", 1)] + [Batched(None, n, 0) for n in names if isinstance(v[n], torch.Tensor)], 0


PLANS = {
    "mse_loss": elementwise("target"),
    "l1_loss": elementwise("target"),
    "smooth_l1_loss": elementwise("target"),
    "huber_loss": elementwise("target", "weight"),
    "binary_cross_entropy": elementwise("target", "weight"),
    "binary_cross_entropy_with_logits": elementwise("target", "weight", "pos_weight"),
    "soft_margin_loss": elementwise("target"),
    "poisson_nll_loss": elementwise("target"),
    "kl_div": elementwise("target"),
    "hinge_embedding_loss": elementwise("target"),
    "margin_ranking_loss": elementwise("input2", "target", first="input1"),
    "gaussian_nll_loss": gaussian,
    "cross_entropy": classes,
    "nll_loss": classes,
    "multi_margin_loss": per_sample("target"),
    "multilabel_margin_loss": per_sample("target"),
    "multilabel_soft_margin_loss": per_sample("target", aligned=("weight",)),
    "cosine_embedding_loss": per_sample("input2", "target", first="input1"),
    "triplet_margin_loss": per_sample("positive", "negative", first="anchor"),
    "triplet_margin_with_distance_loss": per_sample("positive", "negative", first="anchor"),
    "ctc_loss": ctc,
    "linear_cross_entropy": linear_classes,
}
def _weight_of_targets(v, comm, axis: int, like: DistTensor) -> torch.Tensor:
    """This rank's sum of the class weights of its non-ignored index targets (the mean's
    denominator of ``cross_entropy``/``nll_loss``)."""
    target = local_rows(v["target"], axis, like)
    keep = target != (-100 if v["ignore_index"] is None else v["ignore_index"])
    if v.get("weight") is None:
        return keep.sum().to(torch.float64)
    weight = parameter(v["weight"], comm)
    return (weight[target.clamp(min=0) * keep] * keep).sum()


def loss(func, args, kwargs):
    """Handler of every loss in :data:`PLANS`."""
    name = func.__name__
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    v = dict(bound.arguments)
    plan = PLANS[name](v)
    if plan is None:
        return d.no_rule(func, args, kwargs)
    reduction = v["reduction"]
    if v.get("size_average") is not None or v.get("reduce") is not None:
        reduction = _reduction.legacy_get_string(v["size_average"], v["reduce"])
        v["size_average"] = v["reduce"] = None
    batched, axis = plan
    lead = v[batched[0].name]
    comm = lead._comm
    none = local_call(func, (), {**v, "reduction": "none"}, batched, axis, agree=True)  # (a bad class or probability)
    if reduction == "none":
        return none
    if reduction not in ("mean", "sum", "batchmean") or (reduction == "batchmean" and name != "kl_div"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    part = none.local
    if name == "ctc_loss" and reduction == "mean":  # each sample's loss over its target length
        lengths = local_rows(v["target_lengths"], 0, none)
        part = part / lengths.clamp(min=1).to(part.dtype)
    total = part.sum()
    if reduction == "sum":
        return wrap(cf.all_reduce(total, comm), None, comm, torch.Size(()), None)
    if name in ("cross_entropy", "nll_loss", "linear_cross_entropy") and not v["target"].is_floating_point():
        both = cf.all_reduce(torch.stack([total, _weight_of_targets(v, comm, batched[1].axis, none).to(total.dtype)]), comm)
        return wrap(both[0] / both[1], None, comm, torch.Size(()), None)
    if reduction == "batchmean":
        count = lead._gshape[0] if lead.dim() else 1
    elif name == "ctc_loss":
        count = none._gshape[0]
    else:
        count = none._gshape.numel()
    return wrap(cf.all_reduce(total, comm) / count, None, comm, torch.Size(()), None)


def local_rows(t, axis: int, like: DistTensor) -> torch.Tensor:
    """This rank's rows along ``axis`` of a tensor (plain or DistTensor) in ``like``'s layout."""
    if isinstance(t, DistTensor):
        if t._split is not None:
            return d.to_layout(t, axis, like._counts).local
        t = t.local
    return t.narrow(axis, like.offset, like._counts[like._comm.rank])


d.register([getattr(F, n) for n in PLANS], loss)
