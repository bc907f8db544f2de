"""nn.functional layers and torch.nn modules on batch-split inputs against torch on the
global batch: values, layouts, and gradients of the input and of the replicated parameters."""
import copy
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils import _pytree as pytree

import torchheat as th
from torchheat.testing import assert_dist_close, skewed_counts

D = torch.float64
_GEN = torch.Generator().manual_seed(0)  # the same data on every rank


def _r(*shape):
    return torch.randn(*shape, dtype=D, generator=_GEN)


def check(fn, t, params=(), axes=(0,)):
    """``fn(x, *params)`` for ``x`` = ``t`` split along each of ``axes`` (balanced and with an
    empty rank 0) equals torch's, and so do the gradients of ``x`` and ``params``."""
    comm = th.get_comm()
    tt = t.clone().requires_grad_(t.is_floating_point())
    ref = [p.clone().requires_grad_() for p in params]
    expected = fn(tt, *ref)
    outs = expected if isinstance(expected, tuple) else (expected,)
    weights = [torch.randn(o.shape, dtype=o.dtype) if o.is_floating_point() else None for o in outs]
    grad = t.is_floating_point() or params
    if grad:
        sum((o * w).sum() for o, w in zip(outs, weights) if w is not None).backward()
    for axis in axes:
        for counts in (None, skewed_counts(t.shape[axis], comm.size)):
            x = th.distribute(t, axis, counts=counts).requires_grad_(t.is_floating_point())
            mine = [p.clone().requires_grad_() for p in params]
            got = fn(x, *mine)
            gots = got if isinstance(got, tuple) else (got,)
            for g, e in zip(gots, outs):
                assert_dist_close(g, e)
            if grad:
                sum((g * w).sum() for g, w in zip(gots, weights) if w is not None).backward()
            if t.is_floating_point():
                assert_dist_close(x.grad, tt.grad, split=axis)
            for p, q in zip(mine, ref):
                torch.testing.assert_close(p.grad, q.grad)


