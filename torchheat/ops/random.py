"""Random numbers that do not depend on the number of processes or the split axis.

A seed fixes the global tensor: ``th.manual_seed(s); th.randn(n, d, split=0)`` gives the same
values on 1, 2 or 7 ranks, split along any axis or replicated, and so does every later draw.

How: the elements of a global tensor, in C order, are cut into blocks of :data:`BLOCK`
elements. Block ``b`` of call number ``c`` of a generator seeded with ``s`` is filled by
torch's own sampler (``uniform_``, ``normal_``, ``random_``, ``bernoulli_``, ...) from a
``torch.Generator`` seeded with a splitmix64 mix of ``(s, c, b)``; a block is always drawn
whole and trimmed, so its values depend on nothing but ``(s, c, b)`` and the global size. The
distributions are therefore exactly torch's, for every dtype, and element counts are Python
ints (no int32 limit). A rank whose chunk is a contiguous range of the flat index space
(``split=0``) draws only the blocks it overlaps (at most two blocks wasted); another split
axis draws in that canonical layout and moves the values by one all-to-all; a replicated
tensor is drawn whole on every rank. Every call advances the generator's call counter by
one on every rank, whatever its size.

Examples
--------
>>> import torch, torchheat as th
>>> from torchheat.comm.self import SelfCommunicator
>>> _ = th.manual_seed(1)
>>> x = th.randn(5, 3, split=1)
>>> _ = th.manual_seed(1)
>>> one = th.randn(5, 3, comm=SelfCommunicator())  # the same draw on a one-process communicator
>>> bool(torch.equal(x.full(), one.full()))
True
"""
from __future__ import annotations

import math
import os
from typing import Callable, Optional

import torch
from torch._C import DisableTorchFunctionSubclass

from .. import dispatch as d, layout
from ..config import NotDistributedError
from ..tensor import DistTensor, make_leaf, relayout, wrap
from .creation import _comm, _like, _probe
from .pointwise import elementwise

__all__ = [
    "Generator", "default_generator", "manual_seed", "initial_seed", "get_rng_state", "set_rng_state",
    "rand", "randn", "randint", "randperm", "normal", "rand_like", "randn_like", "randint_like",
]

BLOCK = 1 << 16  # elements per block of the canonical layout
DEFAULT_SEED = 67280421310721  # torch's default seed
_MASK = (1 << 64) - 1

# fill(t, g): fills the contiguous tensor t in place with torch's sampler, drawing from g.
Fill = Callable[[torch.Tensor, torch.Generator], object]


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Generator(torch.Generator):
    """A seed and a call counter: the state of process-count independent random streams.

    A ``torch.Generator`` (so torch's argument parsing accepts it as ``generator=``) whose
    draws on DistTensors come from :func:`draw`: call number ``c`` gives the same global
    tensor on any number of processes. Its state is 16 bytes (seed and counter), the same on
    every rank. Used with plain tensors it is an ordinary torch generator seeded with the
    same seed.

    Examples
    --------
    >>> import torchheat as th
    >>> g = th.Generator().manual_seed(3)
    >>> a = th.rand(4, generator=g)
    >>> state = g.get_state()
    >>> b = th.rand(4, generator=g)
    >>> _ = g.set_state(state)
    >>> bool((th.rand(4, generator=g) == b).all()) and not bool((a == b).all())
    True
    """

    def __init__(self, device="cpu"):
        self._seed, self._calls = DEFAULT_SEED, 0
        torch.Generator.manual_seed(self, DEFAULT_SEED)

    def manual_seed(self, seed) -> "Generator":
        """Seed the stream (torch's seeds: ints in ``[-2**63, 2**64)``) and restart its counter."""
        torch.Generator.manual_seed(self, seed)  # torch's checks and normalization
        self._seed, self._calls = torch.Generator.initial_seed(self), 0
        return self

    def initial_seed(self) -> int:
        """The seed the stream started from."""
        return self._seed

    def seed(self, comm=None) -> int:
        """Seed with a non-deterministic value that all ranks of ``comm`` share (collective)."""
        comm = _comm(comm)
        value = comm.allgather_obj(int.from_bytes(os.urandom(8), "little") if comm.rank == 0 else None)[0]
        self.manual_seed(value)
        return value

    def get_state(self) -> torch.Tensor:
        """The state as a ``torch.uint8`` tensor of 16 bytes: seed and call counter."""
        raw = self._seed.to_bytes(8, "little") + self._calls.to_bytes(8, "little")
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8)

    def set_state(self, state: torch.Tensor) -> "Generator":
        """Restore a state from :meth:`get_state`."""
        if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
            raise TypeError(f"RNG state must be a torch.ByteTensor, got {type(state).__name__}"
                            + (f" of dtype {state.dtype}" if isinstance(state, torch.Tensor) else ""))
        if state.numel() != 16:
            raise RuntimeError(f"expected a torchheat RNG state of 16 bytes (seed and call counter), got {state.numel()}")
        raw = bytes(state.detach().cpu().contiguous().tolist())
        self.manual_seed(int.from_bytes(raw[:8], "little"))
        self._calls = int.from_bytes(raw[8:], "little")
        return self

    def _next_key(self) -> int:
        """The key of the next call's blocks; advances the counter."""
        key = _splitmix64(_splitmix64(self._seed) ^ self._calls)
        self._calls += 1
        return key

    def __repr__(self) -> str:
        return f"torchheat.Generator(seed={self._seed}, calls={self._calls})"


