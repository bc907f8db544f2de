"""What the formats share: dtypes, which part of a tensor a rank reads or writes, blocks and
progress bars, errors agreed by every rank, and the save protocol (temporary name, rename).

Examples
--------
>>> list(blocks(10, row_bytes=BLOCK_BYTES // 4))
[(0, 4), (4, 8), (8, 10)]
"""
from __future__ import annotations

import contextlib
import math
import os
import secrets
from itertools import zip_longest
from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from .. import dispatch as d, layout
from ..comm import Communicator
from ..comm.base import values
from ..ops.creation import _comm
from ..tensor import DistTensor, make_leaf

BLOCK_BYTES = 16 << 20  # one read or write: bounds the memory beyond a rank's share and paces the bar
_TOKEN_TAG = 71
_NO_NUMPY = {torch.bfloat16: "x.float()", torch.complex32: "x.cfloat()"}
Selection = List[Union[range, int]]  # per dimension of a stored array: the indices read, or one index (dim dropped)

__all__ = ["resolve_comm"]
resolve_comm = _comm


def numpy_dtype(dtype: torch.dtype, fmt: str) -> np.dtype:
    """The numpy dtype a torch dtype is stored as, or TypeError naming the lossless conversion."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        fix = _NO_NUMPY.get(dtype, "x.float()")
        raise TypeError(f"{fmt} cannot store {dtype} (numpy has no such dtype): save {fix} instead, which holds every "
                        f"{dtype} value exactly, and convert back after loading") from None


def torch_dtype(dtype: np.dtype, where: str) -> torch.dtype:
    """The torch dtype of stored values of numpy dtype ``dtype``, or TypeError."""
    try:
        return torch.from_numpy(np.empty(0, dtype.newbyteorder("="))).dtype
    except (TypeError, ValueError):
        raise TypeError(f"{where} holds values of dtype {dtype}, which torch cannot hold (expected bool, integer, "
                        "floating or complex numbers)") from None


def caught(fn: Callable, *args) -> Tuple[object, Optional[Exception]]:
    """``(fn(*args), None)``, or ``(None, exception)`` if it raised."""
    try:
        return fn(*args), None
    except Exception as err:  # noqa: BLE001 - every failure must reach the other ranks
        return None, err


def agreed(comm: Communicator, fn: Callable, *args):
    """``fn(*args)`` on every rank; if it raised on any rank, every rank raises."""
    value, error = caught(fn, *args)
    d.agree(comm, error)
    return value


def from_root(comm: Communicator, fn: Callable, *args):
    """``fn(*args)`` run on rank 0 and its result shared with every rank (its exception raised on every rank)."""
    value, error = caught(fn, *args) if comm.rank == 0 else (None, None)
    d.agree(comm, error)
    return comm.allgather_obj(value)[0]


def same_everywhere(comm: Communicator, path: str, meta) -> None:
    """Raise on every rank unless every rank saw the same file metadata (a path that names other
    files on other nodes, or a file replaced while it was read)."""
    metas = comm.allgather_obj(meta)
    if any(m != metas[0] for m in metas):
        seen = "; ".join(f"rank {r}: {m}" for r, m in enumerate(metas))
        raise ValueError(f"{path!r} is not the same file on every rank ({seen}); expected one file that every rank reads")


def select(shape, slices, where: str) -> Selection:
    """Normalize ``slices=`` (a slice, an int or a tuple of them, one per leading dimension) for an
    array of ``shape``; bounds beyond the array raise instead of being clipped."""
    if slices is None:
        return [range(n) for n in shape]
    entries = slices if isinstance(slices, tuple) else (slices,)
    expected = f"at most {len(shape)} slices or ints within the dimensions"
    if len(entries) > len(shape):
        raise ValueError(f"slices={slices!r} has {len(entries)} entries for {where} of shape {tuple(shape)} (expected {expected})")
    out: Selection = []
    for axis, (n, s) in enumerate(zip_longest(shape, entries, fillvalue=slice(None))):
        if isinstance(s, slice):
            bad = [b for b in (s.start, s.stop) if b is not None and not (isinstance(b, int) and -n <= b <= n)]
            if bad or s.step is not None and not (isinstance(s.step, int) and s.step > 0):
                raise ValueError(f"slices={slices!r}: {s} does not fit dimension {axis} (size {n}) of {where} of shape "
                                 f"{tuple(shape)} (expected {expected}, positive steps)")
            out.append(range(n)[s])
        elif isinstance(s, int) and not isinstance(s, bool):
            if not -n <= s < n:
                raise ValueError(f"slices={slices!r}: index {s} is out of range for dimension {axis} (size {n}) of "
                                 f"{where} of shape {tuple(shape)} (expected {expected})")
            out.append(s % n)
        else:
            raise TypeError(f"slices={slices!r}: expected slices and ints, got {type(s).__name__} {s!r}")
    return out


def as_index(sel: Selection) -> tuple:
    """A selection as an index tuple for numpy and h5py."""
    return tuple(s if isinstance(s, int) else slice(s.start, s[-1] + 1 if len(s) else s.start, s.step) for s in sel)


def blocks(n: int, row_bytes: int):
    """``(start, stop)`` pieces of ``range(n)`` of at most :data:`BLOCK_BYTES` each (one row at least)."""
    step = max(1, BLOCK_BYTES // max(row_bytes, 1))
    return ((a, min(a + step, n)) for a in range(0, n, step))


def progress_bar(comm: Communicator, progress: bool, nbytes: int, desc: str):
    """A tqdm bar over this rank's bytes, shown on rank 0 only (and only when ``progress``)."""
    return tqdm(total=nbytes, disable=not (progress and comm.rank == 0), unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"{desc} (rank 0 of {comm.size})", leave=False)


