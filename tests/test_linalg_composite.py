"""The torch.linalg functions built from distributed steps (cross, diagonal, vander, tensorinv,
tensorsolve, polar, matrix_sqrth, householder_product), inv_ex/solve_ex with torch's ``info``,
and lstsq of square and wide matrices: values, layouts and gradients (float64) against torch on
the global data, every split, balanced and with an empty chunk on rank 0."""
import pytest
import torch

import torchheat as th
from test_linalg import placed
from test_linalg_decomp import F64, check_grads, close


def test_cross_every_layout(comm):
    a, b = torch.randn(7, 3, 4, **F64), torch.randn(7, 3, 4, **F64)
    for other in (lambda t: t, lambda t: th.distribute(t, 0)):
        check_grads(lambda x: (torch.linalg.cross(x, other(b), dim=1),), a, comm)
    row = torch.randn(1, 3, **F64)  # broadcast against a split operand
    check_grads(lambda x: (torch.linalg.cross(row, x),), torch.randn(8, 3, **F64), comm)
    with pytest.raises(RuntimeError, match="dimension 0 must have length 3"):
        torch.linalg.cross(th.distribute(torch.randn(4, 3), 0), th.distribute(torch.randn(4, 3), 0), dim=0)


def test_diagonal_is_a_split_view(comm):
    a = torch.randn(2, 9, 7, **F64)
    for offset in (0, 2, -3):
        check_grads(lambda x: (torch.linalg.diagonal(x, offset=offset),), a, comm)
    x = th.distribute(a.clone(), 1)
    torch.linalg.diagonal(x).zero_()  # a view: writes reach the input
    close(torch.linalg.diagonal(x), torch.zeros(2, 7, **F64))


def test_vander(comm):
    x = torch.randn(3, 8, **F64)
    for n in (None, 2, 5):
        check_grads(lambda t: (torch.linalg.vander(t, N=n),), x, comm)
    got = torch.linalg.vander(th.distribute(torch.arange(5), 0))
    assert got.dtype == torch.int64 and got.split_dim == 0
    close(got, torch.linalg.vander(torch.arange(5)))


def test_tensorinv_and_tensorsolve(comm):
    a = torch.randn(4, 3, 6, 2, **F64)
    check_grads(lambda x: (torch.linalg.tensorinv(x, ind=2),), a, comm)
    a, b = torch.randn(2, 3, 6, **F64), torch.randn(2, 3, **F64)
    for dims in (None, (0, 2)):
        check_grads(lambda x: (torch.linalg.tensorsolve(x, b, dims=dims),), a, comm)
    with pytest.raises(RuntimeError, match="prod"):
        torch.linalg.tensorinv(th.distribute(torch.randn(4, 3, 5, **F64), 0), ind=1)


def well_conditioned(m, n):
    u, _, vh = torch.linalg.svd(torch.randn(m, n, **F64), full_matrices=False)
    return (u * torch.linspace(1, 3, min(m, n), **F64)) @ vh


@pytest.mark.parametrize("shape", [(7, 7), (9, 4)], ids=str)
def test_polar(comm, shape):
    check_grads(lambda x: tuple(torch.linalg.polar(x)), well_conditioned(*shape), comm)


def test_matrix_sqrth(comm):
    a = well_conditioned(7, 7)
    check_grads(lambda x: (torch.linalg.matrix_sqrth(x),), a @ a.mT, comm)
    psd = torch.diag(torch.tensor([4.0, -1.0, 9.0, 0.0], **F64))  # negative eigenvalues count as zero
    close(torch.linalg.matrix_sqrth(th.distribute(psd, 0)), torch.linalg.matrix_sqrth(psd))


