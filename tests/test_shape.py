"""The shape family: views (expand, split and friends, transposes, squeeze, narrow, select),
reshape and view, blocks of rows (cat, stack, flip, roll, pad, repeat), diagonals, halos."""
import re

import pytest
import torch
import torch.nn.functional as F

import torchheat as th
from torchheat.testing import assert_dist_close, layouts, skewed_counts


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


def check_op(f, t, *, no_comm=False, grad=True):
    """``f`` on every layout of ``t`` gives torch's values and (float64) gradients."""
    expected = f(t)
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
    ref = t.clone().requires_grad_()
    if grad:
        (f(ref) * weight).sum().backward()
    for x in layouts(t, requires_grad=grad):
        with th.debug.comm_log() as log:
            got = f(x)
        assert_dist_close(got, expected)
        if no_comm:
            assert log == [], f"communicated: {log}"
        if grad:
            (got * weight).sum().backward()
            assert_dist_close(x.grad, ref.grad, split=x.split_dim)


VIEWS = {
    "transpose(0, 2)": lambda a: a.transpose(0, 2),
    "swapaxes(-1, 1)": lambda a: torch.swapaxes(a, -1, 1),
    "swapdims": lambda a: a.swapdims(0, 1),
    "permute(2, 0, 1)": lambda a: a.permute(2, 0, 1),
    "movedim": lambda a: torch.movedim(a, (0, 1), (2, 0)),
    "moveaxis": lambda a: a.moveaxis(-1, 0),
    "mT": lambda a: a.mT,
    "mH": lambda a: a.mH,
    "adjoint": lambda a: a.adjoint(),
    "squeeze()": lambda a: a.squeeze(),
    "chunk rows: squeeze()": lambda a: a.squeeze(),
    "squeeze(1)": lambda a: torch.squeeze(a, 1),
    "squeeze((0, 1))": lambda a: a.squeeze((0, 1)),
    "unsqueeze(1)": lambda a: a.unsqueeze(1),
    "unsqueeze(-1)": lambda a: torch.unsqueeze(a, -1),
    "narrow(0, 1, 3)": lambda a: a.narrow(0, 1, 3),
    "narrow(-1, 2, 2)": lambda a: torch.narrow(a, -1, 2, 2),
    "narrow(0, -2, 2)": lambda a: a.narrow(0, -2, 2),
    "narrow_copy": lambda a: a.narrow_copy(2, 1, 3),
    "select(0, 2)": lambda a: a.select(0, 2),
    "select(2, -1)": lambda a: torch.select(a, 2, -1),
}


@pytest.mark.parametrize("name", VIEWS)
def test_views(name):
    t = torch.randn((1, 1, 3) if name.startswith("squeeze") else (5, 1, 4), dtype=torch.float64)
    f = VIEWS[name]
    try:
        f(t)
    except Exception as err:  # torch's own error, on the global shape
        for x in layouts(t):
            with pytest.raises(type(err), match=re.escape(str(err))):
                f(x)
        return
    check_op(f, t, no_comm="select" not in name and "squeeze" not in name)


def test_t_and_T_on_matrices():
    check_op(lambda a: a.t(), torch.randn(5, 3, dtype=torch.float64), no_comm=True)
    check_op(lambda a: a.T, torch.randn(4, 2, dtype=torch.float64), no_comm=True)
    check_op(lambda a: torch.t(a), torch.randn(4, dtype=torch.float64), no_comm=True)


def test_writes_through_views_reach_the_input():
    t = torch.arange(60.0).reshape(5, 3, 4)
    for x in layouts(t):
        expected = t.clone()
        x.transpose(0, 2).narrow(1, 1, 1).fill_(-1)
        expected.transpose(0, 2).narrow(1, 1, 1).fill_(-1)
        assert_dist_close(x, expected)
        x.permute(1, 2, 0).narrow(2, 1, 3).mul_(2)
        expected.permute(1, 2, 0).narrow(2, 1, 3).mul_(2)
        dim = 2 if x.split_dim != 2 else 1
        x.unsqueeze(0).select(dim + 1, 2).zero_()
        expected.unsqueeze(0).select(dim + 1, 2).zero_()
        if x.split_dim in (None, 0):
            x.view(5, 12).narrow(1, 0, 2).add_(100)
            expected.view(5, 12).narrow(1, 0, 2).add_(100)
        assert_dist_close(x, expected)


