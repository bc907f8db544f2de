"""Signal helpers on split tensors against torch on the global data: torch.gradient along
every axis (halo rows on uneven, empty and one-row chunks, gradients in float64), the
window factories with split=, and histogramdd of a split sample."""
import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts

F64 = dict(dtype=torch.float64)


def coords(n):  # uneven sample points, the same on every rank
    return torch.arange(1, n + 1, **F64) ** 1.5


GRADIENT_CASES = [
    ((7, 3), {}), ((7, 3), dict(spacing=0.5, edge_order=2)), ((4, 3), dict(edge_order=2)), ((3,), dict(edge_order=2)),
    ((5, 4), dict(spacing=[2.0, 0.5], dim=[1, 0])), ((6, 4), dict(dim=0, edge_order=2)), ((6, 4), dict(dim=-1)),
    ((5, 3), dict(spacing=[coords(5), coords(3)], edge_order=2)), ((5, 3), dict(spacing=[coords(5)], dim=0)),
]


@pytest.mark.parametrize("shape, kwargs", GRADIENT_CASES, ids=str)
def test_gradient(comm, shape, kwargs):
    t = torch.randn(shape, **F64)
    ref = t.clone().requires_grad_()
    expected = torch.gradient(ref, **kwargs)
    weights = [torch.randn(e.shape, **F64) for e in expected]
    (expected_grad,) = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)), ref)
    for x in layouts(t, comm, requires_grad=True):
        out = torch.gradient(x, **kwargs)
        assert_dist_close(out, tuple(e.detach() for e in expected), split=x.split_dim)
        (g,) = torch.autograd.grad(sum((o.full() * w).sum() for o, w in zip(out, weights)), x)
        assert_dist_close(g, expected_grad, split=x.split_dim)


def test_gradient_split_coordinates_and_errors(comm):
    t, at = torch.randn(7, 2, **F64), coords(7)
    expected = torch.gradient(t, spacing=[at], dim=0, edge_order=2)
    for x in layouts(t, comm):
        for c in layouts(at, comm):
            assert_dist_close(torch.gradient(x, spacing=[c], dim=0, edge_order=2), expected, split=x.split_dim)
    for bad in (dict(edge_order=3), dict(dim=2), dict(spacing=[1.0, 2.0, 3.0])):
        with pytest.raises(Exception) as want:
            torch.gradient(t[:2], **bad)
        for x in layouts(t[:2], comm):
            with pytest.raises(type(want.value)) as got:
                torch.gradient(x, **bad)
            assert str(got.value) == str(want.value)


WINDOWS = ["bartlett", "blackman", "cosine", "exponential", "gaussian", "general_cosine", "general_hamming", "hamming",
           "hann", "kaiser", "nuttall"]


@pytest.mark.parametrize("name", WINDOWS)
@pytest.mark.parametrize("split", [None, 0])
def test_windows(comm, name, split):
    kwargs = dict(a=[0.5, 0.3, 0.2]) if name == "general_cosine" else {}
    for M in (0, 1, 2, 7):
        for sym in (True, False):
            expected = getattr(torch.signal.windows, name)(M, sym=sym, dtype=torch.float64, **kwargs)
            got = getattr(th.signal.windows, name)(M, sym=sym, split=split, dtype=torch.float64, **kwargs)
            assert_dist_close(got, expected, split=split, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="non-negative"):
        getattr(th.signal.windows, name)(-1, split=split, **kwargs)


@pytest.mark.parametrize("name, args", [("hann_window", ()), ("hamming_window", (0.6, 0.3)), ("blackman_window", ()),
                                        ("bartlett_window", ()), ("kaiser_window", (5.0,))])
def test_torch_window_factories(comm, name, args):
    for M in (0, 1, 2, 7):
        for periodic in (True, False):
            expected = getattr(torch, name)(M, periodic, *args, dtype=torch.float64)
            got = getattr(th, name)(M, periodic, *args, split=0, dtype=torch.float64)
            assert_dist_close(got, expected, split=0, rtol=1e-12, atol=1e-14)
    assert getattr(th, name)(5, split=0).dtype == getattr(torch, name)(5).dtype
    with pytest.raises(RuntimeError) as want:
        getattr(torch, name)(4, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=str(want.value)[:30]):
        getattr(th, name)(4, split=0, dtype=torch.int64)


@pytest.mark.parametrize("kwargs", [dict(bins=4), dict(bins=[3, 5], density=True), dict(bins=3, range=(-1.0, 1.0, 0.0, 2.0)),
                                    dict(bins=[torch.tensor([-3.0, 0.0, 0.5, 3.0], **F64), torch.linspace(-2, 2, 5, **F64)]),
                                    dict(bins=2, weight=True, density=True)], ids=str)
def test_histogramdd(comm, kwargs):
    t = torch.randn(11, 2, **F64)
    t[3] = t[4]  # a repeated point
    if kwargs.get("weight"):
        kwargs = dict(kwargs, weight=torch.rand(11, **F64))
    expected = torch.histogramdd(t, **kwargs)
    for x in layouts(t, comm):
        w = kwargs.get("weight")
        call = kwargs if w is None or x.split_dim != 0 else dict(kwargs, weight=th.distribute(w, 0, counts=x.counts))
        got = torch.histogramdd(x, **call)
        assert_dist_close(got.hist, expected.hist, split=None, rtol=1e-12, atol=1e-12)
        assert_dist_close(list(got.bin_edges), list(expected.bin_edges), split=None, rtol=1e-12, atol=1e-12)


