"""Reductions against torch on the global tensor: every layout, dims, keepdim, dtypes, gradients, errors."""
import math
import re

import pytest
import torch

import torchheat as th
from torchheat.comm import functional as cf
from torchheat.testing import assert_dist_close, layouts

SHAPES = [(7, 5), (2, 3, 4), (10,), (1, 4)]  # (1, 4): fewer rows than ranks
DIMS = {1: [None, 0, -1], 2: [None, 0, -1, (0, 1)], 3: [None, 0, -1, (0, 2), (1, -1), (0, 1, 2)]}


def kw(dim, keepdim):
    return {} if dim is None else {"dim": dim, "keepdim": keepdim}


# Reductions over any set of dims: name -> f(tensor, **kw(dim, keepdim)).
MULTI = {
    "sum": torch.sum,
    "nansum": torch.nansum,
    "mean": torch.mean,
    "nanmean": torch.nanmean,
    "amax": torch.amax,
    "amin": lambda a, **k: a.amin(**k),
    "var": torch.var,
    "std": lambda a, **k: a.std(**k),
    "var_mean": torch.var_mean,
    "std_mean": lambda a, **k: torch.std_mean(a, correction=0, **k),
    "vector_norm": torch.linalg.vector_norm,
    "vector_norm_3": lambda a, **k: torch.linalg.vector_norm(a, 3, **k),
    "vector_norm_inf": lambda a, **k: torch.linalg.vector_norm(a, math.inf, **k),
    "vector_norm_-inf": lambda a, **k: torch.linalg.vector_norm(a, -math.inf, **k),
    "vector_norm_0": lambda a, **k: torch.linalg.vector_norm(a, 0, **k),
    "vector_norm_-1.5": lambda a, **k: torch.linalg.vector_norm(a, -1.5, **k),
    "norm": lambda a, **k: a.norm(2, **k),
    "norm_1": lambda a, **k: torch.norm(a, 1, **k),
    "logsumexp": lambda a, **k: torch.logsumexp(a, **({"dim": tuple(range(a.dim()))} if not k else k)),
    "any": lambda a, **k: (a > 1).any(**k),
    "all": lambda a, **k: torch.all(a > -1.5, **k),
    "count_nonzero": lambda a, **k: torch.count_nonzero(a > 0, **({"dim": k["dim"]} if k else {})),
}
# Reductions over one dim or all: name -> f(tensor, dim=None | int, keepdim).
SINGLE = {
    "prod": lambda a, dim, keepdim: a.prod() if dim is None else torch.prod(a, dim, keepdim),
    "max": lambda a, dim, keepdim: a.max() if dim is None else a.max(dim, keepdim),
    "min": lambda a, dim, keepdim: torch.min(a) if dim is None else torch.min(a, dim=dim, keepdim=keepdim),
    "argmax": lambda a, dim, keepdim: torch.argmax(a, dim, keepdim),
    "argmin": lambda a, dim, keepdim: a.argmin(dim=dim, keepdim=keepdim),
    "aminmax": lambda a, dim, keepdim: torch.aminmax(a, dim=dim, keepdim=keepdim),
}


def expected_split(x, dim, keepdim):
    """Where the split axis of ``x`` ends up after reducing ``dim`` (None: all dims)."""
    ndim = x.dim()
    dims = set(range(ndim)) if dim is None else {d % ndim for d in ((dim,) if isinstance(dim, int) else dim)}
    if x.split_dim is None or x.split_dim in dims:
        return None
    return x.split_dim if keepdim else x.split_dim - sum(d < x.split_dim for d in dims)


assert_same = assert_dist_close  # compares tuples of results too


def outputs(result):
    return [result] if isinstance(result, torch.Tensor) else list(result)


