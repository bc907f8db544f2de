"""Pointwise ops against torch on the global data: every layout, operand kind, dtype rule,
in-place form, ``out=``, operator, and gradient (float64, incl. replicated operands)."""
import pytest
import torch
import torch.nn.functional as F

import torchheat as th
from torchheat import dispatch
from torchheat.ops import pointwise
from torchheat.testing import assert_dist_close, layouts


def grads_match(fn, inputs, dist_inputs):
    """Run ``fn`` on the global inputs and on their distributed versions (leaves that require
    grad); compare values, layouts and the gradients of a weighted sum."""
    ref = [t.detach().clone().requires_grad_(t.is_floating_point() or t.is_complex()) for t in inputs]
    expected = fn(*ref)
    for d in dist_inputs:
        d.grad = None  # a leaf may be reused across calls
    got = fn(*dist_inputs)
    assert_dist_close(got, expected)
    if not expected.requires_grad:  # torch has no derivative for this op
        return
    w = torch.randn(expected.shape, dtype=expected.dtype)
    (expected * w).sum().backward()
    (got * w).sum().backward()
    for d, r in zip(dist_inputs, ref):
        if r.grad is None:
            assert d.grad is None
        elif isinstance(d, th.DistTensor):
            assert_dist_close(d.grad, r.grad, split=d.split_dim)
        else:
            torch.testing.assert_close(d.grad, r.grad)


def leaf(t, split=None, counts=None):
    return th.distribute(t.detach().clone(), split, counts=counts).requires_grad_()


def partners(x, b):
    """``b`` as a plain tensor, in ``x``'s layout, and split along another axis than ``x``."""
    yield b.clone().requires_grad_()
    if b.dim() == x.dim():
        yield leaf(b, x.split_dim, x.counts)
        if b.dim():
            yield leaf(b, 0 if x.split_dim is None else (x.split_dim + 1) % b.dim())


# -- the op table ----------------------------------------------------------------------------
def test_every_tagged_pointwise_op_is_registered():
    names = [n for n in pointwise.tagged_pointwise() if n not in pointwise.NOT_HERE] + list(pointwise.UNTAGGED)
    missing = [dispatch.func_name(f) for n in names for f in dispatch.aliases(n) if f not in dispatch.REGISTRY]
    assert not missing
    for f in (torch.special.bessel_j0, torch.Tensor.__rsub__, torch.Tensor.__pos__, torch.Tensor.__ilshift__,
              torch.special.expit, torch.arctan2, torch.Tensor.floor_divide_, F.elu_, torch.where):
        assert f in dispatch.REGISTRY, dispatch.func_name(f)
    assert len(names) > 150


UNARY = {
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin, "acos": torch.acos, "atan": torch.atan,
    "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh, "asinh": torch.asinh,
    "acosh": lambda x: torch.acosh(x + 1), "atanh": torch.atanh, "arccos": torch.arccos, "exp": torch.exp,
    "exp2": torch.exp2, "expm1": torch.expm1, "log": torch.log, "log2": torch.log2, "log10": torch.log10,
    "log1p": torch.log1p, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal,
    "sigmoid": torch.sigmoid, "expit": torch.special.expit, "logit": torch.logit, "erf": torch.erf,
    "erfc": torch.special.erfc, "erfinv": torch.erfinv, "lgamma": torch.lgamma, "gammaln": torch.special.gammaln,
    "digamma": torch.digamma, "psi": torch.special.psi, "polygamma": lambda x: torch.polygamma(2, x),
    "mvlgamma": lambda x: torch.mvlgamma(x + 1, p=3), "i0": torch.i0, "i0e": torch.special.i0e,
    "i1": torch.special.i1, "sinc": torch.sinc, "frac": torch.frac, "abs": torch.abs, "absolute": torch.absolute,
    "neg": torch.neg, "negative": torch.negative, "positive": torch.positive, "sign": torch.sign, "sgn": torch.sgn,
    "square": torch.square, "deg2rad": torch.deg2rad, "rad2deg": torch.rad2deg, "ndtr": torch.special.ndtr,
    "ndtri": torch.special.ndtri, "log_ndtr": torch.special.log_ndtr, "entr": torch.special.entr,
    "erfcx": torch.special.erfcx, "bessel_j0": torch.special.bessel_j0, "ceil": torch.ceil, "floor": torch.floor,
    "round": lambda x: torch.round(x * 10, decimals=1), "trunc": torch.trunc, "fix": torch.fix,
    "nan_to_num": lambda x: torch.nan_to_num(x.log() * 0 / (x - x), nan=2.0, posinf=1.0),
    "relu": torch.relu, "elu": F.elu, "softplus": lambda x: F.softplus(x, beta=2), "hardtanh": F.hardtanh,
    "method_exp": lambda x: x.exp(), "method_clamp": lambda x: x.clamp(0.3, 0.6),
}