@pytest.mark.parametrize("shape, k", [((6, 6), 6), ((11, 4), 3)], ids=str)
def test_householder_product(comm, shape, k):
    a, tau = torch.randn(shape, **F64), torch.rand(k, **F64)
    for t in (tau, th.distribute(tau, 0)):
        check_grads(lambda x: (torch.linalg.householder_product(x, t),), a, comm)
    tau_leaf = th.distribute(tau, 0).requires_grad_()
    torch.linalg.householder_product(th.distribute(a, 0), tau_leaf).sum().backward()
    ref = tau.clone().requires_grad_()
    torch.linalg.householder_product(a, ref).sum().backward()
    close(tau_leaf.grad, ref.grad)


def singular(n):
    s = torch.randn(n, n, **F64)
    s[:, 3] = s[:, 0] - s[:, 1]
    s[:, 4] = 0
    return s


def test_inv_ex_and_solve_ex(comm):
    a, b = torch.randn(7, 7, **F64), torch.randn(7, 2, **F64)
    check_grads(lambda x: (torch.linalg.inv_ex(x).inverse,), a, comm)
    check_grads(lambda x: (torch.linalg.solve_ex(x, b).result,), a, comm)
    check_grads(lambda x: (torch.linalg.solve_ex(x, b.mT, left=False).result,), a, comm)
    s = singular(7)
    expected = torch.linalg.inv_ex(s).info
    for split, skewed in ((0, False), (1, True)):
        x = placed(s, split, skewed, comm)
        info = torch.linalg.inv_ex(x).info  # no raise
        assert info.split_dim is None and info.dtype == torch.int32 and int(info) == int(expected) > 0
        assert int(torch.linalg.solve_ex(x, b).info) == int(torch.linalg.solve_ex(s, b).info)
        with pytest.raises(torch.linalg.LinAlgError, match=r"linalg.inv_ex: The diagonal element \d is zero"):
            torch.linalg.inv_ex(x, check_errors=True)
        with pytest.raises(torch.linalg.LinAlgError, match="torch.linalg.solve_ex: The solver failed"):
            torch.linalg.solve_ex(x, b, check_errors=True)


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (10, 4)], ids=str)
@pytest.mark.parametrize("driver", ["gels", "gelsy", "gelsd"])
def test_lstsq_square_and_wide(comm, shape, driver):
    a, b = well_conditioned(*shape), torch.randn(shape[0], 2, **F64)
    check_grads(lambda x: (torch.linalg.lstsq(x, b, driver=driver).solution,), a, comm)
    ref = torch.linalg.lstsq(a, b, driver=driver)
    for sb in (None, 0, 1):
        bb = b if sb is None else th.distribute(b, sb)
        for split in (None, 0, 1):
            if split is None and sb is None:
                continue
            got = torch.linalg.lstsq(a if split is None else th.distribute(a, split), bb, driver=driver)
            for g, e in zip(got, ref):
                close(g, e, f"split={split}, B split={sb}")
    vec = torch.linalg.lstsq(th.distribute(a, 0), b[:, 0], driver=driver)
    close(vec.solution, ref.solution[:, 0])


def test_lstsq_rank_deficient(comm):
    a = singular(6)[:, :5]  # rank 3
    b = torch.randn(6, 2, **F64)
    ref = torch.linalg.lstsq(a, b, driver="gelsd")
    got = torch.linalg.lstsq(th.distribute(a, 1), b, driver="gelsd")
    assert int(got.rank) == int(ref.rank) == 3
    close(got.solution, ref.solution)  # the minimum-norm solution
    close(got.singular_values, ref.singular_values)
    with pytest.raises(torch.linalg.LinAlgError, match="does not have full rank"):
        torch.linalg.lstsq(th.distribute(torch.zeros(6, 4, **F64), 0), b, driver="gels")


def test_solve_triangular_with_a_replicated_triangle(comm):
    t, b = torch.randn(6, 6, **F64).triu() + 6 * torch.eye(6, **F64), torch.randn(6, 5, **F64)
    for left in (True, False):
        rhs = b if left else b.mT
        expected = torch.linalg.solve_triangular(t, rhs, upper=True, left=left)
        for split in (0, 1):
            close(torch.linalg.solve_triangular(th.distribute(t), th.distribute(rhs, split), upper=True, left=left), expected)
