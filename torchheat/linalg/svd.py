"""SVD of split matrices and what is built on singular values: ``linalg.svd``,
``svdvals``, ``matrix_norm``, ``norm``, ``matrix_rank``, ``pinv``, ``cond``.

A tall-skinny row-split ``A`` (see :mod:`torchheat.linalg.qr`) is ``Q R`` by TSQR, and the
small replicated ``R = U_r S V^H`` is decomposed on every rank: ``U = Q U_r`` stays split
like A, ``S`` and ``V^H`` are replicated. Other matrices (square, or too few rows per rank)
run the one-sided Jacobi SVD of :mod:`torchheat.linalg.jacobi` on their column blocks, with
torch's SVD backward in distributed ops. A wide matrix is the transpose of a tall one.
The 1, -1, inf, -inf and Frobenius norms are sums and extremes (distributed reductions);
2, -2, ``nuc`` and ``cond`` use the singular values; ``pinv = V S^+ U^H`` with torch's
explicit pinv gradient (``hermitian=True``: the SVD of the Hermitian matrix its lower
triangle makes). Where a Jacobi SVD finds zero singular values, U's columns for them
are zero, not an orthonormal completion (``full_matrices=True`` of a non-TSQR tall matrix
follows ``th.config.fallback``).

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

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from . import batch
from .common import distributed
from .eigh import hermitian_part
from .jacobi import sorted_columns, svd_columns
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
        out = tall_svd(xt, full_matrices, compute_uv)
        if out is None or not compute_uv:
            return out
        u, s, vh = out
        with distributed():
            return vh.mH, s, u.mH
    if not _tsqr_fits(x):
        if full_matrices and m > n and compute_uv:
            return None
        u, s, vh = jacobi_svd(x)
        return (u, s, vh) if compute_uv else (None, s, None)
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


class _JacobiSVD(torch.autograd.Function):
    """``(U, S, V)`` of the column-split ``m x n`` A, m >= n (local columns; U and V split
    along their columns, S replicated); backward by torch's SVD formula in distributed ops."""

    @staticmethod
    def forward(ctx, a, counts, comm, m):
        n = sum(counts)
        w, s, v, mine = svd_columns(a, counts, comm, m)
        u, s, v, kcounts = sorted_columns(w, s, v, mine, comm, n)
        ctx.meta = (counts, comm, m, kcounts)
        ctx.save_for_backward(u, s, v)
        return u, s, v

    @staticmethod
    def backward(ctx, gu, gs, gv):
        counts, comm, m, kcounts = ctx.meta
        u, s, v = ctx.saved_tensors
        n = v.shape[0]
        U, V = (wrap(t, 1, comm, torch.Size((rows, n)), kcounts) for t, rows in ((u, m), (v, n)))
        GU, GV = (wrap(torch.zeros_like(t) if g is None else g, 1, comm, torch.Size((rows, n)), kcounts)
                  for g, t, rows in ((gu, u, m), (gv, v, n)))
        S = wrap(s, None, comm, s.shape)
        GS = wrap(torch.zeros_like(s) if gs is None else gs, None, comm, s.shape)
        with distributed():
            ga = svd_backward(U, S, V, GU, GS, GV, m, n)
            ga = d.to_layout(ga, 1, counts)
        return ga.local, None, None, None


def svd_backward(U, S, V, GU, GS, GV, m: int, n: int):
    """torch's SVD gradient ``dA`` (for ``A = U diag(S) V^H``, k = min(m, n)), written with
    distributed ops: the ``k x k`` matrices stay split."""
    from ..ops.creation import eye
    k = S.shape[0]
    eye_k = eye(k, split=0, dtype=U.dtype, device=U.device, comm=U._comm)
    col = S.resplit(0).unsqueeze(-1)  # S as a split column: the k x k terms are split too
    uhgu, vhgv = U.mH @ GU, V.mH @ GV
    uhgu, vhgv = uhgu - uhgu.mH, vhgv - vhgv.mH
    e = (S * S).unsqueeze(0) - col * col + eye_k
    core = (uhgu * S.unsqueeze(0) + col * vhgv) / e + eye_k * GS.unsqueeze(0)
    if m > k:
        gus = GU / S.unsqueeze(0)
        return (U @ core + gus - U @ (U.mH @ gus)) @ V.mH
    if n > k:
        sgv = GV.mH / col
        return U @ (core @ V.mH + sgv - (sgv @ V) @ V.mH)
    return U @ core @ V.mH


