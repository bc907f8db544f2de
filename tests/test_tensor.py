"""DistTensor: the layout arithmetic, metadata, layout changes, conversions, Python protocol, autograd."""
import copy
import io
import pickle

import numpy as np
import pytest
import torch

import torchheat as th
from torchheat import layout
from torchheat.testing import assert_dist_close, layouts, skewed_counts

SHAPES = [(7,), (5, 4), (2, 3, 4), (0, 3), (2, 5)]  # (2, 5): fewer rows than ranks along axis 0 on 3 ranks


# -- layout: pure functions ------------------------------------------------------------------
def test_balanced_counts():
    assert layout.balanced_counts(50, 4) == (13, 13, 12, 12)
    assert layout.balanced_counts(2, 3) == (1, 1, 0)  # fewer rows than ranks: trailing ranks empty
    assert layout.balanced_counts(0, 3) == (0, 0, 0)
    assert layout.balanced_counts(7, 1) == (7,)
    for n in range(12):
        for p in range(1, 6):
            counts = layout.balanced_counts(n, p)
            assert sum(counts) == n and max(counts) - min(counts) <= 1 and list(counts) == sorted(counts, reverse=True)
    assert layout.offsets((13, 13, 12, 12)) == (0, 13, 26, 38)
    assert layout.offsets((0, 2, 0, 3)) == (0, 0, 2, 2)


def test_check_counts_and_split():
    assert layout.check_counts([2, 0, 3], 5, 3) == (2, 0, 3)
    for bad in ([2, 3], [2, 0, 2], [6, -1, 0]):
        with pytest.raises(ValueError, match="is not a layout of 5 rows over 3 ranks"):
            layout.check_counts(bad, 5, 3)
    assert layout.normalize_split(None, 2) is None and layout.normalize_split(-1, 3) == 2
    with pytest.raises(ValueError, match=r"split=2 is out of range .* \[-2, 1\]"):
        layout.normalize_split(2, 2)
    with pytest.raises(TypeError, match="split must be an int axis or None"):
        layout.normalize_split(1.0, 2)
    assert layout.local_shape((5, 4), 1, 2) == torch.Size([5, 2]) and layout.local_shape((5, 4), None, 0) == (5, 4)


def simulate_exchange(g, src, src_counts, dst, dst_counts):
    """Run the plan of every rank on one process: the chunks every rank would end up with."""
    p = len(src_counts)
    chunks = [g.narrow(src, o, c) for o, c in zip(layout.offsets(src_counts), src_counts)]
    plans = [layout.exchange_plan(tuple(g.shape), src, src_counts, dst, dst_counts, r) for r in range(p)]
    out = [torch.full(plans[r][2], -1.0) for r in range(p)]
    for i in range(p):
        for j in range(p):
            sent = layout.narrow(chunks[i], plans[i][0][j])
            slot = layout.narrow(out[j], plans[j][1][i])
            assert sent.shape == slot.shape, (i, j)
            slot.copy_(sent)
    return out


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (0, 3), (2, 6)])
@pytest.mark.parametrize("p", [1, 2, 3, 4])
def test_exchange_plans_move_every_element_once(shape, p):
    g = torch.arange(torch.Size(shape).numel(), dtype=torch.float64).reshape(shape)
    for src in range(len(shape)):
        for dst in range(len(shape)):
            for src_counts in {layout.balanced_counts(shape[src], p), skewed_counts(shape[src], p)}:
                dst_counts = layout.balanced_counts(shape[dst], p)
                out = simulate_exchange(g, src, src_counts, dst, dst_counts)
                for r, (o, c) in enumerate(zip(layout.offsets(dst_counts), dst_counts)):
                    assert torch.equal(out[r], g.narrow(dst, o, c)), (src, dst, src_counts, r)


# -- metadata ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_queries_are_global(comm, shape):
    t = torch.randn(shape)
    for x in layouts(t):
        assert x.shape == t.shape and x.size() == t.size() and x.gshape == t.shape
        assert all(x.size(d) == t.size(d) for d in range(-t.dim(), t.dim()))
        assert x.size(dim=-1) == t.size(-1)
        assert x.dim() == x.ndim == x.ndimension() == t.dim()
        assert x.numel() == x.nelement() == torch.numel(x) == t.numel()
        assert len(x) == len(t)
        assert isinstance(x.shape, torch.Size)


