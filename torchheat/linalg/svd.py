"""SVD of tall-skinny split matrices and what is built on singular values: ``linalg.svd``,
``svdvals``, ``matrix_norm``, ``norm``, ``matrix_rank``, ``pinv``, ``cond``.

A tall-skinny row-split ``A`` (see :mod:`torchheat.linalg.qr`) is ``Q R`` by TSQR, and the
small replicated ``R = U_r S V^H`` is decomposed on every rank: ``U = Q U_r`` stays split
like A, ``S`` and ``V^H`` are replicated. A wide matrix is the transpose of a tall one.
The 1, -1, inf, -inf and Frobenius norms are sums and extremes (distributed reductions);
2, -2, ``nuc`` and ``cond`` use the singular values; ``pinv = V S^+ U^H``.
Differentiable through TSQR. (Square matrices that are not tall-skinny have no
distributed SVD yet: they follow ``th.config.fallback``.)

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.randn(40, 3, dtype=torch.float64), split=0)
>>> s = torch.linalg.svdvals(a)
>>> torch.allclose(s.full(), torch.linalg.svdvals(a.full()))
True
"""
from __future__ import annotations

import math

import torch

from .. import dispatch as d
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from . import batch
from .common import distributed
from .qr import complement, tsqr


def _tsqr_fits(x: DistTensor) -> bool:
    from .qr import _tall_skinny
    m, n = x._gshape
    return _tall_skinny(x) or (x._split == 0 and m >= n and all(c >= n or c == 0 for c in x._counts))


def tall_svd(x: DistTensor, full_matrices: bool = False, compute_uv: bool = True):
    """``(U, S, Vh)`` of a split ``m x n`` matrix that TSQR fits (U split along rows), or of
    its transpose for a wide one (then Vh is split along columns); None otherwise."""
    m, n = x._gshape
    comm = x._comm
    if m < n:
        with distributed():
            xt = x.mH
        if not _tsqr_fits(xt):
            return None
        out = tall_svd(xt, full_matrices, compute_uv)
        if out is None or not compute_uv:
            return out
        u, s, vh = out
        with distributed():
            return vh.mH, s, u.mH
    if not _tsqr_fits(x):
        return None
    x = x if x._split == 0 else x.resplit(0)
    q, r = tsqr(x.local, x._counts, comm)
    if not compute_uv:
        return None, wrap(torch.linalg.svdvals(r), None, comm, torch.Size((n,))), None
    ur, s, vh = torch.linalg.svd(r)
    ur_in = cf.enter_replicated(ur, comm)
    if full_matrices and m > n:
        with torch.no_grad():
            full = complement(q, x._counts, comm, m)
        u = torch.cat([full[:, :n] @ ur_in.detach(), full[:, n:]], 1)
        ushape = torch.Size((m, m))
    else:
        u, ushape = q @ ur_in, torch.Size((m, n))
    return (wrap(u, 0, comm, ushape, x._counts), wrap(s, None, comm, s.shape), wrap(vh, None, comm, vh.shape))


def _matrix(x) -> bool:
    return isinstance(x, DistTensor) and x.dim() == 2 and x._split is not None and (x.is_floating_point() or x.is_complex())


def _svd_sig(A, full_matrices=True, *, driver=None, out=None):
    return A, full_matrices


@batch.algorithm("linalg.svd", "svd", "linalg.svdvals")
def svd(func, args, kwargs):
    """``linalg.svd``, ``svdvals`` and ``torch.svd`` (``some``, ``compute_uv``: V, not V^H)."""
    x = args[0] if args else kwargs.get("A", kwargs.get("input"))
    if not _matrix(x):
        return d.no_rule(func, args, kwargs)
    if func is torch.linalg.svdvals:
        out = tall_svd(x, compute_uv=False)
        return d.no_rule(func, args, kwargs) if out is None else out[1]
    if func in (torch.svd, torch.Tensor.svd):
        some = kwargs.get("some", args[1] if len(args) > 1 else True)
        compute_uv = kwargs.get("compute_uv", args[2] if len(args) > 2 else True)
        out = tall_svd(x, not some, True)
        if out is None:
            return d.no_rule(func, args, kwargs)
        u, s, vh = out
        with distributed():
            v = vh.mH
            if not compute_uv:
                u, v = torch.zeros_like(u), torch.zeros_like(v)
        return torch.return_types.svd((u, s, v))
    _, full = _svd_sig(*args, **kwargs)
    out = tall_svd(x, full)
    return d.no_rule(func, args, kwargs) if out is None else torch.return_types.linalg_svd(out)


def singular_values(x: DistTensor):
    out = tall_svd(x, compute_uv=False)
    return None if out is None else out[1]


def _norm_sig(A, ord="fro", dim=(-2, -1), keepdim=False, *, dtype=None, out=None):
    return A, ord, dim, keepdim, dtype


@batch.algorithm("linalg.matrix_norm")
def matrix_norm(func, args, kwargs):
    """``linalg.matrix_norm`` of a split matrix for every ``ord``."""
    x, ord, dim, keepdim, dtype = _norm_sig(*args, **kwargs)
    if not _matrix(x) or tuple(dim) not in ((-2, -1), (0, 1)) or ord not in ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf):
        return d.no_rule(func, args, kwargs)
    out = _matrix_norm(x, ord, dtype)
    if out is None:
        return d.no_rule(func, args, kwargs)
    with distributed():
        return out.reshape(1, 1) if keepdim else out


