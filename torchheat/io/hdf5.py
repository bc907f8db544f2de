"""HDF5 (h5py): every rank reads or writes its own hyperslab of one dataset.

Writing uses parallel HDF5 (the ``mpio`` driver) when h5py was built with MPI and the
communicator is MPI's; otherwise the ranks write to the one file in turn, one after the other.

Examples
--------
>>> import os, tempfile, torch, torchheat as th
>>> path = os.path.join(tempfile.mkdtemp(), "x.h5")  # one process: any directory will do
>>> th.io.save_hdf5(th.arange(6.0, split=0), path, "data")
>>> th.io.load_hdf5(path, "data").full().tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""
from __future__ import annotations

import os
from typing import Optional

import h5py
import torch

from ..comm import Communicator
from . import _common as c

__all__ = ["load_hdf5", "save_hdf5", "DatasetNotFoundError"]


class DatasetNotFoundError(KeyError):
    """A dataset name that the HDF5 file does not have (a KeyError, as h5py raises, printed as plain text)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _inspect(path: str, dataset: str, slices, rank: int):
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_hdf5: {path!r} does not exist on rank {rank} (expected an HDF5 file every rank can read)")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OSError(f"load_hdf5: rank {rank} cannot open {path!r} as an HDF5 file ({err})") from None
    with f:
        node = f.get(dataset)
        if not isinstance(node, h5py.Dataset):
            names = sorted(k for k in f.keys())
            what = "has no dataset" if node is None else "has a group, not a dataset, at"
            raise DatasetNotFoundError(f"load_hdf5: {path!r} {what} {dataset!r} (seen on rank {rank}; top-level names: {names})")
        where = f"dataset {dataset!r} in {path!r}"
        c.torch_dtype(node.dtype, f"load_hdf5: {where}")
        return node.shape, node.dtype.str, c.select(node.shape, slices, f"load_hdf5: {where}")


def load_hdf5(path, dataset: str, split: Optional[int] = 0, dtype: Optional[torch.dtype] = None, slices=None, device=None,
              comm: Optional[Communicator] = None, progress: bool = False):
    """Load an HDF5 dataset as a DistTensor: each rank reads only its own hyperslab.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file; every rank must be able to read it (a shared file system).
    dataset : str
        Name of the dataset in the file (``"group/name"`` for nested ones).
    split : int or None
        Axis of the result to split along (balanced); None: every rank reads everything.
    dtype : torch.dtype, optional
        Convert to this dtype after reading (default: the stored one).
    slices : slice, int or tuple of them, optional
        Load only this part, as ``dset[slices]`` would (positive steps; an int drops its
        dimension); bounds beyond the dataset raise ValueError instead of being clipped.
    device : torch.device, optional
        Where the chunks go (default: CPU).
    comm : Communicator, optional
        Defaults to :func:`torchheat.get_comm`.
    progress : bool
        Show a progress bar on rank 0 (over its own share).

    Raises
    ------
    FileNotFoundError, OSError, DatasetNotFoundError (a KeyError), ValueError, TypeError
        On every rank alike, when any rank cannot read the file or find the dataset, when
        ``slices`` does not fit it, or when its dtype has no torch equivalent.

    Examples
    --------
    >>> import os, tempfile, h5py, numpy as np, torchheat as th
    >>> path = os.path.join(tempfile.mkdtemp(), "a.h5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("a", data=np.arange(12).reshape(4, 3))
    >>> th.io.load_hdf5(path, "a", split=1, slices=(slice(1, 3),)).full().tolist()
    [[3, 4, 5], [6, 7, 8]]
    """
    comm = c.resolve_comm(comm)
    path = os.fspath(path)
    shape, stored, sel = c.agreed(comm, _inspect, path, dataset, slices, comm.rank)
    c.same_everywhere(comm, path, (tuple(shape), stored))

    def read():
        with h5py.File(path, "r") as f:
            dset = f[dataset]

            def block(out, source, dest):
                if dset.ndim == 0:
                    out[...] = dset[()]
                else:
                    dset.read_direct(out, source_sel=source, dest_sel=dest)

            return c.read_split(comm, sel, split, c.torch_dtype(dset.dtype, path), block, progress, "load_hdf5")

    return c.finish_load(comm, *c.agreed(comm, read), dtype, device)


