"""Communicators: every collective against the same computation done locally on all ranks' data.

Rank r's input is a known function of r, so every rank can compute the expected result.
"""
import pytest
import torch

import torchheat as th
from torchheat import layout
from torchheat.comm import functional as cf
from torchheat.testing import assert_dist_close, skewed_counts

DTYPES = [torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
          torch.float32, torch.float64, torch.complex64, torch.complex128]
OPS = ["sum", "prod", "max", "min", "land", "lor"]


def value(rank: int, dtype=torch.int64, shape=(2, 3)) -> torch.Tensor:
    """Rank r's input: small integers (exact in every dtype), some zeros, different per rank."""
    n = torch.Size(shape).numel()
    t = (torch.arange(n) * (rank + 1) + rank) % 4
    t = t.reshape(shape).to(dtype)
    return t * (1 + 1j) if dtype.is_complex else t


def fold(stacked: torch.Tensor, op: str, dim: int = 0) -> torch.Tensor:
    """The reduction over ranks (stacked along ``dim``) that allreduce promises, in the input's dtype."""
    dtype = stacked.dtype
    if dtype == torch.bool or op in ("land", "lor"):
        nonzero = stacked != 0
        out = nonzero.all(dim) if op in ("land", "prod", "min") else nonzero.any(dim)
    else:
        acc = stacked.to(torch.float64) if dtype in (torch.float16, torch.bfloat16) else stacked
        out = {"sum": torch.sum, "prod": torch.prod, "max": torch.amax, "min": torch.amin}[op](acc, dim=dim)
    return out.to(dtype)


def all_values(comm, dtype=torch.int64, shape=(2, 3)) -> torch.Tensor:
    return torch.stack([value(r, dtype, shape) for r in range(comm.size)])


def test_rank_size_barrier_and_objects(comm):
    assert 0 <= comm.rank < comm.size
    comm.barrier()
    assert comm.allgather_obj(("rank", comm.rank)) == [("rank", r) for r in range(comm.size)]
    assert repr(comm) == f"{type(comm).__name__}(rank={comm.rank}, size={comm.size})"


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.float16, torch.complex64, torch.float64])
def test_bcast_from_every_root(comm, dtype):
    for root in range(comm.size):
        t = value(comm.rank, dtype, (3, 4))
        assert comm.bcast(t, root) is t
        assert torch.equal(t, value(root, dtype, (3, 4)))
        strided = value(comm.rank, dtype, (4, 3)).t()  # non-contiguous: received in place all the same
        comm.bcast(strided, root)
        assert torch.equal(strided, value(root, dtype, (4, 3)).t())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_allreduce_every_op_and_dtype(comm, dtype, op):
    mine = value(comm.rank, dtype)
    before = mine.clone()
    if dtype.is_complex and op in ("max", "min"):
        with pytest.raises(ValueError, match=f"op='{op}' is not defined for complex"):
            comm.allreduce(mine, op)
        return
    out = comm.allreduce(mine, op)
    assert out.dtype == dtype and out.shape == mine.shape
    torch.testing.assert_close(out, fold(all_values(comm, dtype), op), rtol=0, atol=0)
    assert torch.equal(mine, before)  # the input is left alone


def test_allreduce_16bit_accumulates_in_float32(comm):
    # 1 + 2**-11 * size is representable in float32 but every float16 step would round it away.
    t = torch.full((4,), 2.0 ** -11 if comm.rank else 1.0, dtype=torch.float16)
    expected = torch.tensor(1.0 + 2.0 ** -11 * (comm.size - 1)).to(torch.float16)
    assert torch.equal(comm.allreduce(t), expected.expand(4))


def test_allreduce_rejects_unknown_op(comm):
    with pytest.raises(ValueError, match=r"op='mean' is not a reduction \(expected one of"):
        comm.allreduce(torch.ones(2), "mean")


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.bfloat16, torch.complex128])
def test_allgather_and_allgatherv(comm, dtype):
    assert torch.equal(comm.allgather(value(comm.rank, dtype)), all_values(comm, dtype))
    counts = skewed_counts(5, comm.size)  # rank 0 holds nothing
    full = value(7, dtype, (5, 5))
    start = layout.offsets(counts)[comm.rank]
    for axis in (0, 1):
        for base in (full, full.t().contiguous().t()):  # row- and column-major storage
            mine = base.narrow(axis, start, counts[comm.rank])
            assert torch.equal(comm.allgatherv(mine, counts, axis), full)


