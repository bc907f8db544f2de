"""Autograd entry points and higher-order gradients, against torch on the global data.

``backward(gradient=...)`` takes a DistTensor or a plain tensor of the global shape;
``torch.autograd.grad`` returns gradients in the inputs' layouts; gradients of gradients
(``create_graph=True``) are exact through every family and collective.
"""
import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts


def full(x):
    return x.full() if isinstance(x, th.DistTensor) else x


def g64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_backward_with_plain_and_distributed_gradients(comm):
    t, g = g64(5, 3), g64(5, 3)
    for x in layouts(t, requires_grad=True):
        for given in [g] + list(layouts(g)):
            x.grad = None
            x.sin().backward(given)
            assert_dist_close(x.grad, g * t.cos(), split=x.split_dim)
        x.grad = None
        torch.autograd.backward([x.sum(), (x * x).mean()], [torch.tensor(2.0, dtype=torch.float64), None])
        assert_dist_close(x.grad, 2 + 2 * t / t.numel())


def test_scalar_output_split_over_ranks_needs_no_gradient(comm):
    """A one-element split output: the ranks without its element take part all the same."""
    t = g64(1)
    for x in layouts(t, requires_grad=True):
        (x * 3).backward()
        assert_dist_close(x.grad, torch.full_like(t, 3.0))


def test_autograd_grad_returns_the_inputs_layouts(comm):
    t, w0 = g64(6, 4), g64(4)
    for x in layouts(t, requires_grad=True):
        w = w0.clone().requires_grad_()
        gx, gw = torch.autograd.grad((x * w).square().sum(), (x, w))
        tt, ww = t.clone().requires_grad_(), w0.clone().requires_grad_()
        ex, ew = torch.autograd.grad((tt * ww).square().sum(), (tt, ww))
        assert_dist_close(gx, ex, split=x.split_dim)
        torch.testing.assert_close(gw if not isinstance(gw, th.DistTensor) else gw.full(), ew)


def second_order(fn, t, *params):
    """First and second derivatives of fn (a scalar of the global x) by torchheat and by torch."""
    results = []
    for x in list(layouts(t, requires_grad=True)):
        ps = [p.clone().requires_grad_() for p in params]
        (g,) = torch.autograd.grad(fn(x, *ps), x, create_graph=True)
        weights = torch.linspace(-1, 1, t.numel(), dtype=torch.float64).reshape(t.shape)
        second = torch.autograd.grad((g * weights).sum(), [x] + ps)
        results.append((x, g, second))
    tt = t.clone().requires_grad_()
    ps = [p.clone().requires_grad_() for p in params]
    (eg,) = torch.autograd.grad(fn(tt, *ps), tt, create_graph=True)
    weights = torch.linspace(-1, 1, t.numel(), dtype=torch.float64).reshape(t.shape)
    expected = torch.autograd.grad((eg * weights).sum(), [tt] + ps)
    for x, g, second in results:
        assert_dist_close(g, eg.detach(), split=x.split_dim)
        assert_dist_close(second[0], expected[0], split=x.split_dim)
        for mine, theirs in zip(second[1:], expected[1:]):
            torch.testing.assert_close(mine.full() if isinstance(mine, th.DistTensor) else mine, theirs)


@pytest.mark.parametrize("name, fn", [
    ("sum()**2", lambda x: x.sum() ** 2),
    ("mean(0)**3", lambda x: (x.mean(0) ** 3).sum()),
    ("var", lambda x: x.var() * x.sum()),
    ("std(0)", lambda x: (x.std(0) * x.sum(0)).sum()),
    ("cumsum(0)", lambda x: (x.cumsum(0) ** 2).sum()),
    ("cumprod(0)", lambda x: (x.cumprod(0) * x).sum()),
    ("logsumexp(0)", lambda x: (x.logsumexp(0) ** 2).sum()),
    ("norm", lambda x: x.norm() ** 3),
    ("resplit", lambda x: (x.resplit(1 - (x.split_dim or 0)) ** 3).sum() if isinstance(x, th.DistTensor) else (x ** 3).sum()),
    ("full", lambda x: (full(x) ** 3).sum()),
])
def test_second_order_gradients(comm, name, fn):
    second_order(fn, g64(5, 4))


def test_second_order_through_replicated_parameters(comm):
    """A replicated weight used with split data: its second-order gradient is summed over ranks."""
    def fn(x, w, b):
        return (torch.tanh(x * w + b) ** 2).sum() * w.sum()

    second_order(fn, g64(6, 3), g64(3), g64(3))
