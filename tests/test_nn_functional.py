"""nn.functional activations, prelu, glu and softmax against torch on the global data."""
import pytest
import torch
import torch.nn.functional as F

import torchheat as th
from torchheat.testing import assert_dist_close, layouts
from test_reductions import check_like_torch, check_second_order

SHAPES = [(7, 5), (2, 3, 4), (10,), (1, 4), (0, 3)]


def check(fn, t, grad=True):
    """``fn`` on every layout of ``t`` equals ``fn(t)`` (values, dtype, layout) and, with
    ``grad``, so does the gradient of a weighted sum of the result."""
    tt = t.clone().requires_grad_(grad)
    expected = fn(tt)
    weights = torch.randn_like(expected)
    if grad:
        (expected * weights).sum().backward()
    for x in layouts(t, requires_grad=grad):
        y = fn(x)
        assert_dist_close(y, expected, split=x.split_dim)
        if grad:
            (y * weights).sum().backward()
            assert_dist_close(x.grad, tt.grad, split=x.split_dim)


ACTIVATIONS = {
    "relu": F.relu,
    "relu6": F.relu6,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "mish": F.mish,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "softplus": F.softplus,
    "softplus_beta": lambda x: F.softplus(x, beta=2.0, threshold=1.5),
    "softsign": F.softsign,
    "elu": lambda x: F.elu(x, alpha=0.7),
    "selu": F.selu,
    "celu": lambda x: F.celu(x, alpha=1.3),
    "leaky_relu": lambda x: F.leaky_relu(x, 0.2),
    "hardtanh": lambda x: F.hardtanh(x, -0.5, 1.5),
    "hardsigmoid": F.hardsigmoid,
    "hardswish": F.hardswish,
    "logsigmoid": F.logsigmoid,
    "threshold": lambda x: F.threshold(x, 0.3, -2.0),
    "tanhshrink": F.tanhshrink,
    "softshrink": lambda x: F.softshrink(x, 0.4),
    "hardshrink": lambda x: F.hardshrink(x, 0.4),
    "rrelu_eval": lambda x: F.rrelu(x, 0.1, 0.3),
    # torch namespace and Tensor methods
    "torch.relu": torch.relu,
    "Tensor.relu": torch.Tensor.relu,
    "torch.sigmoid": torch.sigmoid,
    "Tensor.tanh": torch.Tensor.tanh,
    "torch.selu": torch.selu,
    "torch.celu": lambda x: torch.celu(x, 0.5),
    "torch.threshold": lambda x: torch.threshold(x, -0.2, 4.0),
    "Tensor.hardshrink": lambda x: x.hardshrink(0.7),
    "torch.rrelu": lambda x: torch.rrelu(x, 0.2, 0.25),
    # modules
    "nn.GELU": torch.nn.GELU("tanh"),
    "nn.SiLU": torch.nn.SiLU(),
    "nn.Hardswish": torch.nn.Hardswish(),
    "nn.LeakyReLU": torch.nn.LeakyReLU(0.05),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation(name, shape):
    check(ACTIVATIONS[name], 3 * torch.randn(shape, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64])
def test_activation_dtypes(dtype):
    t = (3 * torch.randn(7, 3)).to(dtype)
    for x in layouts(t):
        assert_dist_close(F.relu(x), F.relu(t), split=x.split_dim)
        assert_dist_close(F.hardtanh(x, -1, 2), F.hardtanh(t, -1, 2), split=x.split_dim)
        if dtype.is_floating_point:
            assert_dist_close(F.gelu(x), F.gelu(t), split=x.split_dim)
        else:
            with pytest.raises(NotImplementedError, match="not implemented for 'Long'"):
                F.gelu(x)


def test_activation_out_and_keyword_input():
    t = torch.randn(6, 3, dtype=torch.float64)
    for x in layouts(t):
        out = th.empty_like(x)
        assert torch.sigmoid(x, out=out) is out
        assert_dist_close(out, torch.sigmoid(t), split=x.split_dim)
        assert_dist_close(torch.relu(input=x), torch.relu(t), split=x.split_dim)


INPLACE = {
    "relu": lambda y: F.relu(y, inplace=True),
    "relu6": lambda y: F.relu6(y, inplace=True),
    "elu": lambda y: F.elu(y, 0.5, inplace=True),
    "selu": lambda y: F.selu(y, inplace=True),
    "celu": lambda y: F.celu(y, 2.0, inplace=True),
    "leaky_relu": lambda y: F.leaky_relu(y, 0.1, inplace=True),
    "hardtanh": lambda y: F.hardtanh(y, -1.0, 0.5, inplace=True),
    "hardsigmoid": lambda y: F.hardsigmoid(y, inplace=True),
    "hardswish": lambda y: F.hardswish(y, inplace=True),
    "silu": lambda y: F.silu(y, inplace=True),
    "mish": lambda y: F.mish(y, inplace=True),
    "threshold": lambda y: F.threshold(y, 0.1, 2.0, inplace=True),
    "rrelu": lambda y: F.rrelu(y, 0.1, 0.3, inplace=True),
    "nn.ReLU": torch.nn.ReLU(inplace=True),
    "Tensor.relu_": torch.Tensor.relu_,
    "torch.relu_": torch.relu_,
    "Tensor.sigmoid_": torch.Tensor.sigmoid_,
    "torch.tanh_": torch.tanh_,
    "torch.selu_": torch.selu_,
    "torch.celu_": lambda y: torch.celu_(y, 0.3),
    "F.elu_": lambda y: F.elu_(y, 0.4),
    "F.leaky_relu_": lambda y: F.leaky_relu_(y, 0.3),
    "F.hardtanh_": lambda y: F.hardtanh_(y, -0.3, 0.3),
    "torch.threshold_": lambda y: torch.threshold_(y, 0.5, -1.0),
    "torch.rrelu_": lambda y: torch.rrelu_(y, 0.2, 0.4),
}


@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4), (1, 4)])
@pytest.mark.parametrize("name", INPLACE)
def test_inplace_returns_input_with_exact_gradient(name, shape):
    fn = INPLACE[name]
    t = 3 * torch.randn(shape, dtype=torch.float64)
    weights = torch.randn(shape, dtype=torch.float64)
    tt = t.clone().requires_grad_()
    expected = tt * 1.0
    fn(expected)
    (expected * weights).sum().backward()
    for x in layouts(t, requires_grad=True):
        y = x * 1.0
        assert fn(y) is y
        assert_dist_close(y, expected, split=x.split_dim)
        assert y.counts == x.counts
        (y * weights).sum().backward()
        assert_dist_close(x.grad, tt.grad, split=x.split_dim)