@pytest.mark.parametrize("shape", SHAPES)
def test_local_lshape_counts_lshape_map(comm, shape):
    t = torch.randn(shape)
    for x in layouts(t):
        loc = x.local
        assert type(loc) is torch.Tensor and loc.data_ptr() == x.data_ptr()  # a view, no copy
        assert x.lshape == loc.shape
        assert x.lshape_map.dtype == torch.int64 and x.lshape_map.shape == (comm.size, t.dim())
        if x.split_dim is None:
            assert x.counts is None and x.is_balanced and x.offset == 0
            assert torch.equal(loc, t)
            assert x.lshape_map.tolist() == [list(t.shape)] * comm.size
            continue
        assert len(x.counts) == comm.size and sum(x.counts) == t.shape[x.split_dim]
        assert x.is_balanced == (x.counts == layout.balanced_counts(t.shape[x.split_dim], comm.size))
        assert x.offset == layout.offsets(x.counts)[comm.rank]
        assert torch.equal(loc, t.narrow(x.split_dim, x.offset, x.counts[comm.rank]))
        assert x.lshape_map[:, x.split_dim].tolist() == list(x.counts)
        assert x.lshape_map[comm.rank].tolist() == list(x.lshape)


def test_skewed_layout_is_unbalanced(comm):
    x = th.distribute(torch.ones(5, 2), split=0, counts=skewed_counts(5, comm.size))
    assert x.is_balanced == (comm.size == 1)
    assert x.counts[0] == (5 if comm.size == 1 else 0)


# -- layout changes --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7,), (5, 4), (2, 3, 4), (0, 3), (2, 5)])
def test_resplit_any_axis_to_any_axis(comm, shape):
    t = torch.randn(shape, dtype=torch.float64)
    for x in layouts(t):
        for axis in [None] + list(range(-t.dim(), t.dim())):
            with th.debug.comm_log() as log:
                y = x.resplit(axis)
            target = None if axis is None else axis % t.dim()
            assert_dist_close(y, t, split=target)
            assert y.is_balanced and x.shape == t.shape
            kinds = [e.collective for e in log]
            if x.split_dim is not None and target is not None and (x.split_dim != target or not x.is_balanced):
                assert kinds == ["alltoallv"]  # one exchange, never a gather
            elif x.split_dim is None:
                assert kinds == []  # replicated -> split: every rank keeps its part
            elif target is None:
                assert kinds == ["allgather"]
            else:
                assert y is x and kinds == []


def test_resplit_in_place(comm):
    t = torch.randn(6, 5, 4)
    for x in layouts(t):
        for axis in (2, None, 1, 0, 0):
            assert x.resplit_(axis) is x
            assert_dist_close(x, t, split=axis)
            assert x.is_balanced
        assert x.counts == layout.balanced_counts(6, comm.size)


def test_resplit_in_place_moves_the_gradient(comm):
    t = torch.randn(5, 4, dtype=torch.float64)
    for x in layouts(t, requires_grad=True):
        (x * x).sum().backward()
        for axis in (1, None, 0):
            x.resplit_(axis)
            assert x.is_leaf and x.requires_grad
            assert_dist_close(x.grad, 2 * t, split=axis)
        (x * 3).sum().backward()  # accumulates into the moved gradient
        assert_dist_close(x.grad, 2 * t + 3, split=0)


def test_balance(comm):
    t = torch.randn(9, 3)
    for x in layouts(t):
        b = x.balance()
        assert_dist_close(b, t, split=x.split_dim)
        assert b.is_balanced and (b is x) == x.is_balanced
        x.balance_()
        assert x.is_balanced
        assert_dist_close(x, t, split=b.split_dim)
    z = th.from_local(torch.full((comm.rank + 1, 3), float(comm.rank)), split=0)
    expected = torch.cat([torch.full((r + 1, 3), float(r)) for r in range(comm.size)])
    assert z.counts == tuple(range(1, comm.size + 1))
    with th.debug.comm_log() as log:
        z.balance_()
    assert [e.collective for e in log] == (["alltoallv"] if comm.size > 1 else [])
    assert_dist_close(z, expected, split=0)
    assert z.counts == layout.balanced_counts(len(expected), comm.size)


def test_resplit_of_strided_local_chunks(comm):
    """Chunks whose local storage is not contiguous resplit correctly (strided sends and receives)."""
    t = torch.randn(4, 6, 5)
    for x in layouts(t):
        local = x.local.permute(2, 1, 0).contiguous().permute(2, 1, 0)  # same values, reversed strides
        y = th.from_local(local, split=x.split_dim)
        for axis in (None, 0, 1, 2):
            assert_dist_close(y.resplit(axis), t, split=axis)


