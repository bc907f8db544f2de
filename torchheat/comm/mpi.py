"""The MPI communicator (mpi4py), for jobs launched by ``mpiexec`` or ``srun``.

Tensor data travels as raw memory (never pickled). Strided views whose contiguous runs
are long are described to MPI with derived datatypes, so a resplit along a non-contiguous
axis copies nothing on either side; views with short runs (a transposed chunk, where every
element is its own run) are packed by torch's copy kernels into a staging buffer that the
communicator keeps for the next exchange, since MPI's datatype engine walks such views
element by element, several times slower than a copy. CUDA chunks go straight to a CUDA-aware MPI (``TORCHHEAT_CUDA_AWARE_MPI=1``
or an Open MPI/MPICH build that reports it), else they are staged through host memory.
"""
from __future__ import annotations

import os
from typing import List, Optional

import torch

from .base import Communicator, contiguous_parts
from .timeout import abort_on_uncaught_exception

from mpi4py import MPI  # noqa: E402  (imported only when this backend is chosen)

_OPS = {"sum": MPI.SUM, "prod": MPI.PROD, "max": MPI.MAX, "min": MPI.MIN}


def _cuda_aware() -> bool:
    """Whether MPI can read CUDA memory: ``TORCHHEAT_CUDA_AWARE_MPI`` decides, else the
    switches Open MPI and Cray MPICH set when they are built for it."""
    flag = os.environ.get("TORCHHEAT_CUDA_AWARE_MPI")
    if flag is not None:
        return flag.lower() not in ("0", "", "false", "no")
    return os.environ.get("OMPI_MCA_opal_cuda_support") == "true" or os.environ.get("MPICH_GPU_SUPPORT_ENABLED") == "1"


def _storage_bytes(t: torch.Tensor):
    """The whole storage behind ``t`` as a writable byte buffer MPI can address."""
    base = torch.empty(0, dtype=torch.uint8, device=t.device)
    base.set_(t.untyped_storage())
    return base if t.is_cuda else base.numpy()


def _bytes(t: torch.Tensor):
    """A contiguous tensor's own memory as a byte buffer (CPU: numpy view; CUDA: the tensor)."""
    # (one element counts as contiguous whatever its strides, and its reshape keeps them)
    flat = (t.reshape(-1) if t.numel() > 1 else t.as_strided((t.numel(),), (1,))).view(torch.uint8)
    return flat if t.is_cuda else flat.numpy()


# Contiguous runs shorter than this many bytes travel packed (see the module docstring).
PACK_BELOW = 1024


def _run(v: torch.Tensor):
    """``(bytes, k)``: the length of a view's contiguous runs (trailing contiguous dims merged)
    and how many leading dims remain."""
    item = v.element_size()
    shape, strides = v.shape, v.stride()
    block, k = item, v.dim()
    while k > 0 and (shape[k - 1] == 1 or strides[k - 1] * item == block):
        block *= shape[k - 1]
        k -= 1
    return block, k


def _scattered(views: List[Optional[torch.Tensor]]) -> bool:
    """Whether some view has short contiguous runs (cheaper packed than described to MPI)."""
    return any(v is not None and _run(v)[1] > 0 and _run(v)[0] < PACK_BELOW for v in views)


def _view_type(v: torch.Tensor) -> MPI.Datatype:
    """An MPI datatype describing a strided view's elements (trailing contiguous dims merged)."""
    item = v.element_size()
    shape, strides = v.shape, v.stride()
    block, k = _run(v)
    dtype = MPI.BYTE.Create_contiguous(block)
    for d in range(k - 1, -1, -1):
        outer = dtype.Create_hvector(shape[d], 1, strides[d] * item)
        dtype.Free()
        dtype = outer
    return dtype.Commit()


class _Request:
    """A pending point-to-point operation; ``wait()`` completes it."""

    def __init__(self, req, finish=None):
        self._req, self._finish = req, finish

    def wait(self):
        self._req.Wait()
        if self._finish is not None:
            self._finish()

    def test(self) -> bool:
        return self._req.Test()


