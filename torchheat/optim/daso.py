"""DASO: Distributed Asynchronous and Selective Optimization (Coquelin et al., 2022).

Data-parallel training for clusters of multi-device nodes, where the link between nodes is
much slower than the links inside one. The P ranks form N nodes of G consecutive ranks.

* **Node-local**: a :class:`torchheat.nn.DataParallel` on the node's communicator averages
  the gradients inside the node (bucketed, overlapped with backward); every rank then
  steps the wrapped ("local") optimizer.
* **Global groups**: G communicators of N ranks each, group i holding the ranks with local
  index i (one rank per node). A global synchronization averages the parameters over one
  group only (*selective*); the group rotates 0, 1, ..., G-1 per synchronization and
  restarts at 0 every epoch. The group's rank then broadcasts the result inside its node.
* **Phases**, chosen per epoch by :class:`Schedule` (a pure state machine): blocking
  synchronizations after every batch during ``warmup_epochs`` and ``cooldown_epochs``; in
  between, *cycling*: a synchronization every S batches is started without blocking and
  received B batches later, merged with the parameters that moved on meanwhile as
  ``p = (2B p_now + sum_nodes p_sent) / (N + 2B)``; the node-local gradient averaging
  runs every L batches. (S, L, B) shrink when a plateau detector (ReduceLROnPlateau's rule,
  mode min, relative threshold) sees the epoch loss stall, and reset at S = 1.
* Every epoch ends with a blocking synchronization (no message crosses an epoch end), so
  the parameters are bitwise identical on every rank after each epoch.

Communication of a global synchronization (a reduce-scatter and an allgather, written with
point-to-point messages, non-blocking). The flat parameters are cut into pieces of at most
``sending_chunk_size`` elements and each piece into N balanced parts, part j owned by
group rank j. Phase 1: every rank sends part j of its values, in the wire dtype, to rank j.
Phase 2: the owner sums the N copies of its part in rank order in float32 (float64 for
float64 parameters), divides by N, rounds to the wire dtype and sends the mean to every
rank. Each rank thus sends 2 (N - 1)/N values per parameter, as a ring allreduce does, so
bfloat16/float16 halve the bytes of float32 at every N; the 16-bit values travel
reinterpreted as int16 (plain bytes to every backend) and are never added in 16-bit or
integer arithmetic. The result depends neither on the chunk size nor on the backend's
reduction order, and is the same bits on every rank. A non-blocking synchronization posts
phase 1 when sent, runs phase 2 at the next batch (at the receive when B = 1), and waits
for it when received. On one node there is no global traffic: DASO is DataParallel.

Examples
--------
>>> import torch, torchheat as th
>>> net = torch.nn.Linear(4, 2)
>>> daso = th.optim.DASO(torch.optim.SGD(net.parameters(), lr=0.1), total_epochs=1, warmup_epochs=0, cooldown_epochs=0)
>>> model = daso.wrap(net)              # DataParallel over this rank's node
>>> daso.last_batch = 2                 # or pass loader=
>>> for _ in range(2):
...     daso.zero_grad()
...     model(torch.ones(3, 4)).sum().backward()
...     daso.step()
>>> daso.epoch_loss_logic(0.5)
"""
from __future__ import annotations

import math
import os
from typing import List, Optional, Tuple

import torch

from .. import layout
from ..comm import Communicator, get_comm
from ..nn.parallel import DataParallel, broadcast_tensors
from ..printing import print0

__all__ = ["DASO", "Schedule", "Plateau", "default_ranks_per_node"]

BLOCKING = (0, 1, 0)  # (S, L, B): synchronize after every batch, average gradients every batch
_WIRE = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


