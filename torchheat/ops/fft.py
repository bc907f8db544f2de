"""torch.fft on split tensors: local, slab/pencil, and the distributed four-step FFT.

Every transform (``fft, ifft, rfft, irfft, hfft, ihfft`` and their ``2``/``n`` forms) is
first checked by torch on meta stand-ins of the global shapes, then normalized to a kind,
the transformed axes, their signal lengths and the norm. How it runs depends on the split:

* the split axis is not transformed: each rank transforms its own chunk (no communication);
* the split axis is transformed and another axis holds at least one row per rank: a slab
  (or pencil) decomposition. The split moves to that axis by one all-to-all, the chunk is
  transformed locally, and one all-to-all moves the split back to the caller's axis. When
  every axis is transformed, the transforms over the other axes run before the first (or
  after the last) exchange, so two exchanges still suffice; a real-to-complex step comes
  first and a complex-to-real step last, as torch orders them. The first exchange works on
  the tensor permuted so that the transformed axes come last: it delivers chunks in which
  every signal is contiguous, and the exchange back packs the result from that memory order;
* otherwise (a 1-D tensor, or only short other axes) the split axis is transformed by the
  four-step FFT: ``n = n1 * n2``, the signal seen as an ``n2 x n1`` matrix, transformed along
  its columns, multiplied by twiddle factors, transformed along its rows and transposed:
  three all-to-alls, each of which leaves the axis transformed next last (contiguous) in
  the chunk; no gather. An exchange of an intermediate (a transform's fresh result) receives
  into that intermediate's memory rather than a fresh chunk. A length without a factorization that keeps every rank
  busy (a prime, say) goes through Bluestein's chirp-z algorithm: a convolution of
  power-of-two length done with the four-step FFT. Real-to-complex transforms take the
  first ``n // 2 + 1`` bins of the complex transform; complex-to-real ones rebuild the
  Hermitian half before an inverse transform (a flip and a concatenation, one exchange
  each). ``n`` pads with zeros (split alike) or keeps the leading rows.

``fftshift``/``ifftshift`` are a roll (one exchange along the split axis). Everything is
built from differentiable exchanges, so gradients are torch's.

Examples
--------
>>> import torch, torchheat as th
>>> t = torch.randn(6, 4, dtype=torch.complex128)
>>> x = th.distribute(t, split=0)
>>> y = torch.fft.fft2(x)
>>> y.split_dim, bool(torch.allclose(y.full(), torch.fft.fft2(t)))
(0, True)
>>> v = th.distribute(torch.arange(12.), split=0)
>>> bool(torch.allclose(torch.fft.rfft(v).full(), torch.fft.rfft(torch.arange(12.))))
True
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Tuple

import torch

from .. import dispatch as d, layout
from ..tensor import DistTensor, wrap
from .pointwise import write_out
from .shape import call, global_meta, rows, split_rule

F = torch.fft
# kind -> the n-D torch function, the complex transform of the same direction, and where
# the real step is (0: none, 1: first, on the last axis; -1: last, on the last axis).
KINDS = {
    "fft": (F.fftn, "fft", 0), "ifft": (F.ifftn, "ifft", 0),
    "rfft": (F.rfftn, "fft", 1), "ihfft": (F.ihfftn, "ifft", 1),
    "irfft": (F.irfftn, "ifft", -1), "hfft": (F.hfftn, "fft", -1),
}
FUNCS = {f: (kind, rank) for kind in KINDS for f, rank in (
    (getattr(F, kind), 1), (getattr(F, kind + "2"), 2), (getattr(F, kind + "n"), None))}
DUAL = {None: "forward", "backward": "forward", "forward": "backward", "ortho": "ortho"}


def parse(func, args, kwargs, ndim: int, shape):
    """``(kind, dims, lengths, norm)`` of a transform call already checked by torch: the
    transformed axes in torch's order (the real step on the last), their signal lengths."""
    kind, rank = FUNCS[func]
    names = ("n" if rank == 1 else "s", "dim", "norm")
    given = dict(zip(names, args[1:]), **{k: v for k, v in kwargs.items() if k in names})
    default_dim = -1 if rank == 1 else (-2, -1) if rank == 2 else None
    size, dim, norm = given.get(names[0]), given.get("dim", default_dim), given.get("norm")
    if rank == 1:
        size = None if size is None else (size,)
    if isinstance(dim, int):
        dim = (dim,)
    elif dim is None:
        dim = range(ndim - len(size), ndim) if size is not None else range(ndim)
    dims = tuple(layout.normalize_axis(a, ndim) for a in dim)
    size = (-1,) * len(dims) if size is None else tuple(size)
    lengths = [shape[a] if n == -1 or n is None else n for a, n in zip(dims, size)]
    if KINDS[kind][2] == -1 and size[-1] in (-1, None):
        lengths[-1] = 2 * (shape[dims[-1]] - 1)
    return kind, dims, tuple(lengths), norm


