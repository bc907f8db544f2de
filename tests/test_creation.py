"""Creating DistTensors: distribute, from_local, factories and *_like against torch's own values."""
import pytest
import torch

import torchheat as th
from torchheat import layout
from torchheat.testing import assert_dist_close, check_layout, layouts, skewed_counts


def chunk_only(x):
    """The local storage holds this rank's chunk and nothing more (no global tensor was built)."""
    check_layout(x)
    assert x.local.untyped_storage().nbytes() == x.lshape.numel() * x.element_size()
    assert x.is_leaf and x.is_balanced


def splits(ndim):
    return [None] + list(range(ndim))


# -- distribute ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(7, 3), (2, 3, 4), (0, 2), (2,)])
def test_distribute(comm, shape):
    t = torch.randn(shape, dtype=torch.float64)
    for split in splits(t.dim()):
        x = th.distribute(t, split)
        assert x.is_leaf and not x.requires_grad and x.comm is comm
        assert_dist_close(x, t, split=split)
        if split is not None:
            assert x.counts == layout.balanced_counts(t.shape[split], comm.size)
            counts = skewed_counts(t.shape[split], comm.size)
            y = th.distribute(t, split=split, comm=comm, counts=list(counts))
            assert y.counts == counts
            assert_dist_close(y, t, split=split)
    assert_dist_close(th.distribute(t.tolist(), split=0), torch.tensor(t.tolist()))  # array-like input


def test_distribute_a_disttensor_changes_its_layout(comm):
    t = torch.randn(5, 4)
    for x in layouts(t):
        for split in (None, 0, 1):
            assert_dist_close(th.distribute(x, split), t, split=split)
        counts = skewed_counts(4, comm.size)
        y = th.distribute(x, 1, counts=counts)
        assert y.counts == counts
        assert_dist_close(y, t, split=1)


def test_distribute_replicated_shares_memory(comm):
    t = torch.randn(3, 2)
    x = th.distribute(t)
    assert x.split_dim is None and x.data_ptr() == t.data_ptr()


# -- from_local ------------------------------------------------------------------------------
def test_from_local_uneven(comm):
    r = comm.rank
    chunk = torch.full((r + 1, 3), float(r), dtype=torch.float64)
    x = th.from_local(chunk, split=0)
    expected = torch.cat([torch.full((i + 1, 3), float(i), dtype=torch.float64) for i in range(comm.size)])
    assert x.counts == tuple(range(1, comm.size + 1)) and x.shape == expected.shape
    assert x.data_ptr() == chunk.data_ptr()
    assert_dist_close(x, expected, split=0)

    cols = th.from_local(torch.full((2, r % 2), float(r)), split=1)  # some ranks hold no columns
    expected = torch.cat([torch.full((2, i % 2), float(i)) for i in range(comm.size)], dim=1)
    assert cols.counts == tuple(i % 2 for i in range(comm.size))
    assert_dist_close(cols, expected, split=1)

    rep = th.from_local(torch.arange(4.0), split=None)
    assert rep.split_dim is None and rep.counts is None
    assert_dist_close(rep, torch.arange(4.0))


def test_from_local_disagreement_raises_on_every_rank(comm):
    r = comm.rank
    bad = [
        (torch.zeros(2, 3, dtype=torch.float64 if r == 1 else torch.float32), 0, "dtypes differ"),
        (torch.zeros(2, 4 if r == 1 else 3), 0, "sizes outside split axis 0 differ"),
        (torch.zeros(2, 3 if r == 1 else 2), None, "shapes differ"),
        (torch.zeros((2, 3) if r == 1 else (2, 3, 1)), 0, "number of dimensions differs"),
    ]
    for chunk, split, what in bad:
        if comm.size == 1:  # one rank always agrees with itself
            assert th.from_local(chunk, split).shape == chunk.shape
            continue
        with pytest.raises(ValueError, match=f"from_local: the chunks of the ranks do not fit together .*{what}"):
            th.from_local(chunk, split)
    comm.barrier()


# -- factories -------------------------------------------------------------------------------
FACTORY_SHAPES = [(5, 3), (2, 3, 4), (0, 2), (2,)]


@pytest.mark.parametrize("shape", FACTORY_SHAPES)
@pytest.mark.parametrize("name", ["zeros", "ones", "empty"])
def test_zeros_ones_empty(comm, shape, name):
    for split in splits(len(shape)):
        for dtype in (None, torch.float64, torch.int32, torch.bool):
            for size_args in (shape, (shape,), (list(shape),)):
                x = getattr(th, name)(*size_args, split=split, dtype=dtype)
                expected = getattr(torch, name)(*size_args, dtype=dtype)
                chunk_only(x)
                assert x.split_dim == split and x.shape == expected.shape and x.dtype == expected.dtype
                if name != "empty":
                    assert_dist_close(x, expected)


@pytest.mark.parametrize("fill", [7, 2.5, True, 1 + 2j])
def test_full(comm, fill):
    for split in splits(2):
        x = th.full((4, 3), fill, split=split)
        chunk_only(x)
        assert_dist_close(x, torch.full((4, 3), fill), split=split)  # dtype inferred like torch
    dtype = torch.complex128 if isinstance(fill, complex) else torch.float64
    for split in splits(1):
        assert_dist_close(th.full([3], fill, split=split, dtype=dtype), torch.full([3], fill, dtype=dtype))