# -- loading -------------------------------------------------------------------------------
def read_split(comm: Communicator, sel: Selection, split, dtype: torch.dtype, read_block: Callable, progress: bool, desc: str):
    """Read this rank's part of the selection ``sel`` of a stored array, one block at a time.

    ``split`` is an axis of the result (the selection's kept dimensions); ``read_block(out,
    source, dest)`` copies the stored values at index tuple ``source`` into ``out[dest]`` (a numpy
    view of the result). Returns ``(local, gshape, split, counts)``.
    """
    kept = [i for i, s in enumerate(sel) if isinstance(s, range)]
    gshape = torch.Size(len(sel[i]) for i in kept)
    split = layout.normalize_split(split, len(gshape))
    counts, mine = None, list(sel)
    if split is not None:
        counts = layout.balanced_counts(gshape[split], comm.size)
        start = layout.offsets(counts)[comm.rank]
        mine[kept[split]] = sel[kept[split]][start:start + counts[comm.rank]]
    lshape = layout.local_shape(gshape, split, None if split is None else counts[comm.rank])
    local = torch.empty(lshape, dtype=dtype)
    out = local.numpy()
    axis = 0 if split is None else split  # the result axis the blocks run along
    with progress_bar(comm, progress, local.numel() * local.element_size(), desc) as bar:
        if local.dim() == 0:
            read_block(out, as_index(mine), ())
        elif local.numel():
            row_bytes = local.numel() // lshape[axis] * local.element_size()
            rows = mine[kept[axis]]
            for a, b in blocks(lshape[axis], row_bytes):
                source = list(mine)
                source[kept[axis]] = rows[a:b]
                read_block(out, as_index(source), (slice(None),) * axis + (slice(a, b),))
                bar.update((b - a) * row_bytes)
    return local, gshape, split, counts


def finish_load(comm: Communicator, local: torch.Tensor, gshape, split, counts, dtype, device) -> DistTensor:
    if dtype is not None:
        local = local.to(dtype)
    if device is not None:
        local = local.to(device)
    return make_leaf(local, split, comm, gshape, counts)


