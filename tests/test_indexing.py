"""Indexing: x[key], x[key] = value and the index/gather/scatter family, keys in global
coordinates, compared with torch on the global tensor for every layout."""
import re

import pytest
import torch

import torchheat as th
from torchheat.testing import assert_dist_close, layouts

T = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
M2 = T[:, :, 0] > 0

KEYS = {
    "int": 1, "-int": -1, ":": slice(None), "1:4": slice(1, 4), "::2": slice(None, None, 2), "-4:-1:3": slice(-4, -1, 3),
    "1:5:3, 2": (slice(1, 5, 3), 2), "None, 2": (None, 2), "..., 1": (..., 1), "..., None": (..., None),
    "2, 1, 0": (2, 1, 0), ":, 1": (slice(None), 1), "None, 2:5, None, 2": (None, slice(2, 5), None, 2),
    "1, ..., None": (1, ..., None), "9:": slice(9, None), "0-d tensor": torch.tensor(2),
    ":, 0-d tensor": (slice(None), torch.tensor(1)),
    "tensor": torch.tensor([4, 0, 4, -1]), "list": [1, 2], ":, list": (slice(None), [3, 0]),
    "list, list": ([0, 1], [1, 2]), "column, :, list": ([[0], [4]], slice(None), [1, 2]),
    "list, int, list": ([0, 1], 1, [1, 2]), ":, list, int": (slice(None), [0, 1], 1), "int, list": (1, [0, 1]),
    ":, int, list": (slice(None), 1, [0, 1]), "empty list": torch.tensor([], dtype=torch.int64),
    "mask": T[:, 0, 0] > 0, "2-d mask": M2, "3-d mask": T > 0, "2-d mask, int": (M2, 1),
    ":, mask": (slice(None), T[0, :, 0] > 0), "mask, list": (T[:, 0, 0] > 0, [1]),
    "slice, list, list": (slice(1, 3), [[1, 2]], [0]),
}
BASIC = {"int", "-int", ":", "1:4", "::2", "-4:-1:3", "1:5:3, 2", "None, 2", "..., 1", "..., None", "2, 1, 0", ":, 1",
         "None, 2:5, None, 2", "1, ..., None", "9:"}


@pytest.mark.parametrize("name", KEYS)
def test_getitem(name):
    key = KEYS[name]
    expected = T[key]
    for x in layouts(T):
        with th.debug.comm_log() as log:
            got = x[key]
        assert_dist_close(got, expected)
        if name in BASIC and got.split_dim is not None:
            assert sum(e.nbytes for e in log) <= 16  # (only the agreement on key ranges; no rows move), f"{name}: a view along the split axis communicates"


def fresh(x):
    """A DistTensor of T's values laid out like ``x`` that shares no memory with T."""
    return th.distribute(T.clone(), x.split_dim, counts=x.counts)


def test_basic_keys_are_views_and_ints_on_the_split_axis_are_marked_copies():
    for x in map(fresh, layouts(T)):
        if x.split_dim == 1:  # x[1:5:2, 2] picks one column of the split axis: a copy
            with pytest.raises(th.NotDistributedError, match="writes into a copy"):
                x[1:5:2, 2].fill_(7.0)
            continue
        x[1:5:2, 2].fill_(7.0)
        expected = T.clone()
        expected[1:5:2, 2] = 7.0
        assert_dist_close(x, expected)
        row = x[2]
        if x.split_dim == 0:
            assert row.split_dim is None and row._copy_of == "x[i] along the split axis"
            with pytest.raises(th.NotDistributedError, match="writes into a copy"):
                row.add_(1)
        else:
            row.add_(1)  # a view: the write reaches x
            expected[2] += 1
            assert_dist_close(x, expected)


def test_distributed_keys():
    idx = torch.tensor([[4, 0], [4, 1], [2, 2], [0, 3]])
    for x in layouts(T):
        for k in layouts(idx):
            assert_dist_close(x[k], T[idx])
            assert_dist_close(x[:, k % 4], T[:, idx % 4])
        for m in (T > 0, M2):
            for km in layouts(m):
                assert_dist_close(x[km], T[m])
        for km in layouts(M2):
            assert_dist_close(x[km, 1], T[M2, 1])