class MPICommunicator(Communicator):
    """Communicator over an ``mpi4py.MPI.Comm`` (default ``COMM_WORLD``).

    Examples
    --------
    >>> comm = MPICommunicator()          # doctest: +SKIP
    >>> comm.allreduce(torch.ones(1))     # doctest: +SKIP
    tensor([4.])                          # on 4 ranks
    """

    backend = "mpi"

    def __init__(self, mpi_comm: Optional[MPI.Comm] = None):
        self.mpi = mpi_comm if mpi_comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.mpi.Get_rank(), self.mpi.Get_size()
        self.cuda_aware = _cuda_aware()
        if mpi_comm is None and self.size > 1:
            abort_on_uncaught_exception(self)

    def _staged(self, t: torch.Tensor) -> bool:
        return t.is_cuda and not self.cuda_aware

    def abort(self, code: int = 1) -> None:
        """End the whole job: ``MPI_Abort`` of the world (this may be called from the timeout's
        watchdog thread, which MPI allows at ``MPI_THREAD_MULTIPLE``, mpi4py's default); at a
        lower thread level this process exits and the launcher stops the others."""
        if MPI.Query_thread() == MPI.THREAD_MULTIPLE:
            MPI.COMM_WORLD.Abort(code)
        os._exit(code)

    def _barrier(self) -> None:
        self.mpi.Barrier()

    def _bcast(self, t, root):
        work = t.cpu() if self._staged(t) else t
        self.mpi.Bcast(_bytes(work), root=root)
        if work is not t:
            t.copy_(work)

    def _allreduce(self, t, op):
        work = t.cpu() if self._staged(t) else t
        buf = work.reshape(-1) if work.is_cuda else work.numpy()
        self.mpi.Allreduce(MPI.IN_PLACE, buf, op=_OPS[op])
        if work is not t:
            t.copy_(work)

    def _iallreduce(self, t, op):
        work = t.cpu() if self._staged(t) else t
        buf = work.reshape(-1) if work.is_cuda else work.numpy()
        req = self.mpi.Iallreduce(MPI.IN_PLACE, buf, op=_OPS[op])
        return _Request(req, finish=(lambda: buf) if work is t else (lambda: t.copy_(work)))  # keeps the buffer alive

    def _allgather_list(self, t, shapes):
        item = t.element_size()
        sizes = [item * torch.Size(s).numel() for s in shapes]
        device = "cpu" if self._staged(t) else t.device
        out = torch.empty(sum(sizes), dtype=torch.uint8, device=device)
        displs = [sum(sizes[:i]) for i in range(len(sizes))]
        self.mpi.Allgatherv(_bytes(t.to(device)), [_bytes(out), sizes, displs, MPI.BYTE])
        parts = torch.split(out, sizes)
        return [p.view(t.dtype).reshape(s).to(t.device) for p, s in zip(parts, shapes)]

    def _exchange(self, sends, recvs):
        if any(v is not None and self._staged(v) for v in sends + recvs):
            host_sends, host_recvs = contiguous_parts(sends), contiguous_parts(recvs)
            for h, s in zip(host_sends, sends):
                if h is not None:
                    h.copy_(s)
            self._alltoallw(host_sends, host_recvs)
            for r, h in zip(recvs, host_recvs):
                if r is not None:
                    r.copy_(h)
        else:
            self._alltoallw(sends, recvs)

    def _alltoallw(self, sends, recvs):
        # Views with short contiguous runs travel through staging buffers, packed and
        # unpacked by torch; the others are described in place by derived datatypes.
        given = recvs
        if _scattered(sends):
            staged = self.stage(sends, "send")
            for h, v in zip(staged, sends):
                if h is not None:
                    h.copy_(v)
            sends = staged
        if _scattered(recvs):
            recvs = self.stage(recvs, "recv")
        self._alltoallw_views(sends, recvs)
        if recvs is not given:
            for v, h in zip(given, recvs):
                if v is not None:
                    v.copy_(h)

    def _alltoallw_views(self, sends, recvs):
        def spec(views):
            anchor = next((v for v in views if v is not None), None)
            if anchor is None:
                return [bytearray(1), [0] * self.size, [0] * self.size, [MPI.BYTE] * self.size], []
            buf = _storage_bytes(anchor)
            base = anchor.untyped_storage().data_ptr()
            types = [MPI.BYTE if v is None else _view_type(v) for v in views]
            counts = [0 if v is None else 1 for v in views]
            displs = [0 if v is None else v.data_ptr() - base for v in views]
            return [buf, counts, displs, types], [t for t in types if t != MPI.BYTE]

        sspec, sfree = spec(sends)
        rspec, rfree = spec(recvs)
        try:
            self.mpi.Alltoallw(sspec, rspec)
        finally:
            for t in sfree + rfree:
                t.Free()

    def _send(self, t, dest, tag):
        self.mpi.Send(_bytes(t.detach().contiguous().cpu() if self._staged(t) else t.detach().contiguous()), dest, tag)

    def _recv_buffer(self, t: torch.Tensor) -> torch.Tensor:
        # MPI writes raw bytes: receive into contiguous host memory when t cannot take them.
        if self._staged(t) or not t.is_contiguous():
            return torch.empty(t.shape, dtype=t.dtype, device="cpu" if self._staged(t) else t.device)
        return t

    def _recv(self, t, source, tag):
        work = self._recv_buffer(t)
        self.mpi.Recv(_bytes(work), source, tag)
        if work is not t:
            t.copy_(work)

    def _isend(self, t, dest, tag):
        work = t.detach().contiguous()
        work = work.cpu() if self._staged(work) else work
        req = self.mpi.Isend(_bytes(work), dest, tag)
        return _Request(req, finish=lambda: work)  # keeps the buffer alive until wait()

    def _irecv(self, t, source, tag):
        work = self._recv_buffer(t)
        req = self.mpi.Irecv(_bytes(work), source, tag)
        return _Request(req, finish=None if work is t else (lambda: t.copy_(work)))

    def _allgather_obj(self, obj):
        return self.mpi.allgather(obj)

    def _split(self, color, key):
        return MPICommunicator(self.mpi.Split(color, key))
