"""nn.functional layers on batch-split inputs: each rank runs its samples, parameters replicated.

Linear and bilinear maps, convolutions (and transposed ones), pooling (with indices,
adaptive, fractional, unpooling), embeddings, one-hot, resampling (``interpolate``,
``grid_sample``, ``affine_grid``, pixel and channel shuffles), ``unfold``/``fold``,
``normalize`` and attention (``scaled_dot_product_attention``,
``multi_head_attention_forward``) treat samples independently. Each op is one line of
:data:`RULES`: which axes of its input may be split (those before the ones it mixes) and
which other arguments carry the same axis; :func:`torchheat.ops.batch.local_call` slices
or moves those to the input's layout, enters the parameters as replicated operands (their
gradients are summed over ranks in backward) and computes with plain torch. No
communication in forward, except ``one_hot`` with an inferred class count (one allreduce
of the maximum), ``embedding`` with ``max_norm`` or ``scale_grad_by_freq`` (one allreduce of
the rows' counts) and ``linear`` on input split along its feature axis (the matmul rule of
:mod:`torchheat.ops.linalg`). Recurrent layers (``torch.lstm``, ``gru``, ``rnn_tanh``,
``rnn_relu``) are local on their batch axis. Random draws (fractional pooling's samples,
dropout of attention weights, dropout between recurrent layers) come from torchheat's random
stream, so results do not depend on the number of processes.

Examples
--------
>>> import torch, torch.nn.functional as F, torchheat as th
>>> t, w = torch.randn(4, 3, 8, 8), torch.randn(5, 3, 3, 3)
>>> y = F.conv2d(th.distribute(t, split=0), w, padding=1)
>>> y.split_dim, bool(torch.allclose(y.full(), F.conv2d(t, w, padding=1), atol=1e-5))
(0, True)
>>> F.max_pool2d(th.distribute(t, split=1), 2).split_dim   # channels are independent too
1
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dispatch as d
from ..config import NotDistributedError
from ..tensor import DistTensor, wrap
from .batch import Batched, arg, local_call, put
from .random import draw
from .shape import call


def leading(mixed, *others, first=(0, "input")):
    """A rule: the input may be split along an axis before its last ``mixed`` axes (an int,
    or a function of the input's number of axes and the call); ``others`` ((position, name)
    pairs) carry the same axis, counted from the right. The output keeps the axis."""
    def rule(args, kwargs):
        x = arg(args, kwargs, *first)
        if not isinstance(x, DistTensor) or x._split is None:
            return None
        ndim, s = len(x._gshape), x._split
        if s >= ndim - (mixed(ndim, args, kwargs) if callable(mixed) else mixed):
            return None
        batched = [Batched(*first, s)]
        for pos, name in others:
            o = arg(args, kwargs, pos, name)
            if isinstance(o, torch.Tensor) and s - ndim + o.dim() >= 0:
                batched.append(Batched(pos, name, s - ndim + o.dim()))
        return batched, s
    return rule


def batched_only(spatial: int):
    """Mixed axes of a layer over ``spatial`` axes with channels: all but the batch axis, and
    all of an unbatched input (whose first axis is channels)."""
    return lambda ndim, args, kwargs: spatial + 1 if ndim == spatial + 2 else ndim


def layer(rule):
    """The handler of a rule: local on this rank's samples, or the fallback policy."""
    def handler(func, args, kwargs):
        plan = rule(args, kwargs)
        if plan is None:
            return d.no_rule(func, args, kwargs)
        return local_call(func, args, kwargs, *plan)
    return handler


# -- rules with more to them -------------------------------------------------------------------
def linear(func, args, kwargs):
    """``linear``: local along every axis but the features; input split along its feature axis
    is a product with the transposed weight (the matmul rule), plus the bias."""
    x, w, b = (arg(args, kwargs, i, n) for i, n in enumerate(("input", "weight", "bias")))
    if isinstance(x, DistTensor) and x._split is not None and x._split == len(x._gshape) - 1 \
            and not (isinstance(w, DistTensor) and w._split is not None):
        w = w.local if isinstance(w, DistTensor) else w
        y = d.REGISTRY[torch.matmul](torch.matmul, (x, w.t()), {})
        return y if b is None else d.REGISTRY[torch.add](torch.add, (y, b), {})
    return layer(leading(1))(func, args, kwargs)


