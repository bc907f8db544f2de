"""The Jacobi SVD and eigh, the LU interface, matrix_power, pinv and the randomized
low-rank SVD on split matrices against torch on the global data (float64): values,
sign-invariant quantities where torch defines no sign, layouts and gradients."""
import pytest
import torch

import torchheat as th
from test_linalg import placed

F64 = dict(dtype=torch.float64)
LAYOUTS = [(s, k) for s in (0, 1) for k in (False, True)]


def close(got, expected, where="", **kw):
    torch.testing.assert_close(got.full() if isinstance(got, th.DistTensor) else got, expected,
                               msg=lambda m: f"{where}: {m}", **kw)


def grads_match(fn, a, comm, weights_from=0):
    """fn(x) -> tensors; values and the gradient of a weighted sum against torch, every layout."""
    gen = torch.Generator().manual_seed(weights_from)
    ref = a.clone().requires_grad_()
    expected = fn(ref)
    weights = [torch.randn(e.shape, generator=gen, **F64) for e in expected]
    (g_ref,) = torch.autograd.grad(sum((e * w).sum() for e, w in zip(expected, weights)), ref)
    for split, skewed in LAYOUTS:
        x = placed(a, split, skewed, comm).requires_grad_()
        out = fn(x)
        where = f"split={split}, skewed={skewed}"
        for o, e in zip(out, expected):
            close(o, e.detach(), where)
        (g,) = torch.autograd.grad(sum((o.full() * w).sum() for o, w in zip(out, weights)), x)
        assert g.split_dim == split, where
        close(g, g_ref, where + ", gradient")


@pytest.mark.parametrize("shape", [(7, 7), (10, 6), (6, 10)], ids=str)
def test_svd_sign_invariant_and_gradients(comm, shape):
    a = torch.randn(shape, **F64)

    def fn(x):
        u, s, vh = torch.linalg.svd(x, full_matrices=False)
        return s, u * u, vh * vh, (u * s) @ vh  # torch defines no signs: compare squares and the product

    grads_match(fn, a, comm)


@pytest.mark.parametrize("name", ["svdvals", "matrix_rank", "cond", "nuc", "norm2", "norm-2", "pinv"])
def test_svd_based_ops(comm, name):
    a = torch.randn(7, 7, **F64)
    fns = {"svdvals": torch.linalg.svdvals, "matrix_rank": torch.linalg.matrix_rank, "cond": torch.linalg.cond,
           "nuc": lambda x: torch.linalg.matrix_norm(x, "nuc"), "norm2": lambda x: torch.linalg.matrix_norm(x, 2),
           "norm-2": lambda x: torch.linalg.matrix_norm(x, -2), "pinv": torch.linalg.pinv}
    for split, skewed in LAYOUTS:
        close(fns[name](placed(a, split, skewed, comm)), fns[name](a), f"split={split}, skewed={skewed}")


def test_jacobi_sends_blocks_not_the_matrix(comm):
    a = torch.randn(12, 12, **F64)
    x = th.distribute(a, 1)
    with th.debug.comm_log() as log:
        torch.linalg.svdvals(x)
    gathered = sum(e.nbytes for e in log if e.collective in ("allgather", "gather", "bcast"))
    # (one process runs TSQR, which gathers its own R; nothing moves between ranks)
    assert comm.size == 1 or gathered < a.numel() * a.element_size() / 2


def test_pinv_of_rank_deficient_matrices_has_finite_gradients(comm):
    q = torch.linalg.qr(torch.rand(7, 2, **F64)).Q
    grads_match(lambda x: (torch.linalg.pinv(x),), q @ q.mT, comm)
    grads_match(lambda x: (torch.linalg.pinv(x, hermitian=True),), q @ q.mT, comm)


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh(comm, uplo):
    a = torch.randn(7, 7, **F64)

    def fn(x):
        lam, v = torch.linalg.eigh(x, UPLO=uplo)
        return lam, v * v, torch.linalg.eigvalsh(x, UPLO=uplo)

    grads_match(fn, a, comm)


def test_eigh_repeated_eigenvalues_give_orthonormal_vectors(comm):
    q = torch.linalg.qr(torch.randn(7, 7, **F64)).Q
    a = q @ torch.diag(torch.tensor([1., 1., 1., 2., 2., -3., 0.], **F64)) @ q.mT
    for split, skewed in LAYOUTS:
        lam, v = torch.linalg.eigh(placed(a, split, skewed, comm))
        close(lam, torch.linalg.eigvalsh(a))
        v = v.full()
        close(v.mT @ v, torch.eye(7, **F64), atol=1e-12, rtol=0)
        close(v @ torch.diag(lam.full()) @ v.mT, a)


