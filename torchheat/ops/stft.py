"""torch.stft and torch.istft on split tensors.

* **Batch axis split** (a ``(B, L)`` signal or a ``(B, freq, frames)`` spectrum split along
  ``B``): each rank runs torch's transform on its own rows, the window replicated; no
  communication.
* **stft, time axis split**: the result is split along its frame axis in the balanced
  layout. Frame ``f`` covers the (centre-padded) samples ``[f * hop, f * hop + n_fft)``, so
  each rank fetches the samples of its frames with :func:`torchheat.ops.halo.rows`: about
  its share plus a halo of ``n_fft - hop`` samples from the next rank (one exchange). The
  centre padding (``reflect``, ``replicate``, ``circular``) reads up to ``n_fft // 2``
  samples near the signal's ends from their owners (two more exchanges; ``constant`` needs
  none). torch's stft then runs on the chunk with ``center=False``.
* **istft, frame axis split** (a spectrum split along its frequency axis moves to its frame
  axis first): the signal comes out split along time in the balanced layout. Each rank
  fetches the frames that overlap its samples (its own plus a halo of about
  ``n_fft / hop`` frames from its neighbours, one exchange), inverts, windows and
  overlap-adds them, and divides by the window envelope of its samples.

torch's argument checks run on stand-ins before anything moves; the envelope check
(``window overlap add min``) depends only on the replicated window and the shapes, so every
rank evaluates it alike on the few envelope values that occur. Gradients (the signal's and
the window's) follow from differentiable exchanges and plain torch ops.

Examples
--------
>>> import torch, torchheat as th
>>> t, w = torch.sin(torch.arange(200, dtype=torch.float64) ** 1.5), torch.hann_window(32, dtype=torch.float64)
>>> spec = torch.stft(th.distribute(t, split=0), 32, 8, window=w, return_complex=True)
>>> spec.split_dim, bool(torch.allclose(spec.full(), torch.stft(t, 32, 8, window=w, return_complex=True)))
(1, True)
>>> back = torch.istft(spec, 32, 8, window=w, length=200)
>>> back.split_dim, bool(torch.allclose(back.full(), t))
(0, True)
"""
from __future__ import annotations

import inspect

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, relayout, wrap
from .halo import rows
from .shape import global_meta, is_split, split_rule

STFT_ARGS = tuple(inspect.signature(torch.stft).parameters)  # input, n_fft, hop_length, ..., return_complex
ISTFT_ARGS = ("input", "n_fft", "hop_length", "win_length", "window", "center", "normalized", "onesided", "length",
              "return_complex")
ISTFT_DEFAULTS = dict(hop_length=None, win_length=None, window=None, center=True, normalized=False, onesided=None,
                      length=None, return_complex=False)


def _bind(names, defaults, args, kwargs) -> dict:
    given = dict(defaults, **dict(zip(names, args)), **kwargs)
    given["hop_length"] = given["hop_length"] or given["n_fft"] // 4
    given["win_length"] = given["win_length"] or given["n_fft"]
    return given


def _window(a: dict, comm, dtype) -> torch.Tensor:
    """The replicated window as a plain tensor entered for a gradient summed over ranks."""
    w = a["window"]
    if isinstance(w, DistTensor):
        w = relayout(w, None, None).local if w._split is not None else w.local
    if w is None:
        return torch.ones(a["win_length"], dtype=dtype)
    return cf.enter_replicated(w, comm)


def _empty_like_result(src: torch.Tensor, window: torch.Tensor, shape, dtype) -> torch.Tensor:
    """An empty chunk of the result that keeps ``src`` and the window in this rank's graph
    (so that their exchanges' backward runs on every rank)."""
    return src.reshape(shape).to(dtype) + window.abs().sum().to(dtype) * 0