# -- the schedule (no communication) -----------------------------------------------------------
class Plateau:
    """ReduceLROnPlateau's test with mode='min' and threshold_mode='rel': :meth:`step` is True
    when the loss has not fallen below ``best * (1 - threshold)`` for more than ``patience``
    epochs in a row (then the count restarts; the best loss is kept).

    >>> plateau = Plateau(threshold=0.05, patience=1)
    >>> [plateau.step(x) for x in (1.0, 0.99, 0.98, 0.5)]
    [False, False, True, False]
    """

    def __init__(self, threshold: float, patience: int):
        self.threshold, self.patience = threshold, patience
        self.best, self.bad = math.inf, 0

    def step(self, loss: float) -> bool:
        if loss < self.best * (1 - self.threshold):
            self.best, self.bad = loss, 0
        else:
            self.bad += 1
        if self.bad > self.patience:
            self.bad = 0
            return True
        return False


class Schedule:
    """The (S, L, B) of every epoch: global skip S (batches between global synchronizations;
    0: blocking after every batch), local skip L (batches between node-local gradient
    averages) and B (batches a non-blocking synchronization travels; 0: blocking).

    Epochs ``[0, warmup_epochs)`` and ``[total_epochs - cooldown_epochs, ...)`` are blocking
    (cooldown wins where they overlap); the others cycle. The first cycling epoch, and every
    plateau at S = 1, start from ``S = max_global_skips``, ``L = max(1, S // local_skip_factor)``,
    ``B = min(max(1, S // 4), S - 1)``. A plateau of the cycling epochs' losses (see
    :class:`Plateau`) divides S and L by ``skip_reduction_factor`` (at least 1) and lowers B
    by one (kept below S). :meth:`end_epoch` moves to the next epoch.

    >>> s = Schedule(total_epochs=6, warmup_epochs=1, cooldown_epochs=1, max_global_skips=8, patience=0)
    >>> s.state, [s.end_epoch(1.0) for _ in range(5)]    # the same loss: a plateau every epoch but the first
    ((0, 1, 0), [(8, 2, 2), (8, 2, 2), (4, 1, 1), (2, 1, 0), (0, 1, 0)])
    """

    def __init__(self, total_epochs: int, warmup_epochs: int = 4, cooldown_epochs: int = 4, max_global_skips: int = 8,
                 skip_reduction_factor: int = 2, local_skip_factor: int = 4, stability_level: float = 0.05,
                 patience: int = 2):
        self.total_epochs, self.warmup_epochs, self.cooldown_epochs = total_epochs, warmup_epochs, cooldown_epochs
        self.max_global_skips, self.skip_reduction_factor = max_global_skips, skip_reduction_factor
        self.local_skip_factor = local_skip_factor
        self.plateau = Plateau(stability_level, patience)
        self.epoch = 0
        self.state: Tuple[int, int, int] = self.reset() if self.phase() == "cycling" else BLOCKING

    def phase(self, epoch: Optional[int] = None) -> str:
        """``"warmup"``, ``"cycling"`` or ``"cooldown"`` for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if epoch >= self.total_epochs - self.cooldown_epochs:
            return "cooldown"
        return "warmup" if epoch < self.warmup_epochs else "cycling"

    def reset(self) -> Tuple[int, int, int]:
        s = self.max_global_skips
        return s, max(1, s // self.local_skip_factor), min(max(1, s // 4), s - 1)

    def end_epoch(self, loss: Optional[float] = None) -> Tuple[int, int, int]:
        """Move to the next epoch, given the finished epoch's loss (None: not known, no
        plateau test); return the new (S, L, B)."""
        cycled = self.phase() == "cycling"
        self.epoch += 1
        if self.phase() != "cycling":
            self.state = BLOCKING
        elif not cycled:
            self.state = self.reset()
        elif loss is not None and self.plateau.step(float(loss)):
            s, l, b = self.state
            if s == 1:
                self.state = self.reset()
            else:
                f = self.skip_reduction_factor
                s = max(1, s // f)
                self.state = s, max(1, l // f), max(0, min(b - 1, s - 1))
        return self.state

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "state": self.state, "best": self.plateau.best, "bad": self.plateau.bad}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.state = state["epoch"], tuple(state["state"])
        self.plateau.best, self.plateau.bad = state["best"], state["bad"]


# -- the global synchronization ------------------------------------------------------------------
def _raw(t: torch.Tensor) -> torch.Tensor:
    """16-bit floats travel as int16 (bytes to every backend; never added as integers)."""
    return t.view(torch.int16) if t.element_size() == 2 else t


class _GlobalMean:
    """The mean over the ranks of ``comm`` of a flat tensor sent as ``wire`` values
    (module docstring): :meth:`start` posts phase 1, :meth:`advance` completes it and posts
    phase 2, :meth:`wait` returns the mean (``wire`` dtype)."""

    def __init__(self, comm: Communicator, flat: torch.Tensor, wire: torch.dtype, chunk: int):
        self.comm, self.wire, self.size = comm, wire, comm.size
        self.acc = torch.float32 if wire.itemsize == 2 else wire
        self.sent = flat.to(wire)
        self.out = torch.empty_like(self.sent)
        n, me = flat.numel(), comm.rank
        # (start, counts, offsets) of every piece; this rank owns part `me` of each
        self.pieces = [(s, c, layout.offsets(c)) for s in range(0, n, chunk)
                       for c in [layout.balanced_counts(min(chunk, n - s), self.size)]]
        self.parts, self.requests, self.phase = [], [], 0

    def start(self) -> "_GlobalMean":
        comm, me = self.comm, self.comm.rank
        for start, counts, offsets in self.pieces:
            mine = [None] * self.size
            for j in range(self.size):
                if j == me:
                    mine[j] = self.sent[start + offsets[me]:][:counts[me]]
                    continue
                if counts[me]:
                    mine[j] = torch.empty(counts[me], dtype=self.wire, device=self.sent.device)
                    self.requests.append(comm.irecv(_raw(mine[j]), j, tag=11))
                if counts[j]:
                    self.requests.append(comm.isend(_raw(self.sent[start + offsets[j]:][:counts[j]]), j, tag=11))
            self.parts.append(mine)
        self.phase = 1
        return self

    def _wait_all(self) -> None:
        for r in self.requests:
            r.wait()
        self.requests = []

    def advance(self) -> None:
        """Complete phase 1 (the owned parts' copies arrived), post phase 2 (the means)."""
        if self.phase != 1:
            return
        self._wait_all()
        comm, me = self.comm, self.comm.rank
        for (start, counts, offsets), mine in zip(self.pieces, self.parts):
            if counts[me]:
                total = mine[0].to(self.acc, copy=True)  # in rank order: the same bits for any chunking
                for part in mine[1:]:
                    total += part.to(self.acc)
                self.out[start + offsets[me]:][:counts[me]] = (total / self.size).to(self.wire)
            for j in range(self.size):
                if j != me and counts[me]:
                    self.requests.append(comm.isend(_raw(self.out[start + offsets[me]:][:counts[me]]), j, tag=12))
                if j != me and counts[j]:
                    self.requests.append(comm.irecv(_raw(self.out[start + offsets[j]:][:counts[j]]), j, tag=12))
        self.parts, self.phase = [], 2

    def wait(self) -> torch.Tensor:
        self.advance()
        self._wait_all()
        self.phase = 3
        return self.out


# -- the topology ------------------------------------------------------------------------------------
def default_ranks_per_node(comm: Communicator) -> int:
    """Ranks per node from the launcher: the size of MPI's shared-memory split of ``comm``
    (mpi backend), ``LOCAL_WORLD_SIZE`` (torchrun), else ``comm.size`` (one node)."""
    mpi = getattr(comm, "mpi", None)
    if mpi is not None:
        from mpi4py import MPI

        shared = mpi.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return shared.Get_size()
        finally:
            shared.Free()
    if comm.backend == "torch" and "LOCAL_WORLD_SIZE" in os.environ:
        return int(os.environ["LOCAL_WORLD_SIZE"])
    return comm.size


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"DASO: {name}={value!r} is not an integer >= {low}")