def test_rrelu_training_is_not_distributed():
    t = torch.randn(6, 4, dtype=torch.float64)
    for x in layouts(t):
        if x.split_dim is None:  # replicated: local, random slopes within the bounds
            y = F.rrelu(x, 0.1, 0.3, training=True)
            slope = (y.local / t)[t < 0]
            assert y.split_dim is None and bool(((slope >= 0.1) & (slope <= 0.3)).all())
            assert torch.equal(y.local[t >= 0], t[t >= 0])
            continue
        with pytest.raises(th.NotDistributedError, match="training=True"):
            F.rrelu(x, training=True)
        with pytest.raises(th.NotDistributedError, match="training=True"):
            torch.rrelu(x, 0.1, 0.3, True)


# -- prelu ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,channels", [((5, 3), 3), ((2, 3, 4), 3), ((4, 2, 3, 2), 2), ((6,), 1), ((1, 4), 4),
                                            ((5, 3), 1)])
def test_prelu_weight_gradient_is_global(shape, channels):
    t = torch.randn(shape, dtype=torch.float64)
    w0 = torch.rand(channels, dtype=torch.float64) - 0.5
    weights = torch.randn(shape, dtype=torch.float64)
    tt, tw = t.clone().requires_grad_(), w0.clone().requires_grad_()
    (F.prelu(tt, tw) * weights).sum().backward()
    for x in layouts(t, requires_grad=True):
        for as_dist in (None, 0):  # weight: plain tensor, or a DistTensor split along its axis
            w = w0.clone().requires_grad_() if as_dist is None else th.distribute(w0, split=0).requires_grad_()
            y = F.prelu(x, w)
            assert_dist_close(y, F.prelu(t, w0), split=x.split_dim)
            (y * weights).sum().backward()
            assert_dist_close(x.grad, tt.grad, split=x.split_dim)
            if as_dist is None:
                torch.testing.assert_close(w.grad, tw.grad)
            else:
                assert_dist_close(w.grad, tw.grad, split=0)
            x.grad = None


