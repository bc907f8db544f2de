"""Data-parallel training of a replicated module: :class:`DataParallel`.

Every rank holds the whole module. At wrap time rank 0's parameters and buffers are
broadcast (one collective for all of them). What happens in backward depends on the batch
the forward got:

* **plain per-rank batches** (each rank its own ``torch.Tensor`` batch, as with torch's
  ``DistributedDataParallel``): gradients are averaged over ranks. The parameters are cut
  into buckets of about ``bucket_cap_mb`` megabytes (in reverse order of registration, the
  order in which backward produces their gradients; the first bucket closes once it holds
  1 MB, as in DDP, so that its reduction runs while the rest of backward does); a
  post-accumulate-grad hook notes each parameter's gradient, and when a bucket is complete
  its gradients are copied into one flat buffer (divided by the number of ranks on the way)
  and a non-blocking allreduce of it starts while backward goes on; every later hook tests
  the pending allreduces, since MPI advances them only inside MPI calls. At the end of backward (an
  autograd engine callback) the remaining buckets are started and all are waited for, and
  each ``.grad`` becomes a view of its average in the flat buffer (nothing copied back). A
  backward that accumulates into those views (``zero_grad(set_to_none=False)``) reduces
  the buffer in place without a copy. Buckets start in the same order on every rank
  whatever order the hooks fire in.
* **batch-split DistTensors**: torchheat's autograd already gives every replicated
  parameter the exact gradient of the global loss, summed over ranks (DESIGN.md section 3);
  DataParallel adds no reduction of its own, so nothing is reduced twice.

Examples
--------
>>> import torch, torchheat as th
>>> _ = torch.manual_seed(0)                     # the same model on every rank
>>> model = th.nn.DataParallel(torch.nn.Linear(3, 1))
>>> model(torch.ones(4, 3)).sum().backward()     # this rank's batch of 4
>>> model.module.weight.grad.shape
torch.Size([1, 3])
"""
from __future__ import annotations

import contextlib
import warnings
from typing import List, Optional

import torch
from torch.utils import _pytree as pytree

from ..comm import Communicator, get_comm
from ..tensor import DistTensor

__all__ = ["DataParallel"]

# DDP's first bucket size: the last layers' gradients are reduced while backward computes
# the others' (gloo's threads progress it, on MPI the later hooks' tests do; the small CNN's
# wait after backward went from 5-11 ms to 0.3-4 ms in most steps on gloo, 1.5-4 to 0.1-1.2 on MPI)
_FIRST_BUCKET_BYTES = 1 << 20


def _as_bytes(tensors: List[torch.Tensor]) -> torch.Tensor:
    """The values of ``tensors`` (any dtypes) packed into one flat byte tensor."""
    return torch.cat([t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors])


def _unpack_into(tensors: List[torch.Tensor], flat: torch.Tensor) -> None:
    start = 0
    for t in tensors:
        n = t.numel() * t.element_size()
        # through .data: the graph of the forward that just ran (BatchNorm saves its running
        # statistics, unused in training backward) must not see a new version of the tensor
        t.data.copy_(flat[start:start + n].view(t.dtype).view(t.shape))
        start += n


def broadcast_tensors(tensors: List[torch.Tensor], comm: Communicator, root: int = 0, check: bool = True) -> bool:
    """Overwrite ``tensors`` in place with ``root``'s values in one broadcast; return whether
    any rank's values differed from root's (the same answer on every rank; with
    ``check=False`` not asked, one collective less, and False)."""
    if comm.size == 1 or not tensors:
        return False
    mine = _as_bytes(tensors)
    flat = comm.bcast(mine.clone() if check else mine, root)
    if not check:
        _unpack_into(tensors, flat)
        return False
    differed = comm.allreduce(torch.tensor([not torch.equal(mine, flat)]), "lor")
    _unpack_into(tensors, flat)
    return bool(differed)