CASES = {
    "linear": (lambda x, w, b: F.linear(x, w, b), _r(5, 3, 4), [_r(2, 4), _r(2)], (0, 1, 2)),
    "bilinear": (lambda x, w, b: F.bilinear(x, x.sin(), w, b), _r(5, 4), [_r(2, 4, 4), _r(2)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, padding=1, stride=2), _r(5, 2, 7), [_r(3, 2, 3), _r(3)]),
    "conv2d_groups": (lambda x, w: F.conv2d(x, w, groups=2, dilation=2), _r(5, 4, 6, 6), [_r(4, 2, 2, 2)]),
    "conv3d": (lambda x, w: F.conv3d(x, w, padding="same"), _r(4, 2, 3, 3, 3), [_r(2, 2, 3, 3, 3)]),
    "conv_transpose1d": (lambda x, w, b: F.conv_transpose1d(x, w, b, stride=2, output_padding=1), _r(5, 2, 4),
                         [_r(2, 3, 3), _r(3)]),
    "conv_transpose2d": (lambda x, w: F.conv_transpose2d(x, w, stride=2), _r(5, 2, 3, 3), [_r(2, 1, 2, 2)]),
    "conv_transpose3d": (lambda x, w: F.conv_transpose3d(x, w), _r(4, 2, 2, 2, 2), [_r(2, 2, 2, 2, 2)]),
    "max_pool1d": (lambda x: F.max_pool1d(x, 2, return_indices=True), _r(5, 2, 7), [], (0, 1)),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), _r(5, 2, 7, 7), [], (0, 1)),
    "max_pool3d": (lambda x: F.max_pool3d(x, 2, return_indices=True), _r(4, 2, 4, 4, 4), []),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, count_include_pad=False, padding=1), _r(5, 2, 7), []),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, divisor_override=3), _r(5, 2, 6, 6), [], (0, 1)),
    "avg_pool3d": (lambda x: F.avg_pool3d(x, 2), _r(4, 2, 4, 4, 4), []),
    "lp_pool1d": (lambda x: F.lp_pool1d(x, 2, 2), _r(5, 2, 6), []),
    "lp_pool2d": (lambda x: F.lp_pool2d(x, 3, 2), _r(5, 2, 6, 6), []),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 3), _r(5, 2, 7), []),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (2, 3)), _r(5, 2, 7, 5), [], (0, 1)),
    "adaptive_avg_pool3d": (lambda x: F.adaptive_avg_pool3d(x, 2), _r(4, 2, 3, 4, 5), []),
    "adaptive_max_pool1d": (lambda x: F.adaptive_max_pool1d(x, 3, return_indices=True), _r(5, 2, 7), []),
    "adaptive_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, 2), _r(5, 2, 7, 5), []),
    "adaptive_max_pool3d": (lambda x: F.adaptive_max_pool3d(x, 2, return_indices=True), _r(4, 2, 3, 4, 5), []),
    "max_unpool2d": (lambda x: F.max_unpool2d(*F.max_pool2d(x, 2, return_indices=True), 2), _r(5, 2, 4, 4), [], (0, 1)),
    "max_unpool1d": (lambda x: F.max_unpool1d(*F.max_pool1d(x, 2, return_indices=True), 2), _r(5, 2, 6), []),
    "max_unpool3d": (lambda x: F.max_unpool3d(*F.max_pool3d(x, 2, return_indices=True), 2), _r(4, 1, 2, 4, 2), []),
    "interpolate_bilinear": (lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=True),
                             _r(5, 2, 4, 4), [], (0, 1)),
    "interpolate_nearest": (lambda x: F.interpolate(x, size=5), _r(5, 2, 3), []),
    "interpolate_bicubic_aa": (lambda x: F.interpolate(x, size=(3, 2), mode="bicubic", antialias=True), _r(5, 2, 6, 5), []),
    "interpolate_trilinear": (lambda x: F.interpolate(x, scale_factor=2, mode="trilinear"), _r(4, 1, 2, 2, 2), []),
    "upsample": (lambda x: nn.Upsample(scale_factor=2, mode="nearest")(x), _r(5, 2, 3, 3), []),
    "pixel_shuffle": (lambda x: F.pixel_shuffle(x, 2), _r(5, 8, 2, 3), []),
    "pixel_unshuffle": (lambda x: F.pixel_unshuffle(x, 2), _r(5, 2, 4, 6), []),
    "channel_shuffle": (lambda x: nn.ChannelShuffle(2)(x), _r(5, 4, 2, 2), []),
    "unfold": (lambda x: F.unfold(x, 2, padding=1, stride=2), _r(5, 2, 4, 5), []),
    "fold": (lambda x: F.fold(x, (4, 5), 2, padding=1, stride=2), _r(5, 8, 9), []),
    "grid_sample": (lambda x, g: F.grid_sample(x, g.tanh(), align_corners=False), _r(5, 2, 4, 4), [_r(5, 3, 2, 2)]),
    "affine_grid": (lambda x: F.affine_grid(x, [5, 2, 3, 4], align_corners=False), _r(5, 2, 3), []),
    "normalize": (lambda x: F.normalize(x, p=3, dim=1), _r(5, 4, 3), [], (0, 2)),
    "pad_reflect": (lambda x: F.pad(x, (1, 2, 2, 1), mode="reflect"), _r(5, 2, 3, 4), []),
    "sdpa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), _r(5, 2, 3, 4), [_r(5, 2, 6, 4), _r(5, 2, 6, 4)]),
    "sdpa_mask": (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.3),
                  _r(5, 2, 3, 4), [_r(5, 2, 6, 4), _r(5, 2, 6, 4), _r(5, 1, 3, 6)], (0, 1)),
    "sdpa_causal": (lambda q: F.scaled_dot_product_attention(q, q, q, is_causal=True), _r(5, 3, 4), []),
}


@pytest.mark.parametrize("name", CASES)
def test_layer(name):
    fn, t, params, *axes = CASES[name]
    check(fn, t, params, *axes)


def test_sdpa_split_kv_and_mask_split_alike():
    q, k, v, m = _r(5, 3, 4), _r(5, 6, 4), _r(5, 6, 4), torch.rand(5, 3, 6) > 0.3
    m[:, :, 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=m)
    got = F.scaled_dot_product_attention(*(th.distribute(t, 0) for t in (q, k, v)), attn_mask=th.distribute(m, 0))
    assert_dist_close(got, expected, split=0)
    got = F.scaled_dot_product_attention(th.distribute(q, 0), th.distribute(k, 0), v, attn_mask=th.distribute(m, 0))
    assert_dist_close(got, expected, split=0)


