"""CSV text files: every rank parses, or writes, only its own range of lines.

Loading: the data (after ``header_lines``) is cut into p equal byte ranges; rank r parses
the lines that start in its range (a line belongs to the range its first byte falls in), the
ranks share their row counts, and the result is rebalanced by one exchange. Saving: every
rank formats its rows, the ranks share their byte counts, and each writes at its offset.

Examples
--------
>>> import os, tempfile, torch, torchheat as th
>>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
>>> th.io.save_csv(th.distribute(torch.tensor([[1.5, 2.0], [3.0, 4.25]]), split=0), path)
>>> open(path).read()
'1.5,2\\n3,4.25\\n'
>>> th.io.load_csv(path).full().tolist()
[[1.5, 2.0], [3.0, 4.25]]
"""
from __future__ import annotations

import io
import os
from typing import Optional

import numpy as np
import torch

from .. import layout
from ..comm import Communicator
from ..tensor import DistTensor, make_leaf, relayout
from . import _common as c

__all__ = ["load_csv", "save_csv"]
# Digits that bring every value back exactly (shortest round trip of the format's precision).
_DIGITS = {torch.float16: 5, torch.float32: 9, torch.float64: 17, torch.complex64: 9, torch.complex128: 17}


def _line_start(f, pos: int, start: int) -> int:
    """The first line start at or after byte ``pos``: ``pos`` itself if the byte before it ends a
    line, else just after the next newline (the file's end if there is none)."""
    if pos <= start:
        return start
    f.seek(pos - 1)
    while True:
        chunk = f.read(1 << 16)
        if not chunk:
            return f.tell()
        i = chunk.find(b"\n")
        if i >= 0:
            return f.tell() - len(chunk) + i + 1