def test_a_plain_tensor_indexed_by_split_keys_is_a_local_lookup(comm):
    idx = torch.tensor([4, 0, 4, 2, 1, 3])
    for k in layouts(idx):
        with th.debug.comm_log() as log:
            got = T[k]
        assert sum(e.nbytes for e in log) <= 16  # (only the agreement on key ranges; no rows move)
        assert_dist_close(got, T[idx], split=k.split_dim)
        assert_dist_close(T[:, k % 4], T[:, idx % 4])


def test_a_mask_in_the_same_layout_selects_locally(comm):
    x = th.distribute(T, 0, counts=th.testing.skewed_counts(5, comm.size))
    mask = x[:, 0, 0] > 0
    with th.debug.comm_log() as log:
        got = x[mask]
    assert_dist_close(got, T[T[:, 0, 0] > 0], split=0)
    assert [e.collective for e in log] == ([] if comm.size == 1 else ["allgather"])  # the counts


@pytest.mark.parametrize("name", ["tensor", ":, list", "int", "::2", "2-d mask", "list, int, list", "2, 1, 0"])
def test_getitem_gradients(name):
    key = KEYS[name]
    ref = T.clone().requires_grad_()
    w = torch.randn(ref[key].shape, dtype=torch.float64)
    (ref[key] * w).sum().backward()
    for x in layouts(T, requires_grad=True):
        (x[key] * w).sum().backward()
        assert_dist_close(x.grad, ref.grad)


SET_DIST = {"1:4", "int", "..., 1", "tensor", ":, list", "list, int, list", "2-d mask", ":, mask"}


@pytest.mark.parametrize("name", [n for n in KEYS if n not in ("9:", "empty list")])
def test_setitem(name):
    key = KEYS[name]
    shape = T[key].shape
    for value in (2.5, torch.randn(shape, dtype=torch.float64), torch.randn(shape[-1:], dtype=torch.float64)):
        expected = T.clone()
        expected[key] = value
        values = [value]
        if isinstance(value, torch.Tensor) and name in SET_DIST:  # DistTensor values in every layout
            values += [th.distribute(value, s) for s in range(value.dim())]
        for v in values:
            for x in map(fresh, layouts(T)):
                x[key] = v
                assert_dist_close(x, expected)


def test_setitem_repeated_keys_write_as_torch_on_cpu():
    key, value = torch.tensor([3, 1, 3, 3]), torch.arange(4.0, dtype=torch.float64)[:, None, None].expand(4, 4, 3)
    expected = T.clone()
    expected[key] = value
    for x in map(fresh, layouts(T)):
        x[key] = value
        assert_dist_close(x, expected)


@pytest.mark.parametrize("name", ["tensor", "int", "::2", "2-d mask", "list, int, list"])
def test_setitem_gradients(name):
    key = KEYS[name]
    shape = T[key].shape
    w = torch.randn(T.shape, dtype=torch.float64)
    ref, value = T.clone().requires_grad_(), torch.randn(shape, dtype=torch.float64, requires_grad=True)
    y = ref * 1
    y[key] = value
    (y * w).sum().backward()
    for x in layouts(T, requires_grad=True):
        for vsplit in [None] + list(range(len(shape))):
            v = value.detach().clone() if vsplit is None else th.distribute(value.detach(), vsplit)
            v.requires_grad_()
            y = x * 1
            y[key] = v
            (y * w).sum().backward()
            assert_dist_close(x.grad, ref.grad)
            assert_dist_close(v.grad if vsplit is not None else th.distribute(v.grad), value.grad)
            x.grad = None


def raises_on_every_rank(comm, exc, match, fn):
    """Every rank raises ``exc`` matching ``match`` (the outcomes are shared: no rank hangs)."""
    try:
        fn()
        outcome = None
    except Exception as err:  # noqa: BLE001 -- shared, then judged
        outcome = (isinstance(err, exc), f"{type(err).__name__}: {err}")
    for rank, got in enumerate(comm.allgather_obj(outcome)):
        assert got is not None, f"rank {rank} did not raise {exc.__name__}"
        assert got[0] and re.search(match, got[1]), f"rank {rank}: {got[1]!r} (expected {exc.__name__} {match!r})"