def test_embedding_and_one_hot():
    idx = torch.randint(0, 6, (5, 3))
    idx[0, 0] = 1
    w = _r(6, 2)
    for axis in (0, 1):
        for counts in (None, skewed_counts(idx.shape[axis], th.get_comm().size)):
            x = th.distribute(idx, axis, counts=counts)
            ww, wr = w.clone().requires_grad_(), w.clone().requires_grad_()
            got, expected = F.embedding(x, ww, padding_idx=1), F.embedding(idx, wr, padding_idx=1)
            assert_dist_close(got, expected, split=axis)
            got.square().sum().backward()
            expected.square().sum().backward()
            torch.testing.assert_close(ww.grad, wr.grad)
            assert_dist_close(F.one_hot(x), F.one_hot(idx), split=axis)
            assert_dist_close(F.one_hot(x, 8), F.one_hot(idx, 8), split=axis)
    bad = idx.clone()
    bad[-1, -1] = 9  # seen by the last rank only
    with pytest.raises(RuntimeError):
        F.one_hot(th.distribute(bad, 0), 8)


def expect_torch_error(fn, *args):
    """torch's exception for ``fn(*args)`` (type and message) on plain tensors."""
    try:
        fn(*(a.full() if isinstance(a, th.DistTensor) else a for a in args))
    except Exception as e:
        return type(e), str(e).splitlines()[0]
    raise AssertionError("torch raised nothing")


# A value only one rank sees (the last row: the last rank's; the first row with rank 0 empty:
# rank 1's) raises torch's exception on every rank, instead of leaving the others waiting.
BAD_VALUES = {
    "embedding": lambda i: F.embedding(i, torch.randn(6, 2)),
    "embedding_bag": lambda i: F.embedding_bag(i, torch.randn(6, 2)),
    "one_hot": lambda i: F.one_hot(i, 6),
    "one_hot, negative": lambda i: F.one_hot(torch.where(i == 9, -1, i)),
    "embedding, max_norm": lambda i: F.embedding(i, torch.ones(6, 2), max_norm=1.0),
    "embedding_bag, scale_grad_by_freq": lambda i: F.embedding_bag(i, torch.ones(6, 2), scale_grad_by_freq=True),
    "max_unpool1d": lambda i: F.max_unpool1d(i.unsqueeze(1).double(), i.unsqueeze(1), 2),  # (output size 6)
}


@pytest.mark.parametrize("name", BAD_VALUES)
def test_a_bad_value_on_one_rank_raises_torchs_error_on_every_rank(name, comm):
    fn = BAD_VALUES[name]
    for row, counts in ((-1, None), (0, skewed_counts(5, comm.size))):
        idx = torch.randint(0, 6, (5, 3))
        idx[row, 1] = 9
        kind, message = expect_torch_error(fn, idx)
        message = re.sub(r"Index\\ \d+", r"Index\\ \\d+", re.escape(message))  # (embedding_bag counts in the chunk)
        with pytest.raises(kind, match=message):
            fn(th.distribute(idx, 0, counts=counts))
        fn(th.distribute(idx.clamp(max=5), 0, counts=counts))  # every rank goes on alike afterwards


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag(mode):
    idx, psw = torch.randint(0, 6, (5, 3)), _r(5, 3)
    w = _r(6, 2)
    kw = {"per_sample_weights": psw} if mode == "sum" else {}
    for counts in (None, skewed_counts(5, th.get_comm().size)):
        ww, wr = w.clone().requires_grad_(), w.clone().requires_grad_()
        got = F.embedding_bag(th.distribute(idx, 0, counts=counts), ww, mode=mode, **kw)
        expected = F.embedding_bag(idx, wr, mode=mode, **kw)
        assert_dist_close(got, expected, split=0)
        got.square().sum().backward()
        expected.square().sum().backward()
        torch.testing.assert_close(ww.grad, wr.grad)


@pytest.mark.parametrize("bag", [False, True])
@pytest.mark.parametrize("kwargs", [{"max_norm": 1.0}, {"max_norm": 1.5, "norm_type": 1.0}, {"scale_grad_by_freq": True},
                                    {"max_norm": 2.0, "scale_grad_by_freq": True, "padding_idx": 3}])
