"""Sorting and order statistics against torch on the global tensor: every layout and axis,
dtypes, NaN, ties, global indices, gradients, errors, and no gather of the whole input."""
import math

import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts

SHAPES = [(11,), (1,), (7, 3), (13, 2), (2, 9, 2)]  # (13, 2) and (2, 9, 2): few columns, the batched sample sort
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8, torch.bool]


def data(shape, dtype, nan=True):
    """Small integers (many ties), with a NaN and a -0.0 in floating-point data."""
    t = torch.randint(-3, 4, shape)
    if dtype == torch.uint8:
        t = t + 3
    t = t.to(dtype)
    if dtype.is_floating_point and t.numel() > 3:
        t.view(-1)[2] = -0.0
        if nan:
            t.view(-1)[1] = math.nan
    return t


def split_along(t, dim):
    """The layouts that split ``t`` along ``dim`` (balanced, and unbalanced with rank 0 empty)."""
    return [x for x in layouts(t) if x.split_dim == dim % t.dim()]


def check_indices(result, t, dim):
    """The indices of a selection point at its values (where torch's choice among ties is unspecified)."""
    values, indices = result.values.full(), result.indices.full()
    if values.dim() < t.dim():
        values, indices = values.unsqueeze(dim), indices.unsqueeze(dim)
    torch.testing.assert_close(torch.take_along_dim(t, indices, dim), values, equal_nan=True)


@pytest.mark.parametrize("shape, dtype", [(s, torch.float64) for s in SHAPES] + [(s, t) for s in [(11,), (13, 2)] for t in DTYPES[1:]])
def test_sort_like_torch(shape, dtype):
    t = data(shape, dtype)
    for dim in range(-len(shape), len(shape)):
        for descending in (False, True):
            expected = torch.sort(t, dim=dim, descending=descending, stable=True)
            for x in layouts(t):
                got = torch.sort(x, dim=dim, descending=descending, stable=True)
                assert_dist_close(got, expected, split=x.split_dim)
                if x.split_dim == dim % len(shape):
                    assert got.values.is_balanced and got.indices.dtype == torch.int64


def test_sort_variants():
    t = data((12, 3), torch.float64)
    for x in layouts(t):
        got = x.sort(0)  # unstable: torch's order of ties is unspecified
        assert_dist_close(got.values, torch.sort(t, 0).values)
        check_indices(got, t, 0)
        assert_dist_close(x.sort(dim=0, descending=True).values, t.sort(dim=0, descending=True).values)
        assert_dist_close(torch.argsort(x, dim=0, stable=True), torch.argsort(t, dim=0, stable=True))
        assert_dist_close(x.argsort(dim=0, descending=True, stable=True), t.argsort(dim=0, descending=True, stable=True))
        assert_dist_close(torch.msort(x), torch.msort(t))
        assert_dist_close(torch.sort(x).values, torch.sort(t).values)  # dim=-1
        values, indices = th.empty(12, 3, dtype=torch.float64, split=0), th.empty(12, 3, dtype=torch.int64, split=1)
        torch.sort(x, dim=0, stable=True, out=(values, indices))
        assert_dist_close(values, torch.sort(t, 0).values, split=0)
        assert_dist_close(indices, torch.sort(t, dim=0, stable=True).indices, split=1)


def test_sort_large_and_skewed():
    # Enough rows for several samples per rank; duplicates and a sorted run.
    t = torch.cat([torch.randn(300), torch.zeros(200), torch.arange(100.)])
    for x in split_along(t, 0):
        assert_dist_close(torch.sort(x, stable=True), torch.sort(t, stable=True), split=0)
        assert_dist_close(torch.sort(x, descending=True, stable=True), torch.sort(t, descending=True, stable=True))
    b = torch.rand(500) > 0.9
    for x in split_along(b, 0):
        assert_dist_close(torch.sort(x, stable=True), torch.sort(b, stable=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64])
