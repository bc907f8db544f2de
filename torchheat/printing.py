"""Printing from a program that runs on many processes.

Every rank runs the same script, so a plain ``print`` prints once per rank, and
``if rank == 0: print(x.sum().item())`` hangs: ``x.sum()`` is a collective that the other
ranks never join. Compute on every rank, print on one:

* :func:`print0` prints on rank 0 only (its arguments are computed on every rank first);
* :func:`print_ranks` prints every rank's line, in rank order, from rank 0 (collective);
* :func:`global_str` formats the global tensor (collective); ``repr(x)`` shows the local chunk
  and never communicates, so it is safe in a debugger on one rank.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.), split=0)
>>> th.print0("sum:", x.sum().item())          # every rank computes, rank 0 prints
sum: 15.0
"""
from __future__ import annotations

import sys
from typing import Optional

from .comm import Communicator, get_comm
from .tensor import DistTensor


def print0(*values, comm: Optional[Communicator] = None, **kwargs) -> None:
    """``print(*values, **kwargs)`` on rank 0 only; not a collective.

    Pass values that every rank computed (``x.sum().item()`` is a collective: every rank
    must call it, then rank 0 prints it).

    >>> print0("hello from rank 0")
    hello from rank 0
    """
    if (comm or get_comm()).rank == 0:
        kwargs.setdefault("flush", True)
        print(*values, **kwargs)


def print_ranks(*values, comm: Optional[Communicator] = None, sep: str = " ", file=None) -> None:
    """Print one line per rank, in rank order, each starting with ``[rank r/p]`` (collective).

    The lines are gathered to rank 0, which prints them all, so they never interleave.

    >>> print_ranks("rows:", 5)                 # doctest: +SKIP  (on 2 ranks)
    [rank 0/2] rows: 5
    [rank 1/2] rows: 5
    """
    comm = comm or get_comm()
    lines = comm.allgather_obj(sep.join(str(v) for v in values))
    if comm.rank == 0:
        out = file or sys.stdout
        for r, line in enumerate(lines):
            print(f"[rank {r}/{comm.size}] {line}", file=out)
        out.flush()


def global_str(x) -> str:
    """The global tensor formatted like ``repr(torch.Tensor)`` (collective: every rank calls it).

    Gathers the tensor onto rank 0 for formatting; other ranks get an empty string.

    >>> import torch, torchheat as th
    >>> print0(global_str(th.distribute(torch.ones(2), split=0)))
    tensor([1., 1.]) (split=0, ranks=1)
    """
    if not isinstance(x, DistTensor):
        return repr(x)
    full_tensor = x.gather_to(0)
    return "" if full_tensor is None else f"{full_tensor!r} (split={x.split_dim}, ranks={x.comm.size})"