def test_embedding_renorm_and_frequencies_are_global(kwargs, bag, comm):
    """max_norm renormalises the rows the whole batch touches, on every rank (the weight stays
    replicated); scale_grad_by_freq divides by the counts in the whole batch."""
    idx = torch.tensor([[0, 1, 1], [2, 1, 3], [3, 3, 1], [0, 0, 0], [1, 4, 1]])
    fn, w = F.embedding_bag if bag else F.embedding, _r(6, 3) * 2
    for counts in (None, skewed_counts(5, comm.size)):
        ref, mine = w.clone().requires_grad_(), w.clone().requires_grad_()
        expected = fn(idx, ref, **kwargs)
        got = fn(th.distribute(idx, 0, counts=counts), mine, **kwargs)
        assert_dist_close(got, expected, split=0)
        torch.testing.assert_close(mine.detach(), ref.detach())
        g = _r(*expected.shape)
        expected.backward(g)
        got.backward(th.distribute(g, 0, counts=counts))
        torch.testing.assert_close(mine.grad, ref.grad)


def test_fractional_max_pool_is_process_count_independent():
    t = _r(5, 2, 7, 7)
    samples = torch.rand(5, 2, 2, dtype=D)
    check(lambda x: F.fractional_max_pool2d(x, 2, output_size=3, _random_samples=samples), t)
    th.manual_seed(4)
    a = F.fractional_max_pool2d(th.distribute(t, 0), 2, output_ratio=(0.5, 0.5))
    th.manual_seed(4)
    b = F.fractional_max_pool2d(th.distribute(t, 0, counts=skewed_counts(5, th.get_comm().size)), 2, output_ratio=(0.5, 0.5))
    assert_dist_close(a, b.full())


DROPOUT = {
    "sdpa": lambda x: F.scaled_dot_product_attention(x, x, x, dropout_p=0.5),
    "sdpa, causal, gqa": lambda x: F.scaled_dot_product_attention(x, x[:, :1], x[:, :1], dropout_p=0.3, is_causal=True,
                                                                  enable_gqa=True),
}


@pytest.mark.parametrize("name", DROPOUT)
def test_dropout_inside_attention_is_process_count_independent(name, comm):
    run, t = DROPOUT[name], _r(5, 2, 3, 4)
    outs = []
    for counts in ((5,) + (0,) * (comm.size - 1), None, skewed_counts(5, comm.size)):  # one rank holds all: one process
        th.manual_seed(3)
        x = th.distribute(t, 0, counts=counts).requires_grad_()
        out = run(x)
        out.sum().backward()
        outs.append((out.full(), x.grad.full()))
    for out, grad in outs[1:]:
        torch.testing.assert_close(out, outs[0][0])
        torch.testing.assert_close(grad, outs[0][1])
    assert not torch.allclose(outs[0][0], run(th.distribute(t, 0)).full())  # the next draw differs


def _outputs_and_grads(run, t, axis, counts, params):
    """``run``'s outputs (gathered) and the gradients of its input and ``params``, for ``t``
    split along ``axis`` with ``counts``, after seeding the stream alike."""
    th.manual_seed(3)
    for p in params:
        p.grad = None
    x = th.distribute(t, axis, counts=counts).requires_grad_()
    outs = [o for o in run(x) if o is not None]
    sum(o.sum() for o in outs).backward()
    return [o.full() for o in outs] + [x.grad.full()] + [p.grad.clone() for p in params]


RANDOM_LAYERS = {
    "LSTM, proj": (lambda: nn.LSTM(4, 5, num_layers=3, proj_size=2, dropout=0.5), 1),
    "GRU, bidirectional, batch_first": (lambda: nn.GRU(4, 3, num_layers=2, dropout=0.3, bidirectional=True,
                                                     batch_first=True), 0),
    "RNN, relu": (lambda: nn.RNN(4, 3, num_layers=2, nonlinearity="relu", dropout=0.5), 1),
    "MultiheadAttention": (lambda: nn.MultiheadAttention(4, 2, dropout=0.5), 1),
    "MultiheadAttention, no weights": (lambda: nn.MultiheadAttention(4, 2, dropout=0.5, batch_first=True), 0),
    "TransformerEncoderLayer": (lambda: nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=0.4), 1),
}