# -- stft ---------------------------------------------------------------------------------------
def _source(i: int, n: int, pad: int, mode: str):
    """The sample of the unpadded signal (length ``n``) at position ``i`` of the padded one,
    and which part it lies in (0: inside, 1: left padding, 2: right padding); None for zeros."""
    if pad <= i < pad + n:
        return 0, i - pad
    if mode == "constant":
        return None
    j = i - pad
    if mode == "reflect":
        j = -j if j < 0 else 2 * (n - 1) - j
    elif mode == "replicate":
        j = min(max(j, 0), n - 1)
    else:  # circular
        j %= n
    return (1 if i < pad else 2), j


def _part_windows(lo: int, hi: int, n: int, pad: int, mode: str):
    """For padded positions ``[lo, hi)``: the window ``[a, b)`` of unpadded samples each part reads."""
    bounds = [(pad, pad + n), (0, pad), (pad + n, hi if hi > pad + n else pad + n)]
    windows = []
    for part, (p0, p1) in enumerate(bounds):
        a, b = max(lo, p0), min(hi, p1)
        if part and mode == "constant" or a >= b:
            windows.append((0, 0))
            continue
        ends = [_source(a, n, pad, mode)[1], _source(b - 1, n, pad, mode)[1]]
        windows.append((min(ends), max(ends) + 1))
    return windows


def _padded_samples(x: DistTensor, want, pad: int, mode: str) -> torch.Tensor:
    """Each rank r's padded samples ``want[r]`` along the split axis of ``x`` (one exchange
    for the inside of the signal, one per padded end unless the padding is constant)."""
    axis, n = x._split, x._gshape[x._split]
    parts = [_part_windows(a, b, n, pad, mode) for a, b in want]
    used = range(1 if pad == 0 or mode == "constant" else 3)
    pieces = [rows(x, [w[k] for w in parts]) for k in used]
    lo, hi = want[x._comm.rank]
    mine = parts[x._comm.rank]
    if pad == 0 or hi <= lo:
        return pieces[0]
    base = layout.offsets(tuple(p.shape[axis] for p in pieces))
    zero = sum(p.shape[axis] for p in pieces)
    index = []
    for i in range(lo, hi):
        src = _source(i, n, pad, mode)
        index.append(zero if src is None else base[src[0]] + src[1] - mine[src[0]][0])
    shape = list(pieces[0].shape)
    shape[axis] = 1
    samples = torch.cat(pieces + [pieces[0].new_zeros(shape)], axis)
    return samples.index_select(axis, torch.tensor(index, device=samples.device))


@split_rule(torch.stft, torch.Tensor.stft)
def stft(func, args, kwargs):
    """``torch.stft`` of a split signal (batch axis: local; time axis: frames split balanced)."""
    a = _bind(STFT_ARGS, {k: p.default for k, p in inspect.signature(torch.stft).parameters.items()}, args, kwargs)
    x = a["input"]
    meta = global_meta(torch.stft, (), dict(a))
    comm = d.common_comm([t for t in (x, a["window"]) if isinstance(t, DistTensor)])
    real_dtype = x.dtype.to_real()
    window = _window(a, comm, real_dtype) if a["window"] is not None else None
    local_args = dict(a, window=window)
    del local_args["input"]
    x_split = x._split if isinstance(x, DistTensor) else None
    if x_split is None:  # only the window was split
        local = x.local if isinstance(x, DistTensor) else x
        return d.wrap_replicated(torch.stft(local, **local_args), comm)
    keep = window if window is not None else torch.zeros(())
    if x_split == 0 and x.dim() == 2:  # the batch axis
        count = x._counts[comm.rank]
        shape = layout.local_shape(meta.shape, 0, count)
        out = torch.stft(x.local, **local_args) if count else _empty_like_result(x.local, keep, shape, meta.dtype)
        return wrap(out, 0, comm, meta.shape, x._counts)
    n_fft, hop = a["n_fft"], a["hop_length"]
    frame_axis = meta.dim() - 1 if a["return_complex"] is not False else meta.dim() - 2
    counts = layout.balanced_counts(meta.shape[frame_axis], comm.size)
    want = [(o * hop, (o + c - 1) * hop + n_fft) if c else (0, 0) for o, c in zip(layout.offsets(counts), counts)]
    pad = n_fft // 2 if a["center"] else 0
    samples = _padded_samples(x, want, pad, a["pad_mode"])
    if counts[comm.rank]:
        out = torch.stft(samples, **dict(local_args, center=False))
    else:
        out = _empty_like_result(samples, keep, layout.local_shape(meta.shape, frame_axis, 0), meta.dtype)
    return wrap(out, frame_axis, comm, meta.shape, counts)