# -- back to plain tensors -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (0, 3)])
def test_full_gather_numpy(comm, shape):
    t = torch.randn(shape, dtype=torch.float64)
    for x in layouts(t):
        full = x.full()
        assert type(full) is torch.Tensor and torch.equal(full, t)
        for root in range(comm.size):
            with th.debug.comm_log() as log:
                g = x.gather_to(root)
            if comm.rank == root:
                assert type(g) is torch.Tensor and torch.equal(g, t)
            else:
                assert g is None
            assert all(e.collective != "allgather" for e in log)
        a = x.numpy()
        assert isinstance(a, np.ndarray) and np.array_equal(a, t.numpy())
        assert np.array_equal(np.asarray(x), t.numpy())
        assert x.tolist() == t.tolist()


def test_item_of_one_element(comm):
    for x in layouts(torch.tensor([3.5])):
        assert x.item() == 3.5 and float(x) == 3.5


# -- conversions and copies keep the layout ---------------------------------------------------
def same_layout(y, x):
    assert isinstance(y, th.DistTensor)
    assert (y.split_dim, y.counts, y.shape, y.comm) == (x.split_dim, x.counts, x.shape, x.comm)


def test_to_clone_detach(comm):
    t = torch.randn(5, 4, dtype=torch.float64)
    for x in layouts(t):
        for y, dtype in ((x.to(torch.float32), torch.float32), (x.to("cpu", torch.int32), torch.int32),
                         (x.float(), torch.float32), (x.to(torch.float64), torch.float64)):
            same_layout(y, x)
            assert_dist_close(y, t.to(dtype))
        assert x.to(torch.float64) is x  # nothing to do, like torch
        c = x.clone()
        same_layout(c, x)
        assert x.lshape.numel() == 0 or c.data_ptr() != x.data_ptr()
        d = x.detach()
        same_layout(d, x)
        assert d.data_ptr() == x.data_ptr()
        assert_dist_close(d, t)


def test_requires_grad_and_grad(comm):
    t = torch.randn(5, 3, dtype=torch.float64)
    for x in layouts(t):
        assert not x.requires_grad
        assert x.requires_grad_() is x
        assert x.requires_grad and x.is_leaf and x.grad is None
        (x * x).sum().backward()
        g = x.grad
        same_layout(g, x)
        assert_dist_close(g, 2 * t)
        d = x.detach()
        assert not d.requires_grad


def test_deepcopy(comm):
    t = torch.randn(6, 2, dtype=torch.float64)
    for x in layouts(t, requires_grad=True):
        (x * 3).sum().backward()
        y = copy.deepcopy(x)
        same_layout(y, x)
        assert y.requires_grad and y.is_leaf
        assert x.lshape.numel() == 0 or y.data_ptr() != x.data_ptr()
        assert_dist_close(y, t)
        same_layout(y.grad, x)
        assert_dist_close(y.grad, torch.full_like(t, 3.0))
        model = {"w": x, "again": x}
        copied = copy.deepcopy(model)
        assert copied["w"] is copied["again"]  # the memo is respected


def test_pickle_and_torch_save(comm):
    t = torch.randn(7, 3, dtype=torch.float64)
    for x in layouts(t):
        for y in (pickle.loads(pickle.dumps(x)), reload(x)):
            same_layout(y, x)
            assert torch.equal(y.local, x.local)
            assert_dist_close(y, t)
    w = th.distribute(t, split=0).requires_grad_()
    y = reload(w)
    assert y.requires_grad and y.is_leaf