def check_grad(f, t, weight=True):
    """The gradient of ``f`` on every layout of ``t``, and of a replicated weight multiplied
    in, equals torch's on the global tensor."""
    w0 = torch.rand(t.shape[-1], dtype=t.dtype) + 0.5
    tt, wt = t.clone().requires_grad_(), w0.clone().requires_grad_()
    expected = outputs(f(tt * wt if weight else tt))
    cotangents = [torch.randn(e.shape, dtype=e.dtype) if e.is_floating_point() else None for e in expected]
    sum((e * c).sum() for e, c in zip(expected, cotangents) if c is not None).backward()
    for x in layouts(t, requires_grad=True):
        w = w0.clone().requires_grad_()
        got = outputs(f(x * w if weight else x))
        sum((g * c).sum() for g, c in zip(got, cotangents) if c is not None).backward()
        if tt.grad is None:  # torch's "no gradient" means zero
            assert x.grad is None or not x.grad.full().any()
        else:
            assert_dist_close(x.grad, tt.grad, split=x.split_dim)
        if weight and wt.grad is None:
            assert w.grad is None or not w.grad.any()
        elif weight:
            torch.testing.assert_close(w.grad, wt.grad)


# -- values, dtypes, layouts ----------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*degrees of freedom")  # var of one row, as torch warns
@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("shape", SHAPES)
def test_multi_dim_reductions(name, shape):
    f, t = MULTI[name], torch.randn(shape, dtype=torch.float64)
    for dim in DIMS[len(shape)]:
        for keepdim in (False, True) if dim is not None else (False,):
            if name == "count_nonzero" and keepdim:
                continue
            expected = f(t, **kw(dim, keepdim))
            for x in layouts(t):
                assert_same(f(x, **kw(dim, keepdim)), expected, split=expected_split(x, dim, keepdim))


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize("shape", SHAPES)
def test_single_dim_reductions(name, shape):
    f, t = SINGLE[name], torch.randn(shape, dtype=torch.float64)
    for dim in [None] + list(range(-len(shape), len(shape))):
        for keepdim in (False, True):
            if dim is None and keepdim and name in ("prod", "max", "min"):
                continue  # max(x) has no keepdim
            expected = f(t, dim, keepdim)
            for x in layouts(t):
                assert_same(f(x, dim, keepdim), expected, split=expected_split(x, dim, keepdim))


def test_global_indices_first_occurrence_on_ties():
    # Few distinct values: the extreme occurs on several ranks; torch returns the first occurrence.
    t = torch.randint(0, 3, (9, 4)).double()
    t[5:, 1] = 2.0
    for x in layouts(t):
        for f in (lambda a: a.argmax(), lambda a: a.argmin(), lambda a: a.argmax(0), lambda a: torch.argmin(a, 0, True),
                  lambda a: a.max(0).indices, lambda a: a.min(0).indices, lambda a: a.argmax(1)):
            assert_dist_close(f(x), f(t))
    t = torch.randint(0, 2, (3, 4, 5))  # flattened: global row-major order, whatever the split axis
    for x in layouts(t):
        assert_dist_close(x.argmax(), t.argmax())
        assert_dist_close(torch.argmin(x, keepdim=True), torch.argmin(t, keepdim=True))


def test_nan_is_the_extreme():
    t = torch.randn(8, 3, dtype=torch.float64)
    t[3, 0] = t[6, 0] = t[5, 2] = math.nan
    for x in layouts(t):
        for f in (torch.amax, torch.amin, torch.max, lambda a: a.argmax(), lambda a: a.argmin(0),
                  lambda a: torch.max(a, 0), lambda a: torch.min(a, 0), lambda a: torch.aminmax(a, dim=0)):
            assert_same(f(x), f(t))
        assert_dist_close(torch.nansum(x, 0), torch.nansum(t, 0))
        assert_dist_close(torch.nanmean(x), torch.nanmean(t))
        assert_dist_close(x.sum(0), t.sum(0))


@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
def test_empty_global_extent_uses_identities():
    t = torch.randn(0, 3, dtype=torch.float64)
    for x in layouts(t):
        for f in (lambda a: a.sum(0), lambda a: a.mean(0), lambda a: a.prod(0), lambda a: a.var(0),
                  lambda a: torch.std_mean(a, 0), lambda a: a.logsumexp(0), lambda a: (a > 0).any(0),
                  lambda a: (a > 0).all(0), lambda a: a.count_nonzero(0), lambda a: a.norm(dim=0),
                  lambda a: torch.linalg.vector_norm(a, 0, 0), lambda a: a.amax(1), lambda a: a.sum()):
            assert_same(f(x), f(t))


