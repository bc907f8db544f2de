"""A ZeRO stage 1 optimizer: optimizer state for 1/p of the parameters per rank.

Every rank holds all parameters and their (already reduced) gradients, but builds the
wrapped optimizer over the parameters it *owns* only: parameters are assigned whole,
largest first, each to the rank that owns the fewest elements so far (the same plan on
every rank). ``step()`` updates the owned parameters, then one allgather of bytes
(every rank's owned parameters packed into one buffer, any dtypes) makes every rank's
copy equal again. For an optimizer whose update is per parameter (SGD, Adam, AdamW,
RMSprop, Adagrad, ...; not LBFGS) the parameters are the ones the unsharded optimizer
gives, and its state (momentum buffers, moments) takes about 1/p of the memory per rank.

Hyperparameters live in ``param_groups`` (all parameters, as in the unsharded optimizer),
so learning-rate schedulers work unchanged; they are copied to the owned part before
each step. ``state_dict()`` (collective) returns the unsharded optimizer's state dict on
every rank, and ``load_state_dict`` accepts one, keeping only the owned state.

Examples
--------
>>> import torch, torchheat as th
>>> model = torch.nn.Linear(4, 2)
>>> opt = th.optim.ShardedOptimizer(torch.optim.Adam, model.parameters(), lr=1e-3)
>>> model(torch.ones(3, 4)).sum().backward()
>>> opt.step()
"""
from __future__ import annotations

from typing import List, Optional, Type

import torch

from ..comm import Communicator, get_comm
from ..tensor import DistTensor

__all__ = ["ShardedOptimizer"]


def owners(sizes: List[int], p: int) -> List[int]:
    """The rank that owns each parameter: largest first, to the least loaded rank.

    >>> owners([10, 1, 5, 5], 2)
    [0, 0, 1, 1]
    """
    load, owner = [0] * p, [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
        r = min(range(p), key=lambda r: load[r])
        owner[i] = r
        load[r] += sizes[i]
    return owner


class ShardedOptimizer(torch.optim.Optimizer):
    """``optimizer_cls(params, **kwargs)`` with its state sharded over the ranks of ``comm``.

    Parameters
    ----------
    optimizer_cls : type
        A ``torch.optim.Optimizer`` subclass whose update is per parameter.
    params : iterable
        Parameters or parameter groups (dicts), as for ``optimizer_cls``; plain tensors
        replicated on every rank.
    comm : Communicator, optional
        Defaults to :func:`torchheat.get_comm`.
    **kwargs
        The optimizer's hyperparameters (``lr``, ``momentum``, ``foreach``, ...).
    """

    def __init__(self, optimizer_cls: Type[torch.optim.Optimizer], params, comm: Optional[Communicator] = None, **kwargs):
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
            raise TypeError(f"optimizer_cls must be a torch.optim.Optimizer subclass, got {optimizer_cls!r}")
        if optimizer_cls is torch.optim.LBFGS:
            raise ValueError("LBFGS couples all parameters in one update and cannot be sharded per parameter")
        self.comm = comm if comm is not None else get_comm()
        self.optimizer_cls = optimizer_cls
        # the wrapped optimizer's defaults (every hyperparameter, as its param_groups show them)
        defaults = optimizer_cls([torch.zeros(1, requires_grad=True)], **kwargs).defaults
        super().__init__(params, defaults)
        self._params = [p for g in self.param_groups for p in g["params"]]
        for p in self._params:
            if isinstance(p, DistTensor) and p.split_dim is not None:
                raise TypeError(f"ShardedOptimizer shards replicated parameters, got a DistTensor split along {p.split_dim}")
        self._owner = owners([p.numel() for p in self._params], self.comm.size)
        mine = {id(p) for p, r in zip(self._params, self._owner) if r == self.comm.rank}
        # (global group index, that group's owned parameters) for the groups where this rank owns some
        self._local_groups = [(i, [p for p in g["params"] if id(p) in mine]) for i, g in enumerate(self.param_groups)]
        self._local_groups = [(i, ps) for i, ps in self._local_groups if ps]
        self.optim = None
        if self._local_groups:
            self.optim = optimizer_cls([dict(self._options(i), params=ps) for i, ps in self._local_groups], **kwargs)
            self.state = self.optim.state  # the owned parameters' state

    def _options(self, i: int) -> dict:
        return {k: v for k, v in self.param_groups[i].items() if k != "params"}

    @torch.no_grad()
    def step(self, closure=None):
        """Update the owned parameters, then allgather every rank's updated parameters."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.optim is not None:
            for (i, _), group in zip(self._local_groups, self.optim.param_groups):
                group.update(self._options(i))
            self.optim.step()
        self._allgather_params()
        return loss

    def _allgather_params(self) -> None:
        if self.comm.size == 1:
            return
        by_rank = [[p for p, r in zip(self._params, self._owner) if r == rank] for rank in range(self.comm.size)]
        nbytes = [sum(p.numel() * p.element_size() for p in ps) for ps in by_rank]
        device = self._params[0].device
        mine = by_rank[self.comm.rank]
        flat = torch.cat([p.detach().reshape(-1).view(torch.uint8) for p in mine]) if mine else torch.empty(0, dtype=torch.uint8, device=device)
        parts = self.comm.allgather_list(flat, [torch.Size([n]) for n in nbytes])
        for rank, (ps, part) in enumerate(zip(by_rank, parts)):
            if rank == self.comm.rank:
                continue
            start = 0
            for p in ps:
                n = p.numel() * p.element_size()
                p.copy_(part[start:start + n].view(p.dtype).view(p.shape))
                start += n

    # -- checkpoints ----------------------------------------------------------------------------
    def _local_to_global(self) -> List[int]:
        """The global index (in ``param_groups`` order) of each owned parameter, in the wrapped optimizer's order."""
        index = {id(p): k for k, p in enumerate(self._params)}
        return [index[id(p)] for _, ps in self._local_groups for p in ps]

    def state_dict(self) -> dict:
        """The unsharded optimizer's state dict, on every rank (collective: one allgather of
        the owned states). Parameters are numbered in ``param_groups`` order."""
        mine = {}
        if self.optim is not None:
            local = self.optim.state_dict()["state"]
            mine = {g: local[k] for k, g in enumerate(self._local_to_global()) if k in local}
        state = {}
        for part in self.comm.allgather_obj(mine):
            state.update(part)
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append(dict(self._options(len(groups)), params=list(range(start, start + n))))
            start += n
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load an unsharded optimizer's state dict (from :meth:`state_dict` or the plain
        optimizer); every rank keeps the state of the parameters it owns."""
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("loaded state dict has parameter groups of other sizes than this optimizer's")
        order = [k for g in groups for k in g["params"]]  # the saved numbering of the parameters
        for g, saved in zip(self.param_groups, groups):
            g.update({k: v for k, v in saved.items() if k != "params"})
        if self.optim is None:
            return
        state = state_dict["state"]
        local_state = {k: state[order[g]] for k, g in enumerate(self._local_to_global()) if order[g] in state}
        local_groups, k = [], 0
        for i, ps in self._local_groups:
            local_groups.append(dict(self._options(i), params=list(range(k, k + len(ps)))))
            k += len(ps)
        self.optim.load_state_dict({"state": local_state, "param_groups": local_groups})
