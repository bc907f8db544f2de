"""Input checks shared by the estimators, with scikit-learn's exception types and messages.

Every check reads only metadata or a global reduction (``isfinite(x).all()``), so each rank
raises the same error and no rank runs ahead into the next collective. Data may be a
DistTensor split along the samples (axis 0) or replicated, a plain tensor, or anything
``torch.as_tensor`` takes (numpy arrays, lists): those are replicated.

Examples
--------
>>> import torch, torchheat as th
>>> from torchheat.validation import check_array
>>> x = check_array(th.distribute(torch.ones(4, 2), split=0))
>>> x.dtype, x.split_dim
(torch.float32, 0)
>>> try:
...     check_array(torch.tensor([[float("nan"), 1.0]]))
... except ValueError as e:
...     print(e)
Input X contains NaN.
"""
from __future__ import annotations

import contextlib

import torch

from .comm import get_comm
from .ops.random import Generator
from .tensor import DistTensor, relayout

__all__ = ["ConvergenceWarning", "check_array", "check_targets", "check_n_features", "check_sample_weight", "check_random_state", "replicated", "rows_like", "comm_of",
           "progress"]

FLOATS = (torch.float64, torch.float32)


class ConvergenceWarning(UserWarning):
    """An iterative estimator did not converge, or found fewer clusters than asked for."""


def comm_of(*ts):
    """The communicator of the first DistTensor among ``ts`` (the default one if none)."""
    return next((t.comm for t in ts if isinstance(t, DistTensor)), None) or get_comm()


def check_array(x, name: str = "X", ensure_2d: bool = True, allow_nan: bool = False, dtype=FLOATS,
                min_samples: int = 1) -> torch.Tensor:
    """``x`` as a floating tensor split along axis 0 (or replicated), checked as scikit-learn does.

    Integer and boolean data become float64 (scikit-learn's rule); float32 and float64 stay.
    Raises ValueError for the wrong number of dimensions, a split along another axis, no
    samples or features, and (unless ``allow_nan``) NaN or infinite values.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if dtype is not None and x.dtype not in dtype:
        x = x.to(torch.float64 if x.dtype in (torch.bool,) or not x.is_floating_point() else dtype[0])
    if ensure_2d and x.dim() != 2:
        kind = {0: "scalar", 1: "1D"}.get(x.dim(), f"{x.dim()}D")
        hint = " Reshape your data either using x.reshape(-1, 1) if your data has a single feature or " \
               "x.reshape(1, -1) if it contains a single sample." if x.dim() < 2 else ""
        raise ValueError(f"Expected a 2-dimensional input {name}, got {kind} array instead (shape={tuple(x.shape)}).{hint}")
    if isinstance(x, DistTensor) and x.split_dim not in (None, 0):
        raise ValueError(f"{name} is split along axis {x.split_dim}; estimators expect the samples split "
                         f"(split=0) or a replicated input: use {name}.resplit(0)")
    if x.dim() and x.shape[0] < min_samples:
        raise ValueError(f"Found array with {x.shape[0]} sample(s) (shape={tuple(x.shape)}) while a minimum of "
                         f"{min_samples} is required.")
    if ensure_2d and x.shape[1] < 1:
        raise ValueError(f"Found array with 0 feature(s) (shape={tuple(x.shape)}) while a minimum of 1 is required.")
    # a finite sum means finite entries (one cheap pass); only an infinite one needs the full check
    if not allow_nan and x.is_floating_point() and not bool(torch.isfinite(x.sum())) and \
            not bool(torch.isfinite(x).all()):
        if bool(torch.isnan(x).any()):
            raise ValueError(f"Input {name} contains NaN.")
        raise ValueError(f"Input {name} contains infinity or a value too large for {x.dtype}.")
    return x


def check_targets(x, y) -> torch.Tensor:
    """``y`` as a 1-D tensor with one entry per sample of ``x`` (ValueError otherwise)."""
    if not isinstance(y, torch.Tensor):
        y = torch.as_tensor(y)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{x.shape[0]}, "
                         f"{y.shape[0] if y.dim() else 1}]")
    return y


def check_n_features(estimator, x, reset: bool) -> None:
    """Record (``reset``) or check ``n_features_in_`` against ``x``'s column count."""
    n = x.shape[1]
    if reset:
        estimator.n_features_in_ = n
    elif n != estimator.n_features_in_:
        raise ValueError(f"X has {n} features, but {type(estimator).__name__} is expecting "
                         f"{estimator.n_features_in_} features as input.")


def check_sample_weight(sample_weight, x: torch.Tensor) -> torch.Tensor:
    """Per-sample weights laid out like ``x``'s rows (ones when None)."""
    ones = torch.ones_like(x[:, 0])
    if sample_weight is None:
        return ones
    if not isinstance(sample_weight, torch.Tensor):
        sample_weight = torch.as_tensor(sample_weight, dtype=x.dtype)
    if sample_weight.dim() == 0:
        return ones * sample_weight.to(x.dtype)
    if tuple(sample_weight.shape) != (x.shape[0],):
        raise ValueError(f"sample_weight.shape == {tuple(sample_weight.shape)}, expected {(x.shape[0],)}!")
    return rows_like(sample_weight.to(x.dtype), x)


def rows_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The per-sample tensor ``t`` laid out like ``x``'s rows: the same counts when ``x`` is
    split (``t`` moved if it is split otherwise, sliced if it is replicated), replicated
    (plain) when ``x`` is not split."""
    if not isinstance(x, DistTensor) or x.split_dim is None:
        return replicated(t)
    if isinstance(t, DistTensor) and t.split_dim is not None:
        return relayout(t, 0, x.counts) if t.counts != x.counts else t
    return t + torch.zeros_like(x[:, 0], dtype=t.dtype)  # (a replicated operand takes x's layout)


def check_random_state(random_state, comm=None) -> Generator:
    """A :class:`torchheat.Generator` from ``random_state``: an int seed, a Generator (used
    as is), or None (a fresh seed shared by every rank: collective)."""
    if isinstance(random_state, Generator):
        return random_state
    if random_state is None:
        g = Generator()
        g.seed(comm or get_comm())
        return g
    if isinstance(random_state, bool) or not isinstance(random_state, int):
        raise ValueError(f"random_state={random_state!r} cannot be used to seed a torchheat.Generator "
                         "(expected None, an int or a torchheat.Generator)")
    return Generator().manual_seed(random_state)


def replicated(t: torch.Tensor) -> torch.Tensor:
    """A small tensor as a plain tensor on every rank (gathered if it is split)."""
    return t.full() if isinstance(t, DistTensor) else t


@contextlib.contextmanager
def progress(verbose: bool, total: int, desc: str, comm=None):
    """A tqdm progress bar on rank 0 when ``verbose`` (a no-op object elsewhere)."""
    comm = comm or get_comm()
    if not verbose or comm.rank != 0:
        yield _NoBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc) as bar:
        yield bar


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass
