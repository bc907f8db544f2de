"""Scans against torch on the global tensor: every layout and axis, dtypes, global indices, gradients, errors."""
import math
import re

import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts
from test_reductions import EMPTY_SHAPES, check_like_torch, check_second_order

SHAPES = [(7, 3), (2, 3, 4), (10,), (1, 4)]  # (1, 4): fewer rows than ranks
SCANS = {
    "cumsum": lambda a, dim: torch.cumsum(a, dim),
    "cumprod": lambda a, dim: a.cumprod(dim),
    "logcumsumexp": lambda a, dim: torch.logcumsumexp(a, dim=dim),
    "cummax": lambda a, dim: torch.cummax(a, dim),
    "cummin": lambda a, dim: a.cummin(dim),
}


assert_same = assert_dist_close  # compares tuples of results too


def outputs(result):
    return [result] if isinstance(result, torch.Tensor) else [r for r in result if r.is_floating_point()]


def check_grad(f, t, weight=True):
    """The gradient of ``f`` on every layout of ``t``, and of a replicated weight multiplied
    in, equals torch's on the global tensor."""
    w0 = torch.rand(t.shape[-1], dtype=t.dtype) + 0.5
    tt, wt = t.clone().requires_grad_(), w0.clone().requires_grad_()
    expected = outputs(f(tt * wt if weight else tt))
    cotangents = [torch.randn(e.shape, dtype=e.dtype) for e in expected]
    sum((e * c).sum() for e, c in zip(expected, cotangents)).backward()
    for x in layouts(t, requires_grad=True):
        w = w0.clone().requires_grad_()
        got = outputs(f(x * w if weight else x))
        sum((g * c).sum() for g, c in zip(got, cotangents)).backward()
        assert_dist_close(x.grad, tt.grad, split=x.split_dim)
        if weight:
            torch.testing.assert_close(w.grad, wt.grad)


@pytest.mark.parametrize("name", SCANS)
@pytest.mark.parametrize("shape", SHAPES)
def test_scans_along_every_axis(name, shape):
    t = torch.randn(shape, dtype=torch.float64)
    for dim in range(-len(shape), len(shape)):
        expected = SCANS[name](t, dim)
        for x in layouts(t):
            assert_same(SCANS[name](x, dim), expected, split=x.split_dim)


@pytest.mark.parametrize("name", SCANS)
def test_gradients(name):
    t = torch.randn(6, 4, dtype=torch.float64)
    for dim in (0, 1):
        check_grad(lambda a: SCANS[name](a, dim), t)


def test_cumprod_gradient_with_zeros():
    t = torch.randn(8, 3, dtype=torch.float64)
    t[2, 0] = 0.0
    t[1, 1] = t[6, 1] = 0.0
    check_grad(lambda a: a.cumprod(0), t)


@pytest.mark.parametrize("name", ["cummax", "cummin"])
def test_running_extremes_with_ties_and_nan(name):
    # torch moves to the later element on ties and keeps NaN once seen.
    t = torch.randint(0, 3, (9, 3)).double()
    t[4, 2] = t[7, 2] = math.nan
    for x in layouts(t):
        assert_same(SCANS[name](x, 0), SCANS[name](t, 0), split=x.split_dim)
    check_grad(lambda a: SCANS[name](a, 0), t, weight=False)
    big = torch.full((6, 2), -math.inf if name == "cummax" else math.inf, dtype=torch.float64)
    for x in layouts(big):  # the extreme is the identity itself: indices still come from the data
        assert_same(SCANS[name](x, 0), SCANS[name](big, 0), split=x.split_dim)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_dtypes(dtype):
    t = torch.randint(0, 3, (7, 3)).to(dtype)
    for x in layouts(t):
        for f in (lambda a: a.cumsum(0), lambda a: a.cumprod(0), lambda a: torch.cummax(a, 0), lambda a: a.cummin(0),
                  lambda a: a.cumsum(0, dtype=torch.float64)):
            assert_same(f(x), f(t), split=x.split_dim)
    small = torch.iinfo(dtype).min if dtype != torch.bool else False
    edge = torch.full((5,), small, dtype=dtype)
    for x in layouts(edge):
        assert_same(torch.cummax(x, 0), torch.cummax(edge, 0), split=x.split_dim)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
def test_low_precision_and_complex(dtype):
    t = torch.randn(30, 2, dtype=dtype)
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {}
    for x in layouts(t):
        for f in (lambda a: a.cumsum(0), lambda a: a.cumprod(0), lambda a: a.logcumsumexp(0)):
            assert_same(f(x), f(t), split=x.split_dim, **tol)
        if not dtype.is_complex:
            assert_same(x.cummax(0), t.cummax(0), split=x.split_dim)
    ones = torch.ones(3000, dtype=torch.float16)  # beyond 2048, a float16 running sum cannot count
    for x in layouts(ones):
        assert_dist_close(x.cumsum(0), ones.cumsum(0))


