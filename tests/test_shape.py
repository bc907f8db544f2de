"""Shape ops that keep the split axis: expand, expand_as, broadcast_to."""
import pytest
import torch

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