def _read_range(path: str, header_lines: int, rank: int, size: int) -> bytes:
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_csv: {path!r} does not exist on rank {rank} (expected a CSV file every rank can read)")
    with open(path, "rb") as f:
        for i in range(header_lines):
            if not f.readline():
                raise ValueError(f"load_csv: {path!r} has {i} lines, fewer than header_lines={header_lines} (seen on rank {rank})")
        start, end = f.tell(), os.fstat(f.fileno()).st_size
        n = end - start
        lo = _line_start(f, start + n * rank // size, start)
        hi = _line_start(f, start + n * (rank + 1) // size, start) if rank + 1 < size else end
        f.seek(lo)
        return f.read(max(hi - lo, 0))


def _fields(data: bytes, sep: str):
    """Per line of ``data``: the number of fields, and whether it holds a row (is not blank)."""
    b = np.frombuffer(data, np.uint8)
    if not b.size:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    ends = np.flatnonzero(b == ord("\n"))
    if b[-1] != ord("\n"):
        ends = np.append(ends, b.size)  # a last line with no newline
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    length = ends - starts
    length -= (length > 0) & (b[np.maximum(ends - 1, 0)] == ord("\r"))
    fields = np.add.reduceat(b == ord(sep), starts, dtype=np.int64) + 1
    return fields, length > 0


def load_csv(path, sep: str = ",", header_lines: int = 0, dtype: torch.dtype = torch.float32, split: Optional[int] = 0,
             device=None, comm: Optional[Communicator] = None, progress: bool = False) -> DistTensor:
    """Load a CSV file of numbers as a 2-D DistTensor (rows by fields); each rank parses its own lines.

    Parameters
    ----------
    path : str or os.PathLike
    sep : str
        The field separator, one character.
    header_lines : int
        Lines at the start to skip.
    dtype : torch.dtype
        Of the result: floating, complex (``1+2j``), integer or bool (``0``/``1``) fields.
    split : int or None
        Axis of the result to split along (balanced); None: replicated.
    device, comm, progress
        As :func:`torchheat.io.load_hdf5`.

    Blank lines are skipped. A line whose number of fields differs from the first data
    line's raises ValueError on every rank, naming the line.

    Examples
    --------
    >>> import os, tempfile, torch, torchheat as th
    >>> path = os.path.join(tempfile.mkdtemp(), "a.csv")
    >>> _ = open(path, "w").write("a;b\\n1;2\\n3;4\\n5;6\\n")
    >>> th.io.load_csv(path, sep=";", header_lines=1, dtype=torch.int64, split=1).full().tolist()
    [[1, 2], [3, 4], [5, 6]]
    """
    comm = c.resolve_comm(comm)
    path = os.fspath(path)
    if not (isinstance(sep, str) and len(sep) == 1 and sep not in "\r\n"):
        raise ValueError(f"sep={sep!r} is not a field separator (expected one character other than a newline)")
    if not (isinstance(header_lines, int) and header_lines >= 0):
        raise ValueError(f"header_lines={header_lines!r} (expected a non-negative int)")
    np_dtype = c.numpy_dtype(dtype, "CSV")
    data = c.agreed(comm, _read_range, path, header_lines, comm.rank, comm.size)
    fields, rows = _fields(data, sep)
    metas = comm.allgather_obj((int(rows.sum()), rows.size, int(fields[rows][0]) if rows.any() else None))
    ncols = next((m[2] for m in metas if m[2] is not None), 0)

    def parse() -> np.ndarray:
        bad = np.flatnonzero(rows & (fields != ncols))
        if bad.size:
            line = header_lines + sum(m[1] for m in metas[:comm.rank]) + int(bad[0]) + 1
            raise ValueError(f"load_csv: line {line} of {path!r} has {fields[bad[0]]} fields, expected {ncols} as the "
                             f"first data line has (seen on rank {comm.rank})")
        out = np.empty((metas[comm.rank][0], ncols), np_dtype)
        done, pos = 0, 0
        with c.progress_bar(comm, progress, len(data), "load_csv") as bar:
            while pos < len(data):
                cut = data.find(b"\n", pos + c.BLOCK_BYTES)
                cut = len(data) if cut < 0 else cut + 1
                try:
                    part = np.loadtxt(io.BytesIO(data[pos:cut]), delimiter=sep, dtype=np_dtype, ndmin=2, comments=None,
                                      encoding="latin1")
                except ValueError as err:
                    raise ValueError(f"load_csv: rank {comm.rank} cannot parse its lines of {path!r} as {dtype} ({err})") from None
                out[done:done + len(part)] = part
                bar.update(cut - pos)
                done, pos = done + len(part), cut
        return out

    local = torch.from_numpy(c.agreed(comm, parse))
    counts = tuple(m[0] for m in metas)
    x = make_leaf(local, 0, comm, (sum(counts), ncols), counts)
    split = layout.normalize_split(split, 2)
    x = relayout(x, split, None if split is None else layout.balanced_counts(x._gshape[split], comm.size))
    return c.finish_load(comm, x.local, x._gshape, x._split, x._counts, None, device)


def save_csv(x, path, sep: str = ",", header: Optional[str] = None, fmt: Optional[str] = None, progress: bool = False,
             comm: Optional[Communicator] = None) -> None:
    """Save a 1-D or 2-D DistTensor (or a plain tensor every rank holds) as CSV; each rank writes its own rows.

    Parameters
    ----------
    x : DistTensor or torch.Tensor
        One line per row (a 1-D tensor: one value per line; it loads back as one column).
        A tensor split along axis 1 is first moved to rows (one exchange).
    sep : str
        Field separator.
    header : str, optional
        Text written before the rows (load with ``header_lines=``).
    fmt : str, optional
        printf-style format of one value. The default brings every value back exactly:
        integers and bools (as 0/1) in full, floats with the digits their dtype needs
        (``%.9g`` for float32, ``%.17g`` for float64), complex numbers as ``re+imj``.

    Examples
    --------
    >>> import os, tempfile, torch, torchheat as th
    >>> path = os.path.join(tempfile.mkdtemp(), "b.csv")
    >>> th.io.save_csv(th.arange(3, split=0), path, header="n")
    >>> open(path).read()
    'n\\n0\\n1\\n2\\n'
    """
    if x.dim() not in (1, 2):
        raise ValueError(f"save_csv: expected a 1-D or 2-D tensor, got {x.dim()} dimensions (shape {tuple(x.shape)})")
    if isinstance(x, DistTensor) and x._split == 1:
        x = relayout(x, 0, layout.balanced_counts(x._gshape[0], x._comm.size))
    comm, gshape, split, offset, local = c.part(x, comm)
    c.numpy_dtype(local.dtype, "CSV")
    rows = local.reshape(local.shape[0], -1 if local.numel() else (gshape[1] if len(gshape) == 2 else 1)).numpy()
    if rows.dtype == np.bool_:
        rows = rows.view(np.uint8)
    if fmt is None:
        digits = _DIGITS.get(local.dtype)
        fmt = "%d" if digits is None else f"%.{digits}g" + (f"%+.{digits}gj" if local.dtype.is_complex else "")
    line = sep.join([fmt] * (gshape[1] if len(gshape) == 2 else 1))
    head = b"" if header is None else (header if header.endswith("\n") else header + "\n").encode()
    body = io.BytesIO()
    with c.progress_bar(comm, progress, c.nbytes(local), "save_csv (formatting)") as bar:
        for a, b in c.blocks(len(rows), rows[:1].nbytes):
            np.savetxt(body, rows[a:b], fmt=line)
            bar.update((b - a) * rows[:1].nbytes)
    body = body.getvalue()
    sizes = comm.allgather_obj(len(body))
    at = len(head) + sum(sizes[:comm.rank])

    def create(target):
        with open(target, "wb") as f:
            f.write(head)
            f.truncate(len(head) + sum(sizes))

    def write(target):
        if body:
            fd = os.open(target, os.O_WRONLY)
            try:
                c.pwrite_all(fd, np.frombuffer(body, np.uint8), at)
            finally:
                os.close(fd)

    c.staged_save(comm, os.fspath(path), create, write)