def torch_error(fn):
    with pytest.raises(Exception) as info:
        fn(T.clone())
    return type(info.value), re.escape(str(info.value))


BAD = {
    "key out of range": lambda a: a[torch.tensor([0, 5])],
    "negative key out of range": lambda a: a[:, [0, -5]],
    "int out of range": lambda a: a[7],
    "mask shape": lambda a: a[torch.ones(3, dtype=torch.bool)],
    "keys do not broadcast": lambda a: a[[0, 1], [0, 1, 2]],
    "float key": lambda a: a[torch.tensor([0.0])],
    "too many indices": lambda a: a[0, 0, 0, 0],
    "negative step": lambda a: a[::-1],
    "set key out of range": lambda a: a.__setitem__(torch.tensor([0, 5]), 1.0),
    "set mask shape": lambda a: a.__setitem__(torch.ones(3, 4, 2, dtype=torch.bool), 1.0),
    "set value shape (basic)": lambda a: a.__setitem__(slice(None), torch.ones(2)),
    "set value shape (keys)": lambda a: a.__setitem__([0, 1], torch.ones(3, 4, 3)),
    "set value shape (mask)": lambda a: a.__setitem__(a[:, 0, 0] > 9, torch.ones(2, 4, 3)),
}


BAD.update({
    "index_select out of range": lambda a: torch.index_select(a, 1, torch.tensor([0, 4])),
    "index_select negative": lambda a: torch.index_select(a, 0, torch.tensor([-1])),
    "gather out of range": lambda a: torch.gather(a, 0, torch.tensor([[[5]]])),
    "gather index shape": lambda a: torch.gather(a, 0, torch.zeros(1, 5, 1, dtype=torch.int64)),
    "take out of range": lambda a: torch.take(a, torch.tensor([60])),
    "masked_select mask dtype": lambda a: torch.masked_select(a, torch.ones(3)),
})


@pytest.mark.parametrize("name", BAD)
def test_bad_keys_raise_torchs_error_on_every_rank_and_leave_x_unchanged(comm, name):
    exc, match = torch_error(BAD[name])
    for x in layouts(T):
        raises_on_every_rank(comm, exc, match, lambda: BAD[name](x))
        assert_dist_close(x, T)


def test_plain_keys_that_differ_between_ranks(comm):
    for x in layouts(T):
        if comm.size > 1 and x.split_dim == 0:
            raises_on_every_rank(comm, ValueError, "keys differ between ranks", lambda: x[torch.arange(comm.rank + 1)])


IDX = torch.tensor([4, 0, 4, 3, 2])
G = [torch.randint(0, n, shape, generator=torch.Generator().manual_seed(2)) for n, shape in ((5, (3, 4, 3)), (4, (5, 2, 3)), (3, (5, 4, 2)))]
FLAT = torch.tensor([[0, 59], [1, 17]])
SELECT = {
    "index_select(0)": (lambda a, i: torch.index_select(a, 0, i), IDX),
    "index_select(1)": (lambda a, i: a.index_select(1, i % 4), IDX),
    "gather(0)": (lambda a, i: torch.gather(a, 0, i), G[0]),
    "gather(1)": (lambda a, i: a.gather(1, i), G[1]),
    "gather(-1)": (lambda a, i: torch.gather(a, -1, i), G[2]),
    "take": (lambda a, i: torch.take(a, i - 1), FLAT),
    "take_along_dim(1)": (lambda a, i: torch.take_along_dim(a, i, 1), G[1]),
    "take_along_dim": (lambda a, i: torch.take_along_dim(a, i), FLAT),
    "masked_select": (lambda a, i: torch.masked_select(a, i), T[0] > 0),
    "masked_select (same shape)": (lambda a, i: a.masked_select(i), T > 0),
    "nonzero": (lambda a, i: torch.nonzero(a > 0), None),
    "argwhere": (lambda a, i: torch.argwhere(a > 0), None),
    "where(cond)": (lambda a, i: torch.where(a > 0), None),
    "nonzero(as_tuple=True)": (lambda a, i: (a > 0).nonzero(as_tuple=True), None),
}