def _run_layer(name, module):
    """The module's call on one input, as a tuple of its output tensors (None: not returned)."""
    if name.startswith("MultiheadAttention"):
        return lambda x: module(x, x, x, need_weights="no weights" not in name)
    if name.startswith("Transformer"):
        return lambda x: (module(x),)
    return lambda x: pytree.tree_leaves(module(x))


@pytest.mark.parametrize("name", RANDOM_LAYERS)
def test_dropout_inside_rnns_and_attention_is_process_count_independent(name, comm):
    """Modules in training mode with dropout inside: the same outputs and gradients for every
    layout (the first one, all samples on one rank, is one process's), a fresh draw each call."""
    make, axis = RANDOM_LAYERS[name]
    torch.manual_seed(0)
    module = make().double().train()
    params = list(module.parameters())
    t = _r(3, 5, 4) if axis == 1 else _r(5, 3, 4)
    run = _run_layer(name, module)
    layouts = [(5,) + (0,) * (comm.size - 1), None, skewed_counts(5, comm.size)]
    results = [_outputs_and_grads(run, t, axis, counts, params) for counts in layouts]
    for got in results[1:]:
        for a, b in zip(got, results[0]):
            torch.testing.assert_close(a, b)
    th.manual_seed(4)
    assert not torch.allclose(run(th.distribute(t, axis))[0].full(), results[0][0])  # another seed, another mask


# Dropout 1 zeroes every mask deterministically, so torch's own result is the reference: the
# dropout sits where torch puts it (between recurrent layers, on the attention weights).
DROP_ALL = {
    "LSTM": lambda: nn.LSTM(3, 4, num_layers=3, dropout=1.0),
    "LSTM, bidirectional, proj": lambda: nn.LSTM(3, 4, num_layers=2, dropout=1.0, bidirectional=True, proj_size=2),
    "GRU, batch_first": lambda: nn.GRU(3, 4, num_layers=2, dropout=1.0, batch_first=True),
    "RNN, tanh, no bias": lambda: nn.RNN(3, 4, num_layers=2, dropout=1.0, bias=False),
}


@pytest.mark.parametrize("name", DROP_ALL)
def test_rnn_dropout_sits_between_layers(name, comm):
    module = DROP_ALL[name]().double().train()
    axis = 0 if module.batch_first else 1
    t = _r(5, 4, 3) if axis == 0 else _r(4, 5, 3)
    layers = module.num_layers * (2 if module.bidirectional else 1)
    h0 = _r(layers, 5, module.proj_size or module.hidden_size)
    hx = (h0, _r(layers, 5, 4)) if isinstance(module, nn.LSTM) else h0

    names = [n for n, _ in module.named_parameters()]

    def fn(x, *params):
        return tuple(pytree.tree_leaves(torch.func.functional_call(module, dict(zip(names, params)), (x, hx))))
    check(fn, t, [p.detach() for p in module.parameters()], axes=(axis,))


@pytest.mark.parametrize("need_weights", [True, False])
def test_multi_head_attention_dropout_sits_on_the_weights(need_weights):
    e, h = 4, 2
    params = [_r(3 * e, e), _r(3 * e), _r(e, e), _r(e)]

    def fn(q, w, b, ow, ob):
        out, weights = F.multi_head_attention_forward(q, q, q, e, h, w, b, None, None, False, 1.0, ow, ob,
                                                      training=True, need_weights=need_weights)
        return (out, weights) if need_weights else out
    check(fn, _r(3, 5, e), params, axes=(1,))


