"""einsum, tensordot and kron against torch on the global data: values, gradients
(float64) in the operands' layouts, every operand split along each of its axes."""
import itertools

import pytest
import torch

import torchheat as th
from torchheat.testing import skewed_counts

F64 = dict(dtype=torch.float64)


def placed(t, split, skewed, comm):
    if split is None:
        return th.distribute(t)
    return th.distribute(t, split, counts=skewed_counts(t.shape[split], comm.size) if skewed else None)


def check_layouts(fn, ts, comm, skewed=(False, True)):
    leaves = [t.clone().requires_grad_() for t in ts]
    expected = fn(*leaves)
    weight = torch.randn(expected.shape, **F64)
    grads = torch.autograd.grad((expected * weight).sum(), leaves)
    for splits in itertools.product(*[[None] + list(range(t.dim())) for t in ts]):
        for skew in skewed:
            xs = [placed(t, s, skew and i == 0, comm).requires_grad_() for i, (t, s) in enumerate(zip(ts, splits))]
            out = fn(*xs)
            where = f"splits {splits}, skewed={skew}"
            assert isinstance(out, th.DistTensor) and out.shape == expected.shape, where
            torch.testing.assert_close(out.full(), expected.detach(), msg=lambda m: f"{where}: {m}")
            got = torch.autograd.grad((out * weight).sum(), xs)
            for i, (g, e, s) in enumerate(zip(got, grads, splits)):
                assert g.split_dim == s, where
                torch.testing.assert_close(g.full(), e, msg=lambda m: f"{where}, grad {i}: {m}")


EQUATIONS = [
    ("ij,jk->ik", [(5, 4), (4, 3)]),
    ("ij,kj->ik", [(5, 4), (3, 4)]),
    ("bij,bjk->bik", [(2, 5, 4), (2, 4, 3)]),
    ("ij,ij->i", [(5, 4), (5, 4)]),
    ("i,i->", [(6,), (6,)]),
    ("i,j->ij", [(5,), (4,)]),
    ("ijk,jl->ilk", [(4, 3, 2), (3, 5)]),
    ("ij->ji", [(5, 4)]),
    ("ij->", [(5, 4)]),
    ("ii->i", [(4, 4)]),
    ("...ij,...jk", [(2, 5, 4), (4, 3)]),
    ("abc,cd,de->abe", [(3, 2, 4), (4, 5), (5, 2)]),
    ("ij,jk", [(1, 4), (4, 3)]),
]


@pytest.mark.parametrize("equation, shapes", EQUATIONS, ids=[e for e, _ in EQUATIONS])
def test_einsum_every_layout(comm, equation, shapes):
    ts = [torch.randn(s, **F64) for s in shapes]
    check_layouts(lambda *xs: torch.einsum(equation, *xs), ts, comm, skewed=(True,) if len(ts) > 2 else (False, True))


def test_einsum_forms(comm):
    a, b = torch.randn(5, 4, **F64), torch.randn(4, 3, **F64)
    x, y = th.distribute(a, 0), th.distribute(b, 1)
    expected = a @ b
    torch.testing.assert_close(torch.einsum("ij,jk->ik", [x, y]).full(), expected)
    torch.testing.assert_close(torch.einsum(x, [0, 1], y, [1, 2], [0, 2]).full(), expected)
    torch.testing.assert_close(torch.einsum(x, [0, 1], y, [1, 2]).full(), expected)
    torch.testing.assert_close(torch.einsum("ij , jk -> ik", x, b).full(), expected)
    torch.testing.assert_close(torch.einsum("i j,j k->i k".replace(" ", ""), a, y).full(), expected)
    torch.testing.assert_close(torch.einsum("ba,bc", x.T, y).full(), expected)  # implicit output: labels sorted


def test_einsum_moves_no_whole_operand(comm):
    a, b = th.distribute(torch.randn(6, 8), 1), th.distribute(torch.randn(8, 5), 0)
    with th.debug.comm_log() as log:
        out = torch.einsum("ij,jk->ik", a, b)  # contraction over the split label: a reduce-scatter ring
    moved = [e.collective for e in log]
    assert moved == ["ring"] * (comm.size - 1) and out.split_dim == 0
    with th.debug.comm_log() as log:
        out = torch.einsum("bij,jk->bik", th.distribute(torch.randn(4, 3, 8), 0), torch.randn(8, 5))
    assert not log and out.split_dim == 0  # a split batch label: local


@pytest.mark.parametrize("dims, shape", [(2, (4, 5, 2)), (1, (5, 2)), (0, (2,)), (([1, 0], [0, 2]), (4, 5, 3)),
                                         (([2], [1]), (4, 5, 2))], ids=str)
def test_tensordot(comm, dims, shape):
    a, b = torch.randn(3, 4, 5, **F64), torch.randn(shape, **F64)
    check_layouts(lambda x, y: torch.tensordot(x, y, dims), (a, b), comm, skewed=(True,))


@pytest.mark.parametrize("shapes", [((3, 2), (2, 4)), ((3,), (2, 2)), ((2, 1, 3), (3, 2))], ids=str)
def test_kron(comm, shapes):
    check_layouts(torch.kron, [torch.randn(s, **F64) for s in shapes], comm)


def test_kron_keeps_the_split_of_its_first_operand(comm):
    a = th.distribute(torch.randn(6, 2), 0)
    with th.debug.comm_log() as log:
        out = torch.kron(a, torch.randn(3, 3))
    assert out.split_dim == 0 and not log


def test_errors_are_torchs_on_every_rank(comm):
    a = th.distribute(torch.ones(4, 3), 0)
    with pytest.raises(RuntimeError, match="operand"):
        torch.einsum("ij,jk->ik", a)
    with pytest.raises(RuntimeError, match="subscript"):
        torch.einsum("ij,jk->ik", a, torch.ones(4, 2))
    with pytest.raises(RuntimeError, match="contracted dimensions"):
        torch.tensordot(a, torch.ones(4, 2), 1)
