"""Distances (cdist, pdist, pairwise_distance, cosine_similarity) against torch on the
global data: values, the result's layout, gradients (float64) in the operands' layouts, on
every layout of the operands (balanced and with rank 0 empty), and torch's errors."""
import math

import pytest
import torch
import torch.nn.functional as F

import torchheat as th
from torchheat.testing import assert_dist_close, skewed_counts

F64 = dict(dtype=torch.float64)
P_VALUES = [0.0, 1.0, 2.0, 0.5, 3.0, math.inf]


def placed(t, split, skewed, comm, reverse=False):
    """``t`` split along ``split``: balanced, or ``skewed`` (rank 0 empty; with ``reverse``, the last rank)."""
    if split is None:
        return th.distribute(t)
    counts = skewed_counts(t.shape[split], comm.size) if skewed else None
    return th.distribute(t, split, counts=tuple(reversed(counts)) if skewed and reverse else counts)


def reference(fn, ts):
    leaves = [t.clone().requires_grad_() for t in ts]
    out = fn(*leaves)
    weight = torch.randn(out.shape, **F64)
    return out.detach(), weight, torch.autograd.grad((out * weight).sum(), leaves)


def check(fn, ts, splits, comm, skewed=False, result_split=-1):
    expected, weight, grads = reference(fn, ts)
    xs = [placed(t, s, skewed, comm, reverse=i > 0).requires_grad_() for i, (t, s) in enumerate(zip(ts, splits))]
    out = fn(*xs)
    assert_dist_close(out, expected, split=result_split)
    got = torch.autograd.grad((out * weight).sum(), xs)
    for g, e, s in zip(got, grads, splits):
        assert g.split_dim == s
        torch.testing.assert_close(g.full(), e)


def cdist_inputs(shapes, p):
    a, b = torch.randn(shapes[0], **F64), torch.randn(shapes[1], **F64)
    return (a.round(), b.round()) if p == 0 else (a, b)


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("shapes", [((7, 3), (5, 3)), ((2, 5, 3), (2, 4, 3)), ((4, 20), (3, 20))], ids=str)
def test_cdist_every_pair_of_layouts(comm, shapes, p):
    a, b = cdist_inputs(shapes, p)
    for sa in [None] + list(range(a.dim())):
        for sb in [None] + list(range(b.dim())):
            for skewed in (False, True):
                check(lambda x, y: torch.cdist(x, y, p), (a, b), (sa, sb), comm, skewed)


@pytest.mark.parametrize("mode", ["use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"])
def test_cdist_compute_modes(comm, mode):
    a, b = torch.randn(30, 4, **F64), torch.randn(27, 4, **F64)  # more than 25 rows: torch's mm path if necessary
    for sa, sb in [(0, None), (0, 0), (None, 0), (1, 1)]:
        check(lambda x, y: torch.cdist(x, y, compute_mode=mode), (a, b), (sa, sb), comm, skewed=True)


def test_cdist_result_layouts(comm):
    a, b = torch.randn(6, 3, **F64), torch.randn(5, 3, **F64)
    check(torch.cdist, (a, b), (0, None), comm, result_split=0)
    check(torch.cdist, (a, b), (None, 0), comm, result_split=1)
    check(torch.cdist, (a, b), (0, 0), comm, result_split=0)
    check(torch.cdist, (a, b), (1, 1), comm, result_split=0)
    check(torch.cdist, (torch.randn(2, 4, 3, **F64), torch.randn(1, 5, 3, **F64)), (0, 2), comm, result_split=0)


def test_cdist_ring_moves_blocks_not_operands(comm):
    a, b = th.distribute(torch.randn(40, 3), 0), th.distribute(torch.randn(30, 3), 0)
    with th.debug.comm_log() as log:
        torch.cdist(a, b)
    assert all(e.collective == "ring" for e in log), log
    x = th.distribute(torch.randn(40, 3), 1)  # few features: moved to rows (smaller than a 40 x 30 partial)
    with th.debug.comm_log() as log:
        torch.cdist(x, b)
    assert {e.collective for e in log} <= {"alltoallv", "ring"}, log


@pytest.mark.parametrize("p", P_VALUES)
def test_pdist(comm, p):
    t = torch.randn(7, 3, **F64)
    t = t.round() if p == 0 else t
    for split in (None, 0, 1):
        for skewed in (False, True):
            out_split = None if split is None else 0
            check(lambda x: torch.pdist(x, p), (t,), (split,), comm, skewed, result_split=out_split)
    out = torch.pdist(th.distribute(t, 0), p)
    if comm.size > 1:
        assert out.is_balanced


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_pdist_few_rows(comm, rows):
    t = torch.randn(rows, 3, **F64)
    assert_dist_close(torch.pdist(th.distribute(t, 0)), torch.pdist(t))


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf, 0.5])
def test_pairwise_distance(comm, p):
    a, b = torch.randn(6, 4, **F64), torch.randn(6, 4, **F64)
    for sa, sb in [(0, 0), (1, 1), (0, None), (None, 1), (1, 0)]:
        check(lambda x, y: F.pairwise_distance(x, y, p), (a, b), (sa, sb), comm, skewed=True)
    check(lambda x, y: F.pairwise_distance(x, y, p, keepdim=True), (a, torch.randn(4, **F64)), (0, None), comm)


def test_cosine_similarity(comm):
    a, b = torch.randn(6, 4, **F64), torch.randn(6, 4, **F64)
    a[2] = 0  # a zero row: the norm is clamped at eps
    for dim in (1, 0, -1):
        for sa, sb in [(0, 0), (1, 1), (0, None), (None, 1), (1, 0)]:
            check(lambda x, y: F.cosine_similarity(x, y, dim), (a, b), (sa, sb), comm, skewed=True)
    check(lambda x, y: F.cosine_similarity(x, y, 1), (torch.randn(5, 1, 4, **F64), torch.randn(3, 4, **F64)), (0, 0), comm)


def test_errors_are_torchs_on_every_rank(comm):
    a = th.distribute(torch.ones(4, 3), split=0)
    for call, error, message in [
        (lambda: torch.cdist(a, torch.ones(5, 2)), RuntimeError, "X1 and X2 must have the same number of columns"),
        (lambda: torch.cdist(a, a, p=-1.0), RuntimeError, "non-negative"),
        (lambda: torch.cdist(th.distribute(torch.ones(4), 0), a), RuntimeError, "at least 2D"),
        (lambda: torch.pdist(th.distribute(torch.ones(2, 2, 2), 0)), RuntimeError, "2D"),
        (lambda: F.pairwise_distance(a, torch.ones(5, 3)), RuntimeError, "size of tensor a"),
        (lambda: F.cosine_similarity(a, torch.ones(5, 3)), RuntimeError, "size of tensor a"),
    ]:
        with pytest.raises(error, match=message):
            call()


def test_cdist_gradient_of_one_operand(comm):
    a, b = torch.randn(7, 3, **F64), torch.randn(6, 3, **F64)
    ref = a.clone().requires_grad_()
    expected = torch.autograd.grad(torch.cdist(ref, b).sum(), ref)[0]
    x = placed(a, 0, True, comm).requires_grad_()
    got = torch.autograd.grad(torch.cdist(x, placed(b, 0, True, comm, reverse=True)).sum(), x)[0]
    torch.testing.assert_close(got.full(), expected)
