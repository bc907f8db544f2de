"""Distributed linear algebra: decompositions, solvers and iterative methods.

``torch.matmul``, ``@`` and the other products run distributed through dispatch (see
:mod:`torchheat.ops.linalg`). The ``torch.linalg`` functions run here: batch-split
operands locally (:mod:`.batch`), split matrices by TSQR and blocked QR (:mod:`.qr`),
LU and triangular sweeps over column blocks (:mod:`.lu`, :mod:`.solve`), SVD and norms
(:mod:`.svd`, with the Jacobi SVD of :mod:`.jacobi`), symmetric eigensolvers (:mod:`.eigh`),
the LU interface (:mod:`.pivoted_lu`), randomized low-rank SVD (:mod:`.lowrank`), the
functions composed of distributed steps (``cross``, ``vander``, ``polar``, ``tensorsolve``,
... in :mod:`.composite`) and the iterative ``cg`` and ``lanczos`` (:mod:`.iterative`). Here also are the calls that take a layout.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.ones(4, 3), split=0)
>>> b = th.distribute(torch.ones(3, 5), split=1)
>>> th.linalg.matmul(a, b, split=1).split_dim
1
"""
from __future__ import annotations

from typing import Optional

import torch
from torch._C import DisableTorchFunctionSubclass

from .. import dispatch as d
from ..ops.linalg import matmul_layout
from ..tensor import DistTensor
from . import batch, composite, eigh, lowrank, pivoted_lu, qr, solve, svd  # noqa: F401  (register the torch.linalg rules)
from .iterative import cg, lanczos


def matmul(a: torch.Tensor, b: torch.Tensor, split: Optional[int] = None) -> DistTensor:
    """``torch.matmul(a, b)`` with the result split along ``split`` (None: the cheapest
    layout, as ``a @ b`` chooses; ``split`` may be any axis of the result).

    >>> import torch, torchheat as th
    >>> a = th.distribute(torch.eye(3), split=0)
    >>> th.linalg.matmul(a, a, split=1).full().equal(torch.eye(3))
    True
    """
    comm = d.common_comm(t for t in (a, b) if isinstance(t, DistTensor))
    with DisableTorchFunctionSubclass():
        return matmul_layout(a, b, comm, split)


batch.install()
