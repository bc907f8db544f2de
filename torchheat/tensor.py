"""DistTensor: a torch.Tensor whose storage is this rank's chunk of a global tensor.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(10.).reshape(5, 2), split=0)
>>> x.shape, x.split_dim
(torch.Size([5, 2]), 0)
>>> bool((x.full() == torch.arange(10.).reshape(5, 2)).all())
True
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch._C import DisableTorchFunctionSubclass

from . import layout
from .comm import Communicator, functional as cf


class DistTensor(torch.Tensor):
    """A tensor split along one axis (``split_dim``) over the ranks of ``comm``, or replicated.

    Shape queries (``shape``, ``size()``, ``dim()``, ``numel()``, ``len()``) report the
    global tensor; ``local`` is this rank's chunk. Torch functions called on it run
    distributed through :mod:`torchheat.dispatch`.

    Build one with :func:`torchheat.distribute`, :func:`torchheat.from_local` or a factory.
    """

    _split: Optional[int]
    _comm: Communicator
    _gshape: torch.Size
    _counts: Optional[layout.Counts]
    # Set on a result that torch would return as a view but that had to be a copy (a row of the
    # split axis picked by an int, broadcast from its owner): what it is a copy of. In-place
    # writes into such a tensor raise instead of being lost (write through the original).
    _copy_of: Optional[str] = None

    # Installed by torchheat.dispatch: the registry {func: handler(func, args, kwargs)} and
    # the policy for functions with no rule.
    _handlers: dict = {}
    _no_rule = None
    _refuse_write = None

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # Handlers run with torch-function dispatch off: inside them a DistTensor behaves as
        # its local chunk (x.shape is local; the global shape is x._gshape).
        with DisableTorchFunctionSubclass():
            if args and getattr(args[0], "_copy_of", None) is not None:
                cls._refuse_write(func, args, kwargs or {})
            handler = cls._handlers.get(func)
            if handler is None:
                return cls._no_rule(func, args, kwargs or {})
            return handler(func, args, kwargs or {})

    # -- metadata ------------------------------------------------------------------------
    @property
    def split_dim(self) -> Optional[int]:
        """The axis the tensor is split along, or None when every rank holds all of it."""
        return self._split

    @property
    def comm(self) -> Communicator:
        """The communicator whose ranks hold the chunks."""
        return self._comm

    @property
    def gshape(self) -> torch.Size:
        """The global shape (the same as ``shape``)."""
        return self._gshape

    @property
    def local(self) -> torch.Tensor:
        """This rank's chunk as a plain tensor (a view, no copy; autograd flows through it)."""
        with DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor)

    @property
    def lshape(self) -> torch.Size:
        """Shape of this rank's chunk."""
        with DisableTorchFunctionSubclass():
            return self.shape

    @property
    def counts(self) -> Optional[layout.Counts]:
        """Rows per rank along ``split`` (None for a replicated tensor)."""
        return self._counts

    @property
    def offset(self) -> int:
        """Global index along ``split`` of this rank's first row (0 when replicated)."""
        return 0 if self._split is None else layout.offsets(self._counts)[self._comm.rank]

    @property
    def lshape_map(self) -> torch.Tensor:
        """``(size, ndim)`` int64 tensor: the chunk shape of every rank."""
        p = self._comm.size
        rows = [layout.local_shape(self._gshape, self._split, c) for c in (self._counts or [0] * p)]
        return torch.tensor([list(r) for r in rows], dtype=torch.int64).reshape(p, len(self._gshape))

    @property
    def is_balanced(self) -> bool:
        """Whether the chunks follow the balanced layout (always True when replicated)."""
        return self._split is None or self._counts == layout.balanced_counts(self._gshape[self._split], self._comm.size)

    # -- layout changes ------------------------------------------------------------------
    def resplit(self, axis: Optional[int]) -> "DistTensor":
        """The same global tensor split along ``axis`` (None: replicated), balanced.

        Moves only what each rank needs (one all-to-all), never the whole tensor to one rank;
        ``axis=None`` is an allgather by definition. Differentiable. Returns ``self`` when
        the layout already matches.
        """
        axis = layout.normalize_split(axis, len(self._gshape))
        if axis == self._split and self.is_balanced:
            return self
        counts = None if axis is None else layout.balanced_counts(self._gshape[axis], self._comm.size)
        return relayout(self, axis, counts)

    def resplit_(self, axis: Optional[int]) -> "DistTensor":
        """In-place :meth:`resplit` (replaces this tensor's storage; not recorded by autograd)."""
        return self._become(self.resplit(axis))

    def balance(self) -> "DistTensor":
        """The same tensor in the balanced layout (``self`` if it already is). Differentiable."""
        return self.resplit(self._split)

    def balance_(self) -> "DistTensor":
        """In-place :meth:`balance`."""
        return self._become(self.balance())

    def _become(self, other: "DistTensor") -> "DistTensor":
        if other is not self:
            with DisableTorchFunctionSubclass():
                grad = self.grad
                if grad is not None:  # an accumulated gradient follows the data into the new layout
                    grad = relayout(wrap(grad, self._split, self._comm, self._gshape, self._counts), other._split, other._counts)
                self.data = other.detach()
                if grad is not None:
                    self.grad = grad.local
            self._split, self._gshape, self._counts = other._split, other._gshape, other._counts
        return self

    # -- back to plain tensors -------------------------------------------------------------
    def full(self) -> torch.Tensor:
        """The global tensor as a plain tensor on every rank (collective). Differentiable."""
        if self._split is None:
            return self.local
        return cf.all_gather(self.local, self._comm, self._counts, self._split)

    def gather_to(self, root: int = 0) -> Optional[torch.Tensor]:
        """The global tensor on ``root`` (a plain tensor), None on the other ranks (collective)."""
        if not 0 <= root < self._comm.size:
            raise ValueError(f"root={root} is not a rank of a communicator of size {self._comm.size}")
        if self._split is None:
            return self.local.detach().clone() if self._comm.rank == root else None
        return self._comm.gatherv(self.local, self._counts, self._split, root)

    # -- Python protocol -------------------------------------------------------------------
    def __repr__(self, *, tensor_contents=None) -> str:
        # Local only: safe for debuggers and logging on one rank.
        with DisableTorchFunctionSubclass():
            body = repr(self.local.detach())
        grad = ", requires_grad=True" if self.local.requires_grad else ""
        return (
            f"DistTensor(shape={tuple(self._gshape)}, split={self._split}, "
            f"rank={self._comm.rank}/{self._comm.size}, counts={self._counts}{grad},\n  local={body})"
        )

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        with DisableTorchFunctionSubclass():
            data = self.detach().clone()
            out = make_leaf(data, self._split, self._comm, self._gshape, self._counts, self.requires_grad)
            if self.grad is not None:
                out.grad = self.grad.clone()
        memo[id(self)] = out
        return out

    def __reduce_ex__(self, proto):
        # Pickling (torch.save, deepcopy across processes) keeps this rank's chunk and which rank
        # it belongs to: a split chunk can only be loaded back by that rank of the same layout.
        with DisableTorchFunctionSubclass():
            data = self.detach().clone()
            requires_grad = self.requires_grad
        rank = None if self._split is None else self._comm.rank
        return (_rebuild, (data, self._split, tuple(self._gshape), self._counts, requires_grad, rank))


