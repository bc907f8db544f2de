"""Linear algebra on DistTensors beyond torch's own signatures.

``torch.matmul``, ``@`` and the other products run distributed through dispatch (see
:mod:`torchheat.ops.linalg`); here are the calls that take a layout.

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

from . import dispatch as d
from .ops.linalg import matmul_layout
from .tensor import DistTensor


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