default_generator = Generator()


def manual_seed(seed) -> Generator:
    """Seed torchheat's default generator, and torch's own (so plain torch code, e.g. a model's
    initialization, draws the same on every rank). Returns the default generator.

    >>> import torchheat as th
    >>> th.manual_seed(7).initial_seed()
    7
    """
    seed = int(seed)  # as torch.manual_seed
    default_generator.manual_seed(seed)
    torch.manual_seed(seed)
    return default_generator


def initial_seed() -> int:
    """The seed of the default generator.

    >>> import torchheat as th
    >>> _ = th.manual_seed(11); th.initial_seed()
    11
    """
    return default_generator.initial_seed()


def get_rng_state() -> torch.Tensor:
    """The default generator's state (16 bytes, the same on every rank).

    >>> import torchheat as th
    >>> s = th.get_rng_state(); a = th.rand(3); th.set_rng_state(s)
    >>> bool((th.rand(3) == a).all())
    True
    """
    return default_generator.get_state()


def set_rng_state(state: torch.Tensor) -> None:
    """Restore the default generator's state from :func:`get_rng_state`."""
    default_generator.set_state(state)


def _generator(generator) -> Generator:
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(
            f"generator= must be a torchheat.Generator (or None for the default one), got {type(generator).__name__}: "
            "a torch.Generator's draws depend on how the tensor is split over the processes"
        )
    return generator


# -- the canonical layout --------------------------------------------------------------------
_scratch: dict = {}


def _block_generator(device: torch.device) -> torch.Generator:
    device = torch.device(device)
    if device.type != "cpu" and device.index is None:
        device = torch.device(device.type, torch.get_device_module(device.type).current_device())
    if device not in _scratch:
        _scratch[device] = torch.Generator(device)
    return _scratch[device]


def _fill_range(out: torch.Tensor, lo: int, numel: int, key: int, fill: Fill) -> None:
    """Fill the 1-D ``out`` with elements ``[lo, lo + len(out))`` of the stream ``key`` of a
    tensor of ``numel`` elements: every block it overlaps is drawn whole."""
    g = _block_generator(out.device)
    pos, hi = lo, lo + out.numel()
    while pos < hi:
        b = pos // BLOCK
        start = b * BLOCK
        n = min(BLOCK, numel - start)
        end = min(hi, start + n)
        g.manual_seed(_splitmix64(key ^ b))
        if pos == start and end == start + n:
            fill(out[pos - lo:end - lo], g)
        else:  # a block that only partly belongs to this rank
            whole = out.new_empty(n)
            fill(whole, g)
            out[pos - lo:end - lo].copy_(whole[pos - start:end - start])
        pos = end