def _rebuild(local, split, gshape, counts, requires_grad, rank=None):
    """Unpickle a DistTensor's chunk onto the default communicator (the rank that saved it)."""
    from .comm import get_comm

    comm = get_comm()
    if split is not None and (len(counts) != comm.size or rank != comm.rank or local.shape[split] != counts[comm.rank]):
        raise ValueError(
            f"a DistTensor chunk saved by rank {rank} of {len(counts)} (split={split}, counts={counts}) cannot be "
            f"loaded as rank {comm.rank} of {comm.size}: torch.save keeps only the saving rank's chunk, so each rank "
            "must load the file it saved itself, on the same number of ranks. To save the global tensor, save "
            "x.full() (or x.gather_to(0) on rank 0) and load it with th.distribute"
        )
    return make_leaf(local, split, comm, torch.Size(gshape), counts, requires_grad)


def wrap(local: torch.Tensor, split: Optional[int], comm: Communicator, gshape: Sequence[int], counts=None) -> DistTensor:
    """Make a DistTensor from a plain local chunk and its metadata (keeps autograd history)."""
    if local.requires_grad or type(local) is not torch.Tensor:
        with DisableTorchFunctionSubclass():
            out = local.as_subclass(DistTensor)
    else:
        out = torch.Tensor._make_subclass(DistTensor, local, False)
    out.__dict__ = {"_split": split, "_comm": comm, "_gshape": gshape, "_counts": counts}  # (a third of four setattrs' cost)
    return out


def adopt(fresh: torch.Tensor, split: Optional[int], comm: Communicator, gshape: Sequence[int], counts=None) -> DistTensor:
    """:func:`wrap` for a plain tensor that a torch call just returned and nothing else holds:
    it becomes the DistTensor itself (its class is switched, ten times cheaper than making a
    subclass view), keeping its autograd history. Only for fresh results, never for a
    tensor a caller passed in."""
    fresh.__class__ = DistTensor
    fresh.__dict__ = {"_split": split, "_comm": comm, "_gshape": gshape, "_counts": counts}
    return fresh


def is_fresh(t: torch.Tensor, operands) -> bool:
    """Whether ``t``, a torch call's plain result, is none of that call's ``operands`` (so that
    :func:`adopt` may take it)."""
    if type(t) is not torch.Tensor:
        return False
    for a in operands:  # (a plain loop: a generator costs more than the comparisons)
        if t is a:
            return False
    return True


def make_leaf(local: torch.Tensor, split, comm, gshape, counts=None, requires_grad: bool = False) -> DistTensor:
    """Like :func:`wrap` but the result is a fresh leaf (no history)."""
    out = torch.Tensor._make_subclass(DistTensor, local.detach(), requires_grad)
    out.__dict__ = {"_split": split, "_comm": comm, "_gshape": torch.Size(gshape), "_counts": counts}
    return out


def relayout(x: DistTensor, split: Optional[int], counts: Optional[layout.Counts], consume: bool = False) -> DistTensor:
    """``x`` moved to the layout (split, counts) by the cheapest exchange. Differentiable.
    ``consume``: ``x`` is an intermediate nothing else refers to, whose memory the result may take."""
    comm, gshape, local = x._comm, x._gshape, x.local
    if split is None:
        new = local if x._split is None else cf.all_gather(local, comm, x._counts, x._split)
    elif x._split is None:
        new = cf.scatter(local, comm, counts, split)
    else:
        plan = layout.exchange_plan(tuple(gshape), x._split, x._counts, split, counts, comm.rank)
        new = cf.exchange(local, comm, *plan[:2], plan[2], consume=consume)
    return wrap(new, split, comm, gshape, counts)


torch.serialization.add_safe_globals([DistTensor, _rebuild])
