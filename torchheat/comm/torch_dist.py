"""The torch.distributed communicator, for jobs launched by ``torchrun``.

gloo carries CPU tensors and NCCL CUDA tensors (the process group is created for both
when CUDA is available). The group is initialised from torchrun's environment unless the
program already did it.
"""
from __future__ import annotations

import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist

from ..config import config
from .base import Communicator
from .timeout import abort_on_uncaught_exception

_OPS = {"sum": dist.ReduceOp.SUM, "prod": dist.ReduceOp.PRODUCT, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
# Integer dtypes gloo does not reduce, and the wider dtype that gives the same result (the
# cast back wraps exactly as the narrow arithmetic would).
_WIDER = {torch.int16: torch.int32, torch.uint16: torch.int32, torch.uint32: torch.int64}


def init_from_env() -> None:
    """Create the default process group from torchrun's variables if there is none yet.

    With ``th.config.timeout`` set, the group's own timeout is a little longer: torchheat's
    watchdog, whose message names the waiting collective and the caller's line, fires first,
    and the group's timeout still bounds what is not made through a Communicator.
    """
    if dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    timeout = None if config.timeout is None else datetime.timedelta(seconds=config.timeout + 10)
    dist.init_process_group(backend=backend, timeout=timeout)


class _CopyOnWait:
    """A pending receive into a contiguous buffer that ``wait()`` copies to the strided target."""

    def __init__(self, work, buffer: torch.Tensor, target: torch.Tensor):
        self._work, self._buffer, self._target = work, buffer, target

    def wait(self):
        self._work.wait()
        self._target.copy_(self._buffer)

    def test(self) -> bool:
        return self._work.is_completed()


class TorchCommunicator(Communicator):
    """Communicator over a torch.distributed process group (default: the world); under torchrun.

    Examples
    --------
    >>> comm = TorchCommunicator()          # doctest: +SKIP
    >>> comm.allreduce(torch.ones(1))       # doctest: +SKIP
    tensor([2.])                            # on 2 workers
    """

    backend = "torch"

    def __init__(self, group: Optional[dist.ProcessGroup] = None):
        init_from_env()
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)
        self._world = [dist.get_global_rank(group, r) for r in range(self.size)] if group is not None else list(range(self.size))
        if group is None and self.size > 1:
            abort_on_uncaught_exception(self)

    def abort(self, code: int = 1) -> None:
        """End the whole job: this worker exits at once and torchrun stops the others."""
        os._exit(code)

    def _barrier(self) -> None:
        dist.barrier(group=self.group)

    def _bcast(self, t, root):
        dist.broadcast(t.reshape(-1).view(torch.uint8), src=self._world[root], group=self.group)  # any dtype as bytes

    def _allreduce(self, t, op):
        if t.dtype in _WIDER:
            wide = t.to(_WIDER[t.dtype])
            dist.all_reduce(wide, op=_OPS[op], group=self.group)
            t.copy_(wide)
        else:
            dist.all_reduce(t, op=_OPS[op], group=self.group)

    def _iallreduce(self, t, op):
        if t.dtype in _WIDER:
            wide = t.to(_WIDER[t.dtype])
            return _CopyOnWait(dist.all_reduce(wide, op=_OPS[op], group=self.group, async_op=True), wide, t)
        return dist.all_reduce(t, op=_OPS[op], group=self.group, async_op=True)

    def _allgather_list(self, t, shapes):
        # Sizes may differ per rank: gather padded byte buffers of the largest size.
        item = t.element_size()
        sizes = [item * torch.Size(s).numel() for s in shapes]
        width = max(sizes)
        mine = torch.zeros(width, dtype=torch.uint8, device=t.device)
        mine[: sizes[self.rank]] = t.reshape(-1).view(torch.uint8)
        bufs = [torch.empty(width, dtype=torch.uint8, device=t.device) for _ in shapes]
        dist.all_gather(bufs, mine, group=self.group)
        return [b[:n].view(t.dtype).reshape(s) for b, n, s in zip(bufs, sizes, shapes)]

    def _exchange(self, sends, recvs):
        # One alltoallv of packed bytes (gloo's list form needs equal sizes).
        device = next((v.device for v in sends + recvs if v is not None), torch.device("cpu"))
        ins = [torch.empty(0, dtype=torch.uint8, device=device) if s is None else s.contiguous().reshape(-1).view(torch.uint8) for s in sends]
        out_sizes = [0 if r is None else r.numel() * r.element_size() for r in recvs]
        packed_out = torch.empty(sum(out_sizes), dtype=torch.uint8, device=device)
        dist.all_to_all_single(packed_out, torch.cat(ins), out_sizes, [i.numel() for i in ins], group=self.group)
        for r, o in zip(recvs, torch.split(packed_out, out_sizes)):
            if r is not None:
                r.copy_(o.view(r.dtype).reshape(r.shape))

    def _send(self, t, dest, tag):
        dist.send(t.detach().contiguous(), self._world[dest], group=self.group, tag=tag)

    def _recv(self, t, source, tag):
        work = t if t.is_contiguous() else torch.empty_like(t, memory_format=torch.contiguous_format)
        dist.recv(work, self._world[source], group=self.group, tag=tag)
        if work is not t:
            t.copy_(work)

    def _isend(self, t, dest, tag):
        return dist.isend(t.detach().contiguous(), self._world[dest], group=self.group, tag=tag)

    def _irecv(self, t, source, tag):
        if t.is_contiguous():
            return dist.irecv(t, self._world[source], group=self.group, tag=tag)
        work = torch.empty_like(t, memory_format=torch.contiguous_format)
        return _CopyOnWait(dist.irecv(work, self._world[source], group=self.group, tag=tag), work, t)

    def _allgather_obj(self, obj):
        out: List[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def _split(self, color, key):
        # Every rank must create every new group, in the same order.
        pairs = self.allgather_obj((color, key, self._world[self.rank]))
        mine = None
        for c in sorted({c for c, _, _ in pairs}):
            members = [g for _, g in sorted((k, g) for cc, k, g in pairs if cc == c)]
            group = dist.new_group(ranks=members)
            if c == color:
                mine = group
        return TorchCommunicator(mine)