def test_select_along_the_split_axis_is_a_copy_that_refuses_writes():
    t = torch.arange(12.0).reshape(4, 3)
    for x in layouts(t):
        if x.split_dim != 0:
            continue
        row = x.select(0, -1)
        assert row.split_dim is None
        assert_dist_close(row, t[-1])
        with pytest.raises(th.NotDistributedError, match="writes into a copy"):
            row.add_(1)
        with pytest.raises(th.NotDistributedError, match="writes into a copy"):
            row.unsqueeze(0).zero_()


def test_inplace_shape_changes():
    t = torch.randn(4, 1, 3)
    for x in layouts(t):
        if x.split_dim == 1:
            with pytest.raises(th.NotDistributedError, match="split axis 1"):
                x.squeeze_(1)
            continue
        split = x.split_dim
        assert x.squeeze_(1) is x and x.shape == (4, 3)
        x.unsqueeze_(0).transpose_(0, 2)
        expected = t.squeeze(1).unsqueeze(0).transpose(0, 2)
        assert_dist_close(x, expected, split=None if split is None else {0: 1, 2: 0}[split])


RESHAPES = {
    "reshape(4, 6)": lambda a: a.reshape(4, 6),
    "reshape(2, 2, 6)": lambda a: a.reshape(2, 2, 6),
    "reshape(3, 8)": lambda a: torch.reshape(a, (3, 8)),
    "reshape(-1)": lambda a: a.reshape(-1),
    "reshape(1, 24)": lambda a: a.reshape(1, 24),
    "reshape(6, 1, 4)": lambda a: a.reshape(6, 1, 4),
    "flatten": lambda a: torch.flatten(a),
    "flatten(1)": lambda a: a.flatten(1),
    "flatten(0, 1)": lambda a: a.flatten(0, 1),
    "unflatten": lambda a: a.unflatten(2, (2, 1)),
    "ravel": lambda a: a.ravel(),
    "reshape_as": lambda a: a.reshape_as(torch.empty(2, 12)),
    "chain": lambda a: a.reshape(6, 4).t().reshape(2, 12).reshape(24, 1),
}


@pytest.mark.parametrize("name", RESHAPES)
def test_reshape(name):
    check_op(RESHAPES[name], torch.randn(4, 3, 2, dtype=torch.float64))


def test_reshape_is_local_where_the_rows_survive():
    t = torch.randn(6, 2, 3)
    x = th.distribute(t, split=0)
    for f in (lambda a: a.reshape(6, 6), lambda a: a.view(6, 3, 2), lambda a: a.flatten(1), lambda a: a.unsqueeze(0).flatten(0, 1)):
        with th.debug.comm_log() as log:
            y = f(x)
        # (view agrees on the chunks' stride errors: one byte)
        assert all(e.nbytes <= 1 for e in log) and y.counts == x.counts
        assert_dist_close(y, f(t))
    z = th.distribute(torch.arange(24.0).reshape(12, 2), split=0, counts=th.layout.balanced_counts(12, x.comm.size))
    aligned = all(o % 3 == 0 for o in z.lshape_map[:, 0].cumsum(0).tolist())
    with th.debug.comm_log() as log:
        y = z.reshape(4, 3, 2)
    assert (log == []) == aligned and y.split_dim == 0
    assert_dist_close(y, torch.arange(24.0).reshape(4, 3, 2))


def test_reshape_never_changes_the_input_and_copies_are_balanced():
    t = torch.randn(5, 4)
    for x in layouts(t):
        before = (x.split_dim, x.counts)
        y = x.reshape(4, 5)
        assert (x.split_dim, x.counts) == before
        if x.split_dim is not None and max(x.counts) < x.shape[x.split_dim]:  # (held by one rank: reshaped there)
            assert y.split_dim == 0 and y.is_balanced
        with th.debug.comm_log() as log:
            x.reshape(4, 5)
        assert all(e.collective != "allgather" for e in log)


def test_view_raises_torchs_error_where_rows_would_span_ranks(comm):
    t = torch.randn(4, 6)
    x = th.distribute(t, split=1)
    if comm.size == 1:
        assert_dist_close(x.view(24), t.view(24))
    else:
        with pytest.raises(RuntimeError, match=re.escape(torch_error(lambda: t.t().view(24)))):
            x.view(24)
    with pytest.raises(RuntimeError, match=re.escape(torch_error(lambda: t.view(5, 5)))):
        x.view(5, 5)
    with pytest.raises(RuntimeError, match=re.escape(torch_error(lambda: t.reshape(-1, -1)))):
        x.reshape(-1, -1)
    assert x.view(torch.int32).shape == t.view(torch.int32).shape
    y = th.distribute(t, split=0)
    assert_dist_close(y.view(torch.int32), t.view(torch.int32))
    assert_dist_close(y.view_as(torch.empty(4, 2, 3)), t.view(4, 2, 3))


