"""Decompositions and solvers on split matrices against torch on the global data: values,
layouts, gradients (float64), torch's errors on every rank, and no whole-matrix gather."""
import pytest
import torch

import torchheat as th
from torchheat.testing import skewed_counts

F64 = dict(dtype=torch.float64)


def placed(t, split, skewed, comm):
    if split is None:
        return th.distribute(t)
    return th.distribute(t, split, counts=skewed_counts(t.shape[split], comm.size) if skewed else None)


def cases(t):
    return [(s, k) for s in range(t.dim()) for k in (False, True)]


def close(got, expected, where="", **kw):
    torch.testing.assert_close(got.full() if isinstance(got, th.DistTensor) else got, expected,
                               msg=lambda m: f"{where}: {m}", **kw)


def check_grads(fn, a, comm, *, atol=1e-8, rtol=1e-6, splits=None):
    """fn(x) -> tuple of tensors; gradient of a weighted sum vs torch, every split."""
    ref = a.clone().requires_grad_()
    expected = fn(ref)
    weights = [torch.randn(e.shape, **F64) for e in expected]
    (g_ref,) = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)), ref)
    for split, skewed in splits or cases(a):
        x = placed(a, split, skewed, comm).requires_grad_()
        out = fn(x)
        where = f"split={split}, skewed={skewed}"
        for o, e in zip(out, expected):
            close(o, e, where, atol=atol, rtol=rtol)
        (g,) = torch.autograd.grad(sum((o.full() * w).sum() for o, w in zip(out, weights)), x)
        assert g.split_dim == split, where
        close(g, g_ref, where + ", gradient", atol=atol, rtol=rtol)


# -- QR ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(30, 3), (6, 6), (4, 7), (9, 5)], ids=str)
@pytest.mark.parametrize("mode", ["reduced", "r", "complete"])
def test_qr_is_torchs(comm, shape, mode):
    a = torch.randn(shape, **F64)
    q_ref, r_ref = torch.linalg.qr(a, mode=mode)
    for split, skewed in cases(a):
        x = placed(a, split, skewed, comm)
        q, r = torch.linalg.qr(x, mode=mode)
        where = f"split={split}, skewed={skewed}"
        assert isinstance(q, th.DistTensor) and q.shape == q_ref.shape, where
        close(r, r_ref, where)
        if mode != "r":
            close(q, q_ref, where)


@pytest.mark.parametrize("shape", [(30, 3), (6, 6), (4, 7)], ids=str)
def test_qr_gradients(comm, shape):
    check_grads(lambda x: tuple(torch.linalg.qr(x)), torch.randn(shape, **F64), comm)


def test_tsqr_float32_orthonormal_and_no_gather(comm):
    th.manual_seed(1)
    x = th.randn(300 * comm.size, 16, split=0)
    with th.debug.comm_log() as log:
        q, r = torch.linalg.qr(x)
    gathered = sum(e.nbytes for e in log if e.collective == "allgather")
    assert gathered <= 2 * comm.size * 16 * 16 * 4  # the small R's and Q's top square, never A
    qtq = (q.mT @ q).full()
    torch.testing.assert_close(qtq, torch.eye(16), atol=1e-5, rtol=0)
    close(q @ r, x.full(), atol=1e-4, rtol=1e-4)


def test_removed_aliases_raise_torchs_error(comm):
    x = th.distribute(torch.randn(12, 3, **F64), 0)
    for f in (torch.qr, torch.Tensor.qr):
        with pytest.raises(RuntimeError, match="deprecated"):
            f(x)