def _as_real(out):
    return torch.view_as_real(out) if out.is_complex() else out


def check_transform(fn, t, window, comm, **kwargs):
    """fn(x, window=w, **kwargs) on every layout of t: torch's values and shape, and torch's
    gradients of the signal and of the (replicated) window."""
    ref, ref_w = t.clone().requires_grad_(), None if window is None else window.clone().requires_grad_()
    expected = fn(ref, window=ref_w, **kwargs)
    weight = torch.randn(_as_real(expected).shape, **F64)
    wanted = [ref] + ([ref_w] if ref_w is not None else [])
    expected_grads = torch.autograd.grad(_as_real(expected).mul(weight).sum(), wanted)
    for x in layouts(t, comm, requires_grad=True):
        w = None if window is None else window.clone().requires_grad_()
        out = fn(x, window=w, **kwargs)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        assert_dist_close(out, expected.detach(), split=out.split_dim, rtol=1e-10, atol=1e-10)
        grads = torch.autograd.grad(_as_real(out.full()).mul(weight).sum(), [x] + ([w] if w is not None else []))
        assert_dist_close(grads[0], expected_grads[0], split=x.split_dim, rtol=1e-10, atol=1e-10)
        if w is not None:
            torch.testing.assert_close(grads[1], expected_grads[1], rtol=1e-10, atol=1e-10)


HANN = torch.hann_window(8, **F64)
STFT_CASES = [
    dict(n_fft=8, hop_length=2, window=HANN),
    dict(n_fft=8, hop_length=3, window=HANN, pad_mode="constant", normalized=True),
    dict(n_fft=8, hop_length=2, window=HANN, pad_mode="replicate", onesided=False),
    dict(n_fft=8, hop_length=5, window=HANN, pad_mode="circular"),
    dict(n_fft=8, hop_length=2, window=HANN, center=False, return_complex=False),
    dict(n_fft=8, hop_length=2, win_length=5, window=torch.hamming_window(5, **F64), center=False),
    dict(n_fft=6, window=None),
]


@pytest.mark.parametrize("case", range(len(STFT_CASES)))
def test_stft(comm, case):
    """Each option once, on a 1-D signal or a batch of signals (batch split: local; time split: halo)."""
    kwargs, shape = STFT_CASES[case], [(23,), (3, 19)][case % 2]
    kwargs = dict(kwargs, return_complex=kwargs.get("return_complex", True))
    window = kwargs.pop("window")
    check_transform(torch.stft, torch.randn(shape, **F64), window, comm, **kwargs)


def test_stft_complex_signal_and_split_window(comm):
    t = torch.randn(2, 17, dtype=torch.complex128)
    check_transform(torch.stft, t, HANN, comm, n_fft=8, hop_length=3, return_complex=True)
    x = th.distribute(torch.randn(20, **F64), split=0)
    got = x.stft(8, 2, window=th.hann_window(8, split=0, **F64), return_complex=True)
    expected = torch.stft(x.full(), 8, 2, window=HANN, return_complex=True)
    assert_dist_close(got, expected, split=1, rtol=1e-12, atol=1e-12)


ISTFT_CASES = [
    dict(n_fft=8, hop_length=2, window=HANN),
    dict(n_fft=8, hop_length=3, window=HANN, normalized=True, length=20),
    dict(n_fft=8, hop_length=2, window=HANN, length=31),
    dict(n_fft=8, hop_length=2, win_length=6, window=torch.hann_window(6, **F64) + 0.1),
    dict(n_fft=8, hop_length=2, window=HANN, onesided=False, return_complex=True),
    dict(n_fft=8, hop_length=4, window=None, center=False, length=17),
]


@pytest.mark.parametrize("case", range(len(ISTFT_CASES)))
def test_istft(comm, case):
    kwargs, batch = dict(ISTFT_CASES[case]), [(), (3,)][case % 2]
    window = kwargs.pop("window")
    two_sided = kwargs.get("return_complex", False)
    signal = torch.randn(batch + (24,), dtype=torch.complex128 if two_sided else torch.float64)
    spec = torch.stft(signal, kwargs["n_fft"], kwargs["hop_length"], kwargs.get("win_length"), window,
                      center=kwargs.get("center", True), onesided=not two_sided, return_complex=True)
    check_transform(torch.istft, spec, window, comm, **kwargs)


def test_stft_istft_errors(comm):
    t = torch.randn(2, 12, **F64)
    spec = torch.stft(t, 8, 2, window=HANN, return_complex=True)
    bad = [(torch.stft, t, dict(n_fft=8, hop_length=2, window=HANN)),  # return_complex not given
           (torch.stft, t, dict(n_fft=32, hop_length=2, window=torch.hann_window(32, **F64), return_complex=True)),
           (torch.istft, spec, dict(n_fft=8, hop_length=9, window=HANN)),
           (torch.istft, spec, dict(n_fft=8, hop_length=2, window=HANN, center=False)),  # the envelope is zero
           (torch.istft, spec.real.contiguous(), dict(n_fft=8, hop_length=2, window=HANN))]
    for fn, data, kwargs in bad:
        with pytest.raises(Exception) as want:
            fn(data, **kwargs)
        for x in layouts(data, comm):
            with pytest.raises(type(want.value)) as got:
                fn(x, **kwargs)
            assert str(got.value) == str(want.value)