@pytest.mark.parametrize("name", SELECT)
def test_selections(name):
    f, index = SELECT[name]
    expected = f(T, index)
    for x in layouts(T):
        for i in layouts(index) if index is not None else [None]:
            assert_dist_close(f(x, i), expected)
    if index is not None:  # gradients
        ref = T.clone().requires_grad_()
        w = torch.randn(expected.shape, dtype=torch.float64)
        (f(ref, index) * w).sum().backward()
        for x in layouts(T, requires_grad=True):
            (f(x, index) * w).sum().backward()
            assert_dist_close(x.grad, ref.grad)


def test_equal():
    other = T.clone()
    other[3, 2, 1] += 1
    for x in layouts(T):
        for y in layouts(T):
            assert torch.equal(x, y) and x.equal(y)
        for y in layouts(other):
            assert not torch.equal(x, y)
        assert not torch.equal(x, T[:4])



SRC = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
SCATTER = {
    "scatter(0)": lambda a, s: torch.scatter(a, 0, G[0], s[:3]),
    "scatter(1, value)": lambda a, s: a.scatter(1, G[1], 2.5),
    "scatter_add(0)": lambda a, s: torch.scatter_add(a, 0, G[0], s[:3]),
    "scatter_add(1)": lambda a, s: a.scatter_add(1, G[1], s[:, :2]),
    "scatter_reduce(amax)": lambda a, s: a.scatter_reduce(0, G[0], s[:3], "amax", include_self=False),
    "scatter_reduce(mean)": lambda a, s: a.scatter_reduce(1, G[1], s[:, :2], "mean"),
    "index_add(0)": lambda a, s: a.index_add(0, IDX[:3], s[:3], alpha=2),
    "index_add(1)": lambda a, s: torch.index_add(a, 1, IDX[:3] % 4, s[:, :3]),
    "index_copy": lambda a, s: a.index_copy(0, IDX[:3], s[:3]),
    "index_fill(0)": lambda a, s: a.index_fill(0, IDX[:3], -1.0),
    "index_fill(2)": lambda a, s: a.index_fill(2, torch.tensor([0, 2]), -1.0),
    "index_reduce": lambda a, s: a.index_reduce(0, IDX[:3], s[:3], "prod"),
    "put": lambda a, s: a.put(torch.tensor([0, 59, 17]), s[0, 0]),
    "put(accumulate)": lambda a, s: a.put(torch.tensor([0, 59, 0]), s[0, 0], accumulate=True),
    "index_put": lambda a, s: a.index_put((torch.tensor([4, 0, 3]),), s[:3]),
    "index_put(accumulate)": lambda a, s: a.index_put((torch.tensor([4, 0, 4]), torch.tensor([1])), s[0, :1], accumulate=True),
    "masked_scatter": lambda a, s: a.masked_scatter(a > 0, s),
    "select_scatter": lambda a, s: torch.select_scatter(a, s[0], 0, 2),
    "select_scatter(1)": lambda a, s: torch.select_scatter(a, s[:, 0], 1, 2),
    "slice_scatter": lambda a, s: torch.slice_scatter(a, s[:2], 0, 1, 5, 2),
}


@pytest.mark.filterwarnings("ignore:index_reduce")
@pytest.mark.parametrize("name", SCATTER)
def test_scatter_family(name):
    f = SCATTER[name]
    expected = f(T, SRC)
    for x in layouts(T):
        for s in layouts(SRC, unbalanced=False):
            assert_dist_close(f(x, s), expected)
    ref, src = T.clone().requires_grad_(), SRC.clone().requires_grad_()
    w = torch.randn(expected.shape, dtype=torch.float64)
    (f(ref, src) * w).sum().backward()
    for x in layouts(T, requires_grad=True):
        s = th.distribute(SRC, x.split_dim).requires_grad_()
        (f(x, s) * w).sum().backward()
        assert_dist_close(x.grad, ref.grad)
        if src.grad is not None:
            assert_dist_close(s.grad, src.grad)