@pytest.mark.parametrize("src, dst", [(0, 1), (1, 2), (2, 0), (1, 1)])
def test_exchange_with_strided_chunks(comm, src, dst):
    """alltoallv of views that are not contiguous (a transposed storage, a middle axis)."""
    g = torch.arange(5 * 7 * 4, dtype=torch.float64).reshape(5, 7, 4)
    strided = g.permute(2, 0, 1).contiguous().permute(1, 2, 0)  # same values, other strides
    src_counts = skewed_counts(g.shape[src], comm.size)
    dst_counts = layout.balanced_counts(g.shape[dst], comm.size)
    chunk = strided.narrow(src, layout.offsets(src_counts)[comm.rank], src_counts[comm.rank])
    send, recv, shape = layout.exchange_plan(tuple(g.shape), src, src_counts, dst, dst_counts, comm.rank)
    with th.debug.comm_log() as log:
        out = comm.exchange(chunk, send, shape, recv)
    assert [e.collective for e in log] == ["alltoallv"]
    assert torch.equal(out, g.narrow(dst, layout.offsets(dst_counts)[comm.rank], dst_counts[comm.rank]))


@pytest.mark.parametrize("dtype, op", [(torch.float64, "sum"), (torch.int64, "prod"), (torch.int32, "max"),
                                       (torch.float32, "min"), (torch.bool, "lor"), (torch.float16, "sum"),
                                       (torch.complex64, "sum"), (torch.uint8, "land")])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("balanced", [True, False])
def test_reduce_scatter(comm, dtype, op, axis, balanced):
    shape = (5, 4)
    n = shape[axis]
    counts = layout.balanced_counts(n, comm.size) if balanced else skewed_counts(n, comm.size)
    with th.debug.comm_log() as log:
        out = comm.reduce_scatter(value(comm.rank, dtype, shape), counts, axis, op)
    assert [e.collective for e in log] == ["alltoallv"]
    expected = fold(all_values(comm, dtype, shape), op).narrow(axis, layout.offsets(counts)[comm.rank], counts[comm.rank])
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_reduce_scatter_checks_counts(comm):
    with pytest.raises(ValueError, match=r"counts=\(4(, 0)+\) is not a layout of 4 rows over \d+ ranks"):
        comm.reduce_scatter(torch.ones(4, 2), (4,) + (0,) * comm.size, 0)


def test_reduce_scatter_gradient(comm):
    """Each rank's partial sum gets the full gradient of the sum (the adjoint of reduce-scatter)."""
    w = torch.randn(6, 3, dtype=torch.float64)
    counts = skewed_counts(6, comm.size)
    partial = (value(comm.rank, torch.float64, (6, 3)) + 0.5).requires_grad_()
    out = cf.reduce_scatter(partial, comm, counts, axis=0)
    local_w = w.narrow(0, layout.offsets(counts)[comm.rank], counts[comm.rank])
    loss = cf.all_reduce((out.sin() * local_w).sum(), comm)
    loss.backward()
    total = all_values(comm, torch.float64, (6, 3)).add(0.5).sum(0)
    torch.testing.assert_close(partial.grad, total.cos() * w)
    torch.testing.assert_close(loss.detach(), (total.sin() * w).sum())


def identity(op: str, dtype: torch.dtype):
    """What rank 0 gets from an exclusive scan: the op's neutral element."""
    if dtype == torch.bool or op in ("land", "lor"):
        return op in ("land", "prod", "min")
    if op in ("sum", "prod"):
        return int(op == "prod")
    lo, hi = (-float("inf"), float("inf")) if dtype.is_floating_point else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    return lo if op == "max" else hi


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64, torch.bool, torch.float16])
@pytest.mark.parametrize("op", OPS)
def test_scan_and_exscan(comm, dtype, op):
    stacked, r = all_values(comm, dtype), comm.rank
    torch.testing.assert_close(comm.scan(value(r, dtype), op), fold(stacked[: r + 1], op), rtol=0, atol=0)
    ex = comm.exscan(value(r, dtype), op)
    expected = torch.full_like(ex, identity(op, dtype)) if r == 0 else fold(stacked[:r], op)
    assert ex.dtype == dtype
    torch.testing.assert_close(ex, expected, rtol=0, atol=0)


