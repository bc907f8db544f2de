"""The foundation's slice of ops (+ - * / exp neg abs sum mean) against torch on the global data."""
import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts

SHAPES = [(7, 5), (2, 3, 4), (1, 4), (10,)]


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_with_scalars_and_replicated(shape):
    t = torch.randn(shape, dtype=torch.float64)
    other = torch.randn(shape[-1], dtype=torch.float64)  # broadcasts over the leading axes
    for x in layouts(t):
        assert_dist_close(x + 1, t + 1, split=x.split_dim)
        assert_dist_close(2 - x, 2 - t, split=x.split_dim)
        assert_dist_close(x * other, t * other, split=x.split_dim)
        assert_dist_close(other / (x.abs() + 1), other / (t.abs() + 1), split=x.split_dim)
        assert_dist_close((-x).exp(), (-t).exp(), split=x.split_dim)
        assert_dist_close(torch.neg(x), torch.neg(t))


@pytest.mark.parametrize("shape", SHAPES)
def test_operands_in_different_layouts(shape):
    a, b = torch.randn(shape), torch.randn(shape)
    for x in layouts(a):
        for y in layouts(b):
            assert_dist_close(x * y, a * b, split=x.split_dim if x.split_dim is not None else y.split_dim)
            assert_dist_close(torch.sub(x, y, alpha=2), a - 2 * b)


def test_split_along_broadcast_axis(comm):
    a, row = torch.randn(5, 3), torch.randn(1, 3)
    r = th.distribute(row, split=0)  # one row split over all ranks: a broadcast axis
    for x in layouts(a):
        assert_dist_close(x + r, a + row)
    assert_dist_close(r * torch.ones(4, 3), row * torch.ones(4, 3))


@pytest.mark.parametrize("op", ["__iadd__", "__isub__", "__imul__", "__itruediv__", "add_", "mul_"])
def test_inplace_keeps_layout(op):
    a, b = torch.randn(6, 4), torch.randn(6, 4) + 3
    for x in layouts(a):
        for y in layouts(b):
            x2 = x.clone()
            res = getattr(x2, op)(y)
            assert res is x2
            assert_dist_close(x2, getattr(a.clone(), op)(b), split=x.split_dim)
            assert x2.counts == x.counts


def test_out_argument():
    a, b = torch.randn(6, 4), torch.randn(6, 4)
    for x in layouts(a):
        out = th.empty_like(x)
        res = torch.add(x, b, out=out)
        assert res is out
        assert_dist_close(out, a + b, split=x.split_dim)


@pytest.mark.parametrize("dim", [None, 0, 1, -1, (0, 1)])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_mean(dim, keepdim):
    t = torch.randn(7, 4, dtype=torch.float64)
    kw = {} if dim is None else {"dim": dim, "keepdim": keepdim}
    for x in layouts(t):
        assert_dist_close(x.sum(**kw), t.sum(**kw))
        assert_dist_close(torch.mean(x, **kw), torch.mean(t, **kw))


def test_sum_dtypes():
    t = torch.arange(20).reshape(5, 4)
    for x in layouts(t):
        assert_dist_close(x.sum(), t.sum())
        assert_dist_close(x.sum(0, dtype=torch.float32), t.sum(0, dtype=torch.float32))
    h = torch.full((2000,), 30.0, dtype=torch.float16)
    for x in layouts(h):
        s = x.sum()
        assert s.dtype == torch.float16
        # 60000 is exact only when partial sums are accumulated and combined in float32
        assert_dist_close(s.float(), torch.tensor(60000.0))


def test_mean_of_integers_raises_like_torch():
    for x in layouts(torch.arange(6)):
        with pytest.raises(RuntimeError, match="mean"):
            x.mean()


def test_broadcast_error_names_global_shapes():
    for x in layouts(torch.randn(4, 3)):
        with pytest.raises(RuntimeError, match=r"size of tensor a \(3\) must match the size of tensor b \(5\)"):
            x + torch.randn(5)
        with pytest.raises(RuntimeError, match=r"\(4\) must match .* \(6\)"):
            x + torch.randn(6, 3)


@pytest.mark.parametrize("shape", [(5, 3), (1, 3), (0, 3)])
def test_gradients_exact(shape):
    t = torch.randn(shape, dtype=torch.float64)
    w0 = torch.randn(3, dtype=torch.float64)
    expected_w = w0.clone().requires_grad_()
    tt = t.clone().requires_grad_()
    ((tt * expected_w).exp() - tt / 2).abs().mean().backward() if t.numel() else (tt * expected_w).sum().backward()
    for x in layouts(t, requires_grad=True):
        w = w0.clone().requires_grad_()
        y = (x * w).exp() - x / 2
        loss = y.abs().mean() if t.numel() else (x * w).sum()
        assert loss.split_dim is None
        loss.backward()
        torch.testing.assert_close(w.grad, expected_w.grad)
        assert_dist_close(x.grad, tt.grad, split=x.split_dim)