def test_inplace_and_out():
    t = torch.randn(6, 3)
    for x in layouts(t):
        y = x.clone()
        assert y.cumsum_(0) is y
        assert_dist_close(y, t.cumsum(0), split=x.split_dim)
        y = x.clone()
        y.cumprod_(0)
        assert_dist_close(y, t.cumprod(0), split=x.split_dim)
        out = th.empty_like(x)
        assert torch.cumsum(x, 0, out=out) is out
        assert_dist_close(out, t.cumsum(0), split=x.split_dim)
        for dim in (0, 1):  # out=None is no write
            assert_same(torch.cumsum(x, dim, out=None), t.cumsum(dim), split=x.split_dim)
            assert_same(torch.cummax(x, dim, out=None), t.cummax(dim), split=x.split_dim)
        n = torch.arange(18, dtype=torch.int32).reshape(6, 3)  # in place, the sum keeps int32
        xn = th.distribute(n.clone(), x.split_dim, counts=x.counts)
        xn.cumsum_(0)
        assert_dist_close(xn, n.cumsum_(0), split=x.split_dim)


def test_one_allgather_along_split_none_elsewhere(comm):
    t = torch.randn(7, 5)
    for x in layouts(t):
        for f in (lambda a: a.cumsum(0), lambda a: a.cummax(0), lambda a: a.logcumsumexp(0)):
            with th.debug.comm_log() as log:
                f(x)
            assert len(log) == (1 if x.split_dim == 0 and comm.size > 1 else 0), [e.collective for e in log]
        with th.debug.comm_log() as log:
            x.cumprod(1)
        assert len(log) == (1 if x.split_dim == 1 and comm.size > 1 else 0)


@pytest.mark.parametrize("f, t", [
    (lambda a: a.cumsum(2), torch.randn(4, 3)),
    (lambda a: a.cumsum(), torch.randn(4, 3)),
    (lambda a: torch.cummax(a, -3), torch.randn(4, 3)),
    (lambda a: a.logcumsumexp(0), torch.arange(12).reshape(4, 3)),
    (lambda a: a.cummax(0), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: a.cummin(1), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: a.clone().cumsum_(0), torch.ones(4, 3, dtype=torch.bool)),  # torch checks only non-empty input
    (lambda a: a.clone().cumprod_(1), torch.ones(4, 3, dtype=torch.bool)),
    (lambda a: a.cumsum(1, dtype=torch.bool), torch.ones(4, 3, dtype=torch.bool)),
    (lambda a: a.cumprod(0, dtype=torch.bool), torch.ones(4, 3)),
])
def test_bad_input_raises_torchs_error_on_every_rank(f, t):
    with pytest.raises(Exception) as info:
        f(t)
    for x in layouts(t):
        with pytest.raises(info.type, match=re.escape(str(info.value))):
            f(x)


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_empty_global_tensors(shape):
    for dtype in (torch.float64, torch.bool):
        t = torch.randn(shape).to(dtype)
        fs = [lambda a, dim: a.cumsum(dim), lambda a, dim: a.cumprod(dim), lambda a, dim: a.cummax(dim),
              lambda a, dim: torch.cummin(a, dim), lambda a, dim: a.clone().cumsum_(dim),
              lambda a, dim: a.clone().cumprod_(dim)]
        if dtype.is_floating_point:
            fs.append(lambda a, dim: a.logcumsumexp(dim))
        for dim in range(len(shape)):
            for f in fs:
                check_like_torch(lambda a: f(a, dim), t)


@pytest.mark.parametrize("name", ["cumsum", "cumprod", "logcumsumexp", "cummax", "cummin"])
def test_nan_and_infinities_along_the_split_axis(name):
    t = torch.randn(9, 4, dtype=torch.float64)
    t[0, 0] = math.nan  # on the first chunk
    t[8, 1] = math.nan  # on the last chunk
    t[3, 2], t[5, 2] = math.inf, -math.inf
    t[2, 3], t[6, 3] = math.nan, math.inf
    for x in layouts(t):
        assert_same(SCANS[name](x, 0), SCANS[name](t, 0), split=x.split_dim)


# Products with the input: torch's first-order gradient of cumprod or logcumsumexp of an empty
# chunk (or of one element) is a constant, which would leave that rank's gradient off the graph
# while the other ranks' are on it (torch.autograd.grad then raises on that rank only).
SECOND_ORDER = {
    "cumsum**2": lambda a: a.cumsum(0) ** 2,
    "cumprod*x": lambda a: a.cumprod(0) * a,
    "logcumsumexp*x": lambda a: a.logcumsumexp(0) * a,
    "cummax**2": lambda a: a.cummax(0).values ** 2,
    "cummin*x": lambda a: a.cummin(0).values * a,
}


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_gradients(name):
    check_second_order(SECOND_ORDER[name], torch.randn(7, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["cumsum_", "cumprod_"])
def test_inplace_on_a_tensor_that_requires_grad(name):
    t = torch.randn(7, 3, dtype=torch.float64)
    t[2, 1] = 0.0
    weights = torch.randn(7, 3, dtype=torch.float64)
    tt = t.clone().requires_grad_()
    y = tt * 1.0
    getattr(y, name)(0)
    (y * weights).sum().backward()
    for x in layouts(t, requires_grad=True):
        y = x * 1.0
        assert getattr(y, name)(0) is y
        assert_dist_close(y, getattr(t.clone(), name)(0), split=x.split_dim)
        (y * weights).sum().backward()
        assert_dist_close(x.grad, tt.grad, split=x.split_dim)