# -- istft --------------------------------------------------------------------------------------
def _full_window(a: dict, w: torch.Tensor) -> torch.Tensor:
    """The window zero-padded (centred) to ``n_fft``, as torch's istft uses it."""
    left = (a["n_fft"] - w.shape[0]) // 2
    return torch.nn.functional.pad(w, (left, a["n_fft"] - w.shape[0] - left)) if w.shape[0] != a["n_fft"] else w


def _envelope_fails(w: torch.Tensor, n_fft: int, hop: int, frames: int, lo: int, hi: int) -> bool:
    """Whether the overlap-added squared window falls below 1e-11 in ``[lo, hi)``. Only the
    first and last ``2 (n_fft + hop)`` positions are evaluated: in between the envelope is
    periodic with period ``hop`` and its values already occur near the start."""
    span = 2 * (n_fft + hop)
    t = torch.unique(torch.cat([torch.arange(lo, min(hi, lo + span)), torch.arange(max(lo, hi - span), hi)]))
    f = t[:, None] // hop - torch.arange(-(-n_fft // hop) + 1)
    k = t[:, None] - f * hop
    inside = (f >= 0) & (f < frames) & (k >= 0) & (k < n_fft)
    w2 = w.detach().pow(2)
    env = torch.where(inside, w2[k.clamp(0, n_fft - 1)], torch.zeros((), dtype=w2.dtype)).sum(1)
    return bool((env.abs() < 1e-11).any())


