"""Communicators (mpi, torch, self) and the differentiable collectives built on them.

The default communicator is chosen from the launcher's environment on first use:
``torchrun`` -> torch.distributed, ``mpiexec``/``srun`` -> MPI, otherwise one process.
``TORCHHEAT_BACKEND=mpi|torch|self`` overrides the choice. Importing torchheat never
imports mpi4py.

Examples
--------
>>> import torchheat as th
>>> th.get_comm().size >= 1
True
"""
from __future__ import annotations

import os
from typing import Optional

from .base import Communicator
from .self import SelfCommunicator

__all__ = ["Communicator", "get_comm", "set_comm", "detect_backend", "make_comm"]

_default: Optional[Communicator] = None

_TORCHRUN_VARS = ("TORCHELASTIC_RUN_ID", "GROUP_RANK")
_MPI_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD")


def detect_backend(environ=os.environ) -> str:
    """Name of the backend a launcher's environment asks for (``mpi``, ``torch`` or ``self``).

    A pure function of the environment mapping: ``TORCHHEAT_BACKEND`` wins, then torchrun's
    variables, then those of mpiexec/srun; with none of them it is one process.

    >>> detect_backend({}), detect_backend({"PMI_RANK": "0"}), detect_backend({"TORCHELASTIC_RUN_ID": "1"})
    ('self', 'mpi', 'torch')
    """
    forced = environ.get("TORCHHEAT_BACKEND")
    if forced:
        if forced not in ("mpi", "torch", "self"):
            raise ValueError(f"TORCHHEAT_BACKEND={forced!r} is not a backend (expected 'mpi', 'torch' or 'self')")
        return forced
    if any(v in environ for v in _TORCHRUN_VARS) or all(v in environ for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        return "torch"
    if any(v in environ for v in _MPI_VARS) or int(environ.get("SLURM_NTASKS", "1")) > 1:
        return "mpi"
    return "self"


def _default_backend() -> str:
    # A program that set up torch.distributed itself wants its process group used.
    backend = detect_backend(os.environ)
    if backend == "self" and "TORCHHEAT_BACKEND" not in os.environ:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return "torch"
    return backend


def make_comm(backend: str) -> Communicator:
    """Create the world communicator of a backend."""
    if backend == "self":
        return SelfCommunicator()
    if backend == "mpi":
        try:
            from .mpi import MPICommunicator
        except ImportError as err:
            raise ImportError(
                "the MPI backend needs mpi4py and an MPI library: pip install 'torchheat[mpi]' "
                "(mpi4py and mpich), or set TORCHHEAT_BACKEND=self for one process"
            ) from err
        return MPICommunicator()
    if backend == "torch":
        from .torch_dist import TorchCommunicator

        return TorchCommunicator()
    raise ValueError(f"backend={backend!r} is not a backend (expected 'mpi', 'torch' or 'self')")


def get_comm() -> Communicator:
    """The default communicator (created on first call from the launcher's environment)."""
    global _default
    if _default is None:
        _default = make_comm(_default_backend())
    return _default


def set_comm(comm: Communicator) -> None:
    """Make ``comm`` the default communicator for factories called without ``comm=``."""
    global _default
    if not isinstance(comm, Communicator):
        raise TypeError(f"comm must be a torchheat Communicator, got {type(comm).__name__}")
    _default = comm