def test_factory_options(comm):
    sub = comm.split(0)
    for split in (None, 0):
        x = th.ones(4, 2, split=split, dtype=torch.float16, device="cpu", comm=sub, requires_grad=True)
        chunk_only(x)
        assert x.comm is sub and x.device.type == "cpu" and x.dtype == torch.float16 and x.requires_grad
        assert x.split_dim == split


@pytest.mark.parametrize("args, kwargs", [
    ((10,), {}), ((1, 7, 2), {}), ((0, 1, 0.1), {}), ((10, 0, -3), {}), ((5,), {"dtype": torch.float64}),
    ((-2.5, 3.0, 0.5), {"dtype": torch.float32}), ((0,), {}), ((2,), {}), ((3, 40, 4), {"dtype": torch.int16}),
])
def test_arange(comm, args, kwargs):
    expected = torch.arange(*args, **kwargs)
    for split in (None, 0):
        x = th.arange(*args, split=split, **kwargs)
        chunk_only(x)
        assert_dist_close(x, expected, split=split, rtol=0, atol=0)


@pytest.mark.parametrize("args, kwargs", [
    ((0, 1, 5), {}), ((-3, 7, 11), {}), ((0, 10, 4), {"dtype": torch.int64}), ((2, 2, 0), {}), ((1, 5, 1), {}),
    ((-1.5, 2.0, 7), {"dtype": torch.float64}), ((0, 1, 3), {"dtype": torch.complex64}),
])
def test_linspace_logspace(comm, args, kwargs):
    for split in (None, 0):
        x = th.linspace(*args, split=split, **kwargs)
        chunk_only(x)
        assert_dist_close(x, torch.linspace(*args, **kwargs), split=split)
        for base in (10.0, 2.0):
            y = th.logspace(*args, base=base, split=split, **kwargs)
            chunk_only(y)
            assert_dist_close(y, torch.logspace(*args, base=base, **kwargs), split=split)


@pytest.mark.parametrize("n, m", [(4, None), (3, 5), (5, 2), (2, 2), (0, 3), (1, None)])
def test_eye(comm, n, m):
    expected = torch.eye(n) if m is None else torch.eye(n, m)
    for split in splits(2):
        for dtype in (None, torch.int64, torch.bool):
            x = th.eye(n, m, split=split, dtype=dtype)
            chunk_only(x)
            assert_dist_close(x, expected.to(dtype or torch.get_default_dtype()), split=split)


# -- *_like ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "empty_like", "full_like"])
def test_like(comm, name):
    t = torch.randn(5, 4, dtype=torch.float64)
    make = getattr(th, name)
    args = (2.5,) if name == "full_like" else ()
    expected = getattr(torch, name)(t, *args)
    for x in layouts(t):
        y = make(x, *args)  # the layout of x, even an unbalanced one
        assert (y.split_dim, y.counts, y.dtype, y.comm) == (x.split_dim, x.counts, x.dtype, x.comm) and y.is_leaf
        check_layout(y)
        if name != "empty_like":
            assert_dist_close(y, expected)
        for split in (None, 0, 1):
            z = make(x, *args, split=split, dtype=torch.int32, device="cpu", comm=comm)
            chunk_only(z)
            assert z.split_dim == split and z.dtype == torch.int32
            if name != "empty_like":
                assert_dist_close(z, expected.to(torch.int32))
    p = make(t, *args)  # a plain tensor: replicated like it
    assert p.split_dim is None and p.shape == t.shape and p.dtype == t.dtype
    q = make(t, *args, split=1, requires_grad=True)
    assert q.split_dim == 1 and q.requires_grad and q.is_leaf


def test_torch_like_functions_keep_the_layout(comm):
    t = torch.randn(5, 4)
    for x in layouts(t):
        for y in (torch.zeros_like(x), torch.ones_like(x, dtype=torch.int64), torch.full_like(x, 3.0), torch.empty_like(x)):
            assert (y.split_dim, y.counts, y.shape) == (x.split_dim, x.counts, x.shape)
        assert_dist_close(torch.full_like(x, 3.0), torch.full_like(t, 3.0))


@pytest.mark.parametrize("start, end, step, dtype", [
    (0, 10, 2.5, torch.int64), (1, 10, 0.7, torch.int32), (-3, 4.5, 1.5, torch.int64), (0.5, 10, 2.5, torch.int16),
    (0, -10, -3, torch.int64), (0, 10, 3, None), (1e10, 1e10 + 10, 3, torch.float32), (0, 1, 0.1, torch.float64),
])
def test_arange_matches_torch_for_every_step(comm, start, end, step, dtype):
    expected = torch.arange(start, end, step, dtype=dtype)
    for split in (None, 0):
        x = th.arange(start, end, step, dtype=dtype, split=split)
        assert_dist_close(x, expected, rtol=0, atol=0)


@pytest.mark.parametrize("start, end, steps, dtype", [
    (0, 1 + 2j, 5, None), (1j, 3, 4, torch.complex64), (0, 2, 7, torch.complex128), (-1 - 1j, 1 + 1j, 1, None),
])
def test_complex_linspace_and_logspace(comm, start, end, steps, dtype):
    for split in (None, 0):
        assert_dist_close(th.linspace(start, end, steps, dtype=dtype, split=split), torch.linspace(start, end, steps, dtype=dtype))
        assert_dist_close(th.logspace(start, end, steps, dtype=dtype, split=split), torch.logspace(start, end, steps, dtype=dtype))