def test_point_to_point_ring(comm):
    """isend/recv and irecv/send around the ring (a rank may message itself); requests have wait()."""
    nxt, prev = (comm.rank + 1) % comm.size, (comm.rank - 1) % comm.size
    req = comm.isend(value(comm.rank, torch.float64, (3, 2)), nxt, tag=3)
    got = comm.recv(torch.empty(3, 2, dtype=torch.float64), prev, tag=3)
    req.wait()
    assert torch.equal(got, value(prev, torch.float64, (3, 2)))

    target = torch.zeros(2, 3, dtype=torch.int32).t()  # a strided receive buffer
    req = comm.irecv(target, prev, tag=4)
    comm.send(value(comm.rank, torch.int32, (3, 2)), nxt, tag=4)
    req.wait()
    assert torch.equal(target, value(prev, torch.int32, (3, 2)))


def test_split_subcommunicator(comm):
    color = comm.rank % 2
    members = [r for r in range(comm.size) if r % 2 == color]
    sub = comm.split(color, key=-comm.rank)  # reversed order inside each group
    order = sorted(members, reverse=True)
    assert sub.size == len(members) and sub.rank == order.index(comm.rank)
    assert sub.allgather_obj(comm.rank) == order
    assert sub.allreduce(torch.tensor([comm.rank, 1])).tolist() == [sum(members), len(members)]
    assert sub.bcast(torch.tensor([comm.rank]), root=0).tolist() == [order[0]]
    assert sub.exscan(torch.tensor([1.0])).item() == sub.rank

    t = torch.arange(35.0).reshape(7, 5)
    x = th.distribute(t, split=0, comm=sub)
    assert x.comm is sub and x.counts == layout.balanced_counts(7, sub.size)
    assert_dist_close(x.resplit(1), t, split=1)
    assert_dist_close((x * 2).sum(0), t.sum(0) * 2)


def test_mpi_moves_buffers_not_pickles(comm, monkeypatch):
    """MPI backend: tensor data goes through buffer (uppercase) calls only; pickling calls fail here."""
    if comm.backend != "mpi":
        pytest.skip("checks the MPI backend's transport")

    class BuffersOnly:
        def __init__(self, mpi):
            self._mpi = mpi

        def __getattr__(self, name):
            if name[0].islower() and name not in ("allgather",):
                raise AssertionError(f"pickle-based MPI call {name}")
            return getattr(self._mpi, name)

    monkeypatch.setattr(comm, "mpi", BuffersOnly(comm.mpi))
    t = torch.arange(60.0).reshape(3, 4, 5)
    for x in th.testing.layouts(t):  # distribute: metadata only
        for axis in (None, 0, 1, 2):
            assert_dist_close(x.resplit(axis), t)
    comm.bcast(torch.ones(3))
    comm.allreduce(torch.ones(3))
    comm.reduce_scatter(torch.ones(comm.size, 2), (1,) * comm.size)


def test_mpi_staged_transfers(comm, monkeypatch):
    """MPI backend: the host-staging path used for CUDA chunks without CUDA-aware MPI."""
    if comm.backend != "mpi":
        pytest.skip("checks the MPI backend's host staging")
    monkeypatch.setattr(comm, "_staged", lambda t: True)
    t = torch.arange(60.0).reshape(3, 4, 5)
    for x in th.testing.layouts(t):
        for axis in (None, 0, 1, 2):
            assert_dist_close(x.resplit(axis), t)
    assert torch.equal(comm.allreduce(value(comm.rank, torch.float64)), fold(all_values(comm, torch.float64), "sum"))
    assert torch.equal(comm.bcast(value(comm.rank), 0), value(0))
    test_point_to_point_ring(comm)


@pytest.mark.parametrize("pack_below", [0, 1 << 30])
def test_mpi_packed_and_described_views(comm, monkeypatch, pack_below):
    """MPI backend: strided views either described by derived datatypes (``PACK_BELOW = 0``) or
    packed through the reused staging buffers (every strided view), with the same results."""
    if comm.backend != "mpi":
        pytest.skip("checks the MPI backend's datatypes and packing")
    from torchheat.comm import mpi

    monkeypatch.setattr(mpi, "PACK_BELOW", pack_below)
    monkeypatch.setattr(comm, "_staging", {}, raising=False)
    for src, dst in [(0, 1), (1, 2), (2, 0), (1, 1)]:
        test_exchange_with_strided_chunks(comm, src, dst)
    t = torch.arange(60.0).reshape(3, 4, 5)
    for x in th.testing.layouts(t.transpose(0, 2)):
        for axis in (0, 1, 2):
            assert_dist_close(x.resplit(axis), t.transpose(0, 2))
    sizes = {key: buf.numel() for key, buf in comm._staging.items()}
    test_exchange_with_strided_chunks(comm, 2, 0)  # no larger than before: the buffers are reused
    assert {key: buf.numel() for key, buf in comm._staging.items()} == sizes
    assert (pack_below == 0) == (not sizes) or comm.size == 1