def _flat_range(gshape, split, counts, rank):
    """``(lo, hi)`` of this rank's chunk in the flat index space, or None when it is not contiguous
    (decided alike on every rank: the other way is collective)."""
    numel = math.prod(gshape)
    if split is None:
        return 0, numel
    if max(counts) == gshape[split]:  # one rank holds everything (one process): the whole tensor or nothing
        return 0, numel if counts[rank] else 0
    if math.prod(gshape[:split]) != 1:
        return None
    inner = math.prod(gshape[split + 1:])
    lo = layout.offsets(counts)[rank] * inner
    return lo, lo + counts[rank] * inner


def draw(gshape, split, counts, comm, dtype, device, fill: Fill, generator=None) -> torch.Tensor:
    """This rank's chunk (layout ``split``, ``counts``) of the next global random tensor of
    shape ``gshape`` and ``dtype``, filled block by block by ``fill``; a plain tensor.

    ``fill`` is first tried on one element with a throwaway generator, so bad dtypes and
    parameters get torch's own exception on every rank before the stream advances.

    >>> import torch, torchheat as th
    >>> t = draw((4, 2), 0, th.layout.balanced_counts(4, 1), th.comm.self.SelfCommunicator(), torch.float32,
    ...          None, lambda t, g: t.uniform_(generator=g))
    >>> t.shape
    torch.Size([4, 2])
    """
    gen = _generator(generator)
    fill(torch.empty(1, dtype=dtype), torch.Generator())
    key = gen._next_key()
    gshape = torch.Size(gshape)
    numel = gshape.numel()
    flat = _flat_range(gshape, split, counts, comm.rank)
    if flat is not None:
        out = torch.empty(flat[1] - flat[0], dtype=dtype, device=device)
        _fill_range(out, flat[0], numel, key, fill)
        return out.view(layout.local_shape(gshape, split, None if split is None else counts[comm.rank]))
    # Drawn in the canonical split-0 layout, then moved to the asked one by one all-to-all.
    rows = layout.balanced_counts(gshape[0], comm.size)
    lo, hi = _flat_range(gshape, 0, rows, comm.rank)
    out = torch.empty(hi - lo, dtype=dtype, device=device)
    _fill_range(out, lo, numel, key, fill)
    canonical = wrap(out.view(layout.local_shape(gshape, 0, rows[comm.rank])), 0, comm, gshape, rows)
    return relayout(canonical, split, counts).local


def _uniform(t, g):
    return t.uniform_(0, 1, generator=g)


def _standard_normal(t, g):
    return t.normal_(0, 1, generator=g)


def _randint_fill(low, high):
    return lambda t, g: t.random_(low, high, generator=g)


def _meta(size, dtype, requires_grad, torch_fn, *args) -> torch.Tensor:
    """A meta tensor of ``size`` (a shape or the ints of one) and ``dtype``: torch's checks of the
    size and of ``requires_grad``. A call torch rejects is replayed as ``torch_fn(*args)`` on the
    CPU, for torch's own exception (raised before anything is allocated). (The meta kernels of
    the random factories themselves are Python decompositions that take seconds to load.)"""
    try:
        size = tuple(size) if isinstance(size, (tuple, list, torch.Size)) else (size,)
        return torch.empty(size, dtype=dtype, device="meta", requires_grad=requires_grad)
    except Exception:
        torch_fn(*args, dtype=dtype, requires_grad=requires_grad)
        raise


def _factory(torch_fn, args, size, fill: Fill, generator, split, dtype, device, comm, requires_grad) -> DistTensor:
    """A random factory: torch's checks, shape and dtype of ``torch_fn(*args)`` (whose size is
    ``size``), this rank's chunk of the balanced layout drawn from the stream."""
    _generator(generator)
    probe = _meta(size, dtype, requires_grad, torch_fn, *args)
    comm = _comm(comm)
    split = layout.normalize_split(split, probe.dim())
    counts = None if split is None else layout.balanced_counts(probe.shape[split], comm.size)
    local = draw(probe.shape, split, counts, comm, probe.dtype, device, fill, generator)
    return make_leaf(local, split, comm, probe.shape, counts, requires_grad)


