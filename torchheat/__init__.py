"""torchheat: PyTorch tensors split across processes (MPI, torch.distributed, or one process).

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(50.).reshape(50, 1).repeat(1, 3), split=0)
>>> x.shape
torch.Size([50, 3])
>>> float(x.sum()) == 3 * sum(range(50))
True
"""
from . import base, debug, dispatch, fft, io, layout, linalg, ops, signal  # noqa: F401  (ops registers the rule families)
from . import nn, optim, utils  # noqa: F401  (training: DataParallel, ShardedOptimizer, DataLoader)
# estimators, after ops: they are written on the rules
from . import cluster, decomposition, linear_model, naive_bayes, neighbors, preprocessing  # noqa: F401
from .base import NotFittedError
from .comm import Communicator, get_comm, set_comm
from .config import NotDistributedError, config
from .ops.creation import (
    arange, distribute, empty, empty_like, eye, from_local, full, full_like, linspace, logspace, ones, ones_like,
    zeros, zeros_like,
)
from .ops.random import (
    Generator, get_rng_state, initial_seed, manual_seed, normal, rand, rand_like, randint, randint_like, randn, randn_like,
    randperm, set_rng_state,
)
from .signal.windows import bartlett_window, blackman_window, hamming_window, hann_window, kaiser_window
from .printing import global_str, print0, print_ranks
from .tensor import DistTensor

__version__ = "0.1.0"

__all__ = [
    "DistTensor", "Communicator", "NotDistributedError", "NotFittedError", "base", "config", "get_comm", "set_comm",
    "debug", "fft", "io", "linalg", "nn", "optim", "utils",
    "cluster", "decomposition", "linear_model", "naive_bayes", "neighbors", "preprocessing",
    "distribute", "from_local", "zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye",
    "zeros_like", "ones_like", "empty_like", "full_like",
    "Generator", "manual_seed", "initial_seed", "get_rng_state", "set_rng_state", "rand", "randn", "randint", "randperm",
    "normal", "rand_like", "randn_like", "randint_like", "global_str", "print0", "print_ranks", "signal",
    "hann_window", "hamming_window", "blackman_window", "bartlett_window", "kaiser_window",
]