@pytest.mark.parametrize("name", UNARY)
def test_unary_values_and_gradients(name):
    fn = UNARY[name]
    t = torch.rand(5, 4, dtype=torch.float64) * 0.8 + 0.1  # inside every op's domain
    for x in layouts(t, requires_grad=True):
        grads_match(fn, [t], [x])


@pytest.mark.parametrize("shape", [(0, 3), (1,), ()])
def test_unary_on_empty_and_tiny_tensors(shape):
    t = torch.rand(shape, dtype=torch.float64) + 0.5
    for x in layouts(t, requires_grad=True):
        grads_match(lambda a: torch.log(a).sin() * 2, [t], [x])


BINARY = {
    "add": lambda a, b: torch.add(a, b, alpha=2), "sub": torch.sub, "rsub": torch.rsub, "mul": torch.mul,
    "div": torch.div, "true_divide": torch.true_divide, "pow": torch.pow, "float_power": torch.float_power,
    "atan2": torch.atan2, "arctan2": torch.arctan2, "hypot": torch.hypot, "fmod": torch.fmod,
    "remainder": torch.remainder, "maximum": torch.maximum, "minimum": torch.minimum, "fmax": torch.fmax,
    "fmin": torch.fmin, "copysign": torch.copysign, "xlogy": torch.xlogy, "xlog1py": torch.special.xlog1py,
    "logaddexp": torch.logaddexp, "logaddexp2": torch.logaddexp2, "ldexp": torch.ldexp,
    "lerp": lambda a, b: torch.lerp(a, b, 0.3), "div_floor": lambda a, b: torch.div(a, b, rounding_mode="floor"),
    "operators": lambda a, b: (a + b) * (2 - a) / b ** 2 - 1 / (3 ** a) + (a - b) % 0.7,
}


@pytest.mark.parametrize("name", BINARY)
def test_binary_values_and_gradients(name):
    fn = BINARY[name]
    a = torch.rand(5, 4, dtype=torch.float64) + 0.5
    b = torch.rand(5, 4, dtype=torch.float64) + 0.5
    for x in layouts(a, requires_grad=True):
        for y in partners(x, b):
            grads_match(fn, [a, b], [x, y])