def test_in_place_scatter_writes_into_x():
    for x in map(fresh, layouts(T)):
        expected = T.clone().index_fill_(0, IDX, 0.0).scatter_add_(1, G[1], SRC[:, :2])
        x.index_fill_(0, IDX, 0.0).scatter_add_(1, G[1], SRC[:, :2])
        assert_dist_close(x, expected)


def test_index_add_of_split_entries_into_a_replicated_tensor_is_one_allreduce(comm):
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    rows = torch.randn(7, 3, dtype=torch.float64)
    expected = torch.ones(4, 3, dtype=torch.float64).index_add(0, labels, rows, alpha=2)
    for k in layouts(labels):
        for s in layouts(rows):
            dest = torch.ones(4, 3, dtype=torch.float64)
            with th.debug.comm_log() as log:
                got = dest.index_add_(0, k, s, alpha=2)
            assert got is dest
            torch.testing.assert_close(dest, expected)
            if k.split_dim == 0 and s.split_dim == 0 and k.counts == s.counts and comm.size > 1:
                assert [e.collective for e in log] == ["allreduce"]
            assert_dist_close(torch.index_add(th.distribute(torch.ones(4, 3, dtype=torch.float64)), 0, k, s, alpha=2),
                              expected, split=None)
    ref = rows.clone().requires_grad_()
    w = torch.randn(4, 3, dtype=torch.float64)
    (torch.zeros(4, 3, dtype=torch.float64).index_add(0, labels, ref) * w).sum().backward()
    for s in layouts(rows, requires_grad=True):
        (torch.zeros(4, 3, dtype=torch.float64).index_add(0, th.distribute(labels, 0), s) * w).sum().backward()
        assert_dist_close(s.grad, ref.grad)
    bad = th.distribute(torch.tensor([0, 1, 2, 3, 4, 5, 9]), 0)
    with pytest.raises(IndexError):
        torch.zeros(4, 3).index_add_(0, bad, th.distribute(rows.float(), 0))


# One-element and 0-d operands: torch reads a 0-d x, index or source as one element, so a rank
# whose chunk of the index is empty still has work of the right rank (and no rank skips the sum).
ONE_ELEMENT = {
    "index_add, 0-d x": (torch.index_add, (), (1,), ()),
    "index_add, 0-d x and index": (torch.index_add, (), (), ()),
    "index_add, 0-d x, vector source": (torch.index_add, (), (1,), (1,)),
    "index_add, 0-d source": (torch.index_add, (3,), (1,), ()),
    "index_copy, 0-d source": (torch.index_copy, (3,), (1,), ()),
    "index_reduce, 0-d x": (lambda x, dim, i, s: torch.index_reduce(x, dim, i, s, "prod"), (), (1,), ()),
    "scatter, 0-d index": (torch.scatter, (3,), (), ()),
    "scatter_add, 0-d source": (torch.scatter_add, (3,), (1,), ()),
}


@pytest.mark.filterwarnings("ignore:index_reduce")
@pytest.mark.parametrize("name", ONE_ELEMENT)
def test_one_element_and_0d_operands(name):
    f, xshape, ishape, sshape = ONE_ELEMENT[name]
    x, index, src = torch.arange(1.0, 2 + torch.Size(xshape).numel()).reshape(-1)[:torch.Size(xshape).numel()].reshape(xshape), \
        torch.zeros(ishape, dtype=torch.int64), torch.full(sshape, 5.0)
    try:
        expected, error = f(x, 0, index, src), None
    except Exception as e:
        expected, error = None, type(e)
    split = lambda t: [l for l in layouts(t) if l.split_dim is not None]  # noqa: E731
    for dx in [x, *layouts(x)]:
        for di in [index, *split(index)]:
            for ds in [src, *split(src)]:
                if not any(isinstance(t, th.DistTensor) and t.split_dim is not None for t in (dx, di, ds)):
                    continue
                if error is not None:
                    with pytest.raises(error):
                        f(dx, 0, di, ds)
                else:
                    assert_dist_close(f(dx, 0, di, ds), expected, split=dx.split_dim if isinstance(dx, th.DistTensor) else None)