# -- dtypes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_dtypes(dtype):
    t = torch.randint(0, 3, (6, 4)).to(dtype)
    fs = [lambda a: a.sum(), lambda a: a.sum(0), lambda a: torch.nansum(a, 0), lambda a: a.prod(0), lambda a: a.prod(),
          lambda a: a.amax(0), lambda a: a.amin(), lambda a: a.max(), lambda a: torch.min(a, 0),
          lambda a: torch.aminmax(a),
          lambda a: a.any(0), lambda a: a.all(), lambda a: a.count_nonzero(), lambda a: a.logsumexp(0),
          lambda a: a.mean(0, dtype=torch.float64), lambda a: a.sum(0, dtype=torch.float32)]
    if dtype != torch.bool:
        fs += [lambda a: a.argmax(), lambda a: a.argmin(0)]
    for x in layouts(t):
        for f in fs:
            assert_same(f(x), f(t))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_accumulates_in_float32(dtype):
    t = torch.randn(40, 3).to(dtype)
    fs = [lambda a: a.sum(0), lambda a: a.mean(), lambda a: torch.nansum(a, 0), lambda a: torch.nanmean(a, 0),
          lambda a: a.prod(0),
          lambda a: a.var(0), lambda a: a.std(), lambda a: a.norm(dim=0), lambda a: torch.linalg.vector_norm(a, 3),
          lambda a: a.logsumexp(0), lambda a: a.amax(0), lambda a: a.argmax(), lambda a: a.max(0)]
    for x in layouts(t):
        for f in fs:
            expected = f(t)
            assert_same(f(x), expected, **({} if dtype == torch.float16 else {"rtol": 2e-2, "atol": 1e-2}))
    big = torch.full((2000,), 30.0, dtype=dtype)  # 60000: right only when partial sums stay in float32
    for x in layouts(big):
        assert_dist_close(x.sum(), big.sum())
        assert abs(x.sum().item() - 60000) < 200
        assert_dist_close(x.mean(), big.mean())


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex(dtype):
    t = torch.randn(6, 3, dtype=dtype)
    fs = [lambda a: a.sum(0), lambda a: a.mean(), lambda a: a.prod(0), lambda a: a.var(0), lambda a: a.std(),
          lambda a: torch.var_mean(a, 0), lambda a: a.norm(), lambda a: torch.linalg.vector_norm(a, math.inf, 0),
          lambda a: torch.linalg.vector_norm(a, 1, dtype=torch.complex128),
          lambda a: a.logsumexp(0), lambda a: a.count_nonzero(0), lambda a: a.any(0)]
    for x in layouts(t):
        for f in fs:
            assert_same(f(x), f(t))


def test_dtype_and_numpy_keywords():
    t = torch.randn(5, 4)
    for x in layouts(t):
        assert_dist_close(x.sum(axis=0, keepdims=True), t.sum(axis=0, keepdims=True))
        assert_dist_close(torch.mean(x, 0, dtype=torch.float64), torch.mean(t, 0, dtype=torch.float64))
        assert_dist_close(x.prod(0, dtype=torch.float64), t.prod(0, dtype=torch.float64))
        assert_dist_close(torch.linalg.vector_norm(x, dtype=torch.float64),
                          torch.linalg.vector_norm(t, dtype=torch.float64))
        assert_dist_close(torch.nanmean(x, dtype=torch.float64), torch.nanmean(t, dtype=torch.float64))
        assert_dist_close(torch.amax(x, axis=1), torch.amax(t, axis=1))


def test_var_std_forms():
    t = torch.randn(6, 5, dtype=torch.float64)
    calls = [lambda a: a.var(0, True, True), lambda a: a.var(False), lambda a: torch.std(a, unbiased=False),
             lambda a: a.var(0, correction=2), lambda a: torch.std(a, (0, 1), correction=0.5, keepdim=True),
             lambda a: torch.var_mean(a, 1, unbiased=False), lambda a: torch.std_mean(a, dim=0, keepdim=True)]
    for x in layouts(t):
        for f in calls:
            assert_same(f(x), f(t))


