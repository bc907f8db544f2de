"""How a global tensor is chunked over ranks, and how chunks move between layouts.

Pure functions of shapes and counts: nothing here communicates. Results are cached,
so a plan is computed once per (shape, layout) and reused.

Examples
--------
>>> balanced_counts(50, 4)
(13, 13, 12, 12)
>>> offsets((13, 13, 12, 12))
(0, 13, 26, 38)
"""
from __future__ import annotations

import functools
import itertools
from typing import Optional, Sequence, Tuple

import torch

Counts = Tuple[int, ...]
# A narrow spec: ((axis, start, length), ...) applied one after another; () is the whole tensor.
Narrow = Tuple[Tuple[int, int, int], ...]


@functools.lru_cache(maxsize=4096)
def balanced_counts(n: int, p: int) -> Counts:
    """Rows per rank of the balanced layout: rank r gets ``n // p + (r < n % p)``.

    >>> balanced_counts(5, 3)
    (2, 2, 1)
    """
    return tuple(n // p + (r < n % p) for r in range(p))


@functools.lru_cache(maxsize=4096)
def offsets(counts: Counts) -> Counts:
    """Global index of the first row of every rank's chunk.

    >>> offsets((2, 0, 3))
    (0, 2, 2)
    """
    return tuple(itertools.accumulate(counts, initial=0))[:-1]


def normalize_axis(axis: int, ndim: int, name: str = "dim") -> int:
    """Map a possibly negative axis into ``[0, ndim)``, raising torch's IndexError otherwise.

    >>> normalize_axis(-1, 3)
    2
    """
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__} {axis!r}")
    lo, hi = (-ndim, ndim - 1) if ndim > 0 else (-1, 0)
    if not lo <= axis <= hi:
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{lo}, {hi}], but got {axis})"
            f" for {name} of a tensor with {ndim} dimensions"
        )
    return axis % ndim if ndim > 0 else 0


def normalize_split(split: Optional[int], ndim: int) -> Optional[int]:
    """Validate a split axis: None, or an int axis of a tensor with ``ndim`` dims.

    >>> normalize_split(-1, 2)
    1
    """
    if split is None:
        return None
    if not isinstance(split, int) or isinstance(split, bool):
        raise TypeError(f"split must be an int axis or None, got {type(split).__name__} {split!r}")
    if not -ndim <= split < ndim:
        expected = f"None or an axis in [{-ndim}, {ndim - 1}]" if ndim else "None: a 0-d tensor has no axis"
        raise ValueError(f"split={split} is out of range for a tensor with {ndim} dimensions (expected {expected})")
    return split % ndim


def check_counts(counts: Sequence[int], n: int, p: int) -> Counts:
    """Validate a user-given layout: p non-negative ints adding up to n."""
    counts = tuple(int(c) for c in counts)
    if len(counts) != p or any(c < 0 for c in counts) or sum(counts) != n:
        raise ValueError(
            f"counts={counts} is not a layout of {n} rows over {p} ranks "
            f"(expected {p} non-negative ints summing to {n})"
        )
    return counts


@functools.lru_cache(maxsize=4096)
def broadcast_shapes(*shapes: Tuple[int, ...]) -> Optional[torch.Size]:
    """Broadcast global shapes like torch; None when they do not broadcast."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, n in enumerate(s, ndim - len(s)):
            if n != 1:
                if out[i] not in (1, n):
                    return None
                out[i] = n
    return torch.Size(out)


def local_shape(gshape: Sequence[int], split: Optional[int], count: int) -> torch.Size:
    """Shape of one rank's chunk: the global shape with ``count`` rows along ``split``."""
    if split is None:
        return torch.Size(gshape)
    shape = list(gshape)
    shape[split] = count
    return torch.Size(shape)


def reduced_dims(dim, ndim: int) -> Tuple[int, ...]:
    """The set of reduced axes, normalized; ``None`` or ``()`` means all of them.

    >>> reduced_dims(-1, 3), reduced_dims(None, 2)
    ((2,), (0, 1))
    """
    if isinstance(dim, list):
        dim = tuple(dim)
    return _reduced_dims(dim, ndim)


