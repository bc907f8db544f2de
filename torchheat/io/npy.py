"""NumPy ``.npy`` files: every rank maps and reads, or writes, only its own bytes.

Examples
--------
>>> import os, tempfile, numpy as np, torchheat as th
>>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
>>> th.io.save_npy(th.arange(6, split=0), path)
>>> np.load(path).tolist()
[0, 1, 2, 3, 4, 5]
"""
from __future__ import annotations

import contextlib
import io
import mmap
import os
from typing import Optional

import numpy as np
import torch

from ..comm import Communicator
from . import _common as c

__all__ = ["load_npy", "save_npy"]
_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _inspect(path: str, rank: int):
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_npy: {path!r} does not exist on rank {rank} (expected a .npy file every rank can read)")
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version not in _HEADERS:
                raise ValueError(f"format version {version} (expected 1.0 or 2.0)")
            shape, fortran, dtype = _HEADERS[version](f)
        except ValueError as err:
            raise ValueError(f"load_npy: rank {rank} cannot read {path!r} as a .npy file ({err})") from None
        offset = f.tell()
    c.torch_dtype(dtype, f"load_npy: {path!r}")
    need = offset + c.prod(shape) * dtype.itemsize
    if os.path.getsize(path) < need:
        raise ValueError(f"load_npy: {path!r} is truncated on rank {rank}: {os.path.getsize(path)} bytes, "
                         f"expected {need} for shape {shape} of {dtype}")
    return shape, fortran, dtype.str, offset


def load_npy(path, split: Optional[int] = 0, dtype: Optional[torch.dtype] = None, device=None,
             comm: Optional[Communicator] = None, progress: bool = False):
    """Load a ``.npy`` file as a DistTensor: each rank maps the file and copies only its own part.

    Parameters
    ----------
    path : str or os.PathLike
    split : int or None
        Axis to split along (balanced); None: every rank reads everything.
    dtype, device, comm, progress
        As :func:`torchheat.io.load_hdf5`.

    The file is never read whole by one rank: along axis 0 a rank reads its byte range
    straight into its chunk; along another axis it maps the file and copies its part block by
    block, releasing the mapped pages after each. Fortran-ordered and byte-swapped files load too.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torchheat as th
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.eye(3))
    >>> th.io.load_npy(path, split=1).full().tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    comm = c.resolve_comm(comm)
    path = os.fspath(path)
    meta = c.agreed(comm, _inspect, path, comm.rank)
    c.same_everywhere(comm, path, meta)
    shape, fortran, stored, offset = meta
    stored = np.dtype(stored)

    def read():
        count = c.prod(shape)
        # Whole rows of a C-ordered native file are one byte range: read straight into the result.
        # Anything else (another split, Fortran order, byte-swapped) is copied from a mapping.
        rows_in_place = not fortran and stored.isnative and len(shape) > 0 and split in (0, None)
        row_bytes = c.prod(shape[1:]) * stored.itemsize
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if count and not rows_in_place else None
            array = None
            try:
                if mapped is not None:
                    array = np.frombuffer(mapped, stored, count, offset).reshape(shape, order="F" if fortran else "C")
                elif not count:
                    array = np.empty(shape, stored)

                def block(out, source, dest):
                    if array is None:
                        f.seek(offset + source[0].start * row_bytes)
                        _read_exactly(f, out[dest], path)
                        return
                    out[dest] = array[source]
                    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
                        mapped.madvise(mmap.MADV_DONTNEED)  # the copied pages leave this rank's memory

                return c.read_split(comm, c.select(shape, None, path), split, c.torch_dtype(stored, path), block, progress, "load_npy")
            finally:
                array = None
                if mapped is not None:
                    with contextlib.suppress(BufferError):  # a view still alive: the mapping goes with it
                        mapped.close()

    return c.finish_load(comm, *c.agreed(comm, read), dtype, device)


def _read_exactly(f, out: np.ndarray, path: str) -> None:
    """Fill the contiguous array ``out`` with the next bytes of the file ``f``."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    while view.nbytes:
        n = f.readinto(view)
        if not n:
            raise ValueError(f"load_npy: {path!r} ended early (truncated while it was read?)")
        view = view[n:]


def header(dtype: np.dtype, shape) -> bytes:
    """The ``.npy`` header of a C-ordered array (the format's version 1.0 where it fits)."""
    buf = io.BytesIO()
    meta = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    try:
        np.lib.format.write_array_header_1_0(buf, meta)
    except ValueError:
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, meta)
    return buf.getvalue()


def save_npy(x, path, progress: bool = False, comm: Optional[Communicator] = None) -> None:
    """Save a DistTensor (or a plain tensor every rank holds) as a ``.npy`` file; each rank
    writes only its own bytes.

    Rank 0 writes the header and sizes the file; then every rank writes its chunk at its
    offset with positioned writes (one contiguous range for split 0, one range per leading
    index for another split). The file is written under a temporary name and renamed when
    every rank succeeded. bfloat16 (no numpy type) raises TypeError: save ``x.float()``.

    Examples
    --------
    >>> import os, tempfile, numpy as np, torch, torchheat as th
    >>> path = os.path.join(tempfile.mkdtemp(), "b.npy")
    >>> th.io.save_npy(th.distribute(torch.eye(3, dtype=torch.float64), split=1), path)
    >>> bool((np.load(path) == np.eye(3)).all())
    True
    """
    comm, gshape, split, offset, local = c.part(x, comm)
    head = header(c.numpy_dtype(local.dtype, ".npy"), gshape)
    total = len(head) + c.prod(gshape) * local.element_size()

    def create(target):
        with open(target, "wb") as f:
            f.write(head)
            f.truncate(total)

    def write(target):
        if not local.numel():
            return
        lead = c.prod(gshape[:split]) if split is not None else 1
        inner = c.prod(gshape[split + 1:]) * local.element_size() if split is not None else local.element_size()
        stride = gshape[split] * inner if split is not None else 0
        rows = local.numpy().reshape(lead, -1).view(np.uint8)
        fd = os.open(target, os.O_WRONLY)
        try:
            with c.progress_bar(comm, progress, c.nbytes(local), "save_npy") as bar:
                for i in range(lead):
                    start = len(head) + i * stride + offset * inner
                    for a, b in c.blocks(rows.shape[1], 1):
                        c.pwrite_all(fd, rows[i, a:b], start + a)
                        bar.update(b - a)
        finally:
            os.close(fd)

    c.staged_save(comm, os.fspath(path), create, write)