def test_var_is_stable_for_large_means():
    t = (torch.randn(50, 3, dtype=torch.float64) + 1e4).float()
    expected = t.double().var(0)  # float32 sums of squares (E[x^2] - E[x]^2) would lose every digit here
    for x in layouts(t):
        torch.testing.assert_close(x.var(0).full().double(), expected, rtol=1e-6, atol=0)


def test_var_degrees_of_freedom():
    t = torch.randn(1, 3, dtype=torch.float64)
    for x in layouts(t):
        with pytest.warns(UserWarning, match="degrees of freedom"):
            assert_dist_close(x.var(0), torch.full((3,), math.nan, dtype=torch.float64))


def test_norm_p_and_fro(comm):
    t = torch.randn(4, 3, 2, dtype=torch.float64)
    calls = [lambda a: torch.norm(a), lambda a: torch.norm(a, "fro", (0, 1)), lambda a: a.norm(math.inf, 0),
             lambda a: a.norm(0.5, dim=(0, 2), keepdim=True), lambda a: torch.norm(a, p=-2, dim=0),
             lambda a: torch.norm(a.float(), 2, dtype=torch.float64)]
    for x in layouts(t):
        for f in calls:
            assert_dist_close(f(x), f(t))
        if x.split_dim in (None, 2) or comm.size == 1:  # a matrix norm over axes that are not split is local
            assert_dist_close(torch.norm(x, "nuc", (0, 1)), torch.norm(t, "nuc", (0, 1)))
        else:
            with pytest.raises(th.NotDistributedError, match="norm"):
                torch.norm(x, "nuc", (0, 1))


def test_max_with_other_is_elementwise():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    for x in layouts(a):
        assert_dist_close(torch.max(x, b), torch.maximum(a, b), split=x.split_dim)
        assert_dist_close(x.min(other=b), torch.minimum(a, b), split=x.split_dim)


def test_out_argument():
    t = torch.randn(5, 3)
    for x in layouts(t):
        out = th.zeros(3)
        assert torch.sum(x, 0, out=out) is out
        assert_dist_close(out, t.sum(0))
        values, indices = th.zeros(5), th.zeros(5, dtype=torch.int64)
        torch.max(x, 1, out=(values, indices))
        assert_dist_close(values, t.max(1).values)
        assert_dist_close(indices, t.max(1).indices)


# -- gradients -------------------------------------------------------------------------------
GRAD_MULTI = [name for name in MULTI if name not in ("any", "all", "count_nonzero")]


@pytest.mark.parametrize("name", GRAD_MULTI)
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4)])
def test_gradients_multi_dim(name, shape):
    t = torch.randn(shape, dtype=torch.float64)
    for dim in DIMS[len(shape)][:4]:
        check_grad(lambda a: MULTI[name](a, **kw(dim, dim == 0)), t)


@pytest.mark.parametrize("name", ["prod", "max", "min", "aminmax"])
@pytest.mark.parametrize("dim", [None, 0, -1])
def test_gradients_single_dim(name, dim):
    t = torch.randn(6, 4, dtype=torch.float64)
    t[2, 1] = 0.0  # prod: one zero in a column
    t[1, 3] = t[4, 3] = 0.0  # prod: two zeros in a column
    check_grad(lambda a: SINGLE[name](a, dim, False), t)


def test_gradients_shared_by_ties():
    # torch shares amax's (and max(x)'s, aminmax's, the inf-norm's) gradient evenly by all
    # ties of the whole tensor, and sends max(x, dim)'s to the returned index.
    t = torch.randint(0, 3, (9, 4)).double() - 1
    fs = [lambda a: a.amax(), lambda a: a.amin(0), lambda a: a.amax((0, 1), keepdim=True), lambda a: a.max(),
          lambda a: a.min(), lambda a: a.max(0).values, lambda a: torch.min(a, 0, True).values,
          lambda a: torch.aminmax(a, dim=0), lambda a: torch.linalg.vector_norm(a, math.inf),
          lambda a: torch.linalg.vector_norm(a, -math.inf, 0)]
    for f in fs:
        check_grad(f, t, weight=False)