@functools.lru_cache(maxsize=4096)
def _reduced_dims(dim, ndim: int) -> Tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    dims = tuple(sorted({normalize_axis(d, ndim) for d in dim}))
    return dims if dims else tuple(range(ndim))


@functools.lru_cache(maxsize=4096)
def reduced_shape(gshape: Sequence[int], dims: Tuple[int, ...], keepdim: bool) -> torch.Size:
    """Global shape after reducing ``dims``."""
    if keepdim:
        return torch.Size(1 if i in dims else n for i, n in enumerate(gshape))
    return torch.Size(n for i, n in enumerate(gshape) if i not in dims)


@functools.lru_cache(maxsize=4096)
def reduced_split(split: Optional[int], dims: Tuple[int, ...], keepdim: bool) -> Optional[int]:
    """Where the split axis ends up after a reduction (None if it was reduced)."""
    if split is None or split in dims:
        return None
    return split if keepdim else split - sum(d < split for d in dims)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> Tuple[int, int]:
    lo, hi = max(a0, b0), min(a1, b1)
    return (lo, hi - lo) if hi > lo else (a0, 0)


@functools.lru_cache(maxsize=1024)
def exchange_plan(
    gshape: Tuple[int, ...],
    src_split: int,
    src_counts: Counts,
    dst_split: int,
    dst_counts: Counts,
    rank: int,
) -> Tuple[Tuple[Narrow, ...], Tuple[Narrow, ...], torch.Size]:
    """Plan the all-to-all exchange that moves a split tensor to another layout.

    Returns ``(send, recv, out_shape)``: ``send[j]`` narrows this rank's chunk to the
    part rank j receives, ``recv[i]`` narrows the new chunk (of ``out_shape``) to the
    part that comes from rank i. Works for a change of counts on the same axis
    (rebalancing) and for a change of axis (resplit).

    >>> send, recv, shape = exchange_plan((4, 2), 0, (4, 0), 0, (2, 2), rank=0)
    >>> send, shape
    ((((0, 0, 2),), ((0, 2, 2),)), torch.Size([2, 2]))
    """
    src_off, dst_off = offsets(src_counts), offsets(dst_counts)
    p = len(src_counts)
    out_shape = local_shape(gshape, dst_split, dst_counts[rank])
    if src_split == dst_split:
        a = src_split
        me0, me1 = src_off[rank], src_off[rank] + src_counts[rank]
        send = []
        for j in range(p):
            lo, n = _overlap(me0, me1, dst_off[j], dst_off[j] + dst_counts[j])
            send.append(((a, lo - me0, n),))  # an empty overlap narrows at 0
        my0, my1 = dst_off[rank], dst_off[rank] + dst_counts[rank]
        recv = []
        for i in range(p):
            lo, n = _overlap(my0, my1, src_off[i], src_off[i] + src_counts[i])
            recv.append(((a, lo - my0, n),))
        return tuple(send), tuple(recv), out_shape
    send = tuple(((dst_split, dst_off[j], dst_counts[j]),) for j in range(p))
    recv = tuple(((src_split, src_off[i], src_counts[i]),) for i in range(p))
    return send, recv, out_shape


@functools.lru_cache(maxsize=4096)
def overlapping(specs: Tuple[Narrow, ...], shape: Tuple[int, ...]) -> bool:
    """Whether two of the non-empty parts ``narrow(t, spec)`` of a tensor of ``shape`` share
    an element.

    >>> overlapping((((0, 0, 2),), ((0, 1, 2),)), (3, 4)), overlapping((((0, 0, 1),), ((0, 1, 2),)), (3, 4))
    (True, False)
    """
    boxes = []
    for spec in specs:
        box = [(0, n) for n in shape]
        for axis, start, length in spec:
            box[axis] = (box[axis][0] + start, box[axis][0] + start + length)
        if all(b > a for a, b in box):
            boxes.append(box)
    return any(all(a0 < b1 and a1 < b0 for (a0, b0), (a1, b1) in zip(p, q)) for i, p in enumerate(boxes) for q in boxes[i + 1:])


def narrow(t: torch.Tensor, spec: Narrow) -> torch.Tensor:
    """Apply a narrow spec to a plain tensor (a view, no copy)."""
    for axis, start, length in spec:
        t = t.narrow(axis, start, length)
    return t