class _Bucket:
    """Gradients of some parameters of one dtype and device, reduced by one allreduce.

    After a reduction every parameter's ``.grad`` is a view into the bucket's flat buffer
    (as with DDP's ``gradient_as_bucket_view``), so nothing is copied back; a backward that
    accumulates into those views (``zero_grad(set_to_none=False)``, ``no_sync()``) finds its
    gradients already in place and reduces the buffer without a copy. Otherwise (fresh
    gradients after ``zero_grad()``) they are copied into a new buffer, so that a gradient
    the user kept from an earlier step is never overwritten.
    """

    def __init__(self, params: List[torch.Tensor]):
        self.params = params
        self.sizes = [p.numel() for p in params]
        self.numel = sum(self.sizes)
        self.ready = 0
        self.flat: Optional[torch.Tensor] = None  # the buffer of the reduction under way
        self.request = None

    def _own_buffer(self) -> Optional[torch.Tensor]:
        """The last reduction's buffer if every gradient is still its view into it (then
        nothing is copied), else None. Only the gradients keep it alive between steps."""
        grad0 = self.params[0].grad
        flat = None if grad0 is None else grad0._base
        if flat is None or flat.numel() != self.numel + len(self.params):
            return None
        item, offset = flat.element_size(), flat.data_ptr()
        for p, n in zip(self.params, self.sizes):
            g = p.grad
            if g is None or g._base is not flat or g.data_ptr() != offset or not g.is_contiguous():
                return None
            offset += n * item
        return flat

    def start(self, comm: Communicator) -> None:
        """Put the gradients divided by the number of ranks into the flat buffer (one more
        element per parameter: 1 where this rank has its gradient) and start its allreduce."""
        numel, p0 = self.numel, self.params[0]
        self.flat = flat = self._own_buffer()
        if flat is not None:
            flat[:numel].div_(comm.size)
        else:
            self.flat = flat = torch.empty(numel + len(self.params), dtype=p0.dtype, device=p0.device)
            for p, part in zip(self.params, flat[:numel].split(self.sizes)):
                if p.grad is None:
                    part.zero_()
                else:  # the division fused into the copy (exact for a power-of-two number of ranks)
                    torch.div(p.grad.reshape(-1), comm.size, out=part)
        flat[numel:] = torch.tensor([p.grad is not None for p in self.params], dtype=flat.dtype)
        self.request = comm.iallreduce(flat)

    def finish(self, comm: Communicator) -> List[int]:
        """Wait, point ``.grad`` at the averages; return how many ranks had each gradient."""
        self.request.wait()
        flat, numel = self.flat, self.numel
        used = [round(u) for u in flat[numel:].tolist()]
        for p, part, u in zip(self.params, flat[:numel].split(self.sizes), used):
            if u:  # else no rank has a gradient for it: it stays None, as in one process
                p.grad = part.view_as(p)
        self.flat = self.request = None
        self.ready = 0
        return used


def _plan_buckets(params: List[torch.Tensor], cap_bytes: int) -> List[_Bucket]:
    """Consecutive parameters (in reverse order) of one dtype and device, about ``cap_bytes``
    each, the first about ``_FIRST_BUCKET_BYTES`` (when smaller)."""
    buckets, current, size = [], [], 0
    for p in reversed(params):
        cap = cap_bytes if buckets else min(cap_bytes, _FIRST_BUCKET_BYTES)
        if current and (size >= cap or (p.dtype, p.device) != (current[0].dtype, current[0].device)):
            buckets.append(_Bucket(current))
            current, size = [], 0
        current.append(p)
        size += p.numel() * p.element_size()
    if current:
        buckets.append(_Bucket(current))
    return buckets