@pytest.mark.parametrize("shape", [(7, 7), (4, 6), (10, 6)], ids=str)
def test_lu_factor_lu_and_unpack(comm, shape):
    a = torch.randn(shape, **F64)
    _, piv = torch.linalg.lu_factor(a)
    grads_match(lambda x: (torch.linalg.lu_factor(x)[0],), a, comm)
    grads_match(lambda x: tuple(torch.linalg.lu(x)), a, comm)
    for split, skewed in LAYOUTS:
        lu, pivots = torch.linalg.lu_factor(placed(a, split, skewed, comm))
        assert torch.equal(pivots.full(), piv)
        for got, e in zip(torch.lu_unpack(lu, pivots), torch.linalg.lu(a)):
            close(got, e)


def test_lu_factor_of_a_singular_matrix_raises_torchs_error(comm):
    a = torch.zeros(5, 5, **F64)
    with pytest.raises(RuntimeError, match=r"U\[1,1\] is zero"):
        torch.linalg.lu_factor(th.distribute(a, 0))
    assert int(torch.linalg.lu_factor_ex(th.distribute(a, 1)).info.full()) == 1


@pytest.mark.parametrize("left, adjoint", [(True, False), (True, True), (False, False), (False, True)])
def test_lu_solve(comm, left, adjoint):
    a, b = torch.randn(6, 6, **F64), torch.randn(6, 3, **F64)
    lu, piv = torch.linalg.lu_factor(a)
    b = b if left else b.mT
    grads_match(lambda x: (torch.linalg.lu_solve(x, piv, b, left=left, adjoint=adjoint),), lu, comm)


@pytest.mark.parametrize("k", [0, 1, 3, -2])
def test_matrix_power(comm, k):
    grads_match(lambda x: (torch.linalg.matrix_power(x, k),), torch.randn(5, 5, **F64), comm)


def _lowrank_reference(a, r, niter=2):
    """torch's svd_lowrank algorithm with a given random matrix (``n x q`` for the tall one of
    A and A^H)."""
    if a.shape[0] < a.shape[1]:
        v, s, u = _lowrank_reference(a.mH, r, niter)
        return u, s, v
    b = torch.linalg.qr(a @ r).Q
    for _ in range(niter):
        b = torch.linalg.qr(a.mH @ b).Q
        b = torch.linalg.qr(a @ b).Q
    u, s, vh = torch.linalg.svd(b.mH @ a, full_matrices=False)
    return b @ u, s, vh.mH


def _low_rank_matrix(m, n):
    return torch.randn(m, 3, **F64) @ torch.randn(3, n, **F64) + 0.01 * torch.randn(m, n, **F64)


def _seeded_r(m, n):
    th.manual_seed(5)
    return th.randn(min(m, n), 3, **F64).full()  # the random matrix svd_lowrank draws after th.manual_seed(5)


@pytest.mark.parametrize("m, n", [(12, 7), (7, 12)])
def test_svd_lowrank_gradient(comm, m, n):
    a, r = _low_rank_matrix(m, n), _seeded_r(m, n)

    def fn(x):  # the tall matrix split along rows: its short products are allreduced, its QRs are TSQR
        if isinstance(x, th.DistTensor):
            th.manual_seed(5)
            u, s, v = torch.svd_lowrank(x, q=3)
        else:
            u, s, v = _lowrank_reference(x, r)
        return s, (u * s) @ v.mH

    grads_match(fn, a, comm)


@pytest.mark.parametrize("m, n", [(12, 7), (7, 12)])
def test_svd_lowrank_is_process_count_independent(comm, m, n):
    a, r = _low_rank_matrix(m, n), _seeded_r(m, n)

    def fn(x):
        th.manual_seed(5)
        return torch.svd_lowrank(x, q=3)

    u_e, s_e, v_e = _lowrank_reference(a, r)
    for split, skewed in LAYOUTS:
        u, s, v = fn(placed(a, split, skewed, comm))
        close(s, s_e)
        close(u, u_e)
        close(v, v_e)


def test_pca_lowrank(comm):
    a, r = _low_rank_matrix(12, 7), _seeded_r(12, 7)
    c = a - a.mean(0)
    expected = (lambda t: (t[0] * t[1]) @ t[2].mH)(_lowrank_reference(c, r))
    for split, skewed in LAYOUTS:
        th.manual_seed(5)
        u, s, v = torch.pca_lowrank(placed(a, split, skewed, comm), q=3)
        close((u * s) @ v.mH, expected)