def test_gradients_empty_and_single_row():
    for shape in [(1, 3), (2, 3), (0, 3)]:
        t = torch.randn(shape, dtype=torch.float64)
        for f in (lambda a: a.sum(0), lambda a: a.mean(), lambda a: a.prod(0), lambda a: a.logsumexp(0),
                  lambda a: a.norm(dim=0)):
            check_grad(f, t)
        if shape[0]:
            for f in (lambda a: a.amax(0), lambda a: a.max(0).values, lambda a: a.var(0, correction=0)):
                check_grad(f, t)


# -- communication ---------------------------------------------------------------------------
ONE_COLLECTIVE = [lambda a: a.sum(0), lambda a: a.amax(0), lambda a: a.argmax(0), lambda a: a.var(0),
                  lambda a: a.prod(0), lambda a: a.norm(dim=0), lambda a: a.logsumexp(0), lambda a: a.any(0),
                  lambda a: a.max(0), lambda a: torch.aminmax(a, dim=0), lambda a: torch.nanmean(a, 0)]


@pytest.mark.parametrize("f", ONE_COLLECTIVE)
def test_one_collective_and_none_when_split_survives(comm, f):
    t = torch.randn(7, 5)
    for x in layouts(t):
        with th.debug.comm_log() as log:
            f(x)
        assert len(log) == (1 if x.split_dim == 0 and comm.size > 1 else 0), [e.collective for e in log]


# -- errors ----------------------------------------------------------------------------------
def torch_exception(f, *args):
    with pytest.raises(Exception) as info:
        f(*args)
    return info.type, str(info.value)


@pytest.mark.parametrize("f, t", [
    (lambda a: a.sum(2), torch.randn(4, 3)),
    (lambda a: a.mean((0, -3)), torch.randn(4, 3)),
    (lambda a: a.amax(5), torch.randn(4, 3)),
    (lambda a: a.max(0, dim=1), torch.randn(4, 3)),
    (lambda a: a.prod((0, 1)), torch.randn(4, 3)),
    (lambda a: torch.var(a, 3), torch.randn(4, 3)),
    (lambda a: torch.logsumexp(a, ()), torch.randn(4, 3)),
    (lambda a: a.mean(), torch.arange(12).reshape(4, 3)),
    (lambda a: a.var(0), torch.arange(12).reshape(4, 3)),
    (lambda a: torch.nanmean(a, 0), torch.arange(12).reshape(4, 3)),
    (lambda a: torch.nansum(a), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: a.amax(0), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: a.amax(1), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: a.max(), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: torch.aminmax(a, dim=0), torch.randn(4, 3, dtype=torch.complex64)),
    (lambda a: a.argmax(), torch.ones(4, 3, dtype=torch.bool)),
    (lambda a: torch.linalg.vector_norm(a, 2, 0), torch.arange(12).reshape(4, 3)),
    (lambda a: torch.linalg.vector_norm(a, math.inf, 0, dtype=torch.float32), torch.randn(4, 3, dtype=torch.float64)),
    (lambda a: a.amax(0), torch.randn(0, 3)),
    (lambda a: a.max(), torch.randn(0, 3)),
    (lambda a: a.argmax(), torch.randn(3, 0)),
    (lambda a: a.max(0), torch.randn(0, 3)),
    (lambda a: torch.aminmax(a), torch.randn(0, 3)),
    (lambda a: torch.linalg.vector_norm(a, math.inf, 0), torch.randn(0, 3)),
    (lambda a: torch.linalg.vector_norm(a, -1, 0), torch.randn(0, 3)),
])
def test_bad_input_raises_torchs_error_on_every_rank(f, t):
    kind, message = torch_exception(f, t)
    for x in layouts(t):
        with pytest.raises(kind, match=re.escape(message)):
            f(x)