def _out_length(kind: str, n: int, last: bool) -> int:
    real = KINDS[kind][2]
    return n // 2 + 1 if real == 1 and last else n


def local_transform(x: DistTensor, kind: str, dims: Sequence[int], lengths: Sequence[int], norm) -> DistTensor:
    """Transform ``x`` over ``dims`` (not its split axis) on each rank's chunk."""
    if not dims:
        return x
    gshape = list(x._gshape)
    for i, (a, n) in enumerate(zip(dims, lengths)):
        gshape[a] = _out_length(kind, n, i == len(dims) - 1)
    counts = x._counts
    if x._split in dims:  # one rank holds every row (see transform)
        counts = tuple(gshape[x._split] if c == x._gshape[x._split] else 0 for c in counts)
    fn = KINDS[kind][0]
    local = x.local
    if local.numel():
        out = fn(local, s=tuple(lengths), dim=tuple(dims), norm=norm).resolve_conj()  # (torch's may be a lazy conj)
    else:  # torch's CPU kernels refuse empty batches; the graph still reaches the chunk
        stand_in = torch.empty(x._gshape, dtype=local.dtype, device="meta")
        dtype = fn(stand_in, s=tuple(lengths), dim=tuple(dims), norm=norm).dtype
        count = None if x._split is None else counts[x._comm.rank]
        out = local.reshape(layout.local_shape(gshape, x._split, count)).to(dtype)
    return wrap(out, x._split, x._comm, torch.Size(gshape), counts)


def _move(x: DistTensor, axis: int, counts=None, consume: bool = False) -> DistTensor:
    """``x`` split along ``axis`` in ``counts`` (balanced by default): one exchange, none if it
    already is (``consume``: ``x`` is an intermediate whose memory the result may take)."""
    return d.to_layout(x, axis, counts or layout.balanced_counts(x._gshape[axis], x._comm.size), consume)


def slab(x: DistTensor, axis: int, kind: str, dims: Sequence[int], lengths: Sequence[int], norm,
         consume: bool = False) -> DistTensor:
    """The transform over ``dims`` of ``x`` moved to split ``axis`` (not in ``dims``) by one
    exchange, which delivers the chunk with ``dims`` as its last, contiguous axes: the local
    transform then reads unit-stride signals, and its result leaves packed in its own memory order."""
    real = KINDS[kind][2]
    last = sorted(dims) if real == 0 else sorted(dims[:-1]) + [dims[-1]]  # the real step stays last
    order = [a for a in range(x.dim()) if a not in dims] + last
    if order == list(range(x.dim())):
        return local_transform(_move(x, axis, consume=consume), kind, dims, lengths, norm)
    y = _move(call(torch.permute, x, order), order.index(axis), consume=consume)
    y = local_transform(y, kind, [order.index(a) for a in dims], lengths, norm)
    return call(torch.permute, y, [order.index(a) for a in range(x.dim())])


def _back(y: DistTensor, x: DistTensor) -> DistTensor:
    """``y`` (a transform's fresh result, whose memory the exchange may reuse) split along ``x``'s
    axis again, in ``x``'s counts where the length is the same."""
    s = x._split
    return _move(y, s, x._counts if y._gshape[s] == x._gshape[s] else None, consume=True)


