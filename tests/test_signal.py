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