def reload(x):
    buf = io.BytesIO()
    torch.save(x, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_load_on_another_number_of_ranks_is_refused(comm):
    from torchheat.tensor import _rebuild

    with pytest.raises(ValueError, match=r"saved by rank 0 of \d+ .* cannot be loaded as rank"):
        _rebuild(torch.zeros(2, 3), 0, (2 * comm.size + 2, 3), (2,) * (comm.size + 1), False, 0)


def test_torch_save_of_one_rank_is_not_loaded_by_the_others(comm):
    """A split chunk saved by rank 0 alone and loaded by every rank: only rank 0 gets it back;
    the others raise instead of silently taking rank 0's rows as their own."""
    t = torch.arange(12.0).reshape(6, 2)
    x = th.distribute(t, split=0, counts=th.layout.balanced_counts(6, comm.size))
    saved = io.BytesIO()
    torch.save(x, saved)
    data = comm.allgather_obj(saved.getvalue())[0]  # rank 0's file, read by everyone
    try:
        y = torch.load(io.BytesIO(data), weights_only=True)
        outcome = torch.equal(y.local, x.local)
    except ValueError as err:
        outcome = str(err)
    if comm.rank == 0:
        assert outcome is True
    else:
        assert "saved by rank 0" in outcome and f"loaded as rank {comm.rank}" in outcome and "x.full()" in outcome
    r = th.distribute(t)  # a replicated tensor is the same everywhere: any rank may load it
    saved = io.BytesIO()
    torch.save(r, saved)
    y = torch.load(io.BytesIO(comm.allgather_obj(saved.getvalue())[0]), weights_only=True)
    assert y.split_dim is None and torch.equal(y.local, t)


# -- printing --------------------------------------------------------------------------------
def test_repr_is_local_and_safe_on_one_rank(comm):
    x = th.distribute(torch.arange(6.0).reshape(3, 2), split=0)
    if comm.rank == 0:  # no collective inside: the other ranks never join, yet this returns
        with th.debug.comm_log() as log:
            text = repr(x)
            f"{x}"
            str(x)
        assert log == []
        assert "shape=(3, 2)" in text and "split=0" in text and f"rank=0/{comm.size}" in text
    comm.barrier()


def test_global_str(comm):
    t = torch.arange(6.0).reshape(3, 2)
    for x in layouts(t):
        s = th.global_str(x)
        if comm.rank == 0:
            assert s.startswith(repr(t)) and f"split={x.split_dim}" in s
        else:
            assert s == ""
    assert th.global_str(t) == repr(t)


# -- autograd through layout changes ---------------------------------------------------------
def torch_grad(f, t):
    t = t.detach().clone().requires_grad_()
    f(t).backward()
    return t.grad


W = torch.linspace(-1, 1, 30, dtype=torch.float64).reshape(5, 6)


def test_grad_through_resplit_and_balance(comm):
    t = torch.randn(5, 6, dtype=torch.float64)
    expected = torch_grad(lambda a: (a.exp() * W).sum(), t)
    for axis in (None, 0, 1):
        for x in layouts(t, requires_grad=True):
            loss = (x.resplit(axis).balance().exp() * W).sum()
            assert isinstance(loss, th.DistTensor) and loss.split_dim is None
            loss.backward()
            assert_dist_close(x.grad, expected, split=x.split_dim)


def test_grad_through_full(comm):
    t = torch.randn(5, 6, dtype=torch.float64)
    expected = torch_grad(lambda a: (a.exp() * W).sum(), t)
    for x in layouts(t, requires_grad=True):
        loss = (x.full().exp() * W).sum()  # plain torch on the gathered tensor, on every rank
        assert type(loss) is torch.Tensor
        loss.backward()
        assert_dist_close(x.grad, expected, split=x.split_dim)


def test_grad_through_distribute(comm):
    t = torch.randn(5, 6, dtype=torch.float64)
    expected = torch_grad(lambda a: (a.exp() * W).sum(), t)
    for split in (None, 0, 1):
        for counts in (None, "skewed"):
            if split is None and counts:
                continue
            leaf = t.clone().requires_grad_()
            c = None if counts is None else skewed_counts(t.shape[split], comm.size)
            x = th.distribute(leaf, split=split, counts=c)
            assert not x.is_leaf and x.requires_grad
            (x.exp() * W).sum().backward()
            torch.testing.assert_close(leaf.grad, expected)  # the full gradient on every rank


def test_grad_through_from_local(comm):
    t = torch.randn(5, 6, dtype=torch.float64)
    expected = torch_grad(lambda a: (a.exp() * W).sum(), t)
    for x in layouts(t):
        if x.split_dim is None:
            continue
        chunk = x.local.clone().requires_grad_()
        z = th.from_local(chunk, split=x.split_dim)
        assert z.counts == x.counts
        (z.balance().exp() * W).sum().backward()
        torch.testing.assert_close(chunk.grad, expected.narrow(x.split_dim, x.offset, x.counts[comm.rank]))


def test_replicated_leaf_gets_the_full_gradient_on_every_rank(comm):
    t, w0 = torch.randn(5, 6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    a, b = t.clone().requires_grad_(), w0.clone().requires_grad_()
    ((a * b).exp() * W).sum().backward()
    for x in layouts(t, requires_grad=True):
        plain = w0.clone().requires_grad_()  # a plain tensor used with split data is replicated
        dist = th.distribute(w0.clone(), split=None).requires_grad_()
        ((x * plain).exp() * W).sum().backward()
        ((x.detach() * dist).exp() * W).sum().backward()
        torch.testing.assert_close(plain.grad, b.grad)
        assert isinstance(dist.grad, th.DistTensor) and dist.grad.split_dim is None
        torch.testing.assert_close(dist.grad.local, b.grad)
        every = comm.allgather(plain.grad)
        assert all(torch.equal(g, every[0]) for g in every)  # bitwise the same on every rank
        assert_dist_close(x.grad, a.grad, split=x.split_dim)