def _matrix_norm(x: DistTensor, ord, dtype=None):
    with distributed():
        if dtype is not None:
            x = x.to(dtype)
        if ord == "fro":
            return torch.linalg.vector_norm(x)
        if ord in (1, -1, math.inf, -math.inf):
            sums = x.abs().sum(0 if ord in (1, -1) else 1)
            return sums.amax() if ord > 0 else sums.amin()
        s = singular_values(x)
        if s is None:
            return None
        return s.sum() if ord == "nuc" else (s.amax() if ord == 2 else s.amin())


def _lnorm_sig(A, ord=None, dim=None, keepdim=False, *, dtype=None, out=None):
    return A, ord, dim, keepdim, dtype


@batch.algorithm("linalg.norm")
def norm(func, args, kwargs):
    """``linalg.norm``: a matrix norm for a string ``ord`` or two dims, else a vector norm."""
    x, ord, dim, keepdim, dtype = _lnorm_sig(*args, **kwargs)
    if dim is None and ord is not None and x.dim() not in (1, 2):
        d.raise_global_error(func, args, kwargs)
    with distributed():
        if ord is None or (dim is not None and not isinstance(dim, (tuple, list))) or (dim is not None and len(dim) == 1):
            return torch.linalg.vector_norm(x, 2 if ord is None else ord, dim, keepdim, dtype=dtype)
        if dim is None and x.dim() != 2 and not isinstance(ord, str):
            return torch.linalg.vector_norm(x, ord, dim, keepdim, dtype=dtype)
        return torch.linalg.matrix_norm(x, ord, (-2, -1) if dim is None else dim, keepdim, dtype=dtype)


def _rank_sig(A, tol=None, hermitian=False, *, atol=None, rtol=None, out=None):
    return A, tol, hermitian, atol, rtol


def _tolerance(s, shape, atol, rtol):
    m, n = shape
    smax = s.amax() if s.numel() else torch.zeros((), dtype=s.dtype)
    if rtol is None:
        rtol = (0.0 if atol is not None and atol > 0 else max(m, n) * torch.finfo(s.dtype).eps)
    return max(float(atol or 0.0), float(rtol) * float(smax))


@batch.algorithm("linalg.matrix_rank")
def matrix_rank(func, args, kwargs):
    """``linalg.matrix_rank``: singular values above the tolerance."""
    x, tol, hermitian, atol, rtol = _rank_sig(*args, **kwargs)
    if not _matrix(x) or hermitian or any(isinstance(t, torch.Tensor) for t in (tol, atol, rtol)):
        return d.no_rule(func, args, kwargs)
    s = singular_values(x)
    if s is None:
        return d.no_rule(func, args, kwargs)
    if tol is not None:
        atol, rtol = tol, 0.0
    return wrap((s.local > _tolerance(s.local, x._gshape, atol, rtol)).sum(), None, x._comm, torch.Size(()))


def _pinv_sig(A, rcond=None, hermitian=False, *, atol=None, rtol=None, out=None):
    return A, rcond, hermitian, atol, rtol


@batch.algorithm("linalg.pinv", "pinverse")
def pinv(func, args, kwargs):
    """``linalg.pinv`` of a tall-skinny (or wide) split matrix: ``V S^+ U^H``."""
    hermitian = False
    if func in (torch.pinverse, torch.Tensor.pinverse):
        x = args[0]
        rcond = kwargs.get("rcond", args[1] if len(args) > 1 else 1e-15)
        atol, rtol = None, rcond
    else:
        x, rcond, hermitian, atol, rtol = _pinv_sig(*args, **kwargs)
        if rcond is not None:
            rtol = rcond
    if not _matrix(x) or hermitian or any(isinstance(t, torch.Tensor) for t in (atol, rtol)):
        return d.no_rule(func, args, kwargs)  # (hermitian: torch reads only the lower triangle, through eigh)
    out = tall_svd(x)
    if out is None:
        return d.no_rule(func, args, kwargs)
    u, s, vh = out
    cut = _tolerance(s.local.detach(), x._gshape, atol, rtol)
    with distributed():
        inv_s = torch.where(s > cut, 1 / s, torch.zeros_like(s))
        return (vh.mH * inv_s) @ u.mH


@batch.algorithm("linalg.cond")
def cond(func, args, kwargs):
    """``linalg.cond``: the ratio of extreme singular values, or ``norm(A) norm(A^-1)``."""
    x = args[0] if args else kwargs["A"]
    p = kwargs.get("p", args[1] if len(args) > 1 else None)
    if not _matrix(x):
        return d.no_rule(func, args, kwargs)
    if p in (None, 2, -2):
        s = singular_values(x)
        if s is None:
            return d.no_rule(func, args, kwargs)
        with distributed():
            return s.amax() / s.amin() if p in (None, 2) else s.amin() / s.amax()
    if x._gshape[0] != x._gshape[1]:
        d.raise_global_error(func, args, kwargs)
    with distributed():
        return torch.linalg.matrix_norm(x, p) * torch.linalg.matrix_norm(torch.linalg.inv(x), p)