class DASO:
    """Distributed Asynchronous and Selective Optimization of ``local_optimizer``'s parameters.

    Parameters
    ----------
    local_optimizer : torch.optim.Optimizer
        Steps this rank's parameters after the node-local gradient average.
    total_epochs : int
        Epochs of the whole training (the cooldown is counted back from it).
    ranks_per_node : int, optional
        G: nodes are blocks of G consecutive ranks (default :func:`default_ranks_per_node`).
        It must divide the number of ranks and be the same on every rank.
    warmup_epochs, cooldown_epochs : int
        Blocking epochs at the start and at the end. ``warmup_epochs=0`` cycles at once.
    scheduler : torch.optim.lr_scheduler.LRScheduler or ReduceLROnPlateau, optional
        Built on ``local_optimizer``; stepped once per epoch when the epoch ends
        (ReduceLROnPlateau with the epoch loss given to :meth:`epoch_loss_logic`).
    stability_level : float
        Relative threshold of the plateau detector (in [0, 1)).
    max_global_skips : int
        S at the start of cycling and after a reset.
    sending_chunk_size : int
        Largest number of parameter values in one piece of a global send.
    downcast_type : torch.dtype
        Wire dtype of the global sends: ``torch.bfloat16``, ``torch.float16``, ``torch.float32``
        (or ``torch.float64``); sums are never done in 16-bit arithmetic.
    skip_reduction_factor : int
        S and L are divided by it on a plateau (>= 2).
    local_skip_factor : int
        L = S // local_skip_factor at a reset (>= 1).
    verbose : bool
        Print the (S, L, B) of every epoch (rank 0).
    patience : int
        Epochs without improvement before a plateau (as ReduceLROnPlateau's).
    module : torch.nn.Module, optional
        The model; same as calling :meth:`wrap` (use the returned :attr:`module`).
    loader : sized iterable, optional
        The training DataLoader: ``last_batch = len(loader)`` at every epoch start.
    comm : Communicator, optional
        All ranks of the training (default :func:`torchheat.get_comm`).

    Usage: ``loss.backward(); daso.step()`` every batch on this rank's own batch (plain
    tensors, e.g. torch's DataLoader with :class:`torchheat.utils.data.DistributedSampler`),
    and ``daso.epoch_loss_logic(loss)`` after every epoch (without it the epochs are still
    counted from ``last_batch``, but S, L and B never shrink). With a ``torch.amp.GradScaler``
    call ``daso.step(scaler=scaler)`` after ``scaler.scale(loss).backward()``; it runs
    ``scaler.step`` and ``scaler.update``.

    How ``last_batch`` is found: from ``len(loader)`` at the first :meth:`step` of every
    epoch when ``loader`` was given, else the attribute set by the caller. The ranks check
    (one allreduce per epoch) that they agree; the epoch's last step does a blocking
    synchronization and the next step starts a new epoch.

    What is merged: only parameters. Buffers (BatchNorm running statistics) are kept
    identical inside a node by DataParallel (broadcast after each forward) and are
    broadcast from rank 0 to every rank at the end of every epoch. Optimizer state
    (momentum, Adam moments, GradScaler scale) is never communicated: each rank keeps the
    state its own steps built, which is the same inside a node while L = 1 and differs
    between nodes. For SGD (with momentum and weight decay) blocking synchronizations give
    exactly the parameters of one process on the global batch, since the update is linear.

    Errors: bad arguments raise ValueError/TypeError at construction; ``ranks_per_node``
    that differs between ranks or does not divide the number of ranks raises ValueError on
    every rank; a parameter that is not finite on a sending rank reaches every rank in the
    synchronization and every rank raises FloatingPointError after it (an overflow of a
    float16 send as well). A rank's value that the node broadcast replaces is not checked.

    Differences from Heat's DASO: no CUDA requirement (CPU or GPU, mpi, torch or self
    backend), any G >= 1 ranks per node including 1 (no local averaging) and a single
    node (no global traffic: DataParallel), a working ``scheduler``, and
    ``warmup_epochs=0`` starts cycling in the first epoch.

    Examples
    --------
    >>> import torch, torchheat as th
    >>> net = torch.nn.Linear(3, 1)
    >>> daso = th.optim.DASO(torch.optim.SGD(net.parameters(), lr=0.1), total_epochs=2, module=net)
    >>> daso.schedule.state                  # warmup: blocking
    (0, 1, 0)
    """

    def __init__(self, local_optimizer: torch.optim.Optimizer, total_epochs: int, ranks_per_node: Optional[int] = None,
                 warmup_epochs: int = 4, cooldown_epochs: int = 4, scheduler=None, stability_level: float = 0.05,
                 max_global_skips: int = 8, sending_chunk_size: int = 10_000_000, downcast_type: torch.dtype = torch.bfloat16,
                 skip_reduction_factor: int = 2, local_skip_factor: int = 4, verbose: bool = False, patience: int = 2,
                 module: Optional[torch.nn.Module] = None, loader=None, comm: Optional[Communicator] = None):
        if not isinstance(local_optimizer, torch.optim.Optimizer):
            raise TypeError(f"DASO: local_optimizer must be a torch.optim.Optimizer, got {type(local_optimizer).__name__}")
        _check_int("total_epochs", total_epochs, 1)
        _check_int("warmup_epochs", warmup_epochs, 0)
        _check_int("cooldown_epochs", cooldown_epochs, 0)
        _check_int("max_global_skips", max_global_skips, 1)
        _check_int("sending_chunk_size", sending_chunk_size, 1)
        _check_int("skip_reduction_factor", skip_reduction_factor, 2)
        _check_int("local_skip_factor", local_skip_factor, 1)
        _check_int("patience", patience, 0)
        if not (isinstance(stability_level, (int, float)) and 0 <= stability_level < 1):
            raise ValueError(f"DASO: stability_level={stability_level!r} is not a number in [0, 1)")
        if downcast_type not in _WIRE:
            raise ValueError(f"DASO: downcast_type={downcast_type!r} is not one of {_WIRE}")
        if scheduler is not None and getattr(scheduler, "optimizer", None) is not local_optimizer:
            raise ValueError("DASO: scheduler must be built on local_optimizer")
        if loader is not None and not hasattr(loader, "__len__"):
            raise TypeError(f"DASO: loader must have a length (the batches per epoch), got {type(loader).__name__}")
        self.local_optimizer, self.scheduler, self.loader, self.verbose = local_optimizer, scheduler, loader, verbose
        self.sending_chunk_size, self.downcast_type = sending_chunk_size, downcast_type
        self.comm = comm if comm is not None else get_comm()
        self.params = [p for g in local_optimizer.param_groups for p in g["params"]]
        if not self.params or len({(p.dtype, p.device) for p in self.params}) != 1 or not self.params[0].is_floating_point():
            raise ValueError("DASO: local_optimizer's parameters must be floating-point, of one dtype and device")

        self.ranks_per_node = g = self._agree_layout(ranks_per_node)
        rank = self.comm.rank
        self.node, self.local_rank, self.nodes = rank // g, rank % g, self.comm.size // g
        self.local_comm = self.comm.split(self.node, rank)            # the node
        self.global_comm = self.comm.split(self.local_rank, rank)     # one rank per node
        self.schedule = Schedule(total_epochs, warmup_epochs, cooldown_epochs, max_global_skips, skip_reduction_factor,
                                 local_skip_factor, stability_level, patience)
        self.module: Optional[DataParallel] = None
        self.last_batch: Optional[int] = None
        self.batch = 0            # steps done in this epoch
        self._syncs = 0           # global synchronizations in this epoch (the rotation)
        self._open = False        # an epoch is under way
        self._ended = False       # the last epoch ended and epoch_loss_logic has not yet been called for it
        self._pending: Optional[Tuple[_GlobalMean, int, int]] = None  # (sync, batch sent, group)
        broadcast_tensors(self.params, self.comm)  # every rank starts from rank 0's parameters
        if module is not None:
            self.wrap(module)

    def _agree_layout(self, ranks_per_node) -> int:
        """G, checked and the same on every rank (else ValueError on every rank)."""
        if ranks_per_node is None:
            ranks_per_node = default_ranks_per_node(self.comm)
        _check_int("ranks_per_node", ranks_per_node, 1)
        seen = self.comm.allgather_obj(ranks_per_node) if self.comm.size > 1 else [ranks_per_node]
        if len(set(seen)) > 1:
            raise ValueError(f"DASO: ranks_per_node differs between ranks (rank i has {seen}); nodes of different "
                             "sizes are not supported")
        if self.comm.size % ranks_per_node:
            raise ValueError(f"DASO: ranks_per_node={ranks_per_node} does not divide the {self.comm.size} ranks into "
                             "equal nodes")
        return ranks_per_node

    def wrap(self, module: torch.nn.Module) -> DataParallel:
        """The model for training: ``module`` in a :class:`torchheat.nn.DataParallel` over this
        rank's node (an existing DataParallel is pointed at the node). Returns it."""
        if isinstance(module, DataParallel):
            if module.comm.size not in (self.comm.size, self.local_comm.size):
                raise ValueError(f"DASO: the DataParallel's communicator has {module.comm.size} ranks, expected "
                                 f"{self.comm.size} (all) or {self.local_comm.size} (the node)")
            module.comm = self.local_comm
            dp = module
        else:
            dp = DataParallel(module, comm=self.local_comm)
        mine = {id(p) for p in self.params}
        if not all(id(p) in mine for p in dp.module.parameters() if p.requires_grad):
            raise ValueError("DASO: the module has trainable parameters that local_optimizer does not step")
        self.module = dp
        self._local_sync(self.batch + 1)
        return dp

    # -- the optimizer interface ---------------------------------------------------------------
    @property
    def param_groups(self):
        return self.local_optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.local_optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self, closure=None, scaler=None):
        """A step of the local optimizer (after the node-local gradient average that backward
        ran), then this batch's global synchronization work. Every rank calls it per batch."""
        if not self._open:
            self._begin_epoch()
        if scaler is not None:
            loss = scaler.step(self.local_optimizer, closure) if closure is not None else scaler.step(self.local_optimizer)
            scaler.update()
        else:
            loss = self.local_optimizer.step(closure) if closure is not None else self.local_optimizer.step()
        self.batch += 1
        b, (s, _, wait) = self.batch, self.schedule.state
        if self.nodes > 1:
            last = b == self.last_batch
            if self._pending is not None:
                sync, sent, group = self._pending
                if last or b == sent + wait:
                    self._pending = None
                    self._merge(sync, group, b - sent)
                elif b == sent + 1 and sync is not None:
                    sync.advance()
            if last or s == 0 or (wait == 0 and b % s == 0):
                self._merge(*self._send(), 0)
            elif b % s == 0 and b + wait < self.last_batch and self._pending is None:
                sync, group = self._send()
                self._pending = (sync, b, group)
        if b == self.last_batch:
            self._end_epoch()
        else:
            self._local_sync(b + 1)
        return loss

    def _local_sync(self, batch: int) -> None:
        """Whether ``batch``'s backward averages the gradients inside the node (every L-th)."""
        if self.module is not None:
            l = self.schedule.state[1] if self.nodes > 1 else 1  # one node: DataParallel, nothing to skip for
            self.module.require_backward_grad_sync = l <= 1 or batch % l == 0

    def _send(self) -> Tuple[Optional[_GlobalMean], int]:
        """Start a synchronization of the current group (every rank counts it; its members send)."""
        group, self._syncs = self._syncs % self.ranks_per_node, self._syncs + 1
        if self.local_rank != group:
            return None, group
        flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        return _GlobalMean(self.global_comm, flat, self.downcast_type, self.sending_chunk_size).start(), group

    def _merge(self, sync: Optional[_GlobalMean], group: int, delay: int) -> None:
        """Receive a synchronization ``delay`` batches after it was sent (its members merge),
        then ``group``'s rank broadcasts the parameters inside the node."""
        if sync is not None:
            mean, n = sync.wait(), self.nodes
            for p, m in zip(self.params, mean.split([p.numel() for p in self.params])):
                m = m.view_as(p).to(p.dtype)
                if delay == 0:
                    p.copy_(m)
                else:  # (2B p_now + sum of the sent values) / (N + 2B)
                    p.copy_((2 * delay * p + n * m) / (n + 2 * delay))
        if self.local_comm.size > 1:
            broadcast_tensors(self.params, self.local_comm, root=group, check=False)
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise FloatingPointError(
                f"DASO: a parameter is not finite (NaN or inf) after the global synchronization of batch {self.batch} in "
                f"epoch {self.schedule.epoch}: a sending rank had a non-finite value (or a {self.downcast_type} send "
                "overflowed)")

    def _begin_epoch(self) -> None:
        if self._ended:  # the caller did not report a loss for the last epoch
            self._advance(None)
        if self.loader is not None:
            self.last_batch = len(self.loader)
        lb = self.last_batch
        ok = isinstance(lb, int) and not isinstance(lb, bool) and lb >= 1
        mine = lb if ok else -1
        both = self.comm.allreduce(torch.tensor([mine, -mine], dtype=torch.int64), "max") if self.comm.size > 1 \
            else torch.tensor([mine, -mine])
        if both[0] != -both[1] or both[0] < 1:
            raise ValueError(f"DASO: last_batch (batches per epoch) must be a positive integer, the same on every rank; "
                             f"this rank has {lb!r}, the ranks range from {-int(both[1])} to {int(both[0])} "
                             "(pass loader= or set daso.last_batch)")
        if self.module is None and self.local_comm.size > 1:
            raise RuntimeError("DASO: with several ranks per node the model must be wrapped for the node-local gradient "
                               "average: pass module= or use daso.wrap(model)")
        self.batch, self._syncs, self._open = 0, 0, True
        if self.verbose:
            s, l, b = self.schedule.state
            print0(f"DASO epoch {self.schedule.epoch} ({self.schedule.phase()}): global skip {s}, local skip {l}, "
                   f"batches to wait {b}")

    def _end_epoch(self) -> None:
        if self.module is not None:
            buffers = list(self.module.module.buffers())
            if buffers:
                broadcast_tensors(buffers, self.comm, check=False)
        self._open, self._ended = False, True

    def _advance(self, loss: Optional[float]) -> None:
        self._ended = False
        self.schedule.end_epoch(loss)
        self._local_sync(1)
        if self.scheduler is not None:
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if loss is not None:
                    self.scheduler.step(loss)
            else:
                self.scheduler.step()

    def epoch_loss_logic(self, loss, loss_globally_averaged: bool = False) -> None:
        """Report the finished epoch's loss (this rank's, averaged over ranks here unless
        ``loss_globally_averaged``): the schedule moves to the next epoch and the scheduler
        steps. Every rank calls it once after the epoch's last batch."""
        if not self._ended:
            raise RuntimeError(f"DASO: epoch_loss_logic is called once after an epoch's last batch, but the epoch is "
                               f"at batch {self.batch} of {self.last_batch}")
        value = torch.as_tensor(loss, dtype=torch.float64).detach().cpu().reshape(())
        if not loss_globally_averaged and self.comm.size > 1:
            value = self.comm.allreduce(value.reshape(1))[0] / self.comm.size
        self._advance(float(value))

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """This rank's local optimizer state, the schedule and the scheduler (between epochs)."""
        if self._open:
            raise RuntimeError("DASO: state_dict is taken between epochs (after the last batch)")
        state = {"local_optimizer": self.local_optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                 "ended": self._ended}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.local_optimizer.load_state_dict(state["local_optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self._ended, self._open, self._pending = state["ended"], False, None
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
