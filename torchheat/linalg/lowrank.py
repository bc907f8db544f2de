"""Randomized low-rank SVD and PCA of split matrices: ``torch.svd_lowrank`` and
``torch.pca_lowrank``.

Halko, Martinsson and Tropp's range finder, as torch computes it on the tall one of A and
``A^H``: ``Q = qr(A R).Q`` for a Gaussian ``n x q`` R (small, replicated), ``niter`` power
iterations (``Q = qr(A^H Q).Q``, ``Q = qr(A Q).Q``), then the SVD of the small projection
``Q^H A`` lifted back by ``Q``. For A split along its rows, ``A R`` and ``A Q`` are local
products whose ``m x q`` results are factored by TSQR, and ``A^H Q`` and ``Q^H A`` are local
products summed by one allreduce of the small result; other layouts use the distributed
products. Memory per rank is its share of A plus ``O((m + n) q)``. R is drawn from
torchheat's default generator (``th.manual_seed``): the result is the same on any number
of processes. Gradients flow through the products and the QRs.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.outer(torch.arange(1., 9., dtype=torch.float64), torch.ones(5, dtype=torch.float64)), split=0)
>>> u, s, v = torch.svd_lowrank(a, q=2)
>>> round(float(s.full()[0]), 6) == round(float(torch.linalg.svdvals(a.full())[0]), 6)
True
"""
from __future__ import annotations

from typing import Optional

import torch
from torch._C import DisableTorchFunctionSubclass

from .. import dispatch as d
from ..ops.linalg import _operand, product
from ..tensor import DistTensor, wrap
from .common import distributed


def _times(a: DistTensor, b) -> DistTensor:
    """``a @ b``; for a short ``a`` split along its columns (``A^H`` of a row-split tall A,
    ``Q^H``) the product is short too (``n x q``), so the partial products are summed by one
    allreduce into a replicated result, whose QR and next product are local."""
    if a._split != 1 or a._gshape[0] > a._gshape[1]:
        return a @ b
    with DisableTorchFunctionSubclass():
        out = product(_operand(a, None), _operand(b, None), a._comm, want=(None, None))
    return wrap(out.t, None, a._comm, torch.Size((a._gshape[0], b.shape[-1])))


def _basis(a, q: int, niter: int):
    """An orthonormal ``m x q`` basis of the tall A's approximate range."""
    from ..ops.random import randn
    r = randn(a.shape[-1], q, dtype=a.dtype, device=a.device, comm=a._comm)  # n x q: small, replicated
    basis = torch.linalg.qr(_times(a, r)).Q
    for _ in range(niter):
        basis = torch.linalg.qr(_times(a.mH, basis)).Q
        basis = torch.linalg.qr(_times(a, basis)).Q
    return basis


def svd_lowrank(a: DistTensor, q: int = 6, niter: int = 2):
    """``(U, S, V)`` with ``A ~ U diag(S) V^H`` of rank q (torch's ``svd_lowrank``)."""
    m, n = a._gshape
    with distributed():
        if m < n:  # as torch: of the tall A^H, U and V swapped
            v, s, u = svd_lowrank(a.mH, q, niter)
            return u, s, v
        basis = _basis(a, q, niter)
        u, s, vh = torch.linalg.svd(_times(basis.mH, a).resplit(None), full_matrices=False)
        return basis @ u, s, vh.mH


def _lowrank_sig(A, q: Optional[int] = 6, niter: int = 2, M=None):
    return A, q, niter, M


def _pca_sig(A, q: Optional[int] = None, center: bool = True, niter: int = 2):
    return A, q, center, niter


def _split_matrix(a) -> bool:
    return isinstance(a, DistTensor) and a._split is not None and a.dim() == 2


@d.implements("svd_lowrank")
def svd_lowrank_rule(func, args, kwargs):
    """``torch.svd_lowrank(A, q, niter, M)`` of a split matrix."""
    a, q, niter, m = _lowrank_sig(*args, **kwargs)
    if not _split_matrix(a):
        return d.no_rule(func, args, kwargs)
    if m is not None:
        with distributed():
            a = a - m
    return svd_lowrank(a, 6 if q is None else q, niter)


@d.implements("pca_lowrank")
def pca_lowrank_rule(func, args, kwargs):
    """``torch.pca_lowrank(A, q, center, niter)`` of a split matrix."""
    a, q, center, niter = _pca_sig(*args, **kwargs)
    if not _split_matrix(a):
        return d.no_rule(func, args, kwargs)
    m, n = a._gshape
    q = min(6, m, n) if q is None else q
    if not 0 <= q <= min(m, n):
        d.raise_global_error(func, args, kwargs)
    with distributed():
        if center:
            a = a - a.mean(dim=-2, keepdim=True)
    return svd_lowrank(a, q, niter)