def rand(*size, generator=None, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Uniform on ``[0, 1)``; see :func:`torch.rand`. The same global tensor for every process
    count and split.

    >>> import torchheat as th
    >>> x = th.rand(6, 2, split=0)
    >>> x.shape, bool(((x >= 0) & (x < 1)).all())
    (torch.Size([6, 2]), True)
    """
    return _factory(torch.rand, size, size[0] if len(size) == 1 else size, _uniform, generator, split, dtype, device, comm, requires_grad)


def randn(*size, generator=None, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """Standard normal; see :func:`torch.randn`.

    >>> import torch, torchheat as th
    >>> th.randn(3, 4, split=1, dtype=torch.float64).dtype
    torch.float64
    """
    return _factory(torch.randn, size, size[0] if len(size) == 1 else size, _standard_normal, generator, split, dtype, device, comm, requires_grad)


def randint(low, high=None, size=None, *, generator=None, split=None, dtype=None, device=None, comm=None,
            requires_grad=False) -> DistTensor:
    """Integers uniform on ``[low, high)``; ``randint(high, size)`` or ``randint(low, high, size)``
    as :func:`torch.randint`.

    >>> import torchheat as th
    >>> x = th.randint(3, 7, (10,), split=0)
    >>> bool(((x >= 3) & (x < 7)).all()), x.dtype
    (True, torch.int64)
    """
    if size is None:
        low, high, size = 0, low, high
    return _factory(torch.randint, (low, high, size), size, _randint_fill(low, high), generator, split,
                    torch.int64 if dtype is None else dtype, device, comm, requires_grad)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, split=None, dtype=None, device=None, comm=None,
           requires_grad=False) -> DistTensor:
    """Normal with ``mean`` and ``std`` (numbers with ``size``, or tensors); see :func:`torch.normal`.

    With tensor arguments the result has their broadcast shape and the layout of the split
    one (``split`` applies when none is split).

    >>> import torchheat as th
    >>> th.normal(2.0, 0.5, (4, 3), split=0).shape
    torch.Size([4, 3])
    """
    if isinstance(mean, torch.Tensor) or isinstance(std, torch.Tensor):
        operands = [t for t in (mean, std) if isinstance(t, DistTensor)]
        comm = d.common_comm(operands) if operands else _comm(comm)
        with DisableTorchFunctionSubclass():
            return _normal_tensors(mean, std, generator, comm, split)
    fill = lambda t, g: t.normal_(mean, std, generator=g)  # noqa: E731
    return _factory(torch.normal, (mean, std, size), size, fill, generator, split, dtype, device, comm, requires_grad)


def _like_random(x, split, dtype, device, comm, generator, requires_grad, fill) -> DistTensor:
    """A random tensor with ``x``'s global shape, in its layout (even an unbalanced one) unless
    ``split`` is given."""
    _generator(generator)
    shape, split, dtype, device, comm, keep = _like(x, split, dtype, device, comm)
    probe = _meta(shape, dtype, requires_grad, torch.empty, shape)
    comm = _comm(comm)
    split = layout.normalize_split(split, len(shape))
    counts = x._counts if keep else (None if split is None else layout.balanced_counts(shape[split], comm.size))
    local = draw(shape, split, counts, comm, probe.dtype, device, fill, generator)
    return make_leaf(local, split, comm, shape, counts, requires_grad)


def rand_like(x, split="same", dtype=None, device=None, comm=None, generator=None, requires_grad=False) -> DistTensor:
    """Uniform on ``[0, 1)`` with ``x``'s global shape (and layout, unless ``split`` is given).

    >>> import torchheat as th
    >>> th.rand_like(th.zeros(5, split=0)).split_dim
    0
    """
    return _like_random(x, split, dtype, device, comm, generator, requires_grad, _uniform)


def randn_like(x, split="same", dtype=None, device=None, comm=None, generator=None, requires_grad=False) -> DistTensor:
    """Standard normal with ``x``'s global shape (and layout, unless ``split`` is given)."""
    return _like_random(x, split, dtype, device, comm, generator, requires_grad, _standard_normal)


def randint_like(x, low=0, high=None, split="same", dtype=None, device=None, comm=None, generator=None,
                 requires_grad=False) -> DistTensor:
    """Integers on ``[low, high)`` (``randint_like(x, high)`` or ``(x, low, high)``) with ``x``'s
    global shape, in ``x``'s dtype unless ``dtype`` is given.

    >>> import torchheat as th
    >>> bool((th.randint_like(th.zeros(8, split=0), 3) < 3).all())
    True
    """
    if high is None:
        low, high = 0, low
    return _like_random(x, split, dtype, device, comm, generator, requires_grad, _randint_fill(low, high))


# -- randperm ----------------------------------------------------------------------------------
def _random_keys(t, g):
    return t.random_(generator=g)  # int64: uniform on [0, 2**63)


def randperm(n, *, generator=None, split=None, dtype=torch.int64, device=None, comm=None, requires_grad=False) -> DistTensor:
    """A random permutation of ``0 .. n-1``; see :func:`torch.randperm`.

    The permutation sorts the elements by random 63-bit keys drawn from the canonical blocks
    (ties by index), so it does not depend on the process count. Split, each rank sends its
    (key, index) pairs to the rank owning that key range (uniform keys: equal ranges), sorts
    what it received, and one more exchange balances the result. No rank holds the whole
    permutation.

    >>> import torchheat as th
    >>> sorted(th.randperm(6, split=0).full().tolist())
    [0, 1, 2, 3, 4, 5]
    """
    _generator(generator)
    probe = _probe(torch.randperm, n, dtype=dtype, requires_grad=requires_grad)
    comm = _comm(comm)
    split = layout.normalize_split(split, 1)
    counts = None if split is None else layout.balanced_counts(n, comm.size)
    keys = draw((n,), split, counts, comm, torch.int64, device, _random_keys, generator)
    if split is None:
        order = torch.sort(keys, stable=True).indices
        return make_leaf(order.to(probe.dtype), None, comm, probe.shape, None, requires_grad)
    p, rank = comm.size, comm.rank
    dest = ((keys >> 32) * p) >> 31  # the rank whose key range holds each key
    order = torch.sort(dest.to(torch.uint8 if p < 256 else torch.int32), stable=True).indices  # by rank, then index
    sends = torch.bincount(dest, minlength=p).tolist()
    matrix = comm.allgather(torch.tensor(sends)).tolist()  # matrix[i][j]: pairs rank i sends to rank j
    got = tuple(sum(row[j] for row in matrix) for j in range(p))
    mine = tuple(row[rank] for row in matrix)
    send = tuple(((0, o, c),) for o, c in zip(layout.offsets(tuple(sends)), sends))
    recv = tuple(((0, o, c),) for o, c in zip(layout.offsets(mine), mine))
    pairs = comm.exchange(torch.stack([keys[order], order + layout.offsets(counts)[rank]], 1), send, (got[rank], 2), recv)
    # Parts arrive in rank order, each in index order: a stable sort by key breaks ties by index.
    part = pairs[torch.sort(pairs[:, 0], stable=True).indices, 1]
    perm = relayout(wrap(part, 0, comm, probe.shape, got), 0, counts).local
    return make_leaf(perm.to(probe.dtype), 0, comm, probe.shape, counts, requires_grad)


# -- torch functions on DistTensors ----------------------------------------------------------
def _pop_generator(kwargs: dict):
    kwargs = dict(kwargs)
    return kwargs.pop("generator", None), kwargs


def fill_in_place(func, args, kwargs):
    """``x.uniform_(...)``, ``normal_``, ``random_``, ``bernoulli_``, ``exponential_``,
    ``geometric_``, ``cauchy_``, ``log_normal_``: torch's sampler with its parameters, the
    values of the global stream in ``x``'s layout; returns ``x``."""
    x = args[0]
    generator, kwargs = _pop_generator(kwargs)
    if x.requires_grad and x.is_leaf and torch.is_grad_enabled():  # torch's error, before the stream advances
        func(torch.zeros(1, dtype=x.dtype, requires_grad=True), *args[1:], **kwargs)
    p = args[1] if len(args) > 1 else kwargs.get("p")
    if func is torch.Tensor.bernoulli_ and isinstance(p, torch.Tensor):
        local = _bernoulli_of(p, x, generator).to(x.dtype)
    else:
        fill = lambda t, g: func(t, *args[1:], **kwargs, generator=g)  # noqa: E731
        local = draw(x._gshape, x._split, x._counts, x._comm, x.dtype, x.device, fill, generator)
    x.copy_(local)  # (dispatch is off: the local chunk; torch's error for a leaf that requires grad)
    return x


def _check_probabilities(p: torch.Tensor, comm) -> None:
    error = None
    if p.numel() and not bool(((p >= 0) & (p <= 1)).all()):
        error = RuntimeError("Expected p_in >= 0 && p_in <= 1 to be true, but got false.  (Could this error message be "
                             "improved?  If so, please report an enhancement request to PyTorch.)")
    d.agree(comm, error)


def _bernoulli_of(p, x, generator) -> torch.Tensor:
    """Bernoulli(p) elementwise in ``x``'s layout (``p`` broadcast to it): ``u < p`` with ``u``
    uniform in float64 drawn from the stream, as torch's CPU kernel compares a uniform with p."""
    comm = d.common_comm([t for t in (p, x) if isinstance(t, DistTensor)])
    if layout.broadcast_shapes(tuple(d.shape_of(p)), tuple(x._gshape)) != x._gshape:
        d.raise_global_error(torch.Tensor.bernoulli_, (x, p), {})
    (local_p,), _, _ = d.align([p], x._gshape, x if x._split is not None else None, comm)
    local_p = local_p.detach()
    if local_p.dtype.is_complex or not (local_p.dtype.is_floating_point or local_p.dtype == torch.bool):
        local_p = local_p.to(torch.float64)
    _check_probabilities(local_p, comm)
    u = draw(x._gshape, x._split, x._counts, comm, torch.float64, x.device, _uniform, generator)
    return u < local_p


def bernoulli(func, args, kwargs):
    """``torch.bernoulli(input)`` (input = probabilities) and ``torch.bernoulli(input, p)``."""
    generator, kwargs = _pop_generator(kwargs)
    x = args[0] if args else kwargs.pop("input")
    p = args[1] if len(args) > 1 else kwargs.pop("p", None)
    if kwargs.get("out") is not None:
        raise NotDistributedError(f"{d.func_name(func)}(out=...) has no distributed rule; assign the result instead")
    if p is None:
        d.run_local(torch.bernoulli, (torch.zeros(1, dtype=x.dtype),), {})  # torch's dtype errors
        local = _bernoulli_of(x, x, generator).to(x.dtype)
    else:
        fill = lambda t, g: t.bernoulli_(p, generator=g)  # noqa: E731
        local = draw(x._gshape, x._split, x._counts, x._comm, x.dtype, x.device, fill, generator)
    return make_leaf(local, x._split, x._comm, x._gshape, x._counts)


_LIKE = {torch.rand_like: _uniform, torch.randn_like: _standard_normal, torch.randint_like: None}


def like(func, args, kwargs):
    """``torch.rand_like(x)``, ``randn_like``, ``randint_like(x, [low,] high)``: ``x``'s layout."""
    generator, kwargs = _pop_generator(kwargs)
    x = args[0] if args else kwargs.pop("input")
    if not isinstance(x, DistTensor):
        raise TypeError(f"{d.func_name(func)}: expected a tensor as input, got {type(x).__name__}")
    bounds = list(args[1:]) + [kwargs.pop(k) for k in ("low", "high") if k in kwargs]
    fill = _LIKE[func]
    if func is torch.randint_like:
        low, high = (0, bounds[0]) if len(bounds) == 1 else tuple(bounds[:2])
        fill = _randint_fill(low, high)
    requires_grad = kwargs.get("requires_grad", False)
    probe = _meta(x._gshape, kwargs.get("dtype") or x.dtype, requires_grad, torch.empty, x._gshape)
    local = draw(x._gshape, x._split, x._counts, x._comm, probe.dtype, kwargs.get("device") or x.device, fill, generator)
    return make_leaf(local, x._split, x._comm, x._gshape, x._counts, requires_grad)


def _normal_tensors(mean, std, generator, comm, split=None) -> DistTensor:
    """``torch.normal`` with tensor mean and/or std: ``mean + std * z`` in the broadcast layout."""
    gshape = layout.broadcast_shapes(*(tuple(d.shape_of(t)) for t in (mean, std) if isinstance(t, torch.Tensor)))
    if gshape is None:
        d.raise_global_error(torch.normal, (mean, std), {})
    dtype = (mean if isinstance(mean, torch.Tensor) else std).dtype
    d.run_local(torch.normal, tuple(torch.zeros(1, dtype=t.dtype) if isinstance(t, torch.Tensor) else t for t in (mean, std)), {})
    if isinstance(std, torch.Tensor):
        local_std = std.local if isinstance(std, DistTensor) else std
        d.agree(comm, RuntimeError("normal expects all elements of std >= 0.0")
                if local_std.numel() and bool((local_std < 0).any()) else None)
    ref = d.pick_ref([t for t in (mean, std) if isinstance(t, torch.Tensor)], gshape)
    if ref is not None:
        split, counts = ref._split + len(gshape) - len(ref._gshape), ref._counts
    else:
        split = layout.normalize_split(split, len(gshape))
        counts = None if split is None else layout.balanced_counts(gshape[split], comm.size)
    device = (mean if isinstance(mean, torch.Tensor) else std).device
    z = wrap(draw(gshape, split, counts, comm, dtype, device, _standard_normal, generator), split, comm, gshape, counts)
    with torch.no_grad():  # a sample: torch's gradients with respect to mean and std are zero too
        out = elementwise(torch.add, (elementwise(torch.mul, (z, std), {}), mean), {})
    return make_leaf(out.local.to(dtype), out._split, comm, out._gshape, out._counts)


def normal_handler(func, args, kwargs):
    """``torch.normal(mean, std)`` with a DistTensor among them."""
    generator, kwargs = _pop_generator(kwargs)
    if kwargs.get("out") is not None:
        raise NotDistributedError("torch.normal(out=...) has no distributed rule; assign the result instead")
    values = dict(zip(("mean", "std"), args), **kwargs)
    mean, std = values.get("mean", 0.0), values.get("std", 1.0)
    comm = d.common_comm([t for t in (mean, std) if isinstance(t, DistTensor)])
    return _normal_tensors(mean, std, generator, comm)


def _last_positive(rows: torch.Tensor) -> torch.Tensor:
    """Index of the last positive weight of every row (a bound for a rounded-up inverse CDF)."""
    return rows.shape[1] - 1 - (rows.flip(1) > 0).to(torch.uint8).argmax(1)


def _inverse_cdf(rows: torch.Tensor, targets: torch.Tensor, start=0.0) -> torch.Tensor:
    """For every row, the category whose cumulative weight (from ``start``) first exceeds each target."""
    out = torch.searchsorted(rows.cumsum(1) + start, targets, right=True)
    return torch.minimum(out, _last_positive(rows)[:, None])


def _multinomial_categories_split(w, num_samples, replacement, x, totals, generator) -> torch.Tensor:
    """Samples of one distribution whose categories are split: replicated indices.

    With replacement: the uniforms are replicated; the rank whose cumulative weight range
    holds ``u * total`` finds the category, one allreduce combines. Without: every rank's
    ``num_samples`` largest keys ``w / E`` and one allgather of those candidates.
    """
    comm, offset = x._comm, x.offset
    if replacement:
        u = draw((num_samples,), None, None, comm, torch.float64, x.device, _uniform, generator)
        targets = u * totals.sum()
        owner = torch.searchsorted(totals.cumsum(0), targets, right=True)
        owner = torch.minimum(owner, _last_positive(totals[None])[0])
        mine = owner == comm.rank
        out = torch.zeros(num_samples, dtype=torch.int64, device=w.device)
        start = totals[:comm.rank].sum()
        if bool(mine.any()):
            out[mine] = _inverse_cdf(w[None], targets[mine][None], start)[0] + offset
        return comm.allreduce(out, "sum")
    e = draw(x._gshape, x._split, x._counts, comm, torch.float64, x.device, _exponential, generator)
    top = torch.topk(w / e, min(num_samples, w.numel()))
    mine = torch.stack([top.values, (top.indices + offset).to(torch.float64)], 1)
    shapes = [torch.Size([min(num_samples, c), 2]) for c in x._counts]
    candidates = torch.cat(comm.allgather_list(mine, shapes))
    candidates = candidates[torch.sort(candidates[:, 1], stable=True).indices]  # ties by index, then by key
    order = torch.sort(candidates[:, 0], descending=True, stable=True).indices[:num_samples]
    return candidates[order, 1].to(torch.int64)


def _exponential(t, g):
    return t.exponential_(1, generator=g)


def multinomial(func, args, kwargs):
    """``torch.multinomial(input, num_samples, replacement)``: each distribution's samples come
    from the global stream, whatever the layout. The rows of a 2-D input stay split (split along
    the categories, they are moved to split rows first); a 1-D input may be split along its
    categories (the samples are then replicated).

    Without replacement: the ``num_samples`` largest ``w / E`` with ``E`` exponential (torch's
    own CPU algorithm); with replacement: inverse CDF of uniforms, in float64.
    """
    generator, kwargs = _pop_generator(kwargs)
    names = ("input", "num_samples", "replacement")
    values = list(args) + [kwargs.pop(k) for k in names[len(args):] if k in kwargs]
    x, num_samples, replacement = (values + [False])[:3]
    if kwargs.get("out") is not None:
        raise NotDistributedError("torch.multinomial(out=...) has no distributed rule; assign the result instead")
    gshape, ndim, comm = x._gshape, len(x._gshape), x._comm
    k = gshape[-1] if ndim else 1
    stand_in = torch.ones({1: (k,), 2: (1, k)}.get(ndim, (1,) * ndim), dtype=x.dtype)
    torch.multinomial(stand_in, num_samples, replacement)  # torch's checks of ndim, dtype and num_samples
    if ndim == 2 and x._split == 1:
        x = relayout(x, 0, layout.balanced_counts(gshape[0], comm.size))
    categories_split = ndim == 1 and x._split is not None
    w = x.local.detach().to(torch.float64)
    rows = w if ndim == 2 else w.unsqueeze(0)
    sums, positive = rows.sum(1), (rows > 0).sum(1)
    if categories_split:  # a row's sums are global
        totals = comm.allgather(sums)[:, 0]
        sums, positive = totals.sum(0, keepdim=True), comm.allreduce(positive, "sum")
    error = None
    if rows.numel() and not bool(((rows >= 0) & rows.isfinite()).all()):
        error = RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    elif sums.numel() and not bool((sums > 0).all()):
        error = RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    elif not replacement and bool((positive < num_samples).any()):
        error = RuntimeError("invalid multinomial distribution (with replacement=False, not enough non-negative "
                             "category to sample)")
    d.agree(comm, error)
    if categories_split:
        out = _multinomial_categories_split(w, num_samples, replacement, x, totals, generator)
        return make_leaf(out, None, comm, torch.Size([num_samples]), None)
    out_shape = (gshape[0], num_samples) if ndim == 2 else (num_samples,)
    split, counts = (0, x._counts) if ndim == 2 and x._split == 0 else (None, None)
    if replacement:
        u = draw(out_shape, split, counts, comm, torch.float64, x.device, _uniform, generator).view(rows.shape[0], -1)
        out = _inverse_cdf(rows, u * sums[:, None])
    else:
        e = draw(gshape, split, counts, comm, torch.float64, x.device, _exponential, generator).view(rows.shape)
        out = torch.topk(rows / e, num_samples, dim=1).indices
    return make_leaf(out.view(layout.local_shape(out_shape, split, None if split is None else counts[comm.rank])),
                     split, comm, torch.Size(out_shape), counts)


IN_PLACE = ["uniform_", "normal_", "random_", "bernoulli_", "exponential_", "geometric_", "cauchy_", "log_normal_"]
d.register([getattr(torch.Tensor, name) for name in IN_PLACE], fill_in_place)
d.register([torch.bernoulli, torch.Tensor.bernoulli], bernoulli)
d.register(list(_LIKE), like)
d.register([torch.normal], normal_handler)
d.register([torch.multinomial, torch.Tensor.multinomial], multinomial)