class DataParallel(torch.nn.Module):
    """Wrap a module for data-parallel training on the ranks of ``comm``.

    Parameters
    ----------
    module : torch.nn.Module
        The model, built the same way on every rank. Rank 0's parameters and buffers are
        broadcast at wrap time; a ``RuntimeWarning`` on every rank says if they differed.
    bucket_cap_mb : float
        Size of the gradient buckets in megabytes (each one allreduce); the first bucket
        (the last layers') closes once it holds 1 MB, as in DDP.
    comm : Communicator, optional
        The ranks to train on (default: :func:`torchheat.get_comm`).
    broadcast_buffers : bool
        Broadcast rank 0's buffers (BatchNorm running statistics) after every forward in
        training mode, so they are identical on every rank at all times.
    find_unused_parameters : bool
        With True, parameters that get no gradient on some ranks are allowed: a parameter
        used on some ranks only gets the average of theirs and zeros, one used on no rank
        keeps ``grad=None`` (as in one process; an optimizer then skips it). With False (as
        in DDP, where it saves a pass over the graph) such a backward raises RuntimeError on
        every rank, naming the parameters, after the reduction (nothing hangs). On one
        process nothing is reduced and nothing checked.
    dim : int
        The batch axis of the inputs.

    Gradient semantics
    ------------------
    Plain per-rank batches: every parameter's gradient is the mean over ranks of the
    per-rank gradients (torch DDP's semantics). For a loss that is a mean over equal-sized
    per-rank batches this is the gradient of the mean over the global batch; with batches
    of different sizes each rank still counts equally (pass a batch-split DistTensor for
    the exact global mean). A sum loss gives ``1/p`` times the global sum's gradient.
    Batch-split DistTensors (split along ``dim``): the exact gradient of the loss computed
    on the global batch, by torchheat's autograd, with no further reduction. A DistTensor
    input that is not split along ``dim`` raises ValueError on every rank. BatchNorm layers
    see the per-rank batch in the first case (local statistics, as in DDP).

    ``no_sync()`` skips the reduction for gradient accumulation; the next synchronized
    backward reduces the accumulated gradients. Every rank must run the same number of
    synchronized backwards (the collective timeout ends a job where one rank stops early).

    Examples
    --------
    >>> import torch, torchheat as th
    >>> _ = torch.manual_seed(0)
    >>> model = th.nn.DataParallel(torch.nn.Linear(3, 1))
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with model.no_sync():
    ...     model(torch.ones(2, 3)).sum().backward()     # accumulated locally
    >>> model(torch.ones(2, 3)).sum().backward()         # reduced over ranks
    >>> opt.step()
    """

    def __init__(self, module: torch.nn.Module, bucket_cap_mb: float = 25, comm: Optional[Communicator] = None,
                 broadcast_buffers: bool = True, find_unused_parameters: bool = False, dim: int = 0):
        super().__init__()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb={bucket_cap_mb!r} is not a positive number of megabytes")
        self.module = module
        self.comm = comm if comm is not None else get_comm()
        self.broadcast_buffers = broadcast_buffers
        self.find_unused_parameters = find_unused_parameters
        self.dim = dim
        self._sync = True
        self._reduce = False  # whether the coming backward reduces (set by forward)
        self._started = 0  # buckets started in this backward (they start in order)
        self._arrived = 0  # of those, how many are known to be complete
        self._queued = False
        params = [p for p in module.parameters() if p.requires_grad]
        if broadcast_tensors(list(module.parameters()) + list(module.buffers()), self.comm):
            warnings.warn("DataParallel: the module's parameters or buffers differed between ranks at wrap time; "
                          "rank 0's were broadcast to every rank", RuntimeWarning, stacklevel=2)
        self._buckets = _plan_buckets(params, int(bucket_cap_mb * 2**20))
        self._names = {p: name for name, p in module.named_parameters()}
        self._bucket_of = {}
        for b in self._buckets:
            for p in b.params:
                self._bucket_of[p] = b
                if self.comm.size > 1:
                    p.register_post_accumulate_grad_hook(self._ready)

    @property
    def require_backward_grad_sync(self) -> bool:
        """Whether the next backward averages gradients over ``comm`` (as DDP's attribute of
        that name; ``no_sync()`` clears it for its block). ``comm`` itself may also be
        replaced between backwards (:class:`torchheat.optim.DASO` points it at a node)."""
        return self._sync

    @require_backward_grad_sync.setter
    def require_backward_grad_sync(self, value: bool) -> None:
        self._sync = bool(value)

    @contextlib.contextmanager
    def no_sync(self):
        """Within this context backward accumulates gradients locally, without reducing them."""
        before, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = before

    def forward(self, *inputs, **kwargs):
        split = self._check_batch(inputs, kwargs)
        self._reduce = self._sync and self.comm.size > 1 and not split and torch.is_grad_enabled()
        out = self.module(*inputs, **kwargs)
        buffers = list(self.module.buffers())
        if self.broadcast_buffers and self.comm.size > 1 and self.module.training and buffers:
            # after the forward that changed them: identical whenever the user looks (rank 0's update)
            _unpack_into(buffers, self.comm.bcast(_as_bytes(buffers), 0))
        return out

    def _check_batch(self, inputs, kwargs) -> bool:
        """Whether the batch is split DistTensors (else plain per-rank tensors); raises for
        a DistTensor split along another axis (the same metadata, so every rank raises)."""
        split = False
        for t in pytree.tree_leaves((inputs, kwargs)):
            if isinstance(t, DistTensor):
                if t.split_dim != self.dim:
                    what = "replicated" if t.split_dim is None else f"split along {t.split_dim}"
                    raise ValueError(f"DataParallel expects inputs split along the batch axis dim={self.dim} or plain "
                                     f"per-rank tensors, got a DistTensor of shape {tuple(t.shape)} {what}")
                split = True
        return split

    # -- the reduction ------------------------------------------------------------------------
    def _ready(self, p: torch.Tensor) -> None:
        """Post-accumulate-grad hook: note ``p``'s gradient, start every complete bucket in order."""
        if not self._reduce:
            return
        if not self._queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._finish)
            self._queued = True
        self._bucket_of[p].ready += 1
        while self._started < len(self._buckets):
            bucket = self._buckets[self._started]
            if bucket.ready < len(bucket.params):
                break
            bucket.start(self.comm)
            self._started += 1
        # MPI advances a started allreduce only inside MPI calls: test the oldest pending one
        while self._arrived < self._started and self._buckets[self._arrived].request.test():
            self._arrived += 1

    def _finish(self) -> None:
        """End of backward: start the buckets left (parameters without gradients), wait for all."""
        for bucket in self._buckets[self._started:]:
            bucket.start(self.comm)
        missing = []
        for bucket in self._buckets:
            used = bucket.finish(self.comm)
            missing += [self._names[p] for p, u in zip(bucket.params, used) if u < self.comm.size]
        self._started, self._arrived, self._queued, self._reduce = 0, 0, False, False
        if missing and not self.find_unused_parameters:
            raise RuntimeError(f"DataParallel: parameters {sorted(missing)} got no gradient on some rank in this backward "
                               "(not used in its forward); pass find_unused_parameters=True to allow that")