def jacobi_svd(x: DistTensor):
    """``(U, S, Vh)`` of a split matrix by one-sided Jacobi over its column blocks (of
    ``A^H`` for a wide matrix): U split along its columns, Vh along its rows."""
    m, n = x._gshape
    comm = x._comm
    if m < n:
        with distributed():
            u, s, vh = jacobi_svd(x.mH)
            return vh.mH, s, u.mH
    xc = x if x._split == 1 else x.resplit(1)
    u, s, v = _JacobiSVD.apply(xc.local, xc._counts, comm, m)
    kcounts = layout.balanced_counts(n, comm.size)
    U = wrap(u, 1, comm, torch.Size((m, n)), kcounts)
    V = wrap(v, 1, comm, torch.Size((n, n)), kcounts)
    with distributed():
        return U, wrap(s, None, comm, s.shape), V.mH


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
    if not _matrix(x) or ord not in ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf) or \
            tuple(a % 2 for a in dim) not in ((0, 1), (1, 0)):
        return d.no_rule(func, args, kwargs)
    if tuple(a % 2 for a in dim) == (1, 0):  # rows and columns exchanged: the norm of the transpose
        with distributed():
            x = x.mT
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
    if not _matrix(x) or any(isinstance(t, torch.Tensor) for t in (tol, atol, rtol)):
        return d.no_rule(func, args, kwargs)
    if hermitian and x._gshape[0] != x._gshape[1]:
        d.raise_global_error(func, args, kwargs)
    s = singular_values(hermitian_part(x) if hermitian else x)
    if s is None:
        return d.no_rule(func, args, kwargs)
    if tol is not None:
        atol, rtol = tol, 0.0
    return wrap((s.local > _tolerance(s.local, x._gshape, atol, rtol)).sum(), None, x._comm, torch.Size(()))


def _scalar(t):
    """A one-element tolerance tensor as a number (what it means for a single matrix)."""
    if isinstance(t, torch.Tensor) and t.numel() == 1:
        return float(t.local if isinstance(t, DistTensor) and t._split is None else t.reshape(()))
    return t


def _pinv_sig(A, rcond=None, hermitian=False, *, atol=None, rtol=None, out=None):
    return A, rcond, hermitian, atol, rtol


@batch.algorithm("linalg.pinv", "pinverse")
def pinv(func, args, kwargs):
    """``linalg.pinv`` of a split matrix: ``V S^+ U^H`` (``hermitian``: of the Hermitian
    matrix its lower triangle makes), with torch's explicit pinv gradient (finite also where
    A is rank-deficient)."""
    hermitian = False
    if func in (torch.pinverse, torch.Tensor.pinverse):
        x = args[0]
        rcond = kwargs.get("rcond", args[1] if len(args) > 1 else 1e-15)
        atol, rtol = None, rcond
    else:
        x, rcond, hermitian, atol, rtol = _pinv_sig(*args, **kwargs)
        if rcond is not None:
            rtol = rcond
    atol, rtol = (_scalar(t) for t in (atol, rtol))
    if not _matrix(x) or any(isinstance(t, torch.Tensor) for t in (atol, rtol)):
        return d.no_rule(func, args, kwargs)
    if hermitian and x._gshape[0] != x._gshape[1]:
        d.raise_global_error(func, args, kwargs)
    out = pseudo_inverse(x, atol, rtol, hermitian)
    return d.no_rule(func, args, kwargs) if out is None else out[0]


def pseudo_inverse(x: DistTensor, atol=None, rtol=None, hermitian: bool = False):
    """``(pinv(x), S, cut)`` of a split matrix: the pseudo-inverse in x's layout (transposed),
    its singular values (replicated; of the Hermitian matrix the lower triangle makes, for
    ``hermitian``) and the cut below which they count as zero; None where no SVD fits."""
    with torch.no_grad():
        # hermitian: the SVD of the Hermitian matrix torch reads (its singular values are |eigenvalues|)
        out = tall_svd(hermitian_part(x) if hermitian else x)
        if out is None:
            return None
        u, s, vh = out
        cut = _tolerance(s.local, x._gshape, atol, rtol)
        with distributed():
            inv_s = torch.where(s > cut, 1 / s, torch.zeros_like(s))
            p = (vh.mH * inv_s) @ u.mH
    with torch.no_grad():
        p = d.to_layout(p, x._split, None if x._split is None else layout.balanced_counts(x._gshape[1 - x._split], x._comm.size))
    meta = [(t._split, t._comm, t._gshape, t._counts) for t in (x, p)]
    return wrap(_Pinv.apply(x.local, p.local.detach(), meta), p._split, p._comm, p._gshape, p._counts), s, cut


class _Pinv(torch.autograd.Function):
    """The pseudo-inverse ``P`` of A (computed before); backward torch's ``pinv_backward``
    in distributed ops."""

    @staticmethod
    def forward(ctx, a, p, meta):
        ctx.meta = meta
        ctx.save_for_backward(a, p)
        return p.clone()

    @staticmethod
    def backward(ctx, gp):
        a, p = ctx.saved_tensors
        A, P, G = wrap(a, *ctx.meta[0]), wrap(p, *ctx.meta[1]), wrap(gp, *ctx.meta[1])
        m, n = A._gshape
        with distributed():
            ph, gh = P.mH, G.mH
            if m <= n:
                k = gh @ P
                kph = k @ ph
                ga = -(P @ k).mH + kph - (A @ P) @ kph + (ph @ P) @ (gh - k @ A)
            else:
                k = P @ gh
                phk = ph @ k
                ga = -(k @ P).mH + (gh - A @ k) @ P @ ph + phk - phk @ P @ A
            ga = d.to_layout(ga, A._split, A._counts)
        return ga.local, None, None


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