def test_sort_keys_order_like_torch(dtype):
    # The int32 radix keys: both signs of NaN and zero, infinities, subnormals, extremes of
    # the integer range (int64 narrow, and wide: a key of its top bits, ties put in order).
    if dtype.is_floating_point:
        tiny = torch.finfo(dtype).smallest_normal / 4
        special = torch.tensor([math.nan, -math.nan, 0.0, -0.0, math.inf, -math.inf, 1.0, -1.0, tiny, -tiny])
        t = torch.cat([special, torch.randn(90) * 3, special]).to(dtype)
    else:
        info = torch.iinfo(dtype)
        t = torch.cat([torch.tensor([info.min, info.max, 0, -1]), torch.randint(-5, 5, (96,))]).to(dtype)
    base = torch.randint(-2 ** 40, 2 ** 40, (30,))
    close = torch.cat([base, base + torch.randint(1, 200, (30,)), base[:20], torch.tensor([2 ** 40, -2 ** 40])])
    cases = [t] + ([torch.randint(-2 ** 40, 2 ** 40, (100,)), torch.randint(10 ** 12, 10 ** 12 + 50, (100,)),
                    close[torch.randperm(close.numel())]]  # wide, with close and equal values: equal keys out of order
                   if dtype == torch.int64 else [])
    for t in cases:
        for descending in (False, True):
            values, indices = torch.sort(t, descending=descending, stable=True)
            for x in split_along(t, 0):
                got = torch.sort(x, descending=descending, stable=True)
                assert torch.equal(got.indices.full(), indices)
                bits = {4: torch.int32, 2: torch.int16, 8: torch.int64}[t.element_size()]  # NaN and -0.0 bit for bit
                assert torch.equal(got.values.full().view(bits), values.view(bits))


def test_sort_moves_no_whole_input():
    t = torch.randn(3000, dtype=torch.float64)
    x = th.distribute(t, 0)
    with th.debug.comm_log() as log:
        torch.sort(x)
    gathered = sum(e.nbytes for e in log if e.collective == "allgather")
    assert gathered < t.numel() * t.element_size() // 10