OTHER = torch.randn(2, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
BLOCKS = {
    "cat(dim=0) with a plain operand": lambda a: torch.cat([a, OTHER, a], 0),
    "cat(dim=0)": lambda a: torch.cat([a, a * 2]),
    "cat(dim=1)": lambda a: torch.cat([a, a], 1),
    "concatenate(axis=-1)": lambda a: torch.concatenate((a, a.flip(2)), axis=-1),
    "concat with legacy empty": lambda a: torch.concat([a, torch.empty(0, dtype=a.dtype)]),
    "stack(dim=1)": lambda a: torch.stack([a, a], 1),
    "stack": lambda a: torch.stack([a, a * 2]),
    "vstack": lambda a: torch.vstack([a, a]),
    "row_stack": lambda a: torch.row_stack([a, a]),
    "hstack": lambda a: torch.hstack([a, a]),
    "dstack": lambda a: torch.dstack([a, a]),
    "column_stack": lambda a: torch.column_stack([a.flatten(1), a.select(2, 0).select(1, 0)]),
    "flip(0)": lambda a: a.flip(0),
    "flip((0, 2))": lambda a: torch.flip(a, (0, 2)),
    "fliplr": lambda a: a.fliplr(),
    "flipud": lambda a: torch.flipud(a),
    "roll(2, 0)": lambda a: a.roll(2, 0),
    "roll((1, -3), (1, 0))": lambda a: torch.roll(a, (1, -3), (1, 0)),
    "roll(7)": lambda a: torch.roll(a, 7),
    "rot90": lambda a: torch.rot90(a),
    "rot90(3, (1, 2))": lambda a: torch.rot90(a, 3, (1, 2)),
    "pad": lambda a: F.pad(a, (1, 2, 0, 1, 2, 3)),
    "pad cropping": lambda a: F.pad(a, (1, 2, 0, 1, -1, -2)),
    "pad reflect": lambda a: F.pad(a, (1, 2, 1, 1), mode="reflect"),
    "pad circular": lambda a: F.pad(a, (1, 2, 1, 1), mode="circular"),
    "pad replicate": lambda a: F.pad(a, (1, 2), mode="replicate"),
    "constant_pad_nd": lambda a: torch.constant_pad_nd(a, (1, 2, 0, 0, 1, 1), 3.0),
    "repeat(2, 1, 3)": lambda a: a.repeat(2, 1, 3),
    "repeat(2, 3, 1, 1)": lambda a: a.repeat(2, 3, 1, 1),
    "tile": lambda a: a.tile((2, 1)),
    "repeat_interleave(2, 0)": lambda a: a.repeat_interleave(2, 0),
    "repeat_interleave(tensor, 1)": lambda a: a.repeat_interleave(torch.tensor([1, 0, 2]), 1),
    "repeat_interleave(tensor, 0)": lambda a: torch.repeat_interleave(a, torch.tensor([1, 0, 2, 3, 1]), 0),
    "repeat_interleave(2)": lambda a: torch.repeat_interleave(a, 2),
}


@pytest.mark.parametrize("name", BLOCKS)
def test_blocks_of_rows(name):
    check_op(BLOCKS[name], torch.randn(5, 3, 4, dtype=torch.float64))


def test_cat_along_the_split_axis_is_one_exchange_into_the_balanced_layout(comm):
    a, b = torch.randn(7, 3), torch.randn(4, 3)
    x = th.distribute(a, 0, counts=skewed_counts(7, comm.size))
    y = th.distribute(b, 0)
    with th.debug.comm_log() as log:
        z = torch.cat([x, y, b])
    assert [e.collective for e in log] == (["alltoallv"])
    assert z.is_balanced and z.split_dim == 0
    assert_dist_close(z, torch.cat([a, b, b]))
    u = torch.cat([x, y])  # (the received rows in order: the exchange's buffer is the result)
    assert_dist_close(u, torch.cat([a, b]))
    u.mul_(0)  # the result owns its memory
    assert_dist_close(x, a), assert_dist_close(y, b)
    with th.debug.comm_log() as log:
        w = torch.cat([x, th.distribute(a, 1)], 1)  # aligned to the first operand's layout
    assert_dist_close(w, torch.cat([a, a], 1), split=0)
    assert w.counts == x.counts


def test_cat_and_stack_errors_are_torchs():
    t = torch.randn(4, 3)
    for x in layouts(t):
        for f in (lambda a: torch.cat([a, torch.randn(4, 2)]), lambda a: torch.stack([a, a.narrow(0, 0, 3)]),
                  lambda a: torch.cat([a, a], 2)):
            with pytest.raises(Exception, match=re.escape(torch_error(lambda: f(t)))):
                f(x)


def test_pad_along_the_split_axis_grows_the_edge_chunks(comm):
    x = th.distribute(torch.ones(5, 2), 0)
    with th.debug.comm_log() as log:
        y = F.pad(x, (0, 0, 2, 1), value=7.0)
    assert log == []
    counts = list(x.counts)
    counts[0] += 2
    counts[-1] += 1
    assert y.counts == tuple(counts)
    assert_dist_close(y, F.pad(torch.ones(5, 2), (0, 0, 2, 1), value=7.0))


_gen = torch.Generator().manual_seed(3)
MATRIX, BATCH, VECTOR = (torch.randn(s, dtype=torch.float64, generator=_gen) for s in ((5, 4), (3, 4, 5), (5,)))
DIAGONALS = {
    "diagonal()": (MATRIX, lambda a: a.diagonal()),
    "diagonal(1)": (MATRIX, lambda a: torch.diagonal(a, 1)),
    "diagonal(-2)": (MATRIX, lambda a: a.diagonal(-2)),
    "diagonal(0, 1, 0)": (MATRIX, lambda a: a.diagonal(0, 1, 0)),
    "diagonal(1, 0, 2)": (BATCH, lambda a: a.diagonal(1, 0, 2)),
    "diagonal(-1, -1, 1)": (BATCH, lambda a: a.diagonal(-1, -1, 1)),
    "tril": (MATRIX, lambda a: a.tril()),
    "triu(1)": (MATRIX, lambda a: torch.triu(a, 1)),
    "tril(-1) batched": (BATCH, lambda a: a.tril(-1)),
    "trace": (MATRIX, lambda a: a.trace()),
    "diag(matrix, 1)": (MATRIX, lambda a: torch.diag(a, 1)),
    "diag(vector)": (VECTOR, lambda a: torch.diag(a)),
    "diag(vector, 2)": (VECTOR, lambda a: torch.diag(a, 2)),
    "diag(vector, -1)": (VECTOR, lambda a: a.diag(-1)),
    "diagflat(1)": (MATRIX, lambda a: torch.diagflat(a, 1)),
    "diag_embed": (BATCH, lambda a: torch.diag_embed(a)),
    "diag_embed(1, 0, 2)": (MATRIX, lambda a: torch.diag_embed(a, 1, 0, 2)),
    "diag_embed(-2, 2, 0)": (MATRIX, lambda a: torch.diag_embed(a, -2, 2, 0)),
}


@pytest.mark.parametrize("name", DIAGONALS)
def test_diagonals(name):
    t, f = DIAGONALS[name]
    check_op(f, t, no_comm=name.startswith(("diagonal", "tril", "triu", "diag(matrix", "diag(vector", "diag_embed")))


def test_diagonal_is_a_view_and_tril_writes_in_place():
    t = torch.arange(20.0).reshape(5, 4)
    for x in layouts(t):
        expected = t.clone()
        x.diagonal(1).zero_()
        expected.diagonal(1).zero_()
        x.triu_(2)
        expected.triu_(2)
        assert_dist_close(x, expected)


_gen = torch.Generator().manual_seed(4)
TALL, ROW, LINE = (torch.randn(s, dtype=torch.float64, generator=_gen) for s in ((7, 4), (2, 4), (7,)))
HALOS = {
    "diff(dim=0)": (TALL, lambda a: torch.diff(a, dim=0)),
    "diff(2, 0)": (TALL, lambda a: a.diff(2, 0)),
    "diff()": (TALL, lambda a: a.diff()),
    "diff(prepend, append)": (TALL, lambda a: torch.diff(a, 1, 0, ROW, ROW * 2)),
    "diff(3) of a vector": (LINE, lambda a: a.diff(3)),
    "unfold(0, 3, 1)": (TALL, lambda a: a.unfold(0, 3, 1)),
    "unfold(0, 2, 2)": (TALL, lambda a: a.unfold(0, 2, 2)),
    "unfold(0, 3, 2)": (TALL, lambda a: a.unfold(0, 3, 2)),
    "unfold(1, 2, 1)": (TALL, lambda a: a.unfold(1, 2, 1)),
    "meshgrid ij": (LINE, lambda a: torch.stack(torch.meshgrid(a, torch.arange(3.0, dtype=torch.float64), indexing="ij"))),
    "meshgrid xy": (LINE, lambda a: torch.stack(torch.meshgrid(a, a * 2, indexing="xy"))),
    "broadcast_tensors": (TALL, lambda a: torch.stack(torch.broadcast_tensors(a, torch.ones(3, 1, 1, dtype=torch.float64)))),
    "atleast_3d": (TALL, lambda a: torch.atleast_3d(a)),
    "atleast_2d of a vector": (LINE, lambda a: torch.atleast_2d(a)),
    "atleast_1d": (LINE, lambda a: torch.atleast_1d(a)),
}


@pytest.mark.parametrize("name", HALOS)
def test_halos_and_grids(name):
    t, f = HALOS[name]
    check_op(f, t)


def test_unfold_across_chunks_is_a_copy_and_within_them_a_view(comm):
    t = torch.arange(12.0).reshape(6, 2)
    x = th.distribute(t, 0, counts=(6,) if comm.size == 1 else (2, 4) + (0,) * (comm.size - 2))
    y = x.unfold(0, 2, 2)
    y.mul_(-1)
    assert_dist_close(x, torch.where(torch.arange(6).reshape(6, 1) >= 0, -t, t))
    z = x.unfold(0, 3, 1)
    assert_dist_close(z, (-t).unfold(0, 3, 1))
    if comm.size > 1:
        with pytest.raises(th.NotDistributedError, match="writes into a copy"):
            z.zero_()


def test_block_diag():
    """Split operands (rows, columns, a split 1-D operand, empty chunks) among plain ones, promoted dtypes, gradients."""
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    c, e = torch.tensor(2.0, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float32)
    ra, rb = a.clone().requires_grad_(), b.clone().requires_grad_()
    expected = torch.block_diag(ra, rb, c, e)
    weight = torch.randn(expected.shape, dtype=torch.float64)
    ga, gb = torch.autograd.grad((expected * weight).sum(), [ra, rb])
    ys = list(layouts(b, requires_grad=True))
    for i, x in enumerate(layouts(a, requires_grad=True)):  # every layout of each, in varied pairs
        y = ys[i % len(ys)]
        got = torch.block_diag(x, y, c, e)
        assert_dist_close(got, expected.detach())
        gx, gy = torch.autograd.grad((got.full() * weight).sum(), [x, y])
        assert_dist_close(gx, ga, split=x.split_dim)
        assert_dist_close(gy, gb, split=y.split_dim)


COPIES = [(torch.view_copy, ((24,),)), (torch.view_copy, ((3, 8),)), (torch.transpose_copy, (0, 1)), (torch.t_copy, ()),
          (torch.permute_copy, ((1, 0),)), (torch.select_copy, (0, 1)), (torch.select_copy, (1, -1)),
          (torch.diagonal_copy, (1,)), (torch.unsqueeze_copy, (1,)), (torch.squeeze_copy, ()),
          (torch.expand_copy, ((2, 4, 6),)), (torch.unfold_copy, (0, 2, 1)), (torch.alias_copy, ()),
          (torch.detach_copy, ()), (torch.slice_copy, (0, 1, 4, 2)), (torch.slice_copy, (1, -5)),
          (torch.split_copy, (3, 1)), (torch.split_with_sizes_copy, ([1, 3],)), (torch.narrow_copy, (1, 1, 3))]


@pytest.mark.parametrize("func, args", COPIES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_view_copies(func, args):
    """Each ``*_copy`` is its view op followed by a clone: torch's values, a layout, no storage
    shared with the input, and torch's gradient."""
    t = torch.randn(4, 6, dtype=torch.float64)
    ref = t.clone().requires_grad_()
    expected = func(ref, *args)
    outs = expected if isinstance(expected, tuple) else (expected,)
    weights = [torch.randn(o.shape, dtype=torch.float64) for o in outs]
    grad = None if func is torch.detach_copy else torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), ref)[0]
    for x in layouts(t, requires_grad=True):
        got = func(x, *args)
        assert_dist_close(got, tuple(o.detach() for o in outs) if isinstance(expected, tuple) else expected.detach())
        pieces = got if isinstance(got, tuple) else (got,)
        assert all(p.local.numel() == 0 or p.local.untyped_storage().data_ptr() != x.local.untyped_storage().data_ptr()
                   for p in pieces)
        if grad is not None:
            (g,) = torch.autograd.grad(sum((p.full() * w).sum() for p, w in zip(pieces, weights)), x)
            assert_dist_close(g, grad, split=x.split_dim)