def test_multi_head_attention_forward():
    e, h = 4, 2
    q, k = _r(3, 5, e), _r(6, 5, e)
    mask = torch.rand(5 * h, 3, 6) > 0.2
    mask[..., 0] = False
    pad = torch.zeros(5, 6, dtype=torch.bool)
    pad[1, 2] = True
    params = [_r(3 * e, e), _r(3 * e), _r(e, e), _r(e)]

    def fn(q, k, w, b, ow, ob):
        return F.multi_head_attention_forward(q, k, k, e, h, w, b, None, None, False, 0.0, ow, ob, training=True,
                                              key_padding_mask=pad, attn_mask=mask, average_attn_weights=False)
    comm = th.get_comm()
    for counts in (None, skewed_counts(5, comm.size)):
        ref = [p.clone().requires_grad_() for p in params]
        mine = [p.clone().requires_grad_() for p in params]
        out, weights = fn(q, k, *ref)
        got, got_w = fn(th.distribute(q, 1, counts=counts), th.distribute(k, 1, counts=counts), *mine)
        assert_dist_close(got, out, split=1)
        assert_dist_close(got_w, weights, split=0)
        (out.sum() + weights.square().sum()).backward()
        (got.sum() + got_w.square().sum()).backward()
        for a, b in zip(mine, ref):
            torch.testing.assert_close(a.grad, b.grad)


def test_unsupported_layout_follows_the_fallback_policy():
    x = th.distribute(_r(3, 6, 6), 0)  # an unbatched image split along its channels
    with pytest.raises(th.NotDistributedError):
        F.conv2d(x, _r(2, 3, 3, 3))


# -- modules ---------------------------------------------------------------------------------
def _modules():
    torch.manual_seed(0)
    encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)
    return {
        "Sequential": (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 3)), _r(6, 4)),
        "Conv_BatchNorm": (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                                         nn.Flatten(), nn.Linear(16, 3)), _r(6, 2, 4, 4)),
        "BatchNorm1d": (nn.BatchNorm1d(3, momentum=None), _r(6, 3)),
        "LayerNorm": (nn.LayerNorm([3, 2]), _r(6, 3, 2)),
        "Embedding": (nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2)), torch.randint(0, 10, (6, 2))),
        "Embedding_max_norm": (nn.Sequential(nn.Embedding(10, 4, max_norm=1.0, scale_grad_by_freq=True), nn.Flatten()),
                               torch.randint(0, 10, (6, 2))),
        "MultiheadAttention": (nn.MultiheadAttention(8, 2, batch_first=True), _r(6, 3, 8)),
        "MultiheadAttention_seq_first": (nn.MultiheadAttention(8, 2, kdim=5, vdim=3), (_r(3, 6, 8), _r(4, 6, 5), _r(4, 6, 3))),
        "TransformerEncoderLayer": (encoder, _r(6, 3, 8)),
        "LSTM": (nn.LSTM(4, 5, batch_first=True), _r(6, 3, 4)),
        "GRU_two_layers": (nn.GRU(4, 5, num_layers=2, dropout=1.0), _r(3, 6, 4)),  # (dropout 1: torch's too)
    }


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("name", list(_modules()))
def test_module(name, train, comm):
    module, t = _modules()[name]
    module = module.double().train(train)
    mine = copy.deepcopy(module)
    ts = t if isinstance(t, tuple) else (t,)
    axis = 1 if name.endswith("seq_first") or name.startswith("GRU") else 0
    args = ts if name.startswith("MultiheadAttention") and len(ts) == 3 else (ts * 3 if name.startswith("Multihead") else ts)
    expected = _first(module(*args))
    weights = torch.randn(expected.shape, dtype=D)
    (expected * weights).sum().backward()
    for counts in (None, skewed_counts(ts[0].shape[axis], comm.size)):
        mine.zero_grad()
        xs = [th.distribute(a, axis, counts=counts) for a in args]
        got = _first(mine(*xs))
        assert_dist_close(got, expected, split=axis)
        (got * weights).sum().backward()
        for (n, p), q in zip(mine.named_parameters(), module.parameters()):
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{n}: {m}")
        mine.load_state_dict(module.state_dict())  # the running statistics of the next round
    for a, b in zip(mine.buffers(), module.buffers()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("train", [True, False])
def test_resnet18(train, comm):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).double().train(train)
    mine = copy.deepcopy(model)
    t = _r(4, 3, 32, 32)
    expected = model(t)
    F.cross_entropy(expected, torch.arange(4) % 5).backward()
    got = mine(th.distribute(t, 0, counts=skewed_counts(4, comm.size)))
    assert_dist_close(got, expected, split=0)
    F.cross_entropy(got, torch.arange(4) % 5).backward()
    for (n, p), q in zip(mine.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{n}: {m}")
    for a, b in zip(mine.buffers(), model.buffers()):
        torch.testing.assert_close(a, b)
