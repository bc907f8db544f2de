"""Bad input: a clear exception (argument, value, expectation) raised on every rank, never a hang.

Each case runs on every rank; the ranks then exchange what they raised, so a rank that did
not raise (or raised something else) fails the test everywhere instead of hanging the job.
"""
import re

import pytest
import torch

import torchheat as th
from torchheat.comm.self import SelfCommunicator
from torchheat.testing import layouts, skewed_counts


def raises_on_every_rank(comm, exc, match, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
        outcome = None
    except Exception as err:  # noqa: BLE001 -- any outcome is shared, then judged
        outcome = (type(err).__name__, isinstance(err, exc), str(err))
    outcomes = comm.allgather_obj(outcome)
    for rank, got in enumerate(outcomes):
        assert got is not None, f"rank {rank} did not raise {exc.__name__}"
        assert got[1], f"rank {rank} raised {got[0]}: {got[2]} (expected {exc.__name__})"
        assert re.search(match, got[2]), f"rank {rank}: {got[2]!r} does not match {match!r}"


def torch_message(fn, *args):
    """The message torch itself gives for this call on plain tensors."""
    with pytest.raises(Exception) as info:
        fn(*args)
    return re.escape(str(info.value))


class Bigger(SelfCommunicator):
    """Metadata-only stand-in for a communicator of another size (no collective is ever reached)."""

    def __init__(self, rank, size):
        super().__init__()
        self._r, self._s = rank, size

    rank = property(lambda self: self._r)
    size = property(lambda self: self._s)


def test_split_out_of_range(comm):
    t = torch.ones(4, 3)
    msg = r"split=2 is out of range for a tensor with 2 dimensions \(expected None or an axis in \[-2, 1\]\)"
    raises_on_every_rank(comm, ValueError, msg, th.distribute, t, 2)
    raises_on_every_rank(comm, ValueError, r"split=-3 is out of range", th.zeros, 4, 3, split=-3)
    raises_on_every_rank(comm, ValueError, r"split=5 is out of range", th.from_local, t, 5)
    raises_on_every_rank(comm, ValueError, r"split=0 .* 0 dimensions \(expected None: a 0-d tensor has no axis\)",
                         th.distribute, torch.tensor(1.0), 0)
    raises_on_every_rank(comm, TypeError, r"split must be an int axis or None, got str 'rows'", th.ones, 3, split="rows")


def test_resplit_to_a_missing_axis(comm):
    t = torch.randn(4, 3)
    for x in layouts(t):
        raises_on_every_rank(comm, ValueError, r"split=2 is out of range .* \[-2, 1\]", x.resplit, 2)
        raises_on_every_rank(comm, ValueError, r"split=-3 is out of range", x.resplit_, -3)
        th.testing.assert_dist_close(x, t)  # a failed in-place resplit leaves x as it was


def test_bad_counts(comm):
    t = torch.randn(5, 2)
    bad = (5,) + (1,) * comm.size  # one entry too many
    raises_on_every_rank(comm, ValueError, rf"counts={re.escape(str(bad))} is not a layout of 5 rows over {comm.size} ranks",
                         th.distribute, t, 0, counts=bad)
    raises_on_every_rank(comm, ValueError, r"counts= needs a split axis \(got split=None\)", th.distribute, t, None, counts=(5,))


def test_mismatched_global_shapes(comm):
    a, b = torch.randn(5, 3), torch.randn(4, 3)
    msg = torch_message(torch.add, a, b)  # torch's own words
    for x in layouts(a):
        for y in layouts(b):
            raises_on_every_rank(comm, RuntimeError, msg, torch.add, x, y)
    # Chunks that happen to fit on some ranks: the global shapes still decide, on every rank.
    p = comm.size
    x = th.distribute(torch.ones(2 * p, 2), split=0)
    y = th.distribute(torch.ones(2 * p - 2, 2), split=0, counts=skewed_counts(2 * p - 2, p) if p > 1 else None)
    raises_on_every_rank(comm, RuntimeError, torch_message(torch.mul, torch.ones(2 * p, 2), torch.ones(2 * p - 2, 2)),
                         lambda: x * y)


def test_communicators_of_different_sizes(comm):
    x = th.ones(6, 2, split=0)
    others = [th.ones(6, 2, split=0, comm=Bigger(comm.rank, comm.size + 1))]
    if comm.size > 1:
        sub = comm.split(comm.rank % 2)
        others.append(th.ones(6, 2, split=0, comm=sub))
        others.append(th.ones(6, 2, split=None, comm=sub))
    for y in others:
        msg = rf"operands live on communicators of different sizes \({comm.size} and \d+\); expected DistTensors on the same"
        raises_on_every_rank(comm, ValueError, msg, lambda: x + y)


def test_from_local_rejects_disttensors_and_disagreement(comm):
    x = th.ones(4, split=0)
    raises_on_every_rank(comm, TypeError, r"from_local expects this rank's chunk as a plain torch.Tensor, got DistTensor",
                         th.from_local, x, 0)
    chunk = torch.zeros(2, 3, dtype=torch.float64 if comm.rank == comm.size - 1 else torch.float32)
    if comm.size > 1:  # the last rank disagrees; all of them raise
        raises_on_every_rank(comm, ValueError, r"dtypes differ: \['torch.float32', .*'torch.float64'\]", th.from_local, chunk, 0)


def test_comm_argument_must_be_a_communicator(comm):
    raises_on_every_rank(comm, TypeError, r"comm must be a torchheat Communicator or None, got str", lambda: th.zeros(3, comm="world"))
    raises_on_every_rank(comm, TypeError, r"comm must be a torchheat Communicator, got int", th.set_comm, 3)


def test_gather_root_out_of_range(comm):
    x = th.ones(4, 2, split=0)
    raises_on_every_rank(comm, ValueError, rf"root={comm.size} is not a rank of a communicator of size {comm.size}", x.gather_to, comm.size)


def test_shape_query_errors_are_torchs(comm):
    t = torch.ones(4, 3)
    for x in layouts(t):
        raises_on_every_rank(comm, IndexError, torch_message(t.size, 5), x.size, 5)
    raises_on_every_rank(comm, TypeError, torch_message(len, torch.tensor(1.0)), len, th.distribute(torch.tensor(1.0)))


def test_scalar_conversion_of_many_elements(comm):
    t = torch.ones(6)
    for x in layouts(t):
        raises_on_every_rank(comm, RuntimeError, torch_message(t.item), x.item)
        raises_on_every_rank(comm, RuntimeError, torch_message(bool, t), bool, x)
    w = th.distribute(torch.ones(4), split=0).requires_grad_()
    raises_on_every_rank(comm, RuntimeError, torch_message(torch.ones(4).requires_grad_().numpy), w.numpy)


@pytest.mark.parametrize("call, torch_call", [
    (lambda: th.zeros(3, -1, split=0), lambda: torch.zeros(3, -1)),
    (lambda: th.full((2, -2), 1.0, split=1), lambda: torch.full((2, -2), 1.0)),
    (lambda: th.ones(3, dtype=torch.int64, requires_grad=True, split=0), lambda: torch.ones(3, dtype=torch.int64, requires_grad=True)),
    (lambda: th.arange(0, 10, -1, split=0), lambda: torch.arange(0, 10, -1)),
    (lambda: th.linspace(0, 1, -2, split=0), lambda: torch.linspace(0, 1, -2)),
    (lambda: th.logspace(0, 1, -2, split=0), lambda: torch.logspace(0, 1, -2)),
    (lambda: th.eye(-1, split=0), lambda: torch.eye(-1)),
    (lambda: th.zeros(2.5), lambda: torch.zeros(2.5)),
])
def test_factories_raise_torchs_errors(comm, call, torch_call):
    with pytest.raises(Exception) as info:
        torch_call()
    raises_on_every_rank(comm, type(info.value), re.escape(str(info.value)), call)


def test_collective_arguments(comm):
    raises_on_every_rank(comm, ValueError, r"op='avg' is not a reduction \(expected one of", comm.allreduce, torch.ones(2), "avg")
    raises_on_every_rank(comm, ValueError, r"op='max' is not defined for complex tensors", comm.allreduce, torch.ones(2, dtype=torch.complex64), "max")
    raises_on_every_rank(comm, ValueError, r"op='min' is not defined for complex", comm.exscan, torch.ones(2, dtype=torch.complex64), "min")
    counts = (3,) + (0,) * (comm.size - 1)
    raises_on_every_rank(comm, ValueError, rf"counts={re.escape(str(counts))} is not a layout of 4 rows",
                         comm.reduce_scatter, torch.ones(4, 2), counts)
    raises_on_every_rank(comm, IndexError, r"Dimension out of range .* for axis", comm.reduce_scatter, torch.ones(4, 2), (4,), 2)


# -- errors that only the ranks holding some data would see: agreed on -----------------------
@pytest.mark.parametrize("divide", [
    lambda x, z: x // z, lambda x, z: x % z, lambda x, z: torch.fmod(x, z),
    lambda x, z: torch.div(x, z, rounding_mode="floor"), lambda x, z: torch.div(x, z, rounding_mode="trunc"),
    lambda x, z: x // 0, lambda x, z: 7 % z, lambda x, z: x.remainder_(z),
])
def test_integer_division_by_zero_raises_on_every_rank(comm, divide):
    """Only the rank holding the zero (the last row) would raise; empty chunks never would."""
    t, zero_last = torch.arange(1, 7), torch.tensor([1, 1, 1, 1, 1, 0])
    msg = torch_message(divide, t.clone(), zero_last)
    for x in layouts(t):
        z = th.distribute(zero_last, split=x.split_dim, counts=x.counts)
        raises_on_every_rank(comm, RuntimeError, msg, divide, x, z)


def test_integer_division_without_zero_needs_no_agreement(comm):
    x = th.distribute(torch.arange(12).reshape(6, 2), split=0)
    with th.debug.comm_log() as log:
        y = x // 2 + x % 3
    assert log == [] and torch.equal(y.full(), torch.arange(12).reshape(6, 2) // 2 + torch.arange(12).reshape(6, 2) % 3)
    f = th.distribute(torch.arange(6.0), split=0)
    with th.debug.comm_log() as log:
        f // th.distribute(torch.zeros(6), split=0)  # floats divide by zero without error
    assert log == []


def test_from_local_disagreement_before_any_check(comm):
    """A split axis valid on some ranks only, differing split arguments, ndim or requires_grad:
    every rank raises the same ValueError (no rank leaves early and hangs the others)."""
    if comm.size == 1:
        return
    last = comm.rank == comm.size - 1
    raises_on_every_rank(comm, ValueError, r"number of dimensions differs", th.from_local,
                         torch.zeros(2, 3, 1) if last else torch.zeros(2, 3), 2 if last else 0)
    raises_on_every_rank(comm, ValueError, r"split axes differ: \[0, .*1\]", th.from_local, torch.zeros(2, 2), 1 if last else 0)
    raises_on_every_rank(comm, ValueError, r"requires_grad flags differ", th.from_local,
                         torch.zeros(2, 3, requires_grad=last), 0)


def test_backward_gradient_of_the_wrong_shape(comm):
    t = torch.ones(4, 3)
    msg = r"Mismatch in shape: grad_output\[0\] has a shape of torch.Size\(\[4, 4\]\) and output\[0\] has a shape of torch.Size\(\[4, 3\]\)"
    for x in layouts(t, requires_grad=True):
        y = x * 2
        raises_on_every_rank(comm, RuntimeError, msg, y.backward, torch.ones(4, 4))
        raises_on_every_rank(comm, RuntimeError, msg, torch.autograd.grad, y, x, th.ones(4, 4, split=0))
        raises_on_every_rank(comm, RuntimeError, r"grad can be implicitly created only for scalar outputs", y.backward)