def test_all_gather_parts_mixes_dtypes_and_differentiates(comm):
    a = torch.full((2,), float(comm.rank), dtype=torch.float64, requires_grad=True)
    i = torch.tensor([comm.rank, -comm.rank])
    values, indices = cf.all_gather_parts([a, i], comm)
    assert values.shape == (comm.size, 2) and indices.dtype == torch.int64
    assert values[:, 0].tolist() == list(range(comm.size)) and indices[:, 1].tolist() == [-r for r in range(comm.size)]
    (values * torch.arange(1.0, comm.size + 1, dtype=torch.float64)[:, None]).sum().backward()
    assert a.grad.tolist() == [comm.rank + 1.0] * 2


# -- empty global tensors, repeated dims, out= -----------------------------------------------
def check_like_torch(f, t):
    """``f`` on every layout of ``t`` gives torch's result, or raises torch's exception on
    every rank (a rank with an empty chunk included)."""
    try:
        expected, error = f(t), None
    except Exception as err:
        expected, error = None, err
    for x in layouts(t):
        if error is None:
            assert_same(f(x), expected)
        else:
            with pytest.raises(type(error), match=re.escape(str(error))):
                f(x)


EMPTY_SHAPES = [(0, 4), (4, 0), (0, 3, 2), (3, 0, 2)]


@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
@pytest.mark.parametrize("name", list(MULTI) + list(SINGLE))
@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_empty_global_tensors(name, shape):
    t = torch.randn(shape, dtype=torch.float64)
    f = MULTI.get(name)
    for dim in [None] + list(range(len(shape))):
        for keepdim in (False, True):
            if name in SINGLE:
                check_like_torch(lambda a: SINGLE[name](a, dim, keepdim), t)
            elif not (name == "count_nonzero" and keepdim):
                check_like_torch(lambda a: f(a, **kw(dim, keepdim)), t)


@pytest.mark.parametrize("dim", [(0, 0), (0, -2), [1, 1], (0, 1, 0)])
@pytest.mark.parametrize("name", [n for n in MULTI if n not in ("count_nonzero",)] + ["count_nonzero"])
def test_repeated_dims_raise_torchs_error(name, dim):
    t = torch.randn(4, 3, dtype=torch.float64)
    f = MULTI[name]
    call = (lambda a: f(a, dim=dim)) if name == "count_nonzero" else (lambda a: f(a, dim=dim, keepdim=False))
    kind, message = torch_exception(call, t)
    for x in layouts(t):
        with pytest.raises(kind, match=re.escape(message)):
            call(x)


def test_var_std_out_and_explicit_out_none():
    t = torch.randn(5, 3, dtype=torch.float64)
    for x in layouts(t):
        for f, dim in ((torch.var, 0), (torch.std, 1), (torch.var, (0, 1)), (torch.std, None)):
            shape = t.var(dim).shape if dim is not None else ()
            out = th.zeros(shape, dtype=torch.float64)
            kwargs = {} if dim is None else {"dim": dim}
            assert f(x, **kwargs, out=out) is out
            assert_dist_close(out, f(t, **kwargs))
        for f in (lambda a, **k: torch.sum(a, 0, **k), lambda a, **k: torch.var(a, 0, **k),
                  lambda a, **k: torch.amax(a, 1, **k), lambda a, **k: torch.max(a, 0, **k),
                  lambda a, **k: torch.logsumexp(a, 0, **k), lambda a, **k: torch.mean(a, **k)):
            assert_same(f(x, out=None), f(t))
        with pytest.raises(TypeError, match="var_mean"):
            torch.var_mean(x, 0, out=None)


def test_var_mean_merge_does_not_overflow():
    for t in (torch.full((4,), 1e308, dtype=torch.float64), torch.full((6, 2), -1e308, dtype=torch.float64),
              torch.full((5,), 3e38)):
        for x in layouts(t):
            for f in (lambda a: torch.var_mean(a, 0), lambda a: torch.std_mean(a, 0), lambda a: torch.var_mean(a)):
                assert_same(f(x), f(t))