def test_binary_with_broadcast_replicated_operands():
    a, row, col = torch.randn(4, 5, dtype=torch.float64), torch.randn(5, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    for x in layouts(a, requires_grad=True):
        grads_match(lambda p, q, r: torch.addcmul(p, q, r, value=0.5), [a, row, col],
                    [x, row.clone().requires_grad_(), leaf(col)])
        grads_match(lambda p, q, r: torch.addcdiv(p * q, r.exp(), q.exp() + 1), [a, row, col],
                    [x, leaf(row, 0), col.clone().requires_grad_()])


def test_scalars_and_zero_dim_tensors():
    a = torch.randn(6, 3, dtype=torch.float64)
    s = torch.tensor(1.5, dtype=torch.float64)
    for x in layouts(a, requires_grad=True):
        grads_match(lambda p, q: p * q - q ** 2 + 3 * p, [a, s], [x, s.clone().requires_grad_()])
        grads_match(lambda p, q: torch.maximum(p, q), [a, s], [x, leaf(s)])


def test_plain_operands_that_broadcast_beyond_the_split_tensor():
    a, wide, deep = torch.randn(4, 1, dtype=torch.float64), torch.randn(3, dtype=torch.float64), torch.randn(2, 4, 1, dtype=torch.float64)
    for x in layouts(a, requires_grad=True):
        grads_match(torch.mul, [a, wide], [x, wide.clone().requires_grad_()])
        grads_match(torch.sub, [deep, a], [deep.clone().requires_grad_(), x])
        assert (x * deep).split_dim == (None if x.split_dim is None else x.split_dim + 1)


def test_split_along_a_broadcast_axis():
    a, row = torch.randn(5, 3, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
    for x in layouts(a, requires_grad=True):
        grads_match(torch.hypot, [a, row], [x, leaf(row, 0)])
        grads_match(torch.sub, [row, a], [leaf(row, 0), x])
    grads_match(torch.mul, [row, a], [leaf(row, 0), a.clone().requires_grad_()])


def test_different_splits_are_exchanged_never_gathered(comm):
    a, b = torch.randn(6, 5), torch.randn(6, 5)
    x, y = th.distribute(a, 0), th.distribute(b, 1, counts=[5] + [0] * (comm.size - 1))
    with th.debug.comm_log() as log:
        z = torch.atan2(x, y)
        w = y.mul_(x)
    assert "allgather" not in [e.collective for e in log]
    assert_dist_close(z, torch.atan2(a, b), split=0)
    assert_dist_close(w, b * a, split=1)
    assert w is y and y.counts == (5,) + (0,) * (comm.size - 1)


def test_ternary_where_clamp_lerp():
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    lo, hi = torch.full((4,), -0.5, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64).abs()
    for x in layouts(a, requires_grad=True):
        for y in partners(x, b):
            grads_match(lambda p, q: torch.where(p > q, p, q * 2), [a, b], [x, y])
            grads_match(lambda p, q: torch.where(q < 0, 0.5, p), [a, b], [x, y])
            grads_match(lambda p, q: torch.lerp(p, q, p.sigmoid()), [a, b], [x, y])
            grads_match(lambda p, q: p.where(q > 0, q), [a, b], [x, y])
        grads_match(lambda p, q, r: torch.clamp(p, min=q, max=r), [a, lo, hi],
                    [x, lo.clone().requires_grad_(), leaf(hi, None if x.split_dim is None else 0)])
        grads_match(lambda p, r: torch.clip(p, max=r), [a, hi], [x, leaf(hi, 0)])
        grads_match(lambda p: p.clamp(min=-0.2), [a], [x])
        grads_match(lambda p, r: p.clamp_min(r), [a, hi], [x, hi.clone().requires_grad_()])


def test_where_with_one_argument_is_not_pointwise():
    # where(cond) is nonzero (ops/indexing.py): global indices, in torch's order, for every layout
    t = torch.tensor([[0.0, 1.0], [2.0, 0.0], [3.0, 4.0]])
    for x in layouts(t):
        assert [i.full().tolist() for i in torch.where(x)] == [i.tolist() for i in torch.where(t)]


def test_comparisons_predicates_and_logical_ops():
    a = torch.tensor([[0.0, 1.0, -2.0], [float("nan"), float("inf"), -float("inf")], [3.0, -0.0, 5.0], [1.0, 1.0, 2.0]])
    b = torch.tensor([1.0, 1.0, float("nan")])
    fns = [
        torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge, torch.greater, torch.greater_equal, torch.less,
        torch.less_equal, torch.not_equal, torch.logical_and, torch.logical_or, torch.logical_xor,
        lambda p, q: torch.isclose(p, q, equal_nan=True), lambda p, q: p == q, lambda p, q: q != p,
        lambda p, q: p < 1, lambda p, q: 1 >= p, lambda p, q: q > p, lambda p, q: torch.nextafter(p, q),
        lambda p, q: torch.heaviside(p, q), lambda p, q: p.logical_not() | (q > 0),
    ]
    preds = [torch.isnan, torch.isinf, torch.isfinite, torch.isposinf, torch.isneginf, torch.signbit, torch.isreal,
             torch.nan_to_num, torch.logical_not]
    for x in layouts(a):
        for f in fns:
            assert_dist_close(f(x, b), f(a, b), split=x.split_dim)
            assert_dist_close(f(x, th.distribute(b, 0)), f(a, b))
        for f in preds:
            assert_dist_close(f(x), f(a), split=x.split_dim)


def test_integer_bitwise_and_shift_ops():
    a = torch.arange(-6, 14).reshape(5, 4)
    b = torch.arange(1, 21).reshape(5, 4) % 5 + 1
    fns = [
        torch.bitwise_and, torch.bitwise_or, torch.bitwise_xor, torch.bitwise_left_shift, torch.bitwise_right_shift,
        torch.gcd, torch.lcm, torch.floor_divide, torch.remainder, torch.fmod,
        lambda p, q: (p & q) | (p ^ 3) ^ (~q), lambda p, q: (p << 2) >> q, lambda p, q: (1 << q) * p + (100 >> p.abs()),
        lambda p, q: (7 & p) | (2 ^ q), lambda p, q: p // q + 7 // q + p % q - 9 % q, lambda p, q: p ** 2 + 2 ** q,
        lambda p, q: torch.bitwise_not(p), lambda p, q: -p + (+q) - abs(p),
    ]
    for x in layouts(a):
        for f in fns:
            assert_dist_close(f(x, b), f(a, b), split=x.split_dim)
            assert_dist_close(f(x, th.distribute(b, x.split_dim)), f(a, b), split=x.split_dim)
            assert_dist_close(f(x, th.distribute(b, 1)), f(a, b))
    m = torch.tensor([True, False, True, True])
    for x in layouts(m):
        assert_dist_close(x & ~x | x ^ m, m & ~m | m ^ m)


@pytest.mark.parametrize("case", [
    (torch.int64, 2.5), (torch.int32, torch.tensor(2)), (torch.float32, torch.tensor(2.0, dtype=torch.float64)),
    (torch.float32, torch.ones(4, dtype=torch.float64)), (torch.bool, 1), (torch.bool, True), (torch.uint8, -1),
    (torch.float16, 1e-3), (torch.complex64, 1.0), (torch.int16, torch.tensor([1, 2, 3, 4], dtype=torch.int8)),
], ids=str)
def test_type_promotion_follows_torch(case):
    dtype, other = case
    t = (torch.arange(12).reshape(3, 4) % 3).to(dtype)
    fns = [torch.add, torch.mul, torch.div, torch.eq, lambda p, q: q - p, lambda p, q: torch.where(p != 0, p, q)]
    for x in layouts(t):
        for f in fns:
            try:
                expected = f(t, other)
            except Exception as e:  # then torchheat raises the same
                with pytest.raises(type(e)):
                    f(x, other)
                continue
            assert_dist_close(f(x, other), expected, split=x.split_dim)


def test_errors_are_torchs_own():
    for x in layouts(torch.arange(12.).reshape(4, 3)):
        with pytest.raises(NotImplementedError, match="bitwise_and"):
            x & x
        with pytest.raises(RuntimeError, match="can't be cast"):
            x.long().add_(0.5)
        with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
            th.distribute(torch.ones(1, 3), 1).add_(x)
        with pytest.raises(RuntimeError, match=r"size of tensor a \(3\) must match the size of tensor b \(2\)"):
            torch.where(x > 0, x, torch.ones(2))
        with pytest.raises(RuntimeError, match=r"output with shape .*4, 1.* doesn't match the broadcast shape .*4, 3"):
            th.distribute(torch.ones(4, 1), x.split_dim and 0).add_(torch.ones(3))
        with pytest.raises(RuntimeError, match=r"size of tensor a \(4\) must match the size of tensor b \(2\)"):
            th.distribute(torch.ones(4), x.split_dim and 0) + torch.ones(2)
        with pytest.raises(RuntimeError, match="At least one of 'min' or 'max'"):
            torch.clamp(x)
        with pytest.raises(TypeError):
            x + "a"


# -- in-place, out=, operators ---------------------------------------------------------------
@pytest.mark.parametrize("op", ["atan2_", "pow_", "clamp_", "lerp_", "__imod__", "__ipow__", "copysign_", "xlogy_",
                                "hypot_", "div_", "addcmul_", "where_out", "copy_"])
def test_inplace_forms_keep_the_target_layout(op):
    a, b = torch.rand(6, 4) + 0.5, torch.rand(6, 4) + 0.5

    def call(p, q):
        if op == "clamp_":
            return p.clamp_(min=q)
        if op == "lerp_":
            return p.lerp_(q, 0.25)
        if op == "addcmul_":
            return p.addcmul_(q, q, value=-1)
        if op == "where_out":  # out= aliasing an input writes in that input's layout
            return torch.where(q > 1, p, q, out=p)
        return getattr(p, op)(q)

    other = b[0] if op == "hypot_" else b  # a broadcast operand
    expected = call(a.clone(), other)
    for x in layouts(a):
        for y in layouts(other):
            x2 = x.clone()
            res = call(x2, y)
            assert res is x2 and x2.counts == x.counts
            assert_dist_close(x2, expected, split=x.split_dim)


def test_float_power_and_fill_in_every_layout():
    a, b = torch.rand(4, 3, dtype=torch.float64) + 1, torch.rand(4, 3, dtype=torch.float64)
    for x in layouts(a):
        for y in layouts(b):
            x2 = x.clone()
            assert x2.float_power_(y) is x2
            assert_dist_close(x2, a.float_power(b), split=x.split_dim)
        assert_dist_close(torch.fill(x, 2.5), torch.fill(a, 2.5), split=x.split_dim)
        assert x.clone().fill_(th.distribute(torch.tensor(3.0, dtype=torch.float64))).eq(3).all()


def test_inplace_into_replicated_and_plain_targets():
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    for y in layouts(b):
        r = th.distribute(a.clone())
        r.mul_(y)
        assert_dist_close(r, a * b, split=None)
        p = a.clone()
        assert p.sub_(y) is p
        torch.testing.assert_close(p, a - b)


def test_inplace_gradient_through_replicated_operand():
    a, w0 = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ew = w0.clone().requires_grad_()
    ((a.clone() * 2).mul_(ew).sin_() * a).sum().backward()
    for x in layouts(a):
        w = w0.clone().requires_grad_()
        ((x * 2).mul_(w).sin_() * x).sum().backward()
        torch.testing.assert_close(w.grad, ew.grad)


def test_out_argument_layouts_dtypes_and_tuples(comm):
    a, b = torch.randn(6, 4), torch.randn(4)
    for x in layouts(a):
        for like in (th.empty(6, 4, split=1), th.empty(6, 4, split=None), th.empty_like(x)):
            res = torch.mul(x, b, out=like)
            assert res is like
            assert_dist_close(like, a * b, split=like.split_dim)
        with pytest.raises(RuntimeError, match="can't be cast"):
            torch.add(x, b, out=th.empty(6, 4, dtype=torch.int64, split=0))
        grown = th.empty(0, split=0)  # resized like torch resizes an empty out=
        torch.exp(x, out=grown)
        assert_dist_close(grown, a.exp())
        m, e = th.empty_like(x), th.empty(6, 4, dtype=torch.int32, split=0)
        res = torch.frexp(x, out=(m, e))
        em, ee = torch.frexp(a)
        assert_dist_close(m, em, split=x.split_dim)
        assert_dist_close(e, ee, split=0)
        assert res[0] is m and res[1] is e


def test_reflected_operators_with_plain_tensors_on_the_left():
    a, p = torch.rand(4, 3) + 1, torch.rand(4, 3) + 1
    for x in layouts(a):
        assert_dist_close(p - x, p - a, split=x.split_dim)
        assert_dist_close(p / x, p / a, split=x.split_dim)
        assert_dist_close(p ** x, p ** a, split=x.split_dim)
        assert_dist_close(p // x, p // a, split=x.split_dim)
        assert_dist_close(p % x, p % a, split=x.split_dim)
        assert_dist_close(p < x, p < a, split=x.split_dim)
        assert_dist_close(2.0 ** x + 1 - x, 2.0 ** a + 1 - a, split=x.split_dim)
        x2 = x.clone()
        x2 -= p
        x2 **= 2
        x2 /= p
        assert_dist_close(x2, (a - p) ** 2 / p, split=x.split_dim)


# -- conversions and complex parts -----------------------------------------------------------
def test_dtype_conversions_keep_the_layout():
    a = torch.randn(5, 3, dtype=torch.float64) * 4
    convert = [lambda x: x.float(), lambda x: x.half(), lambda x: x.bfloat16(), lambda x: x.bool(), lambda x: x.int(),
               lambda x: x.long(), lambda x: x.double(), lambda x: x.to(torch.float32), lambda x: x.type(torch.int16),
               lambda x: x.chalf(), lambda x: x.cfloat(), lambda x: x.to(torch.ones(1, dtype=torch.int8))]
    for x in layouts(a):
        for c in convert:
            assert_dist_close(c(x), c(a), split=x.split_dim)
    for x in layouts(a, requires_grad=True):
        grads_match(lambda p: p.float().double().sin(), [a], [x])


def test_complex_parts_and_gradients():
    z = torch.randn(5, 3, dtype=torch.complex128)
    parts = [torch.real, torch.imag, torch.angle, torch.abs, lambda v: v.real, lambda v: v.imag,
             lambda v: torch.conj(v).imag, lambda v: torch.complex(v.real, v.imag * 2).angle(),
             lambda v: torch.polar(v.abs(), v.angle()).real, lambda v: v.sgn().imag]
    for x in layouts(z, requires_grad=True):
        for f in parts:
            grads_match(f, [z], [x])
    for x in layouts(z):
        x2 = x.clone()
        x2.imag.copy_(th.distribute(z.real, 1))  # (x.imag = ... is no torch function: not intercepted)
        x2.real.mul_(2)
        assert_dist_close(x2, torch.complex(2 * z.real, z.real), split=x.split_dim)


def test_nn_functional_inplace_activations():
    a = torch.randn(5, 3)
    for x in layouts(a):
        x2 = x.clone()
        assert F.relu(x2, inplace=True) is x2
        assert F.elu_(x2) is x2
        assert_dist_close(x2, F.relu(a), split=x.split_dim)


def test_out_whose_split_axis_has_one_row(comm):
    """Ranks that own no row of a size-1 split axis keep an empty chunk: a plain operand's one
    row is not broadcast into them."""
    for counts in {th.layout.balanced_counts(1, comm.size), tuple(reversed(th.layout.balanced_counts(1, comm.size)))}:
        o = th.distribute(torch.zeros(1, 3), split=0, counts=counts)
        torch.mul(torch.ones(1, 3), 2.0, out=o)
        assert o.counts == counts and o.lshape[0] == counts[comm.rank]
        assert_dist_close(o, torch.full((1, 3), 2.0))
        assert o.sum().item() == 6.0
        y = th.distribute(torch.ones(1, 3), split=0, counts=counts) + torch.ones(1, 3)
        assert_dist_close(y, torch.full((1, 3), 2.0), split=0)


def test_explicit_out_none_is_not_a_write(comm):
    t = torch.arange(6.0).reshape(3, 2)
    for x in layouts(t):
        assert_dist_close(torch.add(x, 1, out=None), t + 1)
        assert_dist_close(torch.exp(x, out=None), torch.exp(t))
