"""Decompositions and solvers on split matrices against torch on the global data: values,
layouts, gradients (float64), torch's errors on every rank, and no whole-matrix gather."""
import pytest
import torch

import torchheat as th
from test_linalg import placed

F64 = dict(dtype=torch.float64)


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


def test_tsqr_of_chunks_longer_than_a_block(comm):
    a = torch.randn(13000, 5, **F64)  # a rank's Q is formed over several blocks of 4096 rows
    q_ref, r_ref = torch.linalg.qr(a)
    for skewed in (False, True):
        q, r = torch.linalg.qr(placed(a, 0, skewed, comm))
        close(q, q_ref, f"skewed={skewed}")
        close(r, r_ref, f"skewed={skewed}")


def test_removed_aliases_raise_torchs_error(comm):
    x = th.distribute(torch.randn(12, 3, **F64), 0)
    for f in (torch.qr, torch.Tensor.qr):
        with pytest.raises(RuntimeError, match="deprecated"):
            f(x)


# -- solvers -------------------------------------------------------------------------------------
def spd(n):
    a = torch.randn(n, n, **F64)
    return a @ a.mT + n * torch.eye(n, **F64)


SQUARE = {
    "solve": lambda x, b: (torch.linalg.solve(x, b),),
    "solve_vector": lambda x, b: (torch.linalg.solve(x, b[:, 0]),),
    "inv": lambda x, b: (torch.linalg.inv(x),),
    "det": lambda x, b: (torch.linalg.det(x),),
    "slogdet": lambda x, b: (torch.linalg.slogdet(x)[1],),
    "cholesky": lambda x, b: (torch.linalg.cholesky(x @ x.mT + 7 * torch.eye(7, **F64) if not isinstance(x, th.DistTensor)
                                                    else x @ x.mT + th.distribute(7 * torch.eye(7, **F64))),),
    "cholesky_upper": lambda x, b: (torch.linalg.cholesky(spd_like(x), upper=True),),
    "solve_triangular": lambda x, b: (torch.linalg.solve_triangular(x.triu() + 9 * eye_like(x), b, upper=True),),
    "solve_triangular_right": lambda x, b: (torch.linalg.solve_triangular(x.tril() + 9 * eye_like(x), b.mT, upper=False, left=False),),
}


def eye_like(x):
    e = torch.eye(7, **F64)
    return th.distribute(e) if isinstance(x, th.DistTensor) else e


def spd_like(x):
    return x @ x.mT + 7 * eye_like(x)


@pytest.mark.parametrize("name", list(SQUARE))
def test_square_solvers_and_gradients(comm, name):
    a, b = torch.randn(7, 7, **F64), torch.randn(7, 2, **F64)
    check_grads(lambda x: SQUARE[name](x, b), a, comm)


def test_solve_with_split_right_hand_sides(comm):
    a, b = torch.randn(6, 6, **F64), torch.randn(6, 5, **F64)
    expected = torch.linalg.solve(a, b)
    for sb in (0, 1):
        x = torch.linalg.solve(th.distribute(a, 0), th.distribute(b, sb))
        assert x.split_dim == sb
        close(x, expected)


def test_lstsq_tall(comm):
    a, b = torch.randn(24, 3, **F64), torch.randn(24, 2, **F64)
    check_grads(lambda x: (torch.linalg.lstsq(x, b).solution,), a, comm, splits=[(0, False), (0, True), (1, False)])
    got = torch.linalg.lstsq(th.distribute(a, 0), b, driver="gelsd")
    ref = torch.linalg.lstsq(a, b, driver="gelsd")
    close(got.solution, ref.solution)
    close(got.singular_values, ref.singular_values)
    close(got.residuals, ref.residuals)


def test_singular_and_bad_input_raise_torchs_errors_on_every_rank(comm):
    sing = torch.randn(6, 6, **F64)
    sing[:, 4] = sing[:, 1]
    sing[:, 5] = 0
    x = th.distribute(sing, 0)
    for f in (torch.linalg.solve, lambda x, b: torch.linalg.inv(x)):
        with pytest.raises(torch.linalg.LinAlgError, match="singular"):
            f(x, torch.ones(6, 1, **F64))
    assert float(torch.linalg.det(x)) == 0 or abs(float(torch.linalg.det(x))) < 1e-12
    not_pd = -spd(6)
    with pytest.raises(torch.linalg.LinAlgError, match="leading minor of order 1 is not positive-definite"):
        torch.linalg.cholesky(th.distribute(not_pd, 1))
    assert int(torch.linalg.cholesky_ex(th.distribute(not_pd, 1)).info) == 1
    rect = th.distribute(torch.randn(6, 4, **F64), 0)
    for f in (torch.linalg.inv, torch.linalg.det, torch.linalg.cholesky):
        with pytest.raises(RuntimeError, match="square"):
            f(rect)
    with pytest.raises(RuntimeError):
        torch.linalg.solve(th.distribute(torch.randn(6, 6), 0), torch.ones(6, 1, **F64))  # dtypes differ


