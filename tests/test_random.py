"""Random numbers: the same seed gives the same global tensor for any process count and split.

The reference of every draw is the same call on a one-process communicator (every element
drawn by this process alone) from the same generator state; the distributed draws, in every
layout, must equal it exactly. Distributions are checked roughly on large draws, and errors
against torch's own.
"""
import math
import re

import pytest
import torch
import torch.nn.functional as F

import torchheat as th
from torchheat.comm.self import SelfCommunicator
from torchheat.ops import random as R
from torchheat.testing import assert_dist_close, check_layout, skewed_counts

ONE = SelfCommunicator()
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 8 elements, so that small tensors cross many block and chunk boundaries."""
    monkeypatch.setattr(R, "BLOCK", 8)


def independent(make, ndim, comm, keeps_split=True):
    """``make(comm, split)`` from the same state: equal to the one-process draw for every split
    (and split along it, with ``keeps_split``), and the generator ends in the same state."""
    state = th.get_rng_state()
    ref = make(ONE, None).full()
    after = th.get_rng_state()
    for split in [None] + list(range(ndim)):
        th.set_rng_state(state)
        x = make(comm, split)
        assert_dist_close(x, ref, rtol=0, atol=0, split=split if keeps_split else -1)
        assert torch.equal(th.get_rng_state(), after)
    return ref


@pytest.mark.parametrize("shape", [(37, 5), (3, 4, 5), (2, 40), (1, 7), (0, 3), (13,), ()])
def test_factories_do_not_depend_on_the_layout(comm, small_blocks, shape):
    th.manual_seed(5)
    ndim = len(shape)
    for name, make in [
        ("rand", lambda c, s: th.rand(shape, split=s, comm=c)),
        ("randn", lambda c, s: th.randn(shape, split=s, comm=c, dtype=torch.float64)),
        ("randint", lambda c, s: th.randint(-3, 9, shape, split=s, comm=c)),
        ("normal", lambda c, s: th.normal(2.0, 3.0, shape, split=s, comm=c)),
    ]:
        ref = independent(make, ndim, comm)
        assert ref.shape == shape, name


def test_a_sequence_of_draws_does_not_depend_on_the_layout(comm, small_blocks):
    def sequence(c, s):
        th.manual_seed(3)
        parts = [th.rand(9, 4, split=s, comm=c), th.randn(9, 4, split=s, comm=c), th.rand(9, 4, split=s, comm=c)]
        return th.distribute(torch.stack([p.full() for p in parts], -1), split=s, comm=c)

    independent(sequence, 2, comm)
    th.manual_seed(3)
    a, b = th.rand(9, 4), th.rand(9, 4)
    assert not torch.equal(a.full(), b.full())  # every call draws anew


def test_default_blocks_and_a_tensor_of_several_blocks(comm):
    th.manual_seed(0)
    ref = independent(lambda c, s: th.rand(3, R.BLOCK + 11, split=s, comm=c, dtype=torch.float64), 2, comm)
    assert ref.unique().numel() == ref.numel()


def test_values_are_torchs_own_samples_of_each_block(comm, small_blocks):
    th.manual_seed(9)
    key = R._splitmix64(R._splitmix64(9) ^ 0)
    x = th.randn(20, split=0, dtype=torch.float64).full()
    for b, (lo, hi) in enumerate([(0, 8), (8, 16), (16, 20)]):
        g = torch.Generator().manual_seed(R._splitmix64(key ^ b))
        assert torch.equal(x[lo:hi], torch.randn(hi - lo, generator=g, dtype=torch.float64))


def test_element_indices_beyond_int32():
    # Elements [2**33 + 5, 2**33 + 25) of a tensor of 2**34 elements: the blocks around them, drawn whole.
    lo, numel, key = 2**33 + 5, 2**34, 12345
    out = torch.empty(20)
    R._fill_range(out, lo, numel, key, R._uniform)
    b = lo // R.BLOCK
    block = torch.rand(R.BLOCK, generator=torch.Generator().manual_seed(R._splitmix64(key ^ b)))
    assert torch.equal(out, block[lo - b * R.BLOCK:][:20])


@pytest.mark.parametrize("n", [0, 1, 7, 50, 1000])
def test_randperm(comm, small_blocks, n):
    th.manual_seed(n)
    ref = independent(lambda c, s: th.randperm(n, split=s, comm=c), 1, comm)
    assert sorted(ref.tolist()) == list(range(n)) and ref.dtype == torch.int64
    x = th.randperm(n, split=0, dtype=torch.float64)
    assert x.dtype == torch.float64 and x.is_balanced and sorted(x.full().tolist()) == list(range(n))


def test_randperm_breaks_ties_by_index(comm, monkeypatch):
    monkeypatch.setattr(R, "_random_keys", lambda t, g: t.random_(0, 4, generator=g).mul_(2**61))  # 4 keys, many ties
    ref = independent(lambda c, s: th.randperm(40, split=s, comm=c), 1, comm)
    descents = int((ref[1:] < ref[:-1]).sum())  # four increasing runs of indices, one per key
    assert sorted(ref.tolist()) == list(range(40)) and 1 <= descents <= 3


def test_randperm_sends_no_whole_permutation(comm):
    with th.debug.comm_log() as log:
        th.randperm(3000, split=0)
    assert not [e for e in log if e.collective in ("allgather", "gather") and e.nbytes > 64 * comm.size]


@pytest.mark.parametrize("method, args", [
    ("uniform_", (-2.0, 3.0)), ("normal_", (1.0, 0.5)), ("random_", (0, 10)), ("bernoulli_", (0.3,)),
    ("exponential_", (2.0,)), ("geometric_", (0.2,)), ("cauchy_", ()), ("log_normal_", (0.0, 0.5)),
])
def test_in_place_methods(comm, small_blocks, method, args):
    th.manual_seed(1)

    def make(c, s):
        x = th.zeros(11, 3, split=s, comm=c, dtype=torch.float64)
        assert getattr(x, method)(*args) is x
        return x

    independent(make, 2, comm)
    # An unbalanced layout draws the same values as well.
    state = th.get_rng_state()
    ref = make(ONE, None).full()
    th.set_rng_state(state)
    x = th.distribute(torch.zeros(11, 3, dtype=torch.float64), split=0, counts=skewed_counts(11, comm.size))
    getattr(x, method)(*args, generator=None)
    assert_dist_close(x, ref, rtol=0, atol=0)


def test_like_functions_keep_the_layout(comm, small_blocks):
    t = torch.zeros(10, 4)
    for counts in (None, skewed_counts(10, comm.size)):
        x = th.distribute(t, split=0, counts=counts)
        for make in (lambda y: torch.rand_like(y), lambda y: torch.randn_like(y, dtype=torch.float64),
                     lambda y: torch.randint_like(y, 2, 5), lambda y: torch.randint_like(y, 5),
                     lambda y: th.rand_like(y), lambda y: th.randn_like(y), lambda y: th.randint_like(y, 4)):
            state = th.get_rng_state()
            out = make(x)
            check_layout(out)
            assert out.counts == x.counts and out.shape == x.shape
            th.set_rng_state(state)
            assert_dist_close(make(th.distribute(t, comm=ONE)), out.full(), rtol=0, atol=0)
    assert th.randint_like(x, 2, 5).dtype == torch.float32 and bool(((torch.randint_like(x, 2, 5) >= 2)).all())
    assert th.rand_like(x, split=1).split_dim == 1 and torch.rand_like(x, requires_grad=True).requires_grad


def test_bernoulli_multinomial_normal_on_disttensors(comm, small_blocks):
    th.manual_seed(4)
    p = torch.rand(9, 5, dtype=torch.float64)
    w = torch.rand(9, 6) + 0.01
    for name, make in [
        ("bernoulli", lambda c, s: torch.bernoulli(th.distribute(p, split=s, comm=c))),
        ("bernoulli p", lambda c, s: torch.bernoulli(th.distribute(p, split=s, comm=c), 0.25)),
        ("bernoulli_ tensor", lambda c, s: th.zeros(9, 5, split=s, comm=c).bernoulli_(th.distribute(p, comm=c))),
        ("normal", lambda c, s: torch.normal(th.distribute(p, split=s, comm=c), 2.0)),
        ("th.normal of plain tensors", lambda c, s: th.normal(p, 2.0, split=s, comm=c)),
        ("normal tensors", lambda c, s: torch.normal(th.distribute(p, split=s, comm=c), th.distribute(p[0], comm=c))),
        ("multinomial", lambda c, s: torch.multinomial(th.distribute(w, split=s, comm=c), 4)),
        ("multinomial replacement", lambda c, s: th.distribute(w, split=s, comm=c).multinomial(7, replacement=True)),
    ]:
        ref = independent(make, 2, comm, keeps_split=not name.startswith("multinomial"))
        if name.startswith("multinomial"):
            assert ref.dtype == torch.int64 and bool(((ref >= 0) & (ref < 6)).all())
            if name == "multinomial":
                assert all(len(set(row)) == 4 for row in ref.tolist())  # without replacement
        elif name.startswith("bernoulli"):
            assert set(ref.unique().tolist()) <= {0.0, 1.0}


def test_multinomial_of_a_1d_input_split_along_its_categories(comm, small_blocks):
    w = torch.tensor([0, 3, 1, 0, 2, 5, 0, 0, 4, 1, 0], dtype=torch.float32)  # integers: exact cumulative sums
    th.manual_seed(6)
    for replacement, samples in ((False, 6), (True, 40)):
        ref = independent(lambda c, s: torch.multinomial(th.distribute(w, split=s, comm=c), samples, replacement), 1, comm,
                          keeps_split=False)
        assert ref.shape == (samples,) and bool((w[ref] > 0).all())
        if not replacement:
            assert len(set(ref.tolist())) == samples
    x = th.distribute(torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]), split=0)
    assert torch.multinomial(x, 20, True).full().tolist() == [2] * 20
    raises_everywhere(comm, (RuntimeError, "not enough non-negative category"), lambda: torch.multinomial(x, 2))


def test_multinomial_respects_zero_weights(comm):
    w = torch.tensor([[0.0, 1.0, 0.0, 3.0]] * 5)
    x = th.distribute(w, split=0)
    for replacement in (False, True):
        out = torch.multinomial(x, 2, replacement).full()
        assert set(out.unique().tolist()) <= {1, 3}
    one = torch.multinomial(th.distribute(w[0]), 1000, True).full()
    assert abs((one == 3).double().mean().item() - 0.75) < 0.06


def test_distributions(comm):
    th.manual_seed(0)
    n = 200_000
    checks = [
        (th.rand(n, split=0), 0.5, 1 / 12), (th.randn(n, split=0), 0.0, 1.0),
        (th.normal(3.0, 2.0, (n,), split=0), 3.0, 4.0), (th.zeros(n, split=0).exponential_(2.0), 0.5, 0.25),
        (th.zeros(n, split=0).bernoulli_(0.3), 0.3, 0.21), (th.randint(0, 10, (n,), split=0).double(), 4.5, 8.25),
    ]
    for x, mean, var in checks:
        assert abs(x.mean().item() - mean) < 0.02 * max(1, math.sqrt(var)), (mean, x.mean().item())
        assert abs(x.var().item() - var) < 0.03 * max(var, 1)
    x = th.rand(n, split=0)
    assert 0 <= x.amin().item() and x.amax().item() < 1
    r = th.randint(-5, 5, (n,), split=0)
    assert r.amin().item() == -5 and r.amax().item() == 4


@pytest.mark.parametrize("dtype", FLOATS + (torch.complex64,))
def test_every_floating_dtype(comm, dtype):
    th.manual_seed(2)
    for make in (lambda c, s: th.rand(40, 3, split=s, comm=c, dtype=dtype),
                 lambda c, s: th.randn(40, 3, split=s, comm=c, dtype=dtype)):
        ref = independent(make, 2, comm)
        assert ref.dtype == dtype
    if not dtype.is_complex:
        u = th.rand(2000, split=0, dtype=dtype)
        assert u.dtype == dtype and 0 <= u.amin().item() and u.amax().item() < 1


def test_seeds_and_states(comm):
    assert th.manual_seed(42) is R.default_generator and th.initial_seed() == 42
    a = th.rand(5, split=0).full()
    th.manual_seed(42)
    assert torch.equal(th.rand(5, split=0).full(), a)
    assert torch.equal(torch.rand(3), torch.manual_seed(42) and torch.rand(3))  # torch's own generator is seeded too
    state = th.get_rng_state()
    assert state.dtype == torch.uint8 and state.numel() == 16
    b = th.randn(4, split=0).full()
    th.set_rng_state(state)
    assert torch.equal(th.randn(4, split=0).full(), b)
    # Generators are independent streams; the same seed gives the same stream.
    g1, g2 = th.Generator().manual_seed(7), th.Generator().manual_seed(7)
    assert torch.equal(th.rand(6, split=0, generator=g1).full(), th.rand(6, generator=g2, comm=ONE).full())
    assert g1.initial_seed() == 7 and "calls=1" in repr(g1)
    assert not torch.equal(th.rand(6, generator=th.Generator().manual_seed(8)).full(), th.rand(6, generator=th.Generator().manual_seed(7)).full())
    th.manual_seed(2**64 - 1)
    th.manual_seed(-1)  # torch's seeds: [-2**63, 2**64)
    seed = th.Generator().seed()
    assert len(set(comm.allgather_obj(seed))) == 1  # a random seed every rank shares


def torch_error(fn):
    with pytest.raises(Exception) as info:
        fn()
    return info.type, re.escape(str(info.value))


def raises_everywhere(comm, expected, fn):
    kind, message = expected
    try:
        fn()
        got = None
    except Exception as err:  # noqa: BLE001 -- shared, then judged
        got = (isinstance(err, kind), type(err).__name__, str(err))
    for rank, outcome in enumerate(comm.allgather_obj(got)):
        assert outcome is not None, f"rank {rank} did not raise"
        assert outcome[0] and re.search(message, outcome[2]), f"rank {rank}: {outcome[1]}: {outcome[2]} (expected {message})"


def test_bad_input_gets_torchs_errors_on_every_rank(comm):
    state = th.get_rng_state()
    cases = [
        (lambda: th.manual_seed(2**64), lambda: torch.manual_seed(2**64)),
        (lambda: th.manual_seed("x"), lambda: torch.manual_seed("x")),
        (lambda: th.rand(-1, 3, split=0), lambda: torch.rand(-1, 3)),
        (lambda: th.rand(3, dtype=torch.int64, split=0), lambda: torch.rand(3, dtype=torch.int64)),
        (lambda: th.randn(3, dtype=torch.int32), lambda: torch.randn(3, dtype=torch.int32)),
        (lambda: th.randint(5, 2, (3,), split=0), lambda: torch.randint(5, 2, (3,))),
        (lambda: th.randint(10, (3,), requires_grad=True), lambda: torch.randint(10, (3,), requires_grad=True)),
        (lambda: th.randperm(-2, split=0), lambda: torch.randperm(-2)),
        (lambda: th.normal(0.0, -1.0, (3,), split=0), lambda: torch.normal(0.0, -1.0, (3,))),
        (lambda: th.zeros(4, split=0).uniform_(2, 1), lambda: torch.zeros(4).uniform_(2, 1)),
        (lambda: th.zeros(4, split=0).bernoulli_(1.5), lambda: torch.zeros(4).bernoulli_(1.5)),
        (lambda: th.zeros(4, split=0).geometric_(0), lambda: torch.zeros(4).geometric_(0)),
        (lambda: torch.multinomial(th.ones(4, 3, split=0), 5), lambda: torch.multinomial(torch.ones(4, 3), 5)),
        (lambda: torch.multinomial(th.ones(2, 2, 2, split=0), 1), lambda: torch.multinomial(torch.ones(2, 2, 2), 1)),
        (lambda: th.ones(3, split=0, requires_grad=True).normal_(), lambda: torch.ones(3, requires_grad=True).normal_()),
    ]
    for th_call, torch_call in cases:
        raises_everywhere(comm, torch_error(torch_call), th_call)
    assert torch.equal(th.get_rng_state(), state)  # no failed call advanced the stream
    # Data that only some ranks hold: every rank raises.
    w = torch.ones(5, 3)
    w[-1, 0] = -1
    raises_everywhere(comm, torch_error(lambda: torch.multinomial(w, 1)), lambda: torch.multinomial(th.distribute(w, split=0), 1))
    raises_everywhere(comm, (RuntimeError, "sum of probabilities <= 0"),
                      lambda: torch.multinomial(th.distribute(torch.zeros(5, 3), split=0), 1))
    p = torch.full((5,), 0.5)
    p[-1] = 2
    raises_everywhere(comm, torch_error(lambda: torch.bernoulli(p)), lambda: torch.bernoulli(th.distribute(p, split=0)))
    raises_everywhere(comm, (TypeError, "must be a torchheat.Generator"), lambda: th.rand(3, generator=torch.Generator()))
    raises_everywhere(comm, (TypeError, "RNG state must be a torch.ByteTensor"), lambda: th.set_rng_state(torch.zeros(16)))
    raises_everywhere(comm, (RuntimeError, "16 bytes"), lambda: th.set_rng_state(torch.zeros(3, dtype=torch.uint8)))


# -- dropout ---------------------------------------------------------------------------------
DROPOUTS = [
    ("dropout", lambda x, **kw: F.dropout(x, 0.4, **kw), None),
    ("dropout1d", lambda x, **kw: F.dropout1d(x, 0.4, **kw), 2),
    ("alpha_dropout", lambda x, **kw: F.alpha_dropout(x, 0.4, training=True, **kw), None),
    ("feature_alpha_dropout", lambda x, **kw: F.feature_alpha_dropout(x, 0.4, training=True, **kw), 2),
    ("torch.dropout", lambda x, **kw: torch.dropout(x, 0.4, True), None),
    ("torch.feature_dropout", lambda x, **kw: torch.feature_dropout(x, 0.4, True), 2),
]


@pytest.mark.parametrize("name, call, channels", DROPOUTS, ids=[d[0] for d in DROPOUTS])
def test_dropout_does_not_depend_on_the_layout(comm, small_blocks, name, call, channels):
    t = torch.rand(7, 5, 3, dtype=torch.float64) + 0.5
    th.manual_seed(8)
    ref = independent(lambda c, s: call(th.distribute(t, split=s, comm=c)), 3, comm)
    keep = ref != ref.min() if "alpha" in name else ref != 0
    if "alpha" in name:  # out = a * x + b on kept elements, the same constant elsewhere
        alpha, p = 1.7580993408473766, 0.4
        a = 1 / math.sqrt((alpha**2 * p + 1) * (1 - p))
        expected = torch.where(keep, t * a + alpha * a * p, torch.full_like(t, -alpha * a + alpha * a * p))
    else:
        expected = torch.where(keep, t / 0.6, torch.zeros_like(t))
    torch.testing.assert_close(ref, expected)
    if channels is not None:  # one mask value per (sample, channel)
        assert bool((keep == keep[:, :, :1]).all())
    assert 0.3 < keep.double().mean().item() < 0.9


def test_dropout_gradients_and_modes(comm):
    t = torch.rand(8, 6, dtype=torch.float64) + 0.5
    for split in (None, 0, 1):
        x = th.distribute(t, split=split).requires_grad_(True)
        y = F.dropout(x, 0.25)
        (y * 3).sum().backward()
        mask = (y.full() != 0).double()
        assert_dist_close(x.grad, 3 * mask / 0.75, rtol=0, atol=1e-12)
        assert F.dropout(x, 0.5, training=False) is x and F.alpha_dropout(x, 0.5) is x  # eval: identity
        assert torch.nn.Dropout(0.5).eval()(x) is x
        assert_dist_close(F.dropout(x, 1.0), torch.zeros_like(t))
    z = th.distribute(t.clone(), split=0)
    assert F.dropout(z, 0.5, inplace=True) is z and bool(((z.full() == 0) | (z.full() == t * 2)).all())
    for f, shape in ((F.dropout2d, (2, 3, 2, 2)), (F.dropout3d, (2, 3, 2, 1, 2)), (F.dropout3d, (3, 2, 2, 2))):
        for split in range(len(shape)):
            out = f(th.ones(*shape, split=split), 0.5).full()
            flat = out.flatten(len(shape) - 2 if len(shape) == 4 else len(shape) - 3)
            assert bool((flat == flat[..., :1]).all())
    u = th.distribute(torch.ones(3, 4), split=1)  # unbatched dropout1d: one mask value per channel (row)
    out = F.dropout1d(u, 0.5).full()
    assert bool((out == out[:, :1]).all())
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        F.dropout(x, 1.5)
    with pytest.raises(RuntimeError, match="dropout1d: Expected 2D or 3D input"):
        F.dropout1d(th.ones(2, split=0), 0.5)