def test_prelu_module_and_alias():
    t = torch.randn(6, 3, 2, dtype=torch.float64)
    weights = torch.randn(6, 3, 2, dtype=torch.float64)
    ref = torch.nn.PReLU(3).double()
    (ref(t) * weights).sum().backward()
    for x in layouts(t):
        m = torch.nn.PReLU(3).double()
        y = m(x)
        assert_dist_close(y, ref(t).detach(), split=x.split_dim)
        (y * weights).sum().backward()
        torch.testing.assert_close(m.weight.grad, ref.weight.grad)
        assert_dist_close(x.prelu(torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)),
                          t.prelu(torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)), split=x.split_dim)


def test_prelu_bad_weight_raises_like_torch():
    for x in layouts(torch.randn(4, 3)):
        with pytest.raises(RuntimeError, match="Found parameter numbers = 2 and channel size = 3"):
            F.prelu(x, torch.ones(2))
        with pytest.raises(RuntimeError, match="scalar or 1D tensor"):
            F.prelu(x, torch.ones(3, 1))


# -- glu -----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 4), (4, 2, 6), (8,), (2, 2), (0, 2)])
def test_glu(shape):
    t = torch.randn(shape, dtype=torch.float64)
    for dim in range(-len(shape), len(shape)):
        check(lambda x: F.glu(x, dim), t)


def test_glu_along_split_moves_halves_only(comm):
    t = torch.randn(10, 4)
    for x in layouts(t):
        with th.debug.comm_log() as log:
            y = F.glu(x, 0)
        assert_dist_close(y, F.glu(t, 0), split=x.split_dim)
        if x.split_dim == 0:  # the halves land in the balanced layout of the result
            assert y.is_balanced and [e.collective for e in log] == ["alltoallv", "alltoallv"]
        else:
            assert y.counts == x.counts and log == []
        assert_dist_close(torch.nn.GLU(1)(x), F.glu(t, 1), split=x.split_dim)


def test_glu_odd_or_bad_dim_raises_like_torch():
    for x in layouts(torch.randn(5, 4)):
        with pytest.raises(RuntimeError, match="Halving dimension must be even, but dimension 0 is size 5"):
            F.glu(x, 0)
        with pytest.raises(IndexError, match="Dimension out of range"):
            F.glu(x, 2)


# -- softmax -------------------------------------------------------------------------------
SOFTMAX = {
    "F.softmax": lambda x, dim: F.softmax(x, dim=dim),
    "F.log_softmax": lambda x, dim: F.log_softmax(x, dim),
    "F.softmin": lambda x, dim: F.softmin(x, dim),
    "torch.softmax": torch.softmax,
    "Tensor.softmax": torch.Tensor.softmax,
    "torch.log_softmax": torch.log_softmax,
    "Tensor.log_softmax": lambda x, dim: x.log_softmax(dim=dim),
    "special.softmax": torch.special.softmax,
    "nn.Softmax": lambda x, dim: torch.nn.Softmax(dim)(x),
    "nn.LogSoftmax": lambda x, dim: torch.nn.LogSoftmax(dim)(x),
}


@pytest.mark.parametrize("shape", SHAPES + [()])
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax(name, shape):
    t = 4 * torch.randn(shape, dtype=torch.float64)
    for dim in range(-max(len(shape), 1), max(len(shape), 1)):
        check(lambda x: SOFTMAX[name](x, dim), t)


@pytest.mark.parametrize("name", ["F.softmax", "F.log_softmax", "F.softmin"])
def test_softmax_masked_entries(name):
    t = torch.randn(6, 4, dtype=torch.float64)
    t[:4, 1] = float("-inf")  # whole chunks masked on some ranks, the global max is finite
    t[0, 2] = float("-inf")
    if name == "F.softmin":
        t = -t
    check(lambda x: SOFTMAX[name](x, 0), t)
    t[:, 3] = -t[:, 3].abs() * float("inf")  # a fully masked column is nan, as in torch
    check(lambda x: SOFTMAX[name](x, 0), t, grad=False)