def normalize(func, args, kwargs):
    """``normalize(input, p, dim)``: local when the split axis is not ``dim``."""
    x, dim = arg(args, kwargs, 0, "input"), arg(args, kwargs, 2, "dim", 1)
    if arg(args, kwargs, 4, "out") is None and isinstance(x, DistTensor) and x._split is not None \
            and isinstance(dim, int) and -len(x._gshape) <= dim < len(x._gshape) and dim % len(x._gshape) != x._split:
        return local_call(func, args, kwargs, [Batched(0, "input", x._split)], x._split)
    return d.no_rule(func, args, kwargs)


def one_hot(func, args, kwargs):
    """``one_hot``: local along any axis; an inferred class count is the global maximum + 1
    (one allreduce); a rank that sees a bad class raises on every rank."""
    x, classes = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "num_classes", -1)
    if not isinstance(x, DistTensor) or x._split is None:
        return d.no_rule(func, args, kwargs)
    comm, local = x._comm, x.local
    if classes == -1 and x._gshape.numel() and local.dtype == torch.int64:
        top = local.max() if local.numel() else local.new_tensor(-1)
        classes = int(comm.allreduce(top.reshape(1), "max").item()) + 1 if comm.size > 1 else int(top) + 1
    return local_call(func, (x, classes), {}, [Batched(0, "input", x._split)], x._split)  # (a bad class: agreed)


def embedding(func, args, kwargs):
    """``embedding``/``embedding_bag``: local on the indices' samples. ``max_norm`` renormalises,
    on every rank alike, the weight rows that the indices of any rank touch, and
    ``scale_grad_by_freq`` divides each row's gradient by its count in the global batch: both
    from the global counts of the rows (one allreduce of ``num_embeddings`` integers)."""
    plan = RULES[func.__name__](args, kwargs)
    if plan is None:
        return d.no_rule(func, args, kwargs)
    max_norm, by_freq = arg(args, kwargs, 3, "max_norm"), arg(args, kwargs, 5, "scale_grad_by_freq", False)
    if max_norm is None and not by_freq:
        return local_call(func, args, kwargs, *plan)
    x, weight = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "weight")
    if isinstance(weight, DistTensor) and weight._split is not None:
        raise NotDistributedError(f"{d.func_name(func)} with max_norm or scale_grad_by_freq on a weight split along "
                                  f"{weight._split}; resplit the weight to None")
    comm, local, table = x._comm, x.local, weight.local if isinstance(weight, DistTensor) else weight
    rows = table.shape[0]
    valid = not local.numel() or (local.dtype in (torch.int32, torch.int64) and 0 <= local.min() and local.max() < rows)
    counts = torch.bincount(local.flatten(), minlength=rows) if valid else torch.zeros(rows, dtype=torch.int64)
    local_counts, counts = counts, torch.cat([counts, counts.new_tensor([not valid])])
    if comm.size > 1:
        counts = comm.allreduce(counts, "sum")
    if counts[-1]:  # a bad index on some rank: torch's error for this rank's call, on every rank
        error = None if valid else torch_error_of(func, args, kwargs, local, table)
        d.agree(comm, error)
    if max_norm is not None:
        with torch.no_grad():  # (as torch: in place, outside autograd)
            torch.embedding_renorm_(table, counts[:-1].nonzero().flatten(), max_norm, arg(args, kwargs, 4, "norm_type", 2.0))
    args, kwargs = list(args), dict(kwargs)
    put(args, kwargs, 3, "max_norm", None)
    if not by_freq:
        return local_call(func, tuple(args), kwargs, *plan)
    def local_func(input, weight, *a, **k):  # (torch divides by the local counts)
        scale = local_counts.to(weight.dtype) / counts[:-1].clamp(min=1).to(weight.dtype)
        return func(input, _ScaleRowGrads.apply(weight, scale), *a, **k)
    return local_call(func, tuple(args), kwargs, *plan, local_func=local_func)


def torch_error_of(func, args, kwargs, local: torch.Tensor, table: torch.Tensor) -> Exception:
    """torch's exception for ``func`` on this rank's indices (on a copy of the weight)."""
    args, kwargs = list(args), dict(kwargs)
    put(args, kwargs, 0, "input", local)
    put(args, kwargs, 1, "weight", table.detach().clone())
    try:
        d.run_local(func, tuple(args), kwargs)
    except Exception as e:
        return e
    return IndexError("index out of range in self")


