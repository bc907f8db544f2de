"""Optimizers for data-parallel training.

Any ``torch.optim`` optimizer steps replicated parameters identically on every rank (their
gradients are identical after a distributed backward or :class:`torchheat.nn.DataParallel`),
so it needs no wrapper. :class:`ShardedOptimizer` keeps the optimizer state of 1/p of the
parameters per rank (ZeRO stage 1) with the same results. :class:`DASO` trains on nodes of
several ranks with node-local gradient averaging and infrequent, non-blocking parameter
averaging between nodes.
"""
from .daso import DASO
from .sharded import ShardedOptimizer

__all__ = ["DASO", "ShardedOptimizer"]