def test_softmax_dtypes():
    t = torch.randn(9, 4)
    for x in layouts(t):
        for dim in (0, 1):
            assert_dist_close(torch.softmax(x, dim, torch.float64), torch.softmax(t, dim, torch.float64), split=x.split_dim)
            assert_dist_close(F.log_softmax(x, dim, dtype=torch.float64), F.log_softmax(t, dim, dtype=torch.float64))
            assert_dist_close(F.softmin(x.half(), dim), F.softmin(t.half(), dim), atol=1e-3, rtol=1e-3)
    long = torch.arange(12).reshape(6, 2)
    for x in layouts(long):  # raised on every rank, empty chunks included
        for dim in (0, 1):
            with pytest.raises(NotImplementedError, match="not implemented for 'Long'"):
                torch.softmax(x, dim)
            with pytest.raises(NotImplementedError, match="not implemented for 'Long'"):
                F.log_softmax(x, dim)
            assert_dist_close(F.softmax(x, dim, dtype=torch.float64), F.softmax(long, dim, dtype=torch.float64))


def test_softmax_out():
    t = torch.randn(5, 4, dtype=torch.float64)
    for x in layouts(t):
        for dim in (0, 1):
            out = th.empty_like(x)
            assert torch.softmax(x, dim, out=out) is out
            assert_dist_close(out, torch.softmax(t, dim), split=x.split_dim)
            assert torch.log_softmax(x, dim, out=out) is out
            assert_dist_close(out, torch.log_softmax(t, dim), split=x.split_dim)


def test_softmax_communication(comm):
    t = torch.randn(8, 3, dtype=torch.float64)
    for x in layouts(t, requires_grad=True):
        for dim in (0, 1):
            with th.debug.comm_log() as log:
                y = F.softmax(x, dim)
            along_split = dim == x.split_dim and comm.size > 1  # one process runs torch's kernel
            assert [e.collective for e in log] == (["allgather"] if along_split else [])
            with th.debug.comm_log() as log:
                y.backward(torch.ones_like(y))
            assert [e.collective for e in log] == (["allreduce"] if along_split else [])


def test_softmax_implicit_dim_and_bad_dim():
    t = torch.randn(2, 3, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        expected = F.softmax(t)
    for x in layouts(t):
        with pytest.warns(UserWarning, match="Implicit dimension choice"):
            assert_dist_close(F.softmax(x), expected, split=x.split_dim)
        with pytest.raises(IndexError, match="Dimension out of range"):
            torch.softmax(x, 3)


def test_softmax_no_grad_and_requires_grad_agree():
    t = torch.randn(7, 3, dtype=torch.float64)
    for x in layouts(t):
        with torch.no_grad():
            assert_dist_close(F.softmax(x, 0), F.softmax(t, 0))
            assert_dist_close(F.log_softmax(x, 0), F.log_softmax(t, 0))


@pytest.mark.parametrize("name", ["F.softmax", "F.log_softmax", "F.softmin"])
def test_softmax_second_order_gradients(name):
    t = torch.randn(7, 3, dtype=torch.float64)
    for dim in (0, 1):
        check_second_order(lambda a: SOFTMAX[name](a, dim), t)


def test_softmax_infinities_nan_and_empty_tensors():
    t = torch.randn(7, 4, dtype=torch.float64)
    t[2, 0] = float("inf")  # a column with +inf is NaN, as in torch
    t[5, 1] = float("nan")
    t[:, 2] = float("-inf")  # fully masked: NaN
    for name in ("F.softmax", "F.log_softmax", "F.softmin"):
        for dim in (0, 1):
            check_like_torch(lambda a: SOFTMAX[name](a, dim), t)
    for empty in (torch.randn(0, 3, dtype=torch.float64), torch.randn(3, 0, dtype=torch.float64),
                  torch.zeros(0, 3, dtype=torch.int64)):
        for dim in (0, 1):
            check_like_torch(lambda a: torch.softmax(a, dim), empty)
            check_like_torch(lambda a: F.log_softmax(a, dim, dtype=torch.float64), empty)
    for x in layouts(t):
        assert_dist_close(torch.softmax(x, 0, out=None), torch.softmax(t, 0), split=x.split_dim)