def _check_istft(func, args, kwargs, a: dict, shape, window, bounds) -> None:
    """torch's errors for the global call: its argument checks on a stand-in with few frames,
    and its envelope check evaluated here (see :func:`_envelope_fails`)."""
    x = a["input"]
    frames = shape[-1] if len(shape) else 0
    few = min(frames, 2 * (-(-a["n_fft"] // max(a["hop_length"], 1))) + 2)
    small = tuple(min(s, 1) for s in shape[:-2]) + tuple(shape[-2:-1]) + (few,)
    given = dict(a, length=None)
    del given["input"]
    try:
        torch.istft(torch.zeros(small, dtype=x.dtype), **dict(given, window=window))
    except RuntimeError as err:
        if "window overlap add" not in str(err):
            d.raise_global_error(func, args, kwargs)
    lo, hi = bounds
    if hi <= lo or not _envelope_fails(_full_window(a, window if window is not None else torch.ones(a["win_length"])),
                                       a["n_fft"], a["hop_length"], frames, lo, hi):
        if hi <= lo:
            d.raise_global_error(func, args, kwargs)
        return
    if window is None:
        d.raise_global_error(func, args, kwargs)
    try:  # torch's message, from a stand-in whose zero window always fails the check
        torch.istft(torch.zeros(small, dtype=x.dtype), **dict(given, window=torch.zeros_like(window)))
    except RuntimeError as err:
        message = str(err).replace(f"[{', '.join(map(str, small))}]", f"[{', '.join(map(str, shape))}]", 1)
        raise RuntimeError(message) from None


def _overlap_add(frames: torch.Tensor, length: int, hop: int) -> torch.Tensor:
    """``sum_f frames[..., f, :]`` placed at ``f * hop``: the adjoint of ``unfold`` (torch's own)."""
    batch = frames.shape[:-2]
    flat = frames.reshape((-1,) + tuple(frames.shape[-2:]))
    out = torch.ops.aten.unfold_backward(flat, [flat.shape[0], length], 1, frames.shape[-1], hop)
    return out.reshape(tuple(batch) + (length,))


@split_rule(torch.istft, torch.Tensor.istft)
def istft(func, args, kwargs):
    """``torch.istft`` of a split spectrum (batch axis: local; frequency or frame axis: the
    signal split along time, balanced)."""
    a = _bind(ISTFT_ARGS, ISTFT_DEFAULTS, args, kwargs)
    x = a["input"]
    comm = d.common_comm([t for t in (x, a["window"]) if isinstance(t, DistTensor)])
    shape = tuple(d.shape_of(x))
    if not isinstance(x, torch.Tensor) or not x.is_complex() or len(shape) not in (2, 3):
        d.raise_global_error(func, args, kwargs)
    n_fft, hop, frames = a["n_fft"], a["hop_length"], shape[-1]
    real_dtype = x.dtype.to_real()
    window = _window(a, comm, real_dtype) if a["window"] is not None else None
    expected = n_fft + hop * (frames - 1)
    start = n_fft // 2 if a["center"] else 0
    if a["length"] is not None:
        end = start + a["length"]
    else:
        end = expected - n_fft // 2 if a["center"] else expected
    _check_istft(func, args, kwargs, a, shape, window, (start, min(end, expected)))
    out_len = max(end - start, 0)
    gshape = torch.Size(shape[:-2] + (out_len,))
    dtype = x.dtype if a["return_complex"] else real_dtype
    local_args = dict(a, window=window)
    del local_args["input"]
    keep = window if window is not None else torch.zeros(())
    if not is_split(x):  # only the window was split
        return d.wrap_replicated(torch.istft(x.local if isinstance(x, DistTensor) else x, **local_args), comm)
    if x._split == 0 and len(shape) == 3:  # the batch axis
        count = x._counts[comm.rank]
        out = torch.istft(x.local, **local_args) if count else \
            _empty_like_result(x.local, keep, (0, out_len), dtype)
        return wrap(out, 0, comm, gshape, x._counts)
    fa = len(shape) - 1
    x = d.to_layout(x, fa, x._counts if x._split == fa else layout.balanced_counts(frames, comm.size))
    counts = layout.balanced_counts(out_len, comm.size)
    spans, want = [], []
    for o, c in zip(layout.offsets(counts), counts):
        u0, u1 = start + o, min(start + o + c, expected)  # this rank's samples that frames reach
        spans.append((u0, max(u0, u1)))
        want.append((max(0, (u0 - n_fft) // hop + 1), min(frames, -(-u1 // hop))) if u1 > u0 else (0, 0))
    spectrum = rows(x, want)
    (u0, u1), (f0, f1) = spans[comm.rank], want[comm.rank]
    if f1 > f0:
        norm = "ortho" if a["normalized"] else "backward"
        if a["return_complex"]:
            signal = torch.fft.ifft(spectrum, dim=-2, norm=norm)
        else:
            signal = torch.fft.irfft(spectrum.narrow(-2, 0, n_fft // 2 + 1), n=n_fft, dim=-2, norm=norm)
        w = _full_window(a, window if window is not None else torch.ones(a["win_length"], dtype=real_dtype))
        span = n_fft + hop * (f1 - f0 - 1)
        y = _overlap_add((signal * w[:, None]).transpose(-1, -2), span, hop)
        envelope = _overlap_add(w.pow(2).expand(f1 - f0, n_fft), span, hop)
        lo = u0 - f0 * hop
        y = y.narrow(-1, lo, u1 - u0) / envelope.narrow(-1, lo, u1 - u0)
    else:
        y = _empty_like_result(spectrum, keep, shape[:-2] + (0,), dtype)
    tail = counts[comm.rank] - (u1 - u0)  # samples past the last frame (length beyond it): zeros
    if tail:
        y = torch.nn.functional.pad(y, (0, tail))
    return wrap(y, len(shape) - 2, comm, gshape, counts)