class _ScaleRowGrads(torch.autograd.Function):
    """Identity whose backward multiplies row ``i`` of the gradient by ``scale[i]``."""

    @staticmethod
    def forward(ctx, weight, scale):
        ctx.save_for_backward(scale)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale.view(-1, *(1,) * (grad.dim() - 1)), None


def affine_grid(func, args, kwargs):
    """``affine_grid(theta, size)``: local on the batch axis; ``size`` names the global batch."""
    rule = leading(2, first=(0, "theta"))
    plan = rule(args, kwargs)
    if plan is None:
        return d.no_rule(func, args, kwargs)
    size = list(arg(args, kwargs, 1, "size"))
    corners = arg(args, kwargs, 2, "align_corners")

    def local(theta, *_, **__):
        return func(theta, [theta.shape[0]] + size[1:], align_corners=corners)
    return local_call(func, args, kwargs, *plan, local_func=local)


def fractional_max_pool(func, args, kwargs):
    """``fractional_max_pool2d/3d``: local on the batch axis; the pooling regions' random
    samples (one pair or triple per sample and channel) come from torchheat's stream."""
    x = arg(args, kwargs, 0, "input")
    samples = arg(args, kwargs, 5, "_random_samples")
    spatial = 2 if "2d" in func.__name__ else 3
    if not isinstance(x, DistTensor) or x._split != 0 or len(x._gshape) != spatial + 2:
        return d.no_rule(func, args, kwargs)
    if samples is None:
        n, c = x._gshape[:2]
        gshape = torch.Size((n, c, spatial))
        samples = wrap(draw(gshape, 0, x._counts, x._comm, x.dtype, x.device, lambda t, g: t.uniform_(generator=g)),
                       0, x._comm, gshape, x._counts)
        args, kwargs = args[:5], {**kwargs, "_random_samples": samples}
    return local_call(func, args, kwargs, [Batched(0, "input", 0), Batched(5, "_random_samples", 0)], 0)


def multi_head_attention(func, args, kwargs):
    """``multi_head_attention_forward``: query, key and value are ``(L, N, E)`` (batch axis 1);
    the key padding mask ``(N, S)`` and 3-D attention masks and static keys/values
    (``N * heads`` rows) are sliced alike; the weights ``(N, ...)`` are split along 0. Dropout
    in training drops the attention weights with a mask from torchheat's stream."""
    q = arg(args, kwargs, 0, "query")
    if not isinstance(q, DistTensor) or q._split != 1 or len(q._gshape) != 3:
        return d.no_rule(func, args, kwargs)
    heads = arg(args, kwargs, 4, "num_heads")
    batched = [Batched(0, "query", 1), Batched(1, "key", 1), Batched(2, "value", 1), Batched(14, "key_padding_mask", 0)]
    for pos, name in ((16, "attn_mask"), (21, "static_k"), (22, "static_v")):
        t = arg(args, kwargs, pos, name)
        if isinstance(t, torch.Tensor) and t.dim() == 3:
            batched.append(Batched(pos, name, 0, heads))
    dropout = arg(args, kwargs, 10, "dropout_p") and arg(args, kwargs, 13, "training", True)
    return local_call(func, args, kwargs, batched, (1, 0), random=0 if dropout else None)


def attention(func, args, kwargs):
    """``scaled_dot_product_attention``: local on the leading axes; ``dropout_p`` draws the
    attention weights' mask from torchheat's stream."""
    plan = RULES["scaled_dot_product_attention"](args, kwargs)
    if plan is None:
        return d.no_rule(func, args, kwargs)
    return local_call(func, args, kwargs, *plan, random=plan[1] if arg(args, kwargs, 4, "dropout_p", 0.0) > 0 else None)


def _funcs(name):
    """``F.name`` and, where it is the same function, ``torch.name``."""
    found = [getattr(F, name)]
    same = getattr(torch, name, None)
    if same is not None and name in _SAME_IN_TORCH:
        found.append(same)
    return found


_SAME_IN_TORCH = {
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "bilinear",
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "avg_pool1d", "adaptive_avg_pool1d",
    "adaptive_max_pool1d", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
    "grid_sampler",
}