@pytest.mark.parametrize("shape", SHAPES)
def test_selections_like_torch(shape):
    t = data(shape, torch.float64)
    for dim in range(-len(shape), len(shape)):
        n = shape[dim]
        for x in layouts(t):
            for k in sorted({1, n, (n + 1) // 2}):
                for largest in (True, False):
                    got, expected = torch.topk(x, k, dim, largest=largest), torch.topk(t, k, dim, largest=largest)
                    assert_dist_close(got.values, expected.values)
                    check_indices(got, t, dim)
                got, expected = torch.kthvalue(x, k, dim), torch.kthvalue(t, k, dim)
                assert_dist_close(got.values, expected.values)
                check_indices(got, t, dim)
            for keepdim in (False, True):
                assert_dist_close(torch.median(x, dim, keepdim), torch.median(t, dim, keepdim))  # first NaN
                got = torch.nanmedian(x, dim, keepdim)
                assert_dist_close(got.values, torch.nanmedian(t, dim, keepdim).values)
                check_indices(got, t, dim)
        assert_dist_close(torch.median(x), torch.median(t))
        assert_dist_close(x.nanmedian(), t.nanmedian())


@pytest.mark.parametrize("interpolation", ["linear", "lower", "higher", "nearest", "midpoint"])
def test_quantiles_like_torch(interpolation):
    t = data((9, 4), torch.float64)
    t[:, 3] = math.nan  # an all-NaN column
    for q in (0.3, torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=t.dtype)):
        for dim in (None, 0, 1):
            for keepdim in (False, True):
                for x in layouts(t):
                    for f in (torch.quantile, torch.nanquantile):
                        assert_dist_close(f(x, q, dim, keepdim, interpolation=interpolation),
                                          f(t, q, dim, keepdim, interpolation=interpolation))


def test_topk_with_larger_k_is_split():
    t = torch.randn(40, 2, dtype=torch.float64)
    for x in split_along(t, 0):
        got = torch.topk(x, 30, 0)
        assert_dist_close(got, torch.topk(t, 30, 0), split=0)


@pytest.mark.parametrize("shape", [(10,), (1,), (7, 3), (13, 2), (2, 9, 2), (30,)])
def test_mode_like_torch(shape):
    t = torch.randint(0, 3, shape)
    for dim in range(-len(shape), len(shape)):
        for x in layouts(t):
            for keepdim in (False, True):
                got = torch.mode(x, dim, keepdim)
                assert_dist_close(got.values, torch.mode(t, dim, keepdim).values)
                check_indices(got, t, dim)
    long_run = torch.tensor([5] * 7 + [1, 2, 1, 2])  # one run across every chunk
    for x in split_along(long_run, 0):
        assert_dist_close(torch.mode(x), torch.mode(long_run))


GRADIENTS = {
    "sort": lambda a: torch.sort(a, dim=0, stable=True).values,
    "sort_desc": lambda a: torch.sort(a, dim=0, descending=True, stable=True).values,
    "msort": torch.msort,
    "topk": lambda a: torch.topk(a, 2, 0).values,
    "topk_large": lambda a: torch.topk(a, 8, 0).values,
    "kthvalue": lambda a: torch.kthvalue(a, 5, 0).values,
    "median": lambda a: torch.median(a, 0).values,
    "median_all": torch.median,
    "nanmedian": lambda a: torch.nanmedian(a, 0).values,
    "quantile": lambda a: torch.quantile(a, torch.tensor([0.2, 0.5, 0.9], dtype=a.dtype), 0),
    "nanquantile_all": lambda a: torch.nanquantile(a, 0.4, interpolation="midpoint"),
    "mode": lambda a: torch.mode(a.round(), 0).values,
}


def check_gradient(f, t):
    """The gradient of ``f`` on every layout of ``t`` (float64) equals torch's on the global tensor."""
    tt = t.clone().requires_grad_()
    expected = f(tt)
    cotangent = torch.randn(expected.shape, dtype=expected.dtype)
    (expected * cotangent).sum().backward()
    for x in layouts(t, requires_grad=True):
        (f(x) * cotangent).sum().backward()
        assert_dist_close(x.grad, tt.grad, split=x.split_dim)


@pytest.mark.parametrize("name", GRADIENTS)
def test_gradients_like_torch(name):
    check_gradient(GRADIENTS[name], torch.randn(9, 3, dtype=torch.float64) * 3)


def test_errors_on_every_rank():
    x = th.distribute(torch.randn(5, 2), 0)
    with pytest.raises(RuntimeError, match="out of range"):
        torch.kthvalue(x, 6, 0)
    with pytest.raises(RuntimeError, match="k"):
        torch.topk(x, 6, 0)
    with pytest.raises(RuntimeError, match="q"):
        torch.quantile(x, 1.5, 0)
    with pytest.raises(RuntimeError):
        torch.sort(th.distribute(torch.randn(4, dtype=torch.complex64), 0))
    with pytest.raises(RuntimeError):
        torch.topk(th.distribute(torch.ones(4, dtype=torch.bool), 0), 1)
    with pytest.raises(RuntimeError, match="non-empty"):
        torch.quantile(th.distribute(torch.ones(0, 2), 0), 0.5)
    assert_dist_close(torch.median(th.distribute(torch.ones(0, 2), 0)), torch.median(torch.ones(0, 2)))


def test_unique_like_torch():
    for shape in [(20,), (1,), (7, 3), (2, 5, 3)]:
        t = torch.randint(0, 4, shape)
        t.view(-1)[:5] = 2  # a run across chunks
        for x in layouts(t):
            assert_dist_close(torch.unique(x), torch.unique(t))
            assert_dist_close(x.unique(return_inverse=True, return_counts=True), t.unique(return_inverse=True, return_counts=True))
            assert_dist_close(torch.unique(x, sorted=False, return_counts=True), torch.unique(t, sorted=False, return_counts=True))
            expected = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
            assert_dist_close(torch.unique_consecutive(x, return_inverse=True, return_counts=True), expected)
            assert_dist_close(torch.unique_consecutive(x), torch.unique_consecutive(t))
    f = torch.tensor([1.0, math.nan, -0.0, 0.0, 1.0, math.nan])
    for x in layouts(f):
        assert_dist_close(torch.unique(x, return_counts=True), torch.unique(f, return_counts=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bool])
def test_unique_dim_like_torch(dtype):
    """unique(dim=k) along the split axis and along the others: distinct slices, sorted,
    with their inverse and counts (repeated slices across chunks, empty chunks)."""
    t = torch.randint(0, 2, (9, 3, 2)).to(dtype)
    t[5], t[:, 2] = t[1], t[:, 0]
    for x in layouts(t):
        for dim in (0, 1, -1):
            expected = torch.unique(t, dim=dim, return_inverse=True, return_counts=True)
            assert_dist_close(torch.unique(x, dim=dim, return_inverse=True, return_counts=True), expected)
            assert_dist_close(x.unique(dim=dim), expected[0])
    assert_dist_close(torch.unique(th.distribute(t[:0], 0), dim=0, return_counts=True), torch.unique(t[:0], dim=0, return_counts=True))


def test_histograms_like_torch():
    t = torch.randn(17, 3, dtype=torch.float64)
    edges = torch.tensor([-1.0, 0.0, 2.0], dtype=t.dtype)
    for x in layouts(t):
        assert_dist_close(torch.histc(x, 7), torch.histc(t, 7), split=None)
        assert_dist_close(torch.histc(x, 5, -1, 1), torch.histc(t, 5, -1, 1))
        assert_dist_close(torch.histc(x * 0 + 2, 4), torch.histc(t * 0 + 2, 4))  # one value: torch widens the range
        assert_dist_close(torch.histogram(x, 6), torch.histogram(t, 6))
        assert_dist_close(torch.histogram(x, 6, density=True), torch.histogram(t, 6, density=True))
        assert_dist_close(torch.histogram(x, edges, weight=t.abs()), torch.histogram(t, edges, weight=t.abs()))
    i, w = torch.randint(0, 9, (23,)), torch.rand(23, dtype=torch.float64)
    for x in layouts(i):
        assert_dist_close(torch.bincount(x), torch.bincount(i))
        assert_dist_close(x.bincount(th.distribute(w, 0), minlength=12), i.bincount(w, minlength=12))
    with pytest.raises(RuntimeError, match="non-negative"):
        torch.bincount(th.distribute(torch.tensor([0, 1, 2, -1]), 0))


def test_searches_like_torch():
    seq = torch.sort(torch.randint(0, 10, (15,))).values.double()
    values = torch.randint(-1, 12, (4, 5)).double()
    for s in layouts(seq):
        for v in list(layouts(values)) + [values]:
            for right in (False, True):
                assert_dist_close(torch.searchsorted(s, v, right=right), torch.searchsorted(seq, values, right=right))
                assert_dist_close(torch.bucketize(v, s, right=right), torch.bucketize(values, seq, right=right))
            assert_dist_close(torch.searchsorted(s, v, side="right", out_int32=True), torch.searchsorted(seq, values, side="right", out_int32=True))
            assert_dist_close(torch.isin(v, s), torch.isin(values, seq))
            assert_dist_close(torch.isin(v, s, invert=True), torch.isin(values, seq, invert=True))
    rows = torch.sort(torch.randn(4, 6), 1).values  # a batch of sequences
    queries = torch.randn(4, 3)
    for v in layouts(queries):
        assert_dist_close(torch.searchsorted(rows, v), torch.searchsorted(rows, queries))


@pytest.mark.parametrize("f", [torch.cov, lambda a: a.cov(correction=0), torch.corrcoef])
def test_covariance_like_torch(f):
    for t in (torch.randn(3, 8, dtype=torch.float64), torch.randn(7, dtype=torch.float64), torch.randint(0, 5, (2, 6))):
        for x in layouts(t):
            assert_dist_close(f(x), f(t), split=None)
    check_gradient(f, torch.randn(3, 8, dtype=torch.float64))


def test_weighted_covariance_and_sorter():
    t = torch.randn(3, 8, dtype=torch.float64)
    fw, aw = torch.randint(1, 4, (8,)), torch.rand(8, dtype=torch.float64)
    for x in layouts(t):
        for kw in ({"fweights": fw}, {"aweights": aw}, {"fweights": fw, "aweights": aw, "correction": 0}):
            assert_dist_close(torch.cov(x, **kw), torch.cov(t, **kw))
        assert_dist_close(torch.cov(x, fweights=th.distribute(fw, 0), aweights=th.distribute(aw, 0)), torch.cov(t, fweights=fw, aweights=aw))
    seq = torch.randint(0, 10, (15,)).double()
    sorter = torch.argsort(seq)
    values = torch.randint(-1, 12, (7,)).double()
    for s in layouts(seq):
        for v in layouts(values):
            assert_dist_close(torch.searchsorted(s, v, sorter=sorter), torch.searchsorted(seq, values, sorter=sorter))