# -- saving --------------------------------------------------------------------------------
def part(x, comm: Optional[Communicator]) -> Tuple[Communicator, torch.Size, Optional[int], int, torch.Tensor]:
    """What this rank writes of ``x``: ``(comm, gshape, split, offset, chunk)`` with the chunk a
    contiguous CPU tensor. A split tensor writes its chunk; a replicated one (or a plain tensor,
    the same on every rank) its balanced share of rows along axis 0, and a 0-d one rank 0 only."""
    if isinstance(x, DistTensor):
        if comm is not None and comm is not x._comm:
            raise ValueError("comm= must be the tensor's own communicator (or None) when saving a DistTensor")
        comm, gshape, split, local = x._comm, x._gshape, x._split, x.local
        offset = 0 if split is None else layout.offsets(x._counts)[comm.rank]
    elif isinstance(x, torch.Tensor):
        comm, gshape, split, local, offset = _comm(comm), x.shape, None, x, 0
    else:
        raise TypeError(f"expected a DistTensor or a torch.Tensor to save, got {type(x).__name__}")
    if split is None and local.dim() > 0:
        counts = layout.balanced_counts(gshape[0], comm.size)
        split, offset = 0, layout.offsets(counts)[comm.rank]
        local = local.narrow(0, offset, counts[comm.rank])
    elif split is None and comm.rank > 0:
        local = local.reshape(1)[:0]  # a 0-d tensor: rank 0 writes it
    return comm, torch.Size(gshape), split, offset, values(local).cpu().contiguous()


def in_rank_order(comm: Communicator, fn: Callable) -> Optional[Exception]:
    """Run ``fn()`` on rank 0, then rank 1, ... (a token passed from rank to rank); returns this
    rank's exception, if any. The ranks after a failed one skip ``fn``."""
    failed = torch.zeros(1, dtype=torch.uint8)
    if comm.rank > 0:
        comm.recv(failed, comm.rank - 1, tag=_TOKEN_TAG)
    error = None
    if not failed.item():
        error = caught(fn)[1]
        failed[0] = error is not None
    if comm.rank + 1 < comm.size:
        comm.send(failed, comm.rank + 1, tag=_TOKEN_TAG)
    return error


def staged_save(comm: Communicator, path: str, create: Optional[Callable], write: Callable, *, in_turn: bool = False,
                in_place: bool = False, undo: Optional[Callable] = None) -> None:
    """Save ``path`` so that a failure on any rank raises on every rank and leaves no file that looks complete.

    Rank 0 runs ``create(target)``; then every rank runs ``write(target)`` (``in_turn``: one rank
    after the other); if all succeeded rank 0 renames ``target``, a temporary name in ``path``'s
    directory, to ``path``. With ``in_place`` the target is ``path`` itself (adding to an
    existing file) and a failure calls ``undo(path)`` on rank 0 instead of removing the file.
    """
    name = comm.allgather_obj(secrets.token_hex(6) if comm.rank == 0 else None)[0]
    head, tail = os.path.split(path)
    target = path if in_place else os.path.join(head, f".{tail}.{name}.tmp")

    def cleanup():
        if in_place:
            undo(path)
        elif os.path.exists(target):
            os.remove(target)

    def settle(error):
        try:
            d.agree(comm, error)
        except Exception:
            if comm.rank == 0:
                with contextlib.suppress(Exception):
                    cleanup()
            comm.barrier()  # nobody returns before the partial file is gone
            raise

    on_root = (lambda fn, *args: caught(fn, *args)[1] if comm.rank == 0 else None)
    if create is not None:
        settle(on_root(create, target))
    settle(in_rank_order(comm, lambda: write(target)) if in_turn else caught(write, target)[1])
    if not in_place:
        settle(on_root(os.replace, target, path))


def pwrite_all(fd: int, data: np.ndarray, at: int) -> None:
    """Write all of ``data``'s bytes at byte ``at`` of the open file ``fd`` (positioned writes may be short)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


def check_mode(mode: str, modes=("w", "w-", "x", "a", "r+")) -> None:
    if mode not in modes:
        raise ValueError(f"mode={mode!r} is not a mode to save with (expected one of {modes}, as h5py.File)")


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def prod(shape) -> int:
    return math.prod(shape)
