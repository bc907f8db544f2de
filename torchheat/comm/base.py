"""The communicator interface shared by the mpi, torch and self backends.

All methods take and return plain ``torch.Tensor`` objects (never DistTensors) and
are called by every rank in the same order. Reductions accept ``op`` in
``"sum" | "prod" | "max" | "min" | "land" | "lor"`` for every dtype, with the same result
on every backend: ``land``/``lor`` are logical (nonzero is true; the result keeps the
dtype), a boolean ``sum``/``prod`` is ``lor``/``land``, complex tensors have no
``max``/``min``, and a floating-point ``max``/``min`` is NaN wherever any rank has a NaN
(as ``torch.amax``).

Every blocking method is watched by the collective timeout (:mod:`torchheat.comm.timeout`):
a rank that waits longer than ``th.config.timeout`` ends the job with a message.
"""
from __future__ import annotations

import abc
import os
from typing import Any, List, Optional, Sequence

import torch

from .. import debug, layout
from .timeout import Request, blocking

OPS = ("sum", "prod", "max", "min", "land", "lor")
_NATIVE_SUM = (torch.float32, torch.float64, torch.int64, torch.int32, torch.complex64, torch.complex128)
_LOGICAL = {"land": "min", "lor": "max", "sum": "max", "prod": "min", "max": "max", "min": "min"}


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def values(t: torch.Tensor) -> torch.Tensor:
    """``t`` detached, in memory that holds its values: a lazy conjugate or negative view is
    resolved and an efficient zero tensor (autograd's zero gradients) materialized."""
    t = t.detach()
    if t._is_zerotensor():
        return torch.zeros(t.shape, dtype=t.dtype, device=t.device)
    if t.numel() <= 1:  # torch calls it contiguous whatever its strides (x.real of one element has stride 2)
        return t.clone(memory_format=torch.contiguous_format)
    return t.resolve_conj().resolve_neg()


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the non-empty views ``a`` and ``b`` address the same elements in the same order."""
    return a.numel() > 0 and a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill its whole storage once each (a contiguous tensor, or a
    permutation of one)."""
    if t.storage_offset() or t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return False
    expected = 1
    for size, stride in sorted((p for p in zip(t.shape, t.stride()) if p[0] != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def contiguous_parts(views: List[Optional[torch.Tensor]], device="cpu", buffer=None) -> List[Optional[torch.Tensor]]:
    """Contiguous tensors shaped like ``views``, all in one storage (so one buffer with
    displacements addresses them): a fresh one on ``device``, or the front of the byte tensor
    ``buffer`` when given (large enough)."""
    sizes = [0 if v is None else v.numel() for v in views]
    dtype = next(v.dtype for v in views if v is not None) if any(sizes) else torch.uint8
    flat = torch.empty(sum(sizes), dtype=dtype, device=device) if buffer is None else \
        buffer[:sum(sizes) * dtype.itemsize].view(dtype)
    return [None if v is None else p.view(v.shape) for p, v in zip(flat.split(sizes), views)]


def check_op(op: str, dtype: torch.dtype) -> None:
    """Raise ValueError (on every rank alike) for a reduction that is not defined for ``dtype``."""
    if op not in OPS:
        raise ValueError(f"op={op!r} is not a reduction (expected one of {OPS})")
    if dtype.is_complex and op in ("max", "min"):
        raise ValueError(f"op={op!r} is not defined for complex tensors ({dtype}); expected 'sum', 'prod', 'land' or 'lor'")


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

    # Plain attributes, set once by the backend: the hot paths read them several times per op,
    # and a property read costs about 0.1 us.
    rank: int = 0  # this process's index in the communicator
    size: int = 1  # number of processes in the communicator

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # -- primitives every backend implements (the public methods below call them) --------
    @abc.abstractmethod
    def _barrier(self) -> None: ...

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
    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None: ...

    @abc.abstractmethod
    def _recv(self, t: torch.Tensor, source: int, tag: int) -> None:
        """Receive into ``t`` (maybe strided)."""

    @abc.abstractmethod
    def _isend(self, t: torch.Tensor, dest: int, tag: int) -> Any:
        """Start a send; returns an object with ``wait()``."""

    @abc.abstractmethod
    def _irecv(self, t: torch.Tensor, source: int, tag: int) -> Any:
        """Start a receive into ``t``; returns an object with ``wait()``."""

    @abc.abstractmethod
    def _iallreduce(self, t: torch.Tensor, op: str) -> Any:
        """Start an in-place reduction of a contiguous tensor; returns an object with ``wait()``."""

    @abc.abstractmethod
    def _allgather_obj(self, obj: Any) -> List[Any]: ...

    @abc.abstractmethod
    def _split(self, color: int, key: int) -> "Communicator": ...

    def stage(self, views: List[Optional[torch.Tensor]], side: str) -> List[Optional[torch.Tensor]]:
        """Contiguous stand-ins for ``views`` (not all None) in this communicator's staging
        buffer for ``side``, grown when too small: reusing it spares the page faults of fresh
        memory on every exchange, for the memory of the largest exchange so far."""
        device = next(v.device for v in views if v is not None)
        need = sum(0 if v is None else v.numel() * v.element_size() for v in views)
        staging = self.__dict__.setdefault("_staging", {})
        buffer = staging.get((side, device))
        if buffer is None or buffer.numel() < need:
            staging.pop((side, device), None)  # (freed before the larger one is taken)
            buffer = staging[(side, device)] = torch.empty(need, dtype=torch.uint8, device=device)
        return contiguous_parts(views, device, buffer)

    def abort(self, code: int = 1) -> None:
        """End the whole job now (the collective timeout's last step): this process exits and
        the launcher stops the other ranks. Backends with a job-wide abort override it."""
        os._exit(code)

    # -- shared mechanics ----------------------------------------------------------------
    @blocking("barrier")
    def barrier(self) -> None:
        """Wait until every rank has called it."""
        self._barrier()

    @blocking("send")
    def send(self, t: torch.Tensor, dest: int, tag: int = 0) -> None:
        """Send ``t`` to rank ``dest`` (which receives it with :meth:`recv`, same tag)."""
        self._send(t, dest, tag)

    @blocking("recv")
    def recv(self, t: torch.Tensor, source: int, tag: int = 0) -> torch.Tensor:
        """Receive a message from rank ``source`` into ``t`` (shape and dtype must fit); returns ``t``."""
        self._recv(t, source, tag)
        return t

    def isend(self, t: torch.Tensor, dest: int, tag: int = 0) -> Request:
        """Start sending ``t`` to ``dest``; the returned request's ``wait()`` completes it."""
        return Request(self, self._isend(t, dest, tag))

    def irecv(self, t: torch.Tensor, source: int, tag: int = 0) -> Request:
        """Start receiving into ``t`` from ``source``; ``t`` holds the message after ``wait()``."""
        return Request(self, self._irecv(t, source, tag))

    def iallreduce(self, t: torch.Tensor, op: str = "sum") -> Request:
        """Start an elementwise reduction over ranks of ``t`` IN PLACE; ``t`` holds the result
        after the returned request's ``wait()``. Every rank starts the same reductions in the
        same order. Unlike :meth:`allreduce` nothing is converted: ``t`` must be contiguous, of
        a 32/64-bit float or an integer dtype, and a float ``max``/``min`` is not offered (its
        NaN handling is the backend's).

        >>> import torch, torchheat as th
        >>> t = torch.ones(3)
        >>> req = th.get_comm().iallreduce(t)      # ... compute meanwhile ...
        >>> req.wait()
        >>> t.tolist() == [float(th.get_comm().size)] * 3
        True
        """
        check_op(op, t.dtype)
        if op in ("land", "lor") or t.dtype in (torch.bool, torch.float16, torch.bfloat16) or t.dtype.is_complex:
            raise ValueError(f"iallreduce reduces real 32/64-bit floats and integers with 'sum', 'prod', 'max' or 'min', "
                             f"got op={op!r} on {t.dtype}; use allreduce")
        if t.is_floating_point() and op in ("max", "min"):
            raise ValueError(f"iallreduce has no floating-point op={op!r} (NaN handling differs between backends); use allreduce")
        if not t.is_contiguous():
            raise ValueError("iallreduce works in place on a contiguous tensor, got a non-contiguous one")
        debug.record("iallreduce", nbytes(t), self.size)
        return Request(self, self._iallreduce(t.detach(), op))

    @blocking("allgather_obj")
    def allgather_obj(self, obj: Any) -> List[Any]:
        """Gather a small picklable object (metadata only) from every rank."""
        return self._allgather_obj(obj)

    @blocking("split")
    def split(self, color: int, key: Optional[int] = None) -> "Communicator":
        """Sub-communicator of the ranks that pass the same ``color``, ordered by ``key``
        (default: the rank); every rank calls it."""
        return self._split(color, self.rank if key is None else key)

    @blocking("bcast")
    def bcast(self, t: torch.Tensor, root: int = 0) -> torch.Tensor:
        """Broadcast ``t`` from ``root`` into ``t`` on every rank (shapes must agree); returns it."""
        debug.record("bcast", nbytes(t), self.size)
        if self.size > 1:
            work = t.detach() if t.is_contiguous() else t.detach().contiguous()
            self._bcast(work, root)
            if work.data_ptr() != t.data_ptr():
                t.detach().copy_(work)
        return t

    @blocking("allreduce")
    def allreduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Elementwise reduction over ranks; returns a new tensor with ``t``'s dtype.

        16-bit floats are reduced in float32 (no overflow, no 16-bit rounding per step);
        logical ops and booleans travel as bytes; a complex product, which not every
        backend reduces, is folded locally from an allgather; a floating-point max/min
        travels as integers ordered like the floats with NaN beyond the infinities, so a
        NaN on any rank gives NaN (as ``torch.amax``) in the same single collective.

        >>> import torch, torchheat as th
        >>> th.get_comm().allreduce(torch.tensor([1.0, float("nan")]), "max")
        tensor([1., nan])
        """
        check_op(op, t.dtype)
        debug.record("allreduce", nbytes(t), self.size)
        dtype = t.dtype
        if dtype.is_complex and op == "prod" and self.size > 1:
            return self.allgather(t).prod(dim=0)
        given, t = t, values(t)
        contiguous = torch.contiguous_format  # the backends reduce the buffer in place
        if dtype == torch.bool or op in ("land", "lor"):
            work = (t != 0).to(torch.uint8, memory_format=contiguous)
            op = _LOGICAL[op]
        elif dtype in (torch.float16, torch.bfloat16):
            work = t.to(torch.float32, memory_format=contiguous)
        elif given.numel() <= 1:  # values() copied it already
            work = t
        else:
            work = t.clone(memory_format=contiguous)
        if self.size > 1:
            if work.is_floating_point() and op in ("max", "min"):
                self._allreduce_ordered(work, op)
            else:
                self._allreduce(work, op)
        return work.to(dtype) if work.dtype != dtype else work

    @blocking("allreduce")
    def allreduce_(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """:meth:`allreduce` in place on ``t``, a tensor the caller owns (no autograd); returns ``t``.

        A contiguous sum of a dtype every backend reduces natively goes to the backend as it
        is, with no copy: the path of a scalar reduction's one collective. Anything else
        takes :meth:`allreduce` and is copied back.

        >>> import torch, torchheat as th
        >>> th.get_comm().allreduce_(torch.ones(())).item() == th.get_comm().size
        True
        """
        if op == "sum" and t.dtype in _NATIVE_SUM and t.is_contiguous() and not t.requires_grad:
            debug.record("allreduce", nbytes(t), self.size)
            if self.size > 1:
                self._allreduce(t, op)
            return t
        return t.copy_(self.allreduce(t, op))

    def _allreduce_ordered(self, work: torch.Tensor, op: str) -> None:
        """Max/min over ranks in place on a contiguous float32/float64 tensor, NaN if any rank has
        NaN: the bits travel as integers ordered like the floats, every NaN made the largest
        (max) or smallest (min) integer, so an integer max/min propagates it."""
        itype, shift, inf = _KEYS[work.dtype]
        keys = work.view(itype)
        magnitude = (1 << shift) - 1
        if keys.numel() == 1:  # a scalar: Python int operators cost nanoseconds, tensor ones microseconds
            b = keys.item()
            keys.fill_((magnitude if op == "max" else ~magnitude) if (b & magnitude) > inf else b ^ ((b >> shift) & magnitude))
            self._allreduce(keys, op)
            b = keys.item()
            keys.fill_(b ^ ((b >> shift) & magnitude))
            return
        bits = keys.numpy() if keys.device.type == "cpu" else keys  # same operators; numpy is cheaper per small op
        nan = (bits & magnitude) > inf
        bits ^= (bits >> shift) & magnitude
        bits[nan] = magnitude if op == "max" else ~magnitude  # both are NaN bit patterns again
        self._allreduce(keys, op)
        bits ^= (bits >> shift) & magnitude

    @blocking("reduce_scatter")
    def reduce_scatter(self, t: torch.Tensor, counts: layout.Counts, axis: int = 0, op: str = "sum") -> torch.Tensor:
        """Reduce ``t`` over ranks and keep this rank's chunk of the result along ``axis``.

        Every rank passes a tensor of the same shape with ``sum(counts)`` rows along
        ``axis``; rank r gets rows ``[offsets[r], offsets[r] + counts[r])`` of the
        elementwise reduction. One all-to-all (each rank sends the others their rows),
        then a local reduction: the same bytes as a ring reduce-scatter.

        >>> import torch, torchheat as th
        >>> comm = th.get_comm()
        >>> counts = th.layout.balanced_counts(4, comm.size)
        >>> comm.reduce_scatter(torch.ones(4, 2), counts).shape[0] == counts[comm.rank]
        True
        """
        check_op(op, t.dtype)
        t = t.detach()
        axis = layout.normalize_axis(axis, t.dim(), "axis")
        counts = layout.check_counts(counts, t.shape[axis], self.size)
        mine = counts[self.rank]
        # Part i of the received tensor is rank i's version of this rank's rows.
        send = tuple(((axis, o, c),) for o, c in zip(layout.offsets(counts), counts))
        recv = tuple(((axis, i * mine, mine),) for i in range(self.size))
        parts = self.exchange(t, send, layout.local_shape(t.shape, axis, self.size * mine), recv)
        return _fold(parts.unflatten(axis, (self.size, mine)), op, axis, t.dtype)

    @blocking("allgather")
    def allgather(self, t: torch.Tensor) -> torch.Tensor:
        """Stack equal-shaped tensors from all ranks: result shape ``(size, *t.shape)``."""
        return torch.stack(self.allgather_list(t, [t.shape] * self.size))

    @blocking("allgather_list")
    def allgather_list(self, t: torch.Tensor, shapes: Sequence[torch.Size]) -> List[torch.Tensor]:
        """Every rank's tensor (rank i's has shape ``shapes[i]``), as a list."""
        debug.record("allgather", nbytes(t), self.size)
        t = values(t).contiguous()
        if self.size == 1:
            return [t.clone()]
        return self._allgather_list(t, shapes)

    @blocking("allgatherv")
    def allgatherv(self, t: torch.Tensor, counts: layout.Counts, axis: int) -> torch.Tensor:
        """Concatenate every rank's chunk along ``axis`` (rank i holds ``counts[i]`` rows)."""
        shapes = [layout.local_shape(t.shape, axis, c) for c in counts]
        return torch.cat(self.allgather_list(t, shapes), dim=axis)

    @blocking("exchange")
    def exchange(self, src: torch.Tensor, send: Sequence[layout.Narrow], out_shape, recv: Sequence[layout.Narrow],
                 consume: bool = False) -> torch.Tensor:
        """Alltoallv: send ``narrow(src, send[j])`` to rank j; return the new local tensor of
        ``out_shape`` whose part ``narrow(out, recv[i])`` came from rank i (zeros elsewhere;
        where the parts of several ranks overlap, their sum: the adjoint of a plan that sends
        one row to several ranks).

        ``consume=True`` says that the caller has no further use for ``src`` (nor for any view
        of its memory): when ``src`` fills its storage and the result fits in it, the parts to
        send are packed into the staging buffer and the result takes ``src``'s memory, which
        spares the page faults of a fresh chunk."""
        src = values(src)
        sends = [layout.narrow(src, s) for s in send]
        summed = layout.overlapping(tuple(recv), tuple(out_shape))
        if consume and dense(src) and 0 < torch.Size(out_shape).numel() <= src.numel():
            out = torch.empty(0, dtype=src.dtype, device=src.device).set_(src.untyped_storage(), 0, out_shape)
            parts = [layout.narrow(out, r) for r in recv]
            tiled = not summed and sum(r.numel() for r in parts) == out.numel()
            if tiled and _same_memory(sends[self.rank], parts[self.rank]):  # our own part is in place already
                sends[self.rank] = parts[self.rank] = out.new_empty(0)
            live = [s if s.numel() else None for s in sends]
            if any(v is not None for v in live):
                sends = [s if h is None else h.copy_(s) for h, s in zip(self.stage(live, "send"), sends)]
        else:
            out = torch.empty(out_shape, dtype=src.dtype, device=src.device)
            parts = [layout.narrow(out, r) for r in recv]
            tiled = not summed and sum(r.numel() for r in parts) == out.numel()
        if not tiled:  # the parts leave gaps, or overlap
            out.zero_()
        debug.record("alltoallv", sum(nbytes(s) for i, s in enumerate(sends) if i != self.rank), self.size)
        sends = [s if s.numel() else None for s in sends]
        recvs = [(torch.empty_like(r) if summed else r) if r.numel() else None for r in parts]
        if sends[self.rank] is not None:  # our own part never leaves the process
            recvs[self.rank].copy_(sends[self.rank])
        own, sends[self.rank] = recvs[self.rank], None
        recvs[self.rank] = None
        if self.size > 1:
            self._exchange(sends, recvs)
        if summed:
            recvs[self.rank] = own
            for part, got in zip(parts, recvs):
                if got is not None:
                    part.add_(got)
        return out

    @blocking("gatherv")
    def gatherv(self, t: torch.Tensor, counts: layout.Counts, axis: int, root: int = 0) -> Optional[torch.Tensor]:
        """Concatenate every rank's chunk along ``axis`` on ``root``; None on other ranks."""
        debug.record("gather", nbytes(t), self.size)
        t = values(t).contiguous()
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

    @blocking("exscan")
    def exscan(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Exclusive prefix reduction over ranks (rank 0 gets the op's identity as zeros/ones)."""
        return self._scan(t, op, inclusive=False)

    @blocking("scan")
    def scan(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Inclusive prefix reduction over ranks."""
        return self._scan(t, op, inclusive=True)

    def _scan(self, t: torch.Tensor, op: str, inclusive: bool) -> torch.Tensor:
        check_op(op, t.dtype)
        # Carries are small (one row per rank): an allgather and a local fold is both simple and fast.
        allt = self.allgather(t)
        upto = self.rank + 1 if inclusive else self.rank
        if upto == 0:
            return torch.full_like(t, _identity(op, t.dtype))
        return _fold(allt[:upto], op, 0, t.dtype)


def _fold(stacked: torch.Tensor, op: str, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """Reduce the per-rank values stacked along ``dim`` the way :meth:`Communicator.allreduce` does."""
    if dtype == torch.bool or op in ("land", "lor"):
        nonzero = stacked != 0
        out = nonzero.all(dim) if _LOGICAL[op] == "min" else nonzero.any(dim)
    else:
        if dtype in (torch.float16, torch.bfloat16):
            stacked = stacked.to(torch.float32)
        out = {"sum": torch.sum, "prod": torch.prod, "max": torch.amax, "min": torch.amin}[op](stacked, dim=dim)
    return out.to(dtype)


def _identity(op: str, dtype: torch.dtype):
    """The neutral element of a reduction for a dtype (what rank 0 gets from an exscan)."""
    if dtype == torch.bool or op in ("land", "lor"):
        return _LOGICAL[op] == "min"
    if op in ("sum", "prod"):
        return 0 if op == "sum" else 1
    if dtype.is_floating_point:
        return float("-inf") if op == "max" else float("inf")
    info = torch.iinfo(dtype)
    return info.min if op == "max" else info.max


# A float's bits read as a signed integer are ordered like the float for positive values and
# reversed for negative ones; flipping the magnitude bits of negatives gives integers in the
# floats' order (the same flip undoes it). NaN bits lie beyond the infinities' magnitude.
_KEYS = {torch.float32: (torch.int32, 31, 0x7F800000), torch.float64: (torch.int64, 63, 0x7FF0000000000000)}
