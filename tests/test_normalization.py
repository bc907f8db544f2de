"""Normalization on batch-split inputs against torch on the global batch: batch norm with
global statistics (values, gradients of input, weight and bias, running statistics) and
the local norms."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torchheat as th
from torchheat.testing import assert_dist_close, skewed_counts

D = torch.float64
_GEN = torch.Generator().manual_seed(0)  # the same data on every rank


def _r(*shape):
    return torch.randn(*shape, dtype=D, generator=_GEN)


def _layouts(t, axis, comm):
    yield th.distribute(t, axis)
    if comm.size > 1:
        yield th.distribute(t, axis, counts=skewed_counts(t.shape[axis], comm.size))


def check_module(module, t, axis, comm, steps=2):
    """``steps`` forward/backward rounds of a copy of ``module`` on ``t`` split along ``axis``
    give torch's outputs, gradients and buffers (running statistics) at every step."""
    for x in _layouts(t, axis, comm):
        ref, mine = copy.deepcopy(module), copy.deepcopy(module)
        for step in range(steps):
            tt = (t + step).requires_grad_()
            expected = ref(tt)
            weights = torch.randn(expected.shape, dtype=D)
            (expected * weights).sum().backward()
            xs = (x.detach() + step).requires_grad_()
            got = mine(xs)
            assert_dist_close(got, expected, split=axis)
            (got * weights).sum().backward()
            assert_dist_close(xs.grad, tt.grad, split=axis)
            for (n, p), q in zip(mine.named_parameters(), ref.parameters()):
                torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{n}: {m}")
            for (n, p), q in zip(mine.named_buffers(), ref.buffers()):
                torch.testing.assert_close(p, q, msg=lambda m: f"{n}: {m}")


def _affine(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(_r(*p.shape))
    return m


@pytest.mark.parametrize("case", ["1d", "1d_3d_input", "2d", "3d", "momentum_none", "no_affine", "no_stats"])
def test_batch_norm_train(case, comm):
    module, t, axes = {
        "1d": (nn.BatchNorm1d(3), _r(7, 3), (0,)),
        "1d_3d_input": (nn.BatchNorm1d(3), _r(5, 3, 4), (0, 2)),
        "2d": (nn.BatchNorm2d(2), _r(5, 2, 3, 3), (0, 3)),
        "3d": (nn.BatchNorm3d(2), _r(4, 2, 2, 3, 2), (0,)),
        "momentum_none": (nn.BatchNorm1d(3, momentum=None), _r(7, 3), (0,)),
        "no_affine": (nn.BatchNorm1d(3, affine=False), _r(7, 3), (0,)),
        "no_stats": (nn.BatchNorm1d(3, track_running_stats=False), _r(7, 3), (0,)),
    }[case]
    module = _affine(module.double())
    for axis in axes:
        check_module(module, t, axis, comm)


def test_batch_norm_eval_and_float32(comm):
    m = _affine(nn.BatchNorm2d(2).double())
    m.running_mean.copy_(_r(2))
    m.running_var.copy_(_r(2).abs())
    check_module(m.eval(), _r(5, 2, 3, 3), 0, comm)
    t = torch.randn(9, 4, generator=_GEN) * 3 + 100  # a large mean: the merged moments keep the digits
    m32 = nn.BatchNorm1d(4)
    for x in _layouts(t, 0, comm):
        assert_dist_close(copy.deepcopy(m32)(x), copy.deepcopy(m32)(t), atol=1e-5, rtol=1e-5)


def test_batch_norm_errors(comm):
    x = th.distribute(_r(1, 3), 0)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(x, None, None, training=True)
    with pytest.raises(RuntimeError):
        F.batch_norm(th.distribute(_r(4, 3), 0), torch.zeros(2), torch.ones(2), training=True)
    with pytest.raises(th.NotDistributedError):  # along the channels: no rule (resplit first)
        F.batch_norm(th.distribute(_r(4, 3), 1), None, None, training=True)


LOCAL = {
    "layer_norm": (lambda: nn.LayerNorm([3, 2]), (5, 3, 2), (0,)),
    "layer_norm_last": (lambda: nn.LayerNorm(2), (5, 3, 2), (0, 1)),
    "rms_norm": (lambda: nn.RMSNorm(2), (5, 3, 2), (0, 1)),
    "group_norm": (lambda: nn.GroupNorm(2, 4), (5, 4, 3), (0,)),
    "instance_norm": (lambda: nn.InstanceNorm1d(3, affine=True), (5, 3, 4), (0,)),
    "instance_norm_stats": (lambda: nn.InstanceNorm2d(2, track_running_stats=True), (5, 2, 3, 3), (0,)),
    "local_response_norm": (lambda: nn.LocalResponseNorm(3), (5, 4, 3), (0,)),
}


@pytest.mark.parametrize("name", LOCAL)
def test_local_norm(name, comm):
    make, shape, axes = LOCAL[name]
    module = _affine(make().double())
    for axis in axes:
        check_module(module, _r(*shape), axis, comm)


def test_cnn_with_batch_norm_trains_to_one_process_parameters(comm):
    """A few SGD steps of a small CNN with BatchNorm2d on a batch-split DistTensor give the
    parameters and running statistics of one process on the global batch."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(12, 4)).double()
    images, labels = _r(7, 2, 4, 4), torch.arange(7) % 4
    for counts in (None, skewed_counts(7, comm.size)):
        ref, mine = copy.deepcopy(model), copy.deepcopy(model)
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3) for m in (ref, mine)]
        x, y = th.distribute(images, 0, counts=counts), th.distribute(labels, 0, counts=counts)
        for step in range(3):
            for m, opt, (a, b) in zip((ref, mine), opts, ((images, labels), (x, y))):
                opt.zero_grad()
                F.cross_entropy(m(a + step), b).backward()
                opt.step()
        state = lambda m: [t.detach() for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]  # noqa: E731
        for got, expected in zip(state(mine), state(ref)):
            assert not isinstance(got, th.DistTensor) or got.split_dim is None
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
        assert mine[1].num_batches_tracked.item() == 3
