"""Krylov methods for split symmetric (Hermitian) matrices: conjugate gradients and Lanczos.

Each iteration is one distributed matrix-vector product (``A @ v`` with A split along
rows or columns and v replicated: local, or one reduce-scatter) and a few global dot
products (allreduces of scalars); vectors are replicated, so memory per rank is A's
share plus ``O(n * m)`` for Lanczos' basis.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.diag(torch.arange(1., 6.)), split=0)
>>> x = th.linalg.cg(a, torch.ones(5))
>>> torch.allclose(x.full(), 1 / torch.arange(1., 6.))
True
"""
from __future__ import annotations

from typing import Optional

import torch

from ..tensor import DistTensor, wrap
from .common import distributed


def _check(a, name: str) -> None:
    if not isinstance(a, torch.Tensor) or a.dim() != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: A must be a square matrix, got shape {tuple(a.shape)}")


def _matvec(a, v):
    out = a @ v
    return out.resplit(None) if isinstance(out, DistTensor) else out


def _replicated(v):
    """A vector as the plain tensor every rank holds (its local chunk once replicated)."""
    return v.resplit(None).local if isinstance(v, DistTensor) else v


def cg(A: torch.Tensor, b: torch.Tensor, x0: Optional[torch.Tensor] = None, rtol: float = 1e-6, atol: float = 0.0,
       maxiter: Optional[int] = None) -> torch.Tensor:
    """Solve ``A x = b`` for a symmetric positive-definite A by conjugate gradients.

    Parameters
    ----------
    A : DistTensor or Tensor
        ``n x n``, split along either axis (or replicated).
    b : Tensor
        ``n`` right-hand side (any layout); the result is replicated.
    x0 : Tensor, optional
        Start vector (default zeros).
    rtol, atol : float
        Stop once ``||r|| <= max(rtol * ||b||, atol)``.
    maxiter : int, optional
        At most this many iterations (default ``10 * n``).

    Examples
    --------
    >>> import torch, torchheat as th
    >>> a = th.distribute(torch.tensor([[4., 1.], [1., 3.]]), split=1)
    >>> th.linalg.cg(a, torch.tensor([1., 2.])).full()
    tensor([0.0909, 0.6364])
    """
    _check(A, "cg")
    with distributed():
        b = b.resplit(None) if isinstance(b, DistTensor) else b
        if tuple(b.shape) != (A.shape[0],):
            raise ValueError(f"cg: b must have shape ({A.shape[0]},), got {tuple(b.shape)}")
        x = torch.zeros_like(b) if x0 is None else (x0.resplit(None) if isinstance(x0, DistTensor) else x0).clone()
        r = b - _matvec(A, x)
        p = r.clone()
        rr = torch.vdot(r, r).real
        stop = max(rtol * float(torch.linalg.vector_norm(b)), atol)
        for _ in range(maxiter or 10 * A.shape[0]):
            if float(rr) ** 0.5 <= stop:
                break
            ap = _matvec(A, p)
            alpha = rr / torch.vdot(p, ap).real
            x = x + alpha * p
            r = r - alpha * ap
            rr, old = torch.vdot(r, r).real, rr
            p = r + (rr / old) * p
    return x if isinstance(x, DistTensor) else wrap(x, None, A.comm if isinstance(A, DistTensor) else None, x.shape)


def lanczos(A: torch.Tensor, m: int, v0: Optional[torch.Tensor] = None):
    """``m`` steps of Lanczos with full reorthogonalization for a symmetric A.

    Returns ``(V, T)``: the ``n x m`` orthonormal Krylov basis (replicated) and the ``m x m``
    tridiagonal ``T = V^H A V``, whose eigenvalues (``torch.linalg.eigvalsh(T)``)
    approximate A's extreme ones. The default start vector is ``th.randn`` under seed 0
    (the same for any process count).

    Examples
    --------
    >>> import torch, torchheat as th
    >>> a = th.distribute(torch.diag(torch.arange(1., 11.)), split=0)
    >>> V, T = th.linalg.lanczos(a, 10)
    >>> torch.allclose(torch.linalg.eigvalsh(T.full()), torch.arange(1., 11.), atol=1e-4)
    True
    """
    _check(A, "lanczos")
    n = A.shape[0]
    if not 1 <= m <= n:
        raise ValueError(f"lanczos: m must be in [1, {n}], got {m}")
    from ..ops.random import Generator, randn
    comm = A.comm if isinstance(A, DistTensor) else None
    with distributed():
        v = randn(n, generator=Generator().manual_seed(0), dtype=A.dtype, comm=comm) if v0 is None else v0
        v = _replicated(v)
        # the basis is replicated: everything but the product with A runs on plain tensors
        V = torch.empty(n, m, dtype=v.dtype, device=v.device)
        V[:, 0] = v / torch.linalg.vector_norm(v)
        alphas, betas = torch.empty(m, dtype=v.dtype, device=v.device), torch.empty(max(m - 1, 0), dtype=v.dtype,
                                                                                   device=v.device)
        for j in range(m):
            w = _replicated(_matvec(A, V[:, j]))
            alphas[j] = torch.vdot(V[:, j], w)
            basis = V[:, :j + 1]
            w = w - basis @ (basis.mH @ w)
            w = w - basis @ (basis.mH @ w)  # twice: full reorthogonalization
            if j < m - 1:
                betas[j] = torch.linalg.vector_norm(w)
                V[:, j + 1] = w / betas[j]
        T = torch.diag(alphas.real.to(A.dtype))
        if m > 1:
            off = betas.real.to(A.dtype)
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return (wrap(V, None, comm, V.shape), wrap(T, None, comm, T.shape)) if comm is not None else (V, T)