# op name -> rule (ops of plain torch.nn.functional; see leading() for the meaning of the numbers)
RULES = {
    "bilinear": leading(1, (1, "input2")),
    "embedding": leading(0),
    "embedding_bag": leading(lambda ndim, a, k: 1 if ndim == 2 else ndim, (8, "per_sample_weights")),
    "interpolate": leading(lambda ndim, a, k: ndim - 2),
    "upsample": leading(lambda ndim, a, k: ndim - 2),
    "upsample_nearest": leading(lambda ndim, a, k: ndim - 2),
    "upsample_bilinear": leading(lambda ndim, a, k: ndim - 2),
    "grid_sample": leading(lambda ndim, a, k: ndim - 1, (1, "grid")),
    "pixel_shuffle": leading(3),
    "pixel_unshuffle": leading(3),
    "channel_shuffle": leading(lambda ndim, a, k: ndim - 1),
    "native_channel_shuffle": leading(lambda ndim, a, k: ndim - 1),
    "unfold": leading(batched_only(2)),
    "fold": leading(lambda ndim, a, k: 2 if ndim == 3 else ndim),
    "scaled_dot_product_attention": leading(2, (1, "key"), (2, "value"), (3, "attn_mask"), first=(0, "query")),
}
for _k in (1, 2, 3):
    for _name in (f"conv{_k}d", f"conv_transpose{_k}d"):
        RULES[_name] = leading(batched_only(_k))
    for _name in (f"max_pool{_k}d", f"avg_pool{_k}d", f"lp_pool{_k}d", f"adaptive_max_pool{_k}d", f"adaptive_avg_pool{_k}d",
                  f"max_pool{_k}d_with_indices", f"adaptive_max_pool{_k}d_with_indices"):
        RULES[_name] = leading(_k)
    RULES[f"max_unpool{_k}d"] = leading(_k, (1, "indices"))

for _name, _rule in RULES.items():
    if hasattr(F, _name):
        d.register(_funcs(_name), layer(_rule))
d.register(_funcs("linear"), linear)
d.register([F.normalize], normalize)
d.register([F.one_hot], one_hot)
d.register([F.embedding, F.embedding_bag], embedding)
d.register([F.affine_grid], affine_grid)
d.register([F.multi_head_attention_forward], multi_head_attention)
d.register([F.scaled_dot_product_attention], attention)
d.register([F.fractional_max_pool2d, F.fractional_max_pool3d, F.fractional_max_pool2d_with_indices,
            F.fractional_max_pool3d_with_indices], fractional_max_pool)


def recurrent(func, args, kwargs):
    """``torch.lstm``, ``torch.gru``, ``torch.rnn_tanh``, ``torch.rnn_relu`` (what ``nn.LSTM``,
    ``nn.GRU`` and ``nn.RNN`` call): local on the batch axis (0 with ``batch_first``, else 1),
    the initial states ``(layers, N, H)`` sliced alike, the weights replicated. Dropout between
    layers in training runs the layers one by one with torchheat's dropout between them.
    Packed sequences have no rule."""
    x = args[0] if args else None
    packed = len(args) < 9 or isinstance(args[2], torch.Tensor)
    if packed or not isinstance(x, DistTensor) or len(x._gshape) != 3:
        return d.no_rule(func, args, kwargs)
    axis = 0 if args[8] else 1
    if x._split != axis:
        return d.no_rule(func, args, kwargs)
    if args[5] and args[6] and args[4] > 1:
        return layer_by_layer(func, *args)
    return local_call(func, args, kwargs, [Batched(0, "input", axis), Batched(1, "hx", 1)], (axis, 1, 1))


def layer_by_layer(func, x, hx, params, has_biases, layers, p, train, bidirectional, batch_first):
    """A multi-layer recurrent call as one call per layer, torch's dropout semantics between
    them (on the outputs of every layer but the last), the masks from torchheat's stream."""
    directions = 2 if bidirectional else 1
    per_layer = len(params) // layers
    states = []
    for k in range(layers):
        rows = slice(k * directions, (k + 1) * directions)
        h = tuple(call(torch.Tensor.__getitem__, t, rows) for t in hx) if isinstance(hx, (tuple, list)) \
            else call(torch.Tensor.__getitem__, hx, rows)
        x, *state = recurrent(func, (x, h, params[k * per_layer:(k + 1) * per_layer], has_biases, 1, 0.0, train,
                                     bidirectional, batch_first), {})
        states.append(state)
        if k < layers - 1:
            x = call(torch.dropout, x, p, train)
    return (x, *(call(torch.cat, s) for s in zip(*states)))


d.register([torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu], recurrent)