def transform(x: DistTensor, kind: str, dims: Tuple[int, ...], lengths: Tuple[int, ...], norm) -> DistTensor:
    """The transform of ``x`` over ``dims``, split along ``x``'s axis (fewest exchanges)."""
    s, p, shape = x._split, x._comm.size, x._gshape
    if s not in dims:
        return local_transform(x, kind, dims, lengths, norm)
    if max(x._counts) == shape[s]:  # one rank holds every row (always so on one process)
        return local_transform(x, kind, dims, lengths, norm)
    complex_kind, real, last = KINDS[kind][1], KINDS[kind][2], dims[-1]
    free = [a for a in range(len(shape)) if a not in dims and shape[a] >= p]
    if free:  # slab: one exchange to a free axis and one back
        f = max(free, key=lambda a: shape[a])
        return _back(slab(x, f, kind, dims, lengths, norm), x)

    def phase(t, axes, at=None, fresh=False):  # the transforms over ``axes`` (in torch's order), after a move to split ``at``
        pick = [i for i, a in enumerate(dims) if a in axes]
        kind_here = kind if last in axes else complex_kind
        here = (kind_here, [dims[i] for i in pick], [lengths[i] for i in pick], norm)
        return local_transform(t, *here) if at is None else slab(t, at, *here, consume=fresh)

    rest = [a for a in dims if a != s]
    out_len = {a: _out_length(kind, n, a == last) for a, n in zip(dims, lengths)}
    # (i) the other axes first, then the split axis with the split on one of them
    if real == 0 or (real == 1) == (s != last):
        v = [a for a in rest if out_len[a] >= p]
        if v:
            y = phase(x, rest)
            y = phase(y, [s], at=max(v, key=out_len.get), fresh=True)
            return _back(y, x)
    # (ii) the split moves to another axis a first; a is transformed last
    a = [b for b in rest if shape[b] >= p and (real == 0 or (real == -1) == (b == last))]
    if a:
        a = max(a, key=lambda b: shape[b])
        y = _back(phase(x, [b for b in dims if b != a], at=a), x)
        return phase(y, [a])
    # no other axis is long enough: the split axis by the four-step FFT, the others locally
    i = dims.index(s)
    first_split = real == 1 and s == last or real == -1 and s != last
    split_kind = kind if s == last else complex_kind
    if first_split:
        return phase(split_axis(x, split_kind, lengths[i], norm), rest)
    return split_axis(phase(x, rest), split_kind, lengths[i], norm)


# -- the split axis itself: the four-step FFT ---------------------------------------------------
def _resize(x: DistTensor, n: int) -> DistTensor:
    """``x`` cut to, or zero-padded to, ``n`` rows along its split axis (padding split alike)."""
    s, length = x._split, x._gshape[x._split]
    if n <= length:
        return rows(x, 0, n) if n < length else x
    from .creation import zeros

    shape = list(x._gshape)
    shape[s] = n - length
    return call(torch.cat, [x, zeros(*shape, split=s, dtype=x.dtype, device=x.device, comm=x._comm)], s)


