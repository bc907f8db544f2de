"""Shape ops that keep the split axis: expand, expand_as, broadcast_to; split and friends."""
import re

import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts


@pytest.mark.parametrize("shape,target", [((4, 1), (4, 3)), ((1, 3), (5, 3)), ((3,), (2, 3)), ((2, 1, 3), (2, 4, 3))])
def test_expand_and_broadcast_to(shape, target):
    t = torch.randn(shape, dtype=torch.float64)
    ref = t.clone().requires_grad_()
    (ref.expand(target) * torch.arange(float(target[-1]), dtype=torch.float64)).sum().backward()
    for x in layouts(t, requires_grad=True):
        assert_dist_close(torch.broadcast_to(x, target), torch.broadcast_to(t, target))
        assert_dist_close(x.expand_as(torch.empty(target)), t.expand(target))
        y = x.expand(*target)
        assert_dist_close(y, t.expand(target))
        (y * torch.arange(float(target[-1]), dtype=torch.float64)).sum().backward()
        assert_dist_close(x.grad, ref.grad, split=x.split_dim)


def test_expand_errors_name_global_shapes():
    for x in layouts(torch.randn(4, 3)):
        with pytest.raises(RuntimeError, match=r"expanded size .*\(5\) must match the existing size \(4\)"):
            x.expand(5, 3)


PIECES = {
    "split(2)": lambda a: a.split(2),
    "split([1, 4, 2])": lambda a: torch.split(a, [1, 4, 2]),
    "split(3, dim=-1)": lambda a: a.split(3, dim=-1),
    "split_with_sizes": lambda a: a.split_with_sizes([3, 4]),
    "chunk(3)": lambda a: a.chunk(3),
    "chunk(2, 1)": lambda a: a.chunk(2, 1),
    "tensor_split([3, 1, 5])": lambda a: torch.tensor_split(a, [3, 1, 5]),  # overlapping and empty pieces
    "tensor_split(3, dim=1)": lambda a: torch.tensor_split(a, 3, dim=1),
    "unbind(1)": lambda a: a.unbind(1),
    "hsplit": lambda a: torch.hsplit(a, [2]),
    "vsplit(7)": lambda a: torch.vsplit(a, 7),
}


@pytest.mark.parametrize("name", PIECES)
def test_pieces_are_views_with_their_own_counts(comm, name):
    f, t = PIECES[name], torch.randn(7, 5, dtype=torch.float64)
    expected = f(t)
    for x in layouts(t, requires_grad=True):
        if name == "unbind(1)" and x.split_dim == 1:
            with pytest.raises(th.NotDistributedError, match="along the split axis 1"):
                f(x)
            continue
        with th.debug.comm_log() as log:
            got = f(x)
        assert log == [] and len(got) == len(expected)
        for g, e in zip(got, expected):
            assert_dist_close(g, e)
        sum((g * k).sum() for k, g in enumerate(got)).backward()
        tt = t.clone().requires_grad_()
        sum((g * k).sum() for k, g in enumerate(f(tt))).backward()
        assert_dist_close(x.grad, tt.grad)


def test_writes_through_pieces_reach_the_input(comm):
    t = torch.arange(35.0).reshape(7, 5)
    for x in layouts(t):
        head, tail = x.split(4)
        tail.mul_(0)
        x.chunk(5, dim=1)[0].fill_(-1)
        expected = t.clone()
        expected[4:] = 0
        expected[:, 0] = -1
        assert_dist_close(x, expected)
    raises = th.distribute(t, split=0)
    with pytest.raises(RuntimeError, match=re.escape(torch_error(lambda: t.split(0)))):
        raises.split(0)


def torch_error(call):
    try:
        call()
    except Exception as err:  # noqa: BLE001
        return str(err)
