"""Helpers for tests of distributed code: build every layout of a tensor, compare with torch.

Every rank builds the same global input, torchheat runs on the distributed versions, and
the gathered result is compared with plain torch on the global input.

Examples
--------
>>> import torch, torchheat as th
>>> from torchheat.testing import layouts, assert_dist_close
>>> t = torch.arange(12.).reshape(4, 3)
>>> for x in layouts(t):
...     assert_dist_close(x * 2, t * 2)
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch

from . import layout
from .comm import get_comm
from .ops.creation import distribute
from .tensor import DistTensor


def skewed_counts(n: int, p: int) -> layout.Counts:
    """An unbalanced layout of n rows: rank 0 empty, the rest balanced in reverse order.

    >>> skewed_counts(5, 3)
    (0, 2, 3)
    """
    if p == 1:
        return (n,)
    return (0,) + tuple(reversed(layout.balanced_counts(n, p - 1)))


def layouts(t: torch.Tensor, comm=None, unbalanced: bool = True, requires_grad: bool = False) -> Iterator[DistTensor]:
    """Every distribution of ``t``: replicated, split along each axis balanced, and (with
    ``unbalanced``) along each axis with an empty chunk on rank 0.

    With ``requires_grad`` each yielded DistTensor is a fresh leaf that requires grad.
    """
    comm = comm or get_comm()
    t = t.detach()
    options = [(None, None)]
    for axis in range(t.dim()):
        options.append((axis, None))
        if unbalanced and comm.size > 1:
            options.append((axis, skewed_counts(t.shape[axis], comm.size)))
    for split, counts in options:
        x = distribute(t, split, comm=comm, counts=counts)
        if requires_grad:
            x.requires_grad_(True)
        yield x


def check_layout(x: DistTensor) -> None:
    """Assert a DistTensor's metadata is consistent with its local chunk (on this rank)."""
    assert isinstance(x, DistTensor), f"expected a DistTensor, got {type(x).__name__}"
    lshape = x.lshape
    if x.split_dim is None:
        assert lshape == x.shape, f"replicated tensor: local shape {tuple(lshape)} != global {tuple(x.shape)}"
        return
    counts = x.counts
    assert len(counts) == x.comm.size and sum(counts) == x.shape[x.split_dim], f"counts {counts} vs shape {tuple(x.shape)}"
    expected = layout.local_shape(x.shape, x.split_dim, counts[x.comm.rank])
    assert lshape == expected, f"local shape {tuple(lshape)} != {tuple(expected)} (split={x.split_dim}, counts={counts})"


def assert_dist_close(actual, expected: torch.Tensor, *, rtol: Optional[float] = None, atol: Optional[float] = None,
                      split: Optional[int] = -1, equal_nan: bool = True) -> None:
    """Assert a DistTensor equals ``expected`` globally: shape, dtype, values (and layout).

    ``split`` (when not -1) is the split axis the result must have. Collective: the ranks
    agree on the outcome, so a mismatch seen by one rank fails the test on every rank
    (instead of leaving the others waiting in the next collective).
    """
    if isinstance(expected, (tuple, list)):  # multi-output ops: (values, indices), ...
        assert type(actual) is type(expected), f"result type {type(actual).__name__} != {type(expected).__name__}"
        for a, e in zip(actual, expected, strict=True):
            assert_dist_close(a, e, rtol=rtol, atol=atol, split=split, equal_nan=equal_nan)
        return
    comm = actual.comm if isinstance(actual, DistTensor) else get_comm()
    problem = None
    try:
        check_layout(actual)
        if split != -1:
            assert actual.split_dim == split, f"split {actual.split_dim} != expected {split}"
        assert actual.shape == expected.shape, f"global shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    except AssertionError as err:
        problem = str(err)
    _agree(comm, problem)
    full = actual.full().detach()
    try:
        torch.testing.assert_close(full, expected.detach(), rtol=rtol, atol=atol, equal_nan=equal_nan)
    except AssertionError as err:
        problem = str(err)
    _agree(comm, problem)


def _agree(comm, problem: Optional[str]) -> None:
    """Share each rank's failure message; raise the first one on every rank."""
    failed = [(r, p) for r, p in enumerate(comm.allgather_obj(problem)) if p is not None]
    if failed:
        raise AssertionError(f"on rank(s) {[r for r, _ in failed]}: {failed[0][1]}")


def assert_replicated_close(actual, expected, *, rtol: Optional[float] = None, atol: Optional[float] = None, comm=None) -> None:
    """Assert plain tensors (one or a list) are bitwise the same on every rank and close to
    ``expected`` (``None`` entries must match ``None``: gradients that were never made).
    Collective: the ranks agree on the outcome.

    >>> import torch
    >>> assert_replicated_close([torch.ones(2), None], [torch.ones(2), None])
    """
    comm = comm or get_comm()
    actual = list(actual) if isinstance(actual, (list, tuple)) else [actual]
    expected = list(expected) if isinstance(expected, (list, tuple)) else [expected]
    problem = None
    try:
        assert len(actual) == len(expected), f"{len(actual)} tensors != {len(expected)} expected"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert (a is None) == (e is None), f"tensor {i}: {'None' if a is None else 'a tensor'} != expected {e is not None and 'a tensor' or 'None'}"
            if a is not None:
                torch.testing.assert_close(a.detach(), e.detach(), rtol=rtol, atol=atol, msg=lambda m, i=i: f"tensor {i}: {m}")
    except AssertionError as err:
        problem = str(err)
    _agree(comm, problem)
    mine = [None if a is None else a.detach().cpu() for a in actual]
    first = comm.allgather_obj(mine)[0] if comm.size > 1 else mine
    try:
        for i, (a, r0) in enumerate(zip(mine, first)):
            assert (a is None) == (r0 is None) and (a is None or torch.equal(a, r0)), f"tensor {i} differs from rank 0's"
    except AssertionError as err:
        problem = str(err)
    _agree(comm, problem)