# -- NaN in max/min: a NaN on any rank gives NaN, as torch.amax/amin on the global data ----------------
SPECIAL = [float("nan"), -float("nan"), float("inf"), -float("inf"), -0.0, 0.0]


def with_nans(rank: int, dtype, shape=(4, 5)) -> torch.Tensor:
    """Rank r's input: small distinct values, and special values (NaN of both signs, infinities, signed
    zeros) at places that differ per rank, so some NaN sits on the first rank only, some on the last."""
    n = torch.Size(shape).numel()
    t = ((torch.arange(n) * (rank + 2) + 3 * rank) % 7 - 3).to(torch.float64)
    for k, special in enumerate(SPECIAL):
        t[(5 * rank + 3 * k) % n] = special
    return t.reshape(shape).to(dtype)


def all_with_nans(comm, dtype, shape=(4, 5)) -> torch.Tensor:
    return torch.stack([with_nans(r, dtype, shape) for r in range(comm.size)])


EXTREMA = {"max": torch.amax, "min": torch.amin}
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("op", ["max", "min"])
def test_allreduce_max_min_propagate_nan(comm, dtype, op):
    stacked = all_with_nans(comm, dtype)
    assert stacked.isnan().any(0).sum() == 2 * comm.size  # NaNs at different places on every rank
    with th.debug.comm_log() as log:
        out = comm.allreduce(with_nans(comm.rank, dtype).t(), op)  # a strided input too
    assert [e.collective for e in log] == ["allreduce"]  # one collective, no extra flag exchange
    assert out.dtype == dtype
    torch.testing.assert_close(out, EXTREMA[op](stacked, 0).t(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("op", ["max", "min"])
def test_scan_exscan_reduce_scatter_propagate_nan(comm, dtype, op):
    stacked, r = all_with_nans(comm, dtype), comm.rank
    torch.testing.assert_close(comm.scan(with_nans(r, dtype), op), EXTREMA[op](stacked[: r + 1], 0),
                               rtol=0, atol=0, equal_nan=True)
    ex = comm.exscan(with_nans(r, dtype), op)
    expected = torch.full_like(ex, identity(op, dtype)) if r == 0 else EXTREMA[op](stacked[:r], 0)
    torch.testing.assert_close(ex, expected, rtol=0, atol=0, equal_nan=True)
    for counts in (layout.balanced_counts(4, comm.size), skewed_counts(4, comm.size)):
        out = comm.reduce_scatter(with_nans(r, dtype), counts, 0, op)
        expected = EXTREMA[op](stacked, 0).narrow(0, layout.offsets(counts)[r], counts[r])
        torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)


def test_allreduce_of_strided_inputs(comm):
    """Every dtype path reduces a buffer it owns, contiguous: a transposed input gives the same result."""
    for dtype, op in [(torch.float16, "sum"), (torch.bool, "lor"), (torch.int32, "land"), (torch.float32, "prod")]:
        mine = value(comm.rank, dtype, (3, 4)).t()
        torch.testing.assert_close(comm.allreduce(mine, op), fold(all_values(comm, dtype, (3, 4)), op).t(), rtol=0, atol=0)


# -- derivatives of every differentiable collective, up to the third, against torch on the global data ------
def derivatives(f, x: torch.Tensor, v: torch.Tensor, inner, order: int = 3):
    """``[grad f(x), grad <grad f, v>, grad <grad <grad f, v>, v>, ...]``: each built with create_graph, so
    every order differentiates the previous backward. ``inner`` is the global inner product."""
    x = x.detach().clone().requires_grad_()
    out, result = f(x), []
    for _ in range(order):
        (g,) = torch.autograd.grad(out, x, create_graph=True)
        result.append(g.detach())
        out = inner(g, v)
    return result


def check_derivatives(comm, local_f, global_f, x_global, mine, replicated_input=False):
    """Derivatives of ``local_f`` (torchheat collectives on this rank's ``mine(x_global)``) equal this rank's
    part of the derivatives of ``global_f`` (plain torch on the global data), in every order up to 3."""
    v_global = torch.randn_like(x_global)

    def local_inner(g, v):  # a replicated input's gradient is the full one: no sum over ranks
        return (g * v).sum() if replicated_input else cf.all_reduce((g * v).sum(), comm)

    expected = derivatives(global_f, x_global, v_global, lambda g, v: (g * v).sum())
    actual = derivatives(local_f, mine(x_global), mine(v_global), local_inner)
    for order, (a, e) in enumerate(zip(actual, expected), 1):
        torch.testing.assert_close(a, mine(e), msg=lambda m: f"derivative of order {order}: {m}")


COUNTS = {"balanced": layout.balanced_counts, "skewed": skewed_counts}  # skewed: rank 0 holds nothing (p > 1)


def chunk(t, counts, axis, rank):
    return t.narrow(axis, layout.offsets(counts)[rank], counts[rank])


def f64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_all_reduce_derivatives(comm):
    w, partials = f64(4, 3), f64(comm.size, 4, 3)  # rank r holds the partial sum partials[r]
    check_derivatives(comm, lambda p: (w * cf.all_reduce(p, comm).sin()).sum(),
                      lambda ps: (w * ps.sum(0).sin()).sum(), partials, lambda t: t[comm.rank])


def test_enter_replicated_derivatives(comm):
    a, x = f64(comm.size, 4, 3), f64(4, 3)  # rank r uses the replicated x with its own data a[r]
    check_derivatives(comm, lambda x: cf.all_reduce((a[comm.rank] * cf.enter_replicated(x, comm).sin()).sum(), comm) ** 2,
                      lambda x: ((a.sum(0) * x.sin()).sum()) ** 2, x, lambda t: t, replicated_input=True)


@pytest.mark.parametrize("kind", COUNTS)
@pytest.mark.parametrize("axis", [0, 1])
def test_all_gather_derivatives(comm, kind, axis):
    x, w = f64(5, 4), f64(5, 4)
    counts = COUNTS[kind](x.shape[axis], comm.size)

    def mix(y):  # couples every element with its neighbour: the Hessian spans ranks
        return (w * y.sin() * y.roll(1)).sum()

    check_derivatives(comm, lambda c: mix(cf.all_gather(c, comm, counts, axis)), mix, x,
                      lambda t: chunk(t, counts, axis, comm.rank))


@pytest.mark.parametrize("kind", COUNTS)
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_derivatives(comm, kind, axis):
    x, w = f64(5, 4), f64(5, 4)
    counts = COUNTS[kind](x.shape[axis], comm.size)
    mine = chunk(w, counts, axis, comm.rank)
    check_derivatives(comm, lambda x: cf.all_reduce((mine * cf.scatter(x, comm, counts, axis).sin()).sum(), comm) * x.sum(),
                      lambda x: (w * x.sin()).sum() * x.sum(), x, lambda t: t, replicated_input=True)


@pytest.mark.parametrize("kind", COUNTS)
@pytest.mark.parametrize("src, dst", [(0, 1), (1, 0), (0, 0)])
def test_exchange_derivatives(comm, kind, src, dst):
    x, w = f64(5, 4), f64(5, 4)
    src_counts, dst_counts = COUNTS[kind](x.shape[src], comm.size), layout.balanced_counts(x.shape[dst], comm.size)
    send, recv, shape = layout.exchange_plan(tuple(x.shape), src, src_counts, dst, dst_counts, comm.rank)
    mine = chunk(w, dst_counts, dst, comm.rank)
    check_derivatives(comm, lambda c: cf.all_reduce((mine * cf.exchange(c, comm, send, recv, shape).sin()).sum(), comm) ** 2,
                      lambda x: (w * x.sin()).sum() ** 2, x, lambda t: chunk(t, src_counts, src, comm.rank))


@pytest.mark.parametrize("kind", COUNTS)
def test_exchange_to_several_ranks_derivatives(comm, kind):
    # every rank sends its whole chunk to every rank (rows overlap in the send plan): backward
    # must add the gradients that come back from the ranks, not keep one of them
    x, w = f64(5, 4), f64(comm.size, 5, 4)
    counts = COUNTS[kind](5, comm.size)
    send = tuple(((0, 0, counts[comm.rank]),) for _ in range(comm.size))
    recv = tuple(((0, o, c),) for o, c in zip(layout.offsets(counts), counts))
    check_derivatives(comm, lambda c: cf.all_reduce((w[comm.rank] * cf.exchange(c, comm, send, recv, (5, 4)).sin()).sum(), comm) ** 2,
                      lambda x: (w.sum(0) * x.sin()).sum() ** 2, x, lambda t: chunk(t, counts, 0, comm.rank))


@pytest.mark.parametrize("kind", COUNTS)
@pytest.mark.parametrize("axis", [0, 1])
def test_reduce_scatter_derivatives(comm, kind, axis):
    partials, w = f64(comm.size, 5, 4), f64(5, 4)
    counts = COUNTS[kind](w.shape[axis], comm.size)
    mine = chunk(w, counts, axis, comm.rank)
    check_derivatives(comm, lambda p: cf.all_reduce((mine * cf.reduce_scatter(p, comm, counts, axis).sin()).sum(), comm) ** 2,
                      lambda ps: (w * ps.sum(0).sin()).sum() ** 2, partials, lambda t: t[comm.rank])


def test_all_gather_parts_derivatives(comm):
    partials, w1, w2 = f64(comm.size, 2, 3), f64(comm.size, 2, 3), f64(comm.size, 2, 3)

    def local_f(p):  # a float part, a second float part from the same input, an integer part (not differentiable)
        values, squares, index = cf.all_gather_parts([p, p.square(), torch.arange(3) + comm.rank], comm)
        assert not index.requires_grad and index.tolist() == [[r, r + 1, r + 2] for r in range(comm.size)]
        return ((w1 * values.sin()).sum() + (w2 * squares.cos()).sum()) ** 2  # the square couples the ranks

    check_derivatives(comm, local_f, lambda ps: ((w1 * ps.sin()).sum() + (w2 * ps.square().cos()).sum()) ** 2,
                      partials, lambda t: t[comm.rank])


def test_collectives_skip_autograd_when_nothing_requires_grad(comm):
    """No graph is built without grad, and a first-order backward builds none either (the fast path)."""
    counts = skewed_counts(5, comm.size)
    send, recv, shape = layout.exchange_plan((5, 4), 0, counts, 1, layout.balanced_counts(4, comm.size), comm.rank)
    calls = {
        "all_reduce": lambda t, c: cf.all_reduce(t, comm),
        "enter_replicated": lambda t, c: cf.enter_replicated(t, comm),
        "all_gather": lambda t, c: cf.all_gather(c, comm, counts, 0),
        "scatter": lambda t, c: cf.scatter(t, comm, counts, 0),
        "exchange": lambda t, c: cf.exchange(c, comm, send, recv, shape),
        "reduce_scatter": lambda t, c: cf.reduce_scatter(t, comm, counts, 0),
        "all_gather_parts": lambda t, c: cf.all_gather_parts([t], comm)[0],
    }
    for name, call in calls.items():
        full = f64(5, 4)
        out = call(full, chunk(full, counts, 0, comm.rank))
        assert out.grad_fn is None and not out.requires_grad, name
        full.requires_grad_()
        with torch.no_grad():
            assert call(full, chunk(full, counts, 0, comm.rank)).grad_fn is None, name
        cf.all_reduce(call(full, chunk(full, counts, 0, comm.rank)).square().sum(), comm).backward()
        assert full.grad is not None and full.grad.grad_fn is None, name


def test_all_reduce_differentiates_only_sums(comm):
    with pytest.raises(ValueError, match=r"differentiable for op='sum' only, got op='max'"):
        cf.all_reduce(torch.ones(2, requires_grad=True), comm, "max")
    assert torch.equal(cf.all_reduce(torch.ones(2), comm, "max"), torch.ones(2))


def test_nested_comm_logs(comm):
    """An inner log closes without closing an outer one that is equal to it (both empty)."""
    x = th.distribute(torch.ones(4), split=0)
    with th.debug.comm_log() as outer:
        with th.debug.comm_log() as inner:
            pass
        x.sum()
    assert inner == [] and [e.collective for e in outer] == (["allreduce"] if comm.size > 1 else [])


def test_point_to_point_of_one_element_with_odd_strides(comm):
    """A one-element tensor is contiguous whatever its strides (a (1, 1) transpose has (1, 2))."""
    odd = torch.arange(2.).reshape(2, 1).mT[:, :1].reshape(1, 1).as_strided((1, 1), (1, 2))
    req = comm.isend(odd, (comm.rank + 1) % comm.size)
    got = comm.recv(torch.empty(1, 1), (comm.rank - 1) % comm.size)
    req.wait()
    assert got.item() == 0.0
