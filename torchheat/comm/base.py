"""The communicator interface shared by the mpi, torch and self backends.

All methods take and return plain ``torch.Tensor`` objects (never DistTensors) and
are called by every rank in the same order. Reductions accept ``op`` in
``"sum" | "prod" | "max" | "min"``; boolean tensors also ``"land" | "lor"``.
"""
from __future__ import annotations

import abc
from typing import Any, List, Optional, Sequence

import torch

from .. import debug, layout

OPS = ("sum", "prod", "max", "min", "land", "lor")


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Communicator(abc.ABC):
    """A group of ranks and the collectives between them.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> comm.allreduce(torch.ones(2)).tolist() == [float(comm.size)] * 2
    True
    """

    backend: str = "?"

    @property
    @abc.abstractmethod
    def rank(self) -> int: ...

    @property
    @abc.abstractmethod
    def size(self) -> int: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # -- primitives every backend implements -------------------------------------------
    @abc.abstractmethod
    def barrier(self) -> None: ...

    @abc.abstractmethod
    def _bcast(self, t: torch.Tensor, root: int) -> None: ...

    @abc.abstractmethod
    def _allreduce(self, t: torch.Tensor, op: str) -> None:
        """In place on a contiguous tensor of a dtype the backend can reduce."""

    @abc.abstractmethod
    def _allgather_list(self, t: torch.Tensor, shapes: Sequence[torch.Size]) -> List[torch.Tensor]: ...

    @abc.abstractmethod
    def _exchange(self, sends: List[Optional[torch.Tensor]], recvs: List[Optional[torch.Tensor]]) -> None:
        """All-to-all: ``sends[j]`` (a view, maybe strided) goes to rank j and lands in ``recvs[i]``."""

    @abc.abstractmethod
    def send(self, t: torch.Tensor, dest: int, tag: int = 0) -> None: ...

    @abc.abstractmethod
    def recv(self, t: torch.Tensor, source: int, tag: int = 0) -> torch.Tensor: ...

    @abc.abstractmethod
    def isend(self, t: torch.Tensor, dest: int, tag: int = 0) -> Any: ...

    @abc.abstractmethod
    def irecv(self, t: torch.Tensor, source: int, tag: int = 0) -> Any: ...

    @abc.abstractmethod
    def allgather_obj(self, obj: Any) -> List[Any]:
        """Gather a small picklable object (metadata only) from every rank."""

    @abc.abstractmethod
    def split(self, color: int, key: Optional[int] = None) -> "Communicator":
        """Sub-communicator of the ranks that pass the same ``color``, ordered by ``key``."""

    # -- shared mechanics ----------------------------------------------------------------
    def bcast(self, t: torch.Tensor, root: int = 0) -> torch.Tensor:
        """Broadcast ``t`` from ``root`` into ``t`` on every rank (shapes must agree); returns it."""
        debug.record("bcast", nbytes(t), self.size)
        if self.size > 1:
            if not t.is_contiguous():
                raise ValueError("bcast needs a contiguous tensor")
            self._bcast(t, root)
        return t

    def allreduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Elementwise reduction over ranks; returns a new tensor with ``t``'s dtype.

        16-bit floats are reduced in float32 (no overflow, no 16-bit rounding per step).
        """
        if op not in OPS:
            raise ValueError(f"op={op!r} is not a reduction (expected one of {OPS})")
        debug.record("allreduce", nbytes(t), self.size)
        dtype = t.dtype
        if dtype in (torch.float16, torch.bfloat16):
            work = t.detach().to(torch.float32)
        elif dtype == torch.bool:
            work = t.detach().to(torch.uint8)
            op = {"land": "min", "lor": "max", "max": "max", "min": "min"}.get(op, op)
        else:
            work = t.detach().clone(memory_format=torch.contiguous_format)
        if self.size > 1:
            self._allreduce(work, op)
        return work.to(dtype) if work.dtype != dtype else work

    def allgather(self, t: torch.Tensor) -> torch.Tensor:
        """Stack equal-shaped tensors from all ranks: result shape ``(size, *t.shape)``."""
        return torch.stack(self.allgather_list(t, [t.shape] * self.size))

    def allgather_list(self, t: torch.Tensor, shapes: Sequence[torch.Size]) -> List[torch.Tensor]:
        """Every rank's tensor (rank i's has shape ``shapes[i]``), as a list."""
        debug.record("allgather", nbytes(t), self.size)
        t = t.detach().contiguous()
        if self.size == 1:
            return [t.clone()]
        return self._allgather_list(t, shapes)

    def allgatherv(self, t: torch.Tensor, counts: layout.Counts, axis: int) -> torch.Tensor:
        """Concatenate every rank's chunk along ``axis`` (rank i holds ``counts[i]`` rows)."""
        shapes = [layout.local_shape(t.shape, axis, c) for c in counts]
        return torch.cat(self.allgather_list(t, shapes), dim=axis)

    def exchange(self, src: torch.Tensor, send: Sequence[layout.Narrow], out_shape, recv: Sequence[layout.Narrow]) -> torch.Tensor:
        """Alltoallv: send ``narrow(src, send[j])`` to rank j; return the new local tensor of
        ``out_shape`` whose part ``narrow(out, recv[i])`` came from rank i."""
        src = src.detach()
        out = torch.empty(out_shape, dtype=src.dtype, device=src.device)
        sends = [layout.narrow(src, s) for s in send]
        recvs = [layout.narrow(out, r) for r in recv]
        debug.record("alltoallv", sum(nbytes(s) for i, s in enumerate(sends) if i != self.rank), self.size)
        sends = [s if s.numel() else None for s in sends]
        recvs = [r if r.numel() else None for r in recvs]
        if sends[self.rank] is not None:  # our own part never leaves the process
            recvs[self.rank].copy_(sends[self.rank])
        sends[self.rank] = recvs[self.rank] = None
        if self.size > 1:
            self._exchange(sends, recvs)
        return out

    def gatherv(self, t: torch.Tensor, counts: layout.Counts, axis: int, root: int = 0) -> Optional[torch.Tensor]:
        """Concatenate every rank's chunk along ``axis`` on ``root``; None on other ranks."""
        debug.record("gather", nbytes(t), self.size)
        t = t.detach().contiguous()
        if self.rank != root:
            if t.numel():
                self.send(t, root, tag=7)
            return None
        parts = []
        for i, c in enumerate(counts):
            if i == root:
                parts.append(t)
            else:
                part = torch.empty(layout.local_shape(t.shape, axis, c), dtype=t.dtype, device=t.device)
                if part.numel():
                    self.recv(part, i, tag=7)
                parts.append(part)
        return torch.cat(parts, dim=axis)

    def exscan(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Exclusive prefix reduction over ranks (rank 0 gets the op's identity as zeros/ones)."""
        return self._scan(t, op, inclusive=False)

    def scan(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Inclusive prefix reduction over ranks."""
        return self._scan(t, op, inclusive=True)

    def _scan(self, t: torch.Tensor, op: str, inclusive: bool) -> torch.Tensor:
        # Carries are small (one row per rank): an allgather and a local fold is both simple and fast.
        allt = self.allgather(t)
        upto = self.rank + 1 if inclusive else self.rank
        fold = {"sum": torch.sum, "prod": torch.prod, "max": torch.amax, "min": torch.amin}[op]
        if upto == 0:
            return torch.full_like(t, _identity(op, t.dtype))
        return fold(allt[:upto], dim=0).to(t.dtype)


def _identity(op: str, dtype: torch.dtype):
    """The neutral element of a reduction for a dtype (what rank 0 gets from an exscan)."""
    if op in ("sum", "prod"):
        return 0 if op == "sum" else 1
    if dtype == torch.bool:
        return op == "min"
    if dtype.is_floating_point:
        return float("-inf") if op == "max" else float("inf")
    info = torch.iinfo(dtype)
    return info.min if op == "max" else info.max