def _preflight(path: str, dataset: str, mode: str) -> bool:
    """Check ``mode`` against the file (on rank 0); whether the dataset is added to an existing file."""
    exists = os.path.exists(path)
    if mode in ("w-", "x") and exists:
        raise FileExistsError(f"save_hdf5: {path!r} exists (mode={mode!r} creates a new file; use mode='w' to replace it)")
    if mode == "r+" and not exists:
        raise FileNotFoundError(f"save_hdf5: {path!r} does not exist (mode='r+' adds to an existing file)")
    if mode in ("a", "r+") and exists:
        with h5py.File(path, "r") as f:
            if dataset in f:
                raise ValueError(f"save_hdf5: {path!r} already has {dataset!r} (mode={mode!r} adds a dataset; "
                                 "use mode='w' to replace the file, or another name)")
        return True
    return False


def _parallel(comm: Communicator) -> bool:
    return comm.size > 1 and comm.backend == "mpi" and h5py.get_config().mpi


def save_hdf5(x, path, dataset: str, mode: str = "w", attrs: Optional[dict] = None, progress: bool = False,
              comm: Optional[Communicator] = None, **dataset_kwargs) -> None:
    """Save a DistTensor (or a plain tensor every rank holds) as an HDF5 dataset; each rank
    writes only its own hyperslab.

    Parameters
    ----------
    x : DistTensor or torch.Tensor
        A replicated tensor is written by all ranks, each its balanced share of rows.
    path : str or os.PathLike
    dataset : str
        Name of the new dataset.
    mode : str
        As ``h5py.File``: ``"w"`` creates the file (replacing one that exists), ``"w-"``/``"x"``
        creates it and fails if it exists, ``"a"`` adds the dataset to the file (created if
        missing), ``"r+"`` adds it to a file that must exist. Adding a dataset whose name
        exists raises ValueError.
    attrs : dict, optional
        Attributes of the dataset.
    progress : bool
        Show a progress bar on rank 0 (over its own share).
    **dataset_kwargs
        Passed to ``h5py.Group.create_dataset`` (``chunks=``, ``compression=``, ``compression_opts=``,
        ``shuffle=``, ``fletcher32=``, ...).

    A file created by the save (modes ``"w"``, ``"w-"``, ``"x"``, ``"a"`` of a missing file) is
    written under a temporary name and renamed when every rank succeeded; a dataset added to an
    existing file is deleted again if any rank fails. Either way every rank raises.
    bfloat16 (no HDF5/numpy type) raises TypeError: save ``x.float()``, which holds it exactly.

    Examples
    --------
    >>> import os, tempfile, h5py, torch, torchheat as th
    >>> path = os.path.join(tempfile.mkdtemp(), "b.h5")
    >>> th.io.save_hdf5(th.distribute(torch.ones(4, 2), split=0), path, "b", compression="gzip", attrs={"unit": "m"})
    >>> with h5py.File(path) as f:
    ...     f["b"].shape, f["b"].attrs["unit"], f["b"].compression
    ((4, 2), 'm', 'gzip')
    """
    c.check_mode(mode)
    comm, gshape, split, offset, local = c.part(x, comm)
    np_dtype = c.numpy_dtype(local.dtype, "HDF5")
    path = os.fspath(path)
    in_place = c.from_root(comm, _preflight, path, dataset, mode)
    data = local.numpy()
    where = [slice(None)] * len(gshape)

    def create(f):
        dset = f.create_dataset(dataset, shape=tuple(gshape), dtype=np_dtype, **dataset_kwargs)
        dset.attrs.update(attrs or {})
        return dset

    def write_part(dset):
        with c.progress_bar(comm, progress, c.nbytes(local), "save_hdf5") as bar:
            if data.ndim == 0:
                if data.size:
                    dset[()] = data
                return
            row_bytes = c.nbytes(local) // max(local.shape[split], 1)
            for a, b in c.blocks(local.shape[split], row_bytes):
                where[split] = slice(offset + a, offset + b)
                dset[tuple(where)] = data[(slice(None),) * split + (slice(a, b),)]
                bar.update((b - a) * row_bytes)

    def open_new(target):
        return h5py.File(target, "r+" if in_place else "w")

    def undo(target):
        with h5py.File(target, "r+") as f:
            if dataset in f:
                del f[dataset]

    if _parallel(comm):  # every rank opens, creates and writes collectively (parallel HDF5)
        def write(target):
            with h5py.File(target, "r+" if in_place else "w", driver="mpio", comm=comm.mpi) as f:
                write_part(create(f))

        c.staged_save(comm, path, lambda target: open_new(target).close(), write, in_place=in_place, undo=undo)
        return

    def create_file(target):
        with open_new(target) as f:
            create(f)

    def write(target):
        if local.numel():
            with h5py.File(target, "r+") as f:
                write_part(f[dataset])

    c.staged_save(comm, path, create_file, write, in_turn=True, in_place=in_place, undo=undo)