def split_axis(x: DistTensor, kind: str, n: int, norm) -> DistTensor:
    """The 1-D transform ``kind`` of signal length ``n`` along ``x``'s split axis."""
    s = x._split
    if kind in ("hfft", "ihfft"):  # hfft(x) = irfft(conj x) and ihfft(x) = conj(rfft(x)), norms swapped
        if kind == "hfft":
            return split_axis(call(torch.conj_physical, x), "irfft", n, DUAL[norm])
        return call(torch.conj_physical, split_axis(x, "rfft", n, DUAL[norm]))
    cdtype = x.dtype if x.is_complex() else torch.complex128 if x.dtype == torch.float64 else torch.complex64
    if x.dtype != cdtype:
        x = call(torch.Tensor.to, x, cdtype)
    if kind == "irfft":  # rebuild the Hermitian spectrum: X[k] = conj(X[n - k]) for k > n // 2
        half = _resize(x, n // 2 + 1)
        tail = call(torch.conj_physical, call(torch.flip, rows(half, 1, n - n // 2), (s,)))
        full = call(torch.cat, [half, tail], s)
        return call(torch.clone, call(torch.real, four_step(full, True, norm, full._counts)))
    signal = _resize(x, n)
    if kind == "rfft":
        spectrum = four_step(signal, False, norm)
        return _move(rows(spectrum, 0, n // 2 + 1), s)
    counts = x._counts if n == x._gshape[s] else layout.balanced_counts(n, x._comm.size)
    return four_step(signal, kind == "ifft", norm, counts)


@functools.lru_cache(maxsize=256)
def factors(n: int, p: int) -> Optional[Tuple[int, int]]:
    """``(n1, n2)`` with ``n1 * n2 = n``, ``n1 <= n2`` as close as possible, both at least
    ``p`` (every rank holds rows in both passes); None if there is none.

    >>> factors(24, 2), factors(13, 2)
    ((4, 6), None)
    """
    n1 = next(a for a in range(math.isqrt(n), 0, -1) if n % a == 0)
    return (n1, n // n1) if n1 >= p else None


def _phase(index: torch.Tensor, period: int, inverse: bool, dtype) -> torch.Tensor:
    """``exp(-+ 2 pi i index / period)``, the index reduced modulo ``period`` in integer
    arithmetic first (accurate at any length), in ``dtype``."""
    angle = (index % period).to(torch.float64) * ((1 if inverse else -1) * 2 * math.pi / period)
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def four_step(x: DistTensor, inverse: bool, norm, counts=None) -> DistTensor:
    """The DFT of ``x`` (complex) along its split axis, in ``counts`` along that axis
    (default: ``x``'s own). Batched over the other axes."""
    s, comm, n = x._split, x._comm, x._gshape[x._split]
    counts = counts or x._counts
    if max(x._counts) == n:
        return _move(local_transform(x, "ifft" if inverse else "fft", (s,), (n,), norm), s, counts, consume=True)
    nf = factors(n, comm.size)
    if nf is None:
        return _bluestein(x, inverse, norm, counts)
    n1, n2 = nf
    y = call(torch.movedim, x, s, -1)
    col = y.dim()  # the j1 axis of the matrix; j2 is the one before
    batch = tuple(y._gshape[:-1])
    if any(c % n1 for c in y._counts):  # whole rows of the n2 x n1 matrix on each rank (a small exchange)
        y = _move(y, col - 1, tuple(c * n1 for c in layout.balanced_counts(n2, comm.size)))
    # Every exchange moves the split off the transposed pair of matrix axes, so each local
    # transform runs along the last, contiguous axis of its chunk.
    fn = F.ifft if inverse else F.fft
    a = call(torch.reshape, y, batch + (n2, n1))  # a[j2, j1] = x[j1 + n1 * j2], split on j2
    a = _move(call(torch.transpose, a, -1, -2), col - 1)  # a[j1, j2], split on j1
    twiddle = _twiddles(n, n2, layout.offsets(a._counts)[comm.rank], a._counts[comm.rank], inverse, a.dtype, a.device)
    b = _chunk_fft(a, fn, norm, twiddle)  # b[j1, k2], twiddled
    c = _chunk_fft(_move(call(torch.transpose, b, -1, -2), col - 1, consume=True), fn, norm)  # c[k2, k1] = X[n2 * k1 + k2]
    c = _move(call(torch.transpose, c, -1, -2), col - 1, consume=True)  # c[k1, k2], split on k1
    flat = call(torch.reshape, c, batch + (n,))
    return call(torch.movedim, _move(flat, col - 1, counts, consume=True), -1, s)


@functools.lru_cache(maxsize=8)
def _twiddles(n: int, n2: int, lo: int, count: int, inverse: bool, dtype, device) -> torch.Tensor:
    """``w[j1, k2] = exp(-+ 2 pi i j1 k2 / n)`` for this rank's rows ``j1`` in ``[lo, lo + count)``
    (cached: repeated transforms of one length reuse them)."""
    j1, k2 = torch.arange(lo, lo + count, device=device), torch.arange(n2, device=device)
    return _phase(j1[:, None] * k2, n, inverse, dtype)


def _chunk_fft(x: DistTensor, fn, norm, twiddle=None) -> DistTensor:
    """The 1-D transforms along the chunks' last axis, times ``twiddle`` if given."""
    local = x.local
    out = fn(local, dim=-1, norm=norm) if local.numel() else local.clone()
    if twiddle is not None:
        out.mul_(twiddle)  # in place: the transform's output is fresh and its backward keeps none of it
    return wrap(out, x._split, x._comm, x._gshape, x._counts)


def _bluestein(x: DistTensor, inverse: bool, norm, counts) -> DistTensor:
    """Bluestein's algorithm: the length-n DFT as a circular convolution of length m (a
    power of two with a good four-step factorization), with ``jk = (j^2 + k^2 - (k-j)^2) / 2``."""
    from .creation import zeros

    s, comm, n = x._split, x._comm, x._gshape[x._split]
    m = 1 << max(2 * n - 2, 2 * comm.size ** 2).bit_length()

    def chirp(t: DistTensor, conj: bool = False) -> torch.Tensor:  # w[j] = exp(-+ pi i j^2 / n) on t's rows
        j = torch.arange(t.offset, t.offset + t._counts[comm.rank], device=t.device)
        w = _phase(j * j, 2 * n, inverse, t.dtype)
        return (w.conj() if conj else w).reshape((-1,) + (1,) * (t.dim() - 1 - s))

    a = wrap(x.local * chirp(x), s, comm, x._gshape, x._counts)
    a = call(torch.movedim, _resize(a, m), s, -1)
    k = torch.arange(a.offset, a.offset + a._counts[comm.rank], device=a.device)
    lag = torch.minimum(k, m - k)  # the chirp at lags -(n-1) .. n-1, wrapped around
    kernel = torch.where(lag < n, _phase(lag * lag, 2 * n, inverse, a.dtype).conj(), 0)
    b = wrap(kernel, 0, comm, torch.Size([m]), a._counts)
    spectrum = call(torch.mul, four_step(a, False, None), four_step(b, False, None))
    conv = call(torch.movedim, four_step(spectrum, True, None), -1, s)
    out = rows(conv, 0, n)
    norm = norm or "backward"
    scale = 1 / math.sqrt(n) if norm == "ortho" else 1 / n if inverse == (norm == "backward") else 1
    out = _move(out, s, counts)
    return wrap(out.local * (chirp(out) * scale), s, comm, out._gshape, out._counts)


# -- the handlers ---------------------------------------------------------------------------------
def fft(func, args, kwargs):
    """Every ``torch.fft`` transform of a DistTensor, in the caller's split."""
    out = kwargs.pop("out", None)
    x = args[0]
    meta = global_meta(func, args, kwargs)
    if not isinstance(x, DistTensor) or x._split is None:  # (torch's result may be a lazy conjugate: resolved)
        comm = x._comm if isinstance(x, DistTensor) else out._comm
        local = d.run_local(func, (x.local if isinstance(x, DistTensor) else x,) + tuple(args[1:]), kwargs)
        result = d.wrap_replicated(local.resolve_conj(), comm)
    elif x._gshape.numel() == 0:  # torch's CPU kernels on an empty input: its result (zeros) or its error
        try:
            zeros = d.run_local(func, (torch.zeros(x._gshape, dtype=x.dtype),) + tuple(args[1:]), kwargs)
        except Exception as err:
            raise err.with_traceback(None) from None
        zeros = zeros + x.local.sum().abs() * 0  # (keeps x in the graph)
        result = _move(wrap(zeros, None, x._comm, meta.shape), x._split)
    else:
        result = transform(x, *parse(func, args, kwargs, x.dim(), x._gshape))
    if out is not None:
        return write_out(out, result, func, (args, kwargs))
    return result


d.register(FUNCS, fft)


@split_rule(F.fftshift, F.ifftshift)
def fftshift(func, args, kwargs):
    """``fftshift``/``ifftshift``: a roll by half of each axis (one exchange along the split axis)."""
    x = args[0]
    global_meta(func, args, kwargs)
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    ndim = len(x._gshape)
    dims = tuple(range(ndim)) if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
    dims = tuple(layout.normalize_axis(a, ndim) for a in dims)
    sign = 1 if func is F.fftshift else -1
    return call(torch.roll, x, tuple(sign * (x._gshape[a] // 2) for a in dims), dims)
