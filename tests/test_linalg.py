"""Matrix products for every pair of operand layouts against torch on the global data:
values, the result's layout, gradients (float64) in the operands' layouts, gradients of
gradients, and torch's errors on every rank."""
import pytest
import torch

import torchheat as th
from torchheat.testing import skewed_counts

F64 = dict(dtype=torch.float64)


def placed(t, split, skewed, comm):
    if split is None:
        return th.distribute(t)
    return th.distribute(t, split, counts=skewed_counts(t.shape[split], comm.size) if skewed else None)


def all_layouts(t):
    return [None] + list(range(t.dim()))


def check_every_layout(fn, ga, gb, comm):
    ref_a, ref_b = ga.clone().requires_grad_(), gb.clone().requires_grad_()
    expected = fn(ref_a, ref_b)
    weight = torch.randn(expected.shape, **F64)
    grads = torch.autograd.grad((expected * weight).sum(), (ref_a, ref_b))
    for sa in all_layouts(ga):
        for sb in all_layouts(gb):
            for skewed in (False, True):
                a = placed(ga, sa, skewed, comm).requires_grad_()
                b = placed(gb, sb, skewed, comm).requires_grad_()
                out = fn(a, b)
                where = f"splits {sa} @ {sb}, skewed={skewed}"
                assert isinstance(out, th.DistTensor) and out.shape == expected.shape, where
                torch.testing.assert_close(out.full(), expected, msg=lambda m: f"{where}: {m}")
                ga_, gb_ = torch.autograd.grad((out * weight).sum(), (a, b))
                assert (ga_.split_dim, gb_.split_dim) == (sa, sb), where
                torch.testing.assert_close(ga_.full(), grads[0], msg=lambda m: f"{where}, grad a: {m}")
                torch.testing.assert_close(gb_.full(), grads[1], msg=lambda m: f"{where}, grad b: {m}")


@pytest.mark.parametrize("shapes", [((5, 4), (4, 3)), ((7, 2), (2, 6)), ((4,), (4, 3)), ((5, 4), (4,)), ((4,), (4,)),
                                    ((3, 5, 4), (3, 4, 2)), ((3, 5, 4), (4, 2)), ((2, 1, 5, 4), (3, 4, 2))],
                         ids=str)
def test_matmul_every_pair_of_layouts(comm, shapes):
    check_every_layout(torch.matmul, torch.randn(shapes[0], **F64), torch.randn(shapes[1], **F64), comm)


@pytest.mark.parametrize("sa, sb", [(0, 0), (1, 1), (0, 1), (1, 0), (None, 0)])
def test_gradients_of_gradients(comm, sa, sb):
    ga, gb = torch.randn(5, 4, **F64), torch.randn(4, 3, **F64)

    def second(a, b):
        g_a, g_b = torch.autograd.grad(((a @ b) ** 2).sum(), (a, b), create_graph=True)
        return torch.autograd.grad((g_a ** 2).sum() + (g_b ** 3).sum(), (a, b))

    expected = second(ga.clone().requires_grad_(), gb.clone().requires_grad_())
    got = second(placed(ga, sa, True, comm).requires_grad_(), placed(gb, sb, False, comm).requires_grad_())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.full(), e)


def test_the_products_use_no_whole_operand_gather(comm):
    a, b = torch.randn(6, 5, **F64), torch.randn(5, 4, **F64)
    for sa, sb in [(0, 0), (1, 1), (0, 1), (1, 0), (None, 0), (1, None)]:
        x, y = th.distribute(a, sa), th.distribute(b, sb)
        with th.debug.comm_log() as log:
            x @ y
        assert all(e.collective in ("ring", "alltoallv") for e in log), (sa, sb, log)


@pytest.mark.filterwarnings("ignore:torch.chain_matmul is deprecated")
@pytest.mark.parametrize("name", ["mm", "mv", "dot", "vdot", "inner", "outer", "ger", "addmm", "addmv", "addr", "baddbmm",
                                  "addbmm", "multi_dot", "chain_matmul", "vecdot", "rmatmul", "linalg_matmul"])
def test_products(comm, name):
    r = lambda *s: torch.randn(*s, **F64)  # noqa: E731
    cases = {
        "mm": (torch.mm, (r(5, 4), r(4, 3))),
        "mv": (torch.mv, (r(5, 4), r(4))),
        "dot": (torch.dot, (r(6), r(6))),
        "vdot": (torch.vdot, (r(6).to(torch.complex128), (r(6) * 1j).to(torch.complex128))),
        "inner": (torch.inner, (r(5, 4), r(3, 4))),
        "outer": (torch.outer, (r(5), r(4))),
        "ger": (torch.ger, (r(5), r(4))),
        "addmm": (lambda c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0), (r(5, 3), r(5, 4), r(4, 3))),
        "addmv": (torch.addmv, (r(5), r(5, 4), r(4))),
        "addr": (lambda c, u, v: torch.addr(c, u, v, beta=0), (r(5, 4) * float("nan"), r(5), r(4))),
        "baddbmm": (torch.baddbmm, (r(2, 5, 3), r(2, 5, 4), r(2, 4, 3))),
        "addbmm": (torch.addbmm, (r(5, 3), r(2, 5, 4), r(2, 4, 3))),
        "multi_dot": (lambda u, a, b: torch.linalg.multi_dot([u, a, b]), (r(5), r(5, 4), r(4, 3))),
        "chain_matmul": (lambda a, b, c: torch.chain_matmul(a, b, c), (r(5, 4), r(4, 3), r(3, 2))),
        "vecdot": (lambda a, b: torch.linalg.vecdot(a, b, dim=0), (r(5, 4), r(5, 4))),
        "rmatmul": (lambda a, b: a @ b, (r(5, 4), r(4, 3))),
        "linalg_matmul": (torch.linalg.matmul, (r(5, 4), r(4, 3))),
    }
    fn, ts = cases[name]
    expected = fn(*ts)
    for layout in range(3):  # every operand split along its axis layout % ndim, then replicated where it is plain
        xs = [th.distribute(t, (layout + i) % t.dim()) if name != "rmatmul" or i else t for i, t in enumerate(ts)]
        got = fn(*xs)
        torch.testing.assert_close(got.full(), expected, equal_nan=True)


@pytest.mark.parametrize("split", [0, 1, None])
def test_requested_result_split(comm, split):
    a, b = torch.randn(6, 4, **F64), torch.randn(4, 5, **F64)
    for sa, sb in [(0, 0), (0, 1), (1, 0), (None, None)]:
        out = th.linalg.matmul(placed(a, sa, False, comm), placed(b, sb, True, comm), split=split)
        torch.testing.assert_close(out.full(), a @ b)
        if split is not None:
            assert out.split_dim == split and out.is_balanced


def test_errors_are_torchs_on_every_rank(comm):
    a = th.distribute(torch.ones(4, 3), split=0)
    for other, error in [(torch.ones(4, 2), "cannot be multiplied"), (torch.ones(3, 2, dtype=torch.float64), "dtype"),
                         (th.distribute(torch.ones(2, 5), split=1), "cannot be multiplied")]:
        with pytest.raises(RuntimeError, match=error):
            a @ other
    with pytest.raises(RuntimeError):
        torch.mm(a, torch.ones(3))
