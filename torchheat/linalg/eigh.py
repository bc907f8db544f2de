"""``linalg.eigh`` and ``eigvalsh`` of a split Hermitian matrix by one-sided Jacobi.

The triangle torch reads (``UPLO``) defines the Hermitian ``H``; the Jacobi sweeps of
:mod:`torchheat.linalg.jacobi` run on ``H + s I`` with ``s = ||H||_1``, which is positive
semidefinite, so its singular values are its eigenvalues and the accumulated rotations
``V`` its eigenvectors (orthonormal also for repeated eigenvalues). Eigenvalues come out
ascending (``lambda = sigma - s``), replicated; eigenvectors in the input's layout.
Accuracy: the shift makes the absolute error of every eigenvalue about ``eps * ||H||_1``
(torch's LAPACK gives about ``eps * ||H||_2``), so eigenvalues much smaller than the norm
have fewer correct digits. Gradients by torch's formula
``dA = V (skew(V^H dV) / 2E + diag(dL)) V^H`` (``E[j, k] = L[k] - L[j]``) in distributed ops.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.tensor([[2., 1.], [1., 2.]], dtype=torch.float64), split=0)
>>> [round(v, 12) for v in torch.linalg.eigvalsh(a).full().tolist()]
[1.0, 3.0]
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..tensor import DistTensor, wrap
from . import batch
from .common import distributed
from .jacobi import sorted_columns, svd_columns


class _JacobiEigh(torch.autograd.Function):
    """``(L, V)`` of the column-split Hermitian ``h`` (local columns; the gradient goes to
    ``a``, the matrix ``h`` was read from, as torch's)."""

    @staticmethod
    def forward(ctx, a, h, counts, comm, shift):
        n = sum(counts)
        w, s, v, mine = svd_columns(h, counts, comm, n, shift)
        _, s, v, kcounts = sorted_columns(w, s, v, mine, comm, n, ascending=True)
        lam = s - shift
        ctx.meta = (counts, comm, kcounts)
        ctx.save_for_backward(lam, v)
        return lam, v

    @staticmethod
    def backward(ctx, gl, gv):
        counts, comm, kcounts = ctx.meta
        lam, v = ctx.saved_tensors
        n = v.shape[0]
        from ..ops.creation import eye
        V = wrap(v, 1, comm, torch.Size((n, n)), kcounts)
        GV = wrap(torch.zeros_like(v) if gv is None else gv, 1, comm, torch.Size((n, n)), kcounts)
        L = wrap(lam, None, comm, lam.shape)
        GL = wrap(torch.zeros_like(lam) if gl is None else gl, None, comm, lam.shape)
        with distributed():
            eye_n = eye(n, split=0, dtype=v.dtype, device=v.device, comm=comm)
            e = L.unsqueeze(0) - L.resplit(0).unsqueeze(-1) + eye_n
            x = V.mH @ GV
            core = (x - x.mH) / (2 * e) + eye_n * GL.unsqueeze(0)
            ga = d.to_layout(V @ core @ V.mH, 1, counts)
        return ga.local, None, None, None, None


def _eigh_sig(A, UPLO="L", *, out=None):
    return A, UPLO


def hermitian_part(a: DistTensor, uplo: str = "L") -> DistTensor:
    """The Hermitian matrix torch reads from the ``uplo`` triangle of ``a`` (no gradient)."""
    with torch.no_grad(), distributed():
        tri = a.tril() if uplo == "L" else a.triu()
        return tri + (tri.tril(-1) if uplo == "L" else tri.triu(1)).mH


def hermitian_eig(a: DistTensor, uplo: str = "L"):
    """Ascending eigenvalues (replicated) and eigenvectors (split along columns) of the split
    Hermitian matrix whose ``uplo`` triangle is in ``a``."""
    comm = a._comm
    h = hermitian_part(a, uplo)
    with torch.no_grad(), distributed():
        shift = float(torch.linalg.matrix_norm(h, 1)) if h.numel() else 0.0
        hc = h if h._split == 1 else h.resplit(1)
    ac = a if a._split == 1 else a.resplit(1)
    n = a._gshape[0]
    lam, v = _JacobiEigh.apply(ac.local, hc.local, hc._counts, comm, shift)
    return wrap(lam, None, comm, lam.shape), wrap(v, 1, comm, torch.Size((n, n)), layout.balanced_counts(n, comm.size))


@batch.algorithm("linalg.eigh", "linalg.eigvalsh")
def eigh(func, args, kwargs):
    """``linalg.eigh`` / ``eigvalsh`` of a split Hermitian matrix (``UPLO`` as torch)."""
    a, uplo = _eigh_sig(*args, **kwargs)
    if a.dim() != 2 or a._gshape[0] != a._gshape[1] or uplo not in ("L", "U") or not a.is_floating_point():
        return d.raise_global_error(func, args, kwargs) if a.dim() == 2 and not a.is_complex() else d.no_rule(func, args, kwargs)
    lam, v = hermitian_eig(a, uplo)
    if func is torch.linalg.eigvalsh:
        return lam
    return torch.return_types.linalg_eigh((lam, d.to_layout(v, a._split, a._counts)))
