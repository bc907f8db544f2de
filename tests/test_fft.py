"""torch.fft on split tensors against torch on the global data: every transform with n/s,
dim and norm on every layout (uneven and empty chunks included), gradients in float64,
the caller's split kept, no whole-input gather, torch's errors on every rank, the
th.fft factories, and the trapezoidal rules."""
import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts

F = torch.fft
C128, F64 = dict(dtype=torch.complex128), dict(dtype=torch.float64)
REAL_IN = {"rfft", "ihfft", "rfft2", "ihfft2", "rfftn", "ihfftn"}


def signal(name, shape):
    return torch.randn(shape, **(F64 if name in REAL_IN else C128))


def as_real(out):
    return torch.view_as_real(out.resolve_conj()) if out.is_complex() else out


def loss_of(out, weight):
    return as_real(out).mul(weight).sum()


def check(fn, t, comm, grad=True, **kwargs):
    """fn(x, **kwargs) on every layout of t: torch's values, the input's split, torch's gradient."""
    ref = t.clone().requires_grad_(grad)
    expected = fn(ref, **kwargs)
    weight = torch.randn(as_real(expected).shape, **F64)
    if grad:
        (expected_grad,) = torch.autograd.grad(loss_of(expected, weight), ref)
    for x in layouts(t, comm, requires_grad=grad):
        out = fn(x, **kwargs)
        assert_dist_close(out, expected.detach(), split=x.split_dim, atol=1e-10, rtol=1e-8)
        if grad:
            (g,) = torch.autograd.grad(loss_of(out.full(), weight), x)
            assert_dist_close(g, expected_grad, split=x.split_dim, atol=1e-10, rtol=1e-8)


ONE_D = ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft"]


@pytest.mark.parametrize("name", ONE_D)
@pytest.mark.parametrize("length, n", [(12, None), (12, 5), (12, 20), (13, None), (7, 9), (1, 3)], ids=str)
def test_1d_split_along_its_axis(comm, name, length, n):
    """A 1-D tensor split along its only axis (four-step or Bluestein), n padding or cutting."""
    if name in ("irfft", "hfft") and n is None and length == 1:
        pytest.skip("torch: irfft of one bin needs n")
    check(getattr(F, name), signal(name, length), comm, n=n, norm=["backward", "ortho", "forward"][length % 3])


@pytest.mark.parametrize("name", ONE_D)
@pytest.mark.parametrize("shape, kwargs", [((5, 6), dict(dim=0)), ((5, 6), dict(n=8, dim=1, norm="ortho")),
                                           ((2, 9), dict(dim=1)), ((4, 3, 5), dict(n=4, dim=1, norm="forward"))], ids=str)
def test_1d_transforms_of_nd_tensors(comm, name, shape, kwargs):
    check(getattr(F, name), signal(name, shape), comm, **kwargs)


@pytest.mark.parametrize("kind", ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft"])
@pytest.mark.parametrize("variant, shape, kwargs", [
    ("2", (6, 5), {}), ("2", (4, 6), dict(s=(3, 8), norm="ortho")), ("2", (1, 8), {}), ("2", (3, 4, 5), dict(dim=(0, 2))),
    ("n", (4, 3, 5), {}), ("n", (4, 3, 5), dict(s=(4, 6), dim=(2, 0), norm="forward")), ("n", (2, 2, 7), {}),
    ("n", (4, 5), dict(dim=1)),
], ids=str)
def test_nd_transforms(comm, kind, variant, shape, kwargs):
    """Slab, pencil and short-axis layouts of the 2-D and n-D transforms."""
    name = kind + variant
    check(getattr(F, name), signal(name, shape), comm, **kwargs)


@pytest.mark.parametrize("name", ["fftshift", "ifftshift"])
@pytest.mark.parametrize("shape, dim", [((9, 4), None), ((7,), 0), ((5, 6), (1,)), ((4, 5), (0, 1))], ids=str)
def test_shifts(comm, name, shape, dim):
    check(getattr(F, name), torch.randn(shape, **F64), comm, dim=dim)


@pytest.mark.parametrize("name, shape", [("fft", (96,)), ("rfft", (96,)), ("irfft", (96,)), ("fft", (97,)), ("fft2", (24, 16)),
                                         ("irfftn", (24, 16)), ("hfft", (1, 40)), ("fftshift", (96,))], ids=str)
def test_no_whole_input_gather(comm, name, shape):
    """The split axis is transformed by all-to-alls only: nothing is gathered."""
    x = th.distribute(signal(name, shape), 0)
    with th.debug.comm_log() as log:
        out = getattr(F, name)(x)
    assert out.split_dim == 0
    assert not [e for e in log if e.collective in ("allgather", "gather", "bcast")], log


def test_out_and_dtypes(comm):
    t = torch.randn(10, 3)
    x = th.distribute(t, 0)
    out = th.empty(10, 3, split=0, dtype=torch.complex64)
    assert F.fft(x, dim=0, out=out) is out
    assert_dist_close(out, F.fft(t, dim=0), split=0)
    i = torch.arange(12)
    assert_dist_close(F.fft(th.distribute(i, 0)), F.fft(i), split=0)
    assert_dist_close(F.rfft(th.distribute(i, 0)), F.rfft(i), split=0, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("call", [
    lambda x: F.fft(x, n=0), lambda x: F.fft(x, dim=2), lambda x: F.fft(x, norm="bad"), lambda x: F.rfft(x.to(torch.complex64)),
    lambda x: F.fftn(x, s=(2,), dim=(0, 1)), lambda x: F.fft2(x[:, 0]), lambda x: F.irfft(x[:1, :1].reshape(1), dim=0),
    lambda x: F.fft(x[:0], dim=0), lambda x: F.fftshift(x, dim=3),
])
def test_errors_are_torchs_on_every_rank(comm, call):
    t = torch.randn(6, 4)
    with pytest.raises(Exception) as expected:
        call(t)
    for x in layouts(t, comm):
        with pytest.raises(type(expected.value), match=None) as got:
            call(x)
        assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("n, d", [(10, 1.0), (7, 0.5), (1, 2.0)])
@pytest.mark.parametrize("split", [None, 0])
def test_frequencies(comm, n, d, split):
    for th_fn, fn in ((th.fft.fftfreq, F.fftfreq), (th.fft.rfftfreq, F.rfftfreq)):
        got = th_fn(n, d, split=split, dtype=torch.float64)
        assert_dist_close(got, fn(n, d, dtype=torch.float64), split=split, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["trapezoid", "cumulative_trapezoid"])
@pytest.mark.parametrize("kwargs", [{}, dict(dx=0.5, dim=0), dict(dim=0)], ids=str)
def test_trapezoidal_rules(comm, name, kwargs):
    fn = getattr(torch, name)
    y = torch.randn(7, 3, **F64)
    ref = y.clone().requires_grad_()
    expected = fn(ref, **kwargs)
    weight = torch.randn(expected.shape, **F64)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), ref)
    points = torch.randn(7, **F64).cumsum(0)
    for x in layouts(y, comm, requires_grad=True):
        out = fn(x, **kwargs)
        assert_dist_close(out, expected.detach())
        (g,) = torch.autograd.grad((out.full() * weight).sum(), x)
        assert_dist_close(g, expected_grad, split=x.split_dim)
        for at in (points, th.distribute(points, 0)):  # sample points, plain or split
            assert_dist_close(fn(x.detach(), at, dim=0), fn(y, points, dim=0))
