"""Parallel load and save of DistTensors: HDF5, npy and CSV files, each rank its own part.

Every rank reads or writes only its own hyperslab (HDF5), byte range (npy) or lines (CSV);
no rank ever holds the whole dataset unless the result is replicated (``split=None``).
Errors that only some ranks see (a missing file, a bad line) are raised on every rank, and
a save that fails on any rank leaves no file that looks complete.

Examples
--------
>>> import os, tempfile, torch, torchheat as th
>>> folder = tempfile.mkdtemp()  # one process here; under MPI every rank must pass the same path
>>> x = th.distribute(torch.arange(12.0).reshape(4, 3), split=0)
>>> for name in ("x.h5", "x.npy", "x.csv"):
...     th.io.save(x, os.path.join(folder, name))
...     assert th.io.load(os.path.join(folder, name), split=1).full().equal(x.full())
"""
from __future__ import annotations

import os

from .csv import load_csv, save_csv
from .hdf5 import DatasetNotFoundError, load_hdf5, save_hdf5
from .npy import load_npy, save_npy

__all__ = ["load", "save", "load_hdf5", "save_hdf5", "load_npy", "save_npy", "load_csv", "save_csv",
           "DatasetNotFoundError"]

_FORMATS = {".h5": (load_hdf5, save_hdf5), ".hdf5": (load_hdf5, save_hdf5), ".npy": (load_npy, save_npy),
            ".csv": (load_csv, save_csv)}


def _format(path):
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in _FORMATS:
        raise ValueError(f"cannot tell the format of {os.fspath(path)!r} from its extension {ext!r} "
                         f"(expected one of {sorted(_FORMATS)}; or call load_hdf5/load_npy/load_csv)")
    return _FORMATS[ext]


def load(path, *args, **kwargs):
    """Load a DistTensor, the format chosen by the extension (``.h5``/``.hdf5``, ``.npy``, ``.csv``).

    HDF5 takes the dataset name next (default ``"data"``); the other arguments are those of
    :func:`load_hdf5`, :func:`load_npy` or :func:`load_csv`.
    """
    loader = _format(path)[0]
    if loader is load_hdf5 and not args and "dataset" not in kwargs:
        args = ("data",)
    return loader(path, *args, **kwargs)


def save(x, path, *args, **kwargs) -> None:
    """Save a DistTensor, the format chosen by the extension (``.h5``/``.hdf5``, ``.npy``, ``.csv``).

    HDF5 takes the dataset name next (default ``"data"``); the other arguments are those of
    :func:`save_hdf5`, :func:`save_npy` or :func:`save_csv`.
    """
    saver = _format(path)[1]
    if saver is save_hdf5 and not args and "dataset" not in kwargs:
        args = ("data",)
    saver(x, path, *args, **kwargs)