def test_square_solvers_move_no_whole_matrix(comm):
    n = 12 * comm.size
    a = th.distribute(spd(n), 0)
    for f in (torch.linalg.inv, torch.linalg.det, torch.linalg.cholesky, lambda x: torch.linalg.solve(x, torch.ones(n, 1, **F64))):
        with th.debug.comm_log() as log:
            f(a)
        assert not [e for e in log if e.collective in ("allgather", "gather") and e.nbytes * comm.size >= n * n * 8 // 2], log


# -- the batch rule ------------------------------------------------------------------------------
BATCHED = [
    (torch.linalg.inv, 1), (torch.linalg.det, 1), (torch.linalg.slogdet, 1), (torch.linalg.cholesky, 1),
    (torch.linalg.eigh, 1), (torch.linalg.eigvalsh, 1), (torch.linalg.svd, 1), (torch.linalg.svdvals, 1), (torch.linalg.qr, 1),
    (torch.linalg.solve, 2), (torch.linalg.lstsq, 2), (torch.linalg.matrix_norm, 1), (torch.linalg.pinv, 1),
    (torch.linalg.matrix_rank, 1), (torch.linalg.cond, 1), (torch.linalg.matrix_exp, 1), (torch.linalg.lu_factor, 1),
    (torch.linalg.eigvals, 1),
]


@pytest.mark.parametrize("func, nargs", BATCHED, ids=lambda f: getattr(f, "__name__", str(f)))
def test_batch_split_runs_locally(comm, func, nargs):
    a = spd(4).expand(5, 2, 4, 4) + 0.1 * torch.randn(5, 2, 4, 4, **F64)
    a = a @ a.mT
    b = torch.randn(5, 2, 4, 3, **F64)
    expected = func(*(a, b)[:nargs])
    for split in (0, 1):
        for skewed in (False, True):
            x = placed(a, split, skewed, comm)
            with th.debug.comm_log() as log:
                got = func(*(x, th.distribute(b, split, counts=x.counts))[:nargs])
            assert not [e for e in log if e.nbytes > 8], log  # the error agreement only
            for g, e in zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,)):
                if e.numel() and e.dim() > split:
                    assert g.split_dim == split
                close(g, e, f"split={split}")


def test_batch_split_gradients(comm):
    a = torch.randn(5, 3, 3, **F64)
    check_grads(lambda x: (torch.linalg.inv(x), torch.linalg.det(x)), a, comm, splits=[(0, False), (0, True)])


def test_batches_on_fewer_ranks_than_processes_have_gradients_everywhere(comm):
    # torch's cond/svdvals of an empty batch have no graph: a rank without batches must still
    # enter the backward of the exchange that moved the matrices (every split; 2 batches)
    a = torch.randn(2, 3, 3, **F64)
    check_grads(lambda x: (torch.linalg.cond(x), torch.linalg.svdvals(x), torch.linalg.matrix_norm(x, "nuc")), a, comm)


# -- SVD and norms -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(30, 3), (3, 30)], ids=str)
def test_svd_of_tall_and_wide(comm, shape):
    a = torch.randn(shape, **F64)
    check_grads(lambda x: (torch.linalg.svdvals(x), torch.linalg.pinv(x)), a, comm)
    for split, skewed in cases(a):
        u, s, vh = torch.linalg.svd(placed(a, split, skewed, comm), full_matrices=False)
        close((u * s) @ vh, a)
        close(s, torch.linalg.svdvals(a))
        k = min(shape)
        torch.testing.assert_close((u.mH @ u).full(), torch.eye(k, **F64))
    u, s, vh = torch.linalg.svd(placed(a, 0, False, comm), full_matrices=True)
    torch.testing.assert_close((u.mH @ u).full(), torch.eye(u.shape[0], **F64))


@pytest.mark.parametrize("ord", ["fro", "nuc", 1, -1, 2, -2, float("inf"), float("-inf")], ids=str)
def test_matrix_norms(comm, ord):
    a = torch.randn(24, 3, **F64)
    check_grads(lambda x: (torch.linalg.matrix_norm(x, ord), torch.linalg.norm(x, ord), torch.linalg.cond(x) if ord == 2 else x.sum()),
                a, comm, splits=[(0, False), (0, True), (1, False)])
    assert int(torch.linalg.matrix_rank(th.distribute(a, 0))) == 3


def test_cond_of_square_and_rank_deficient(comm):
    a = torch.randn(6, 6, **F64)
    for p in ("fro", 1, float("inf")):
        close(torch.linalg.cond(th.distribute(a, 0), p), torch.linalg.cond(a, p))
    low = torch.randn(30, 2, **F64) @ torch.randn(2, 4, **F64)
    assert int(torch.linalg.matrix_rank(th.distribute(low, 0))) == 2


# -- iterative -------------------------------------------------------------------------------------
def test_cg_and_lanczos(comm):
    a = spd(20)
    b = torch.randn(20, **F64)
    for split in (0, 1):
        for skewed in (False, True):
            x = th.linalg.cg(placed(a, split, skewed, comm), b, rtol=1e-12)
            close(x, torch.linalg.solve(a, b), atol=1e-8, rtol=1e-8)
            V, T = th.linalg.lanczos(placed(a, split, skewed, comm), 20)
            close(V.mT @ V, torch.eye(20, **F64), atol=1e-8, rtol=0)
            torch.testing.assert_close(torch.linalg.eigvalsh(T.full()), torch.linalg.eigvalsh(a))
    V1, _ = th.linalg.lanczos(placed(a, 0, False, comm), 3)
    assert V1.shape == (20, 3)
    with pytest.raises(ValueError, match="square"):
        th.linalg.cg(th.distribute(torch.randn(4, 3, **F64), 0), torch.ones(4, **F64))


def test_norms_over_other_dims_and_batches(comm):
    a = torch.randn(4, 5, 6, **F64)
    for split in range(3):
        x = th.distribute(a, split)
        close(torch.linalg.norm(x), torch.linalg.norm(a))
        close(torch.linalg.matrix_norm(x), torch.linalg.matrix_norm(a))
        close(torch.linalg.matrix_norm(x, 1), torch.linalg.matrix_norm(a, 1))
        close(torch.linalg.norm(x, dim=(-2, -1)), torch.linalg.norm(a, dim=(-2, -1)))
        close(torch.linalg.inv(x[:, :5, :5]), torch.linalg.inv(a[:, :5, :5]))  # a matrix axis split: moved to the batch axis