def test_var_whole_chunk_paths_agree():
    # var/std over every axis of a chunk take a blocked two-pass path (no gradient) or torch's
    # var_mean (with one): both are torch's result, for large means and several blocks.
    t = torch.randn(300001, dtype=torch.float64) * 3 + 1e6
    for x in layouts(t):
        for f in (lambda a: a.var(0), lambda a: torch.std(a, correction=0)):
            assert_same(f(x), f(t))
    small = torch.randn(7, 5, dtype=torch.float64)
    check_grad(lambda a: a.var(), small)
    check_grad(lambda a: torch.std(a, (0, 1)), small)


# -- NaN -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["first", "last", "all", "column"])
def test_nan_in_one_chunk_or_everywhere(where):
    t = torch.randn(7, 3, dtype=torch.float64)
    t[0, 0] = -math.inf
    if where == "first":
        t[0, 1] = math.nan
    elif where == "last":
        t[6, 2] = math.nan
    elif where == "all":
        t[:] = math.nan
    else:
        t[:, 1] = math.nan
        t[2, 2] = math.inf
    fs = [lambda a: a.amax(0), lambda a: a.amin(), lambda a: a.max(), lambda a: a.min(0), lambda a: torch.max(a, 0),
          lambda a: a.argmax(), lambda a: a.argmin(0), lambda a: torch.aminmax(a, dim=0), lambda a: torch.aminmax(a),
          lambda a: a.logsumexp(0), lambda a: a.sum(0), lambda a: a.var(0), lambda a: a.norm(dim=0),
          lambda a: torch.linalg.vector_norm(a, math.inf, 0), lambda a: a.nansum(0), lambda a: a.nanmean(0)]
    for f in fs:
        check_like_torch(f, t)


# -- second order ----------------------------------------------------------------------------
def check_second_order(f, t):
    """Gradients of gradients: the first gradient of ``<f(x), c>`` (with ``create_graph``) and
    the gradient of ``<that gradient, v>`` equal torch's on the global tensor, on every layout."""
    tt = t.clone().requires_grad_()
    first = f(tt)
    c, v = torch.randn(first.shape, dtype=t.dtype), torch.randn(t.shape, dtype=t.dtype)
    (g,) = torch.autograd.grad((first * c).sum(), tt, create_graph=True)
    (h,) = torch.autograd.grad((g * v).sum(), tt)
    for x in layouts(t, requires_grad=True):
        (gx,) = torch.autograd.grad((f(x) * c).sum(), x, create_graph=True)
        assert_dist_close(gx, g.detach(), split=x.split_dim)
        (hx,) = torch.autograd.grad((gx * v).sum(), x)
        assert_dist_close(hx, h, split=x.split_dim)


SECOND_ORDER = {
    "sum()**2": lambda a: a.sum() ** 2,
    "sum(0)**2": lambda a: a.sum(0) ** 2,
    "mean(0)**2": lambda a: a.mean(0) ** 2,
    "var()": lambda a: a.var(),
    "var(0)": lambda a: a.var(0),
    "std(0)": lambda a: a.std(0),
    "std_mean": lambda a: torch.std_mean(a, 0)[0] * torch.std_mean(a, 0)[1],
    "amax(0)**2": lambda a: a.amax(0) ** 2,
    "max()**2": lambda a: a.max() ** 2,
    "max(0)**2": lambda a: a.max(0).values ** 2,
    "aminmax": lambda a: torch.aminmax(a, dim=0).min * torch.aminmax(a, dim=0).max,
    "logsumexp(0)": lambda a: a.logsumexp(0),
    "logsumexp()": lambda a: torch.logsumexp(a, (0, 1)),
    "norm(0)": lambda a: a.norm(dim=0),
    "norm()": lambda a: torch.norm(a),
    "vector_norm_3": lambda a: torch.linalg.vector_norm(a, 3, 0),
    "prod(0)": lambda a: a.prod(0),
}


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_second_order_gradients(name):
    check_second_order(SECOND_ORDER[name], torch.randn(7, 3, dtype=torch.float64))
