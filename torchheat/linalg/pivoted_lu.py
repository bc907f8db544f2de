"""torch's LU interface on split matrices: ``linalg.lu_factor`` (``_ex``), ``linalg.lu``,
``linalg.lu_solve`` and ``torch.lu_unpack``.

``lu_factor`` runs the column-block LU of :mod:`torchheat.linalg.lu` (on the column split:
one all-to-all) and returns the compact ``LU`` in the input's layout with LAPACK's pivots
(1-based row swaps, replicated), the same as torch's. Its backward is torch's LU formula
(``dA = P L^-H [L^H dL o 1_L + dU U^H o 1_U] U^-H`` for a square A, and its tall and wide
forms) written with distributed triangular solves and products. ``lu`` and ``lu_unpack``
cut ``L`` and ``U`` out of ``LU`` with distributed ``tril``/``triu`` and build ``P`` chunk by
chunk from the pivots; ``lu_solve`` is two distributed triangular solves and a row
permutation, so its gradients (for ``LU`` and ``B``) are those of the solves.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.tensor([[1., 2.], [3., 4.]]), split=0)
>>> lu, piv = torch.linalg.lu_factor(a)
>>> piv.full().tolist()
[2, 2]
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..tensor import DistTensor, wrap
from . import batch
from .common import distributed
from .lu import factor


def permutation_order(pivots: torch.Tensor, m: int) -> torch.Tensor:
    """``perm`` with ``(P^T A)[i] = A[perm[i]]`` for LAPACK's (1-based) pivots."""
    perm = list(range(m))
    for i, q in enumerate(pivots.tolist()):
        perm[i], perm[q - 1] = perm[q - 1], perm[i]
    return torch.tensor(perm, dtype=torch.int64)


def permutation_matrix(perm: torch.Tensor, split, counts, comm, dtype, device=None) -> DistTensor:
    """The ``m x m`` P with ``P[perm[i], i] = 1``, built chunk by chunk."""
    m = perm.shape[0]
    if split is None:
        local = torch.zeros(m, m, dtype=dtype, device=device)
        local[perm, torch.arange(m)] = 1
        return wrap(local, None, comm, torch.Size((m, m)))
    counts = counts or layout.balanced_counts(m, comm.size)
    o, c = layout.offsets(counts)[comm.rank], counts[comm.rank]
    mine = torch.arange(o, o + c)
    local = torch.zeros((c, m) if split == 0 else (m, c), dtype=dtype, device=device)
    if split == 0:
        local[torch.arange(c), torch.argsort(perm)[mine]] = 1
    else:
        local[perm[mine], torch.arange(c)] = 1
    return wrap(local, split, comm, torch.Size((m, m)), counts)


def _permute_rows(x: DistTensor, perm: torch.Tensor) -> DistTensor:
    """``P X`` (rows ``X[inverse(perm)]``) in distributed ops."""
    return torch.index_select(x, 0, torch.argsort(perm))


def unpack(lu: DistTensor, perm: torch.Tensor):
    """``(P, L, U)`` of a split compact LU (distributed ops; differentiable in ``lu``)."""
    m, n = lu._gshape
    k = min(m, n)
    from ..ops.creation import eye
    split = lu._split
    with distributed():
        ell = lu[:, :k].tril(-1) + eye(m, k, split=split, dtype=lu.dtype, device=lu.device, comm=lu._comm)
        u = lu[:k].triu()
        ell, u = (t.balance() if t._split is not None else t for t in (ell, u))
    p = permutation_matrix(perm, split, lu._counts if split == 0 else None, lu._comm, lu.dtype, lu.device)
    return p, ell, u


class _LUFactor(torch.autograd.Function):
    """The compact LU (local columns), the pivots and the info of the column-split A."""

    @staticmethod
    def forward(ctx, a, counts, comm):
        f = factor(a, counts, comm)
        ctx.meta = (counts, comm, f.perm)
        ctx.save_for_backward(f.lu)
        info = torch.tensor(f.info, dtype=torch.int32)
        ctx.mark_non_differentiable(f.pivots, info)
        return f.lu, f.pivots, info

    @staticmethod
    def backward(ctx, glu, gpiv, ginfo):
        counts, comm, perm = ctx.meta
        (lu,) = ctx.saved_tensors
        m, n = lu.shape[0], sum(counts)
        k = min(m, n)
        LU = wrap(lu, 1, comm, torch.Size((m, n)), counts)
        G = wrap(glu, 1, comm, torch.Size((m, n)), counts)
        _, ell, u = unpack(LU, perm)
        solve = torch.linalg.solve_triangular
        with distributed():
            gl, gu = G[:, :k].tril(-1), G[:k].triu()
            if m == n:
                x = (ell.mH @ gl).tril(-1) + (gu @ u.mH).triu()
                x = solve(u.mH, x, upper=False, left=False)
                x = solve(ell.mH, x, upper=True, unitriangular=True)
            elif m < n:
                x = (ell.mH @ gl - gu @ u.mH).tril(-1)
                x = solve(u[:, :k].mH, x, upper=False, left=False)
                x = torch.cat([x + gu[:, :k], gu[:, k:]], 1)
                x = solve(ell.mH, x, upper=True, unitriangular=True)
            else:
                x = (gu @ u.mH - ell.mH @ gl).triu()
                x = solve(ell[:k].mH, x, upper=True, unitriangular=True)
                x = torch.cat([x + gl[:k], gl[k:]], 0)
                x = solve(u.mH, x, upper=False, left=False)
            ga = d.to_layout(_permute_rows(x, perm), 1, counts)
        return ga.local, None, None


def _factor_sig(A, *, pivot=True, check_errors=False, out=None):
    return A, pivot


def lu_factor_split(a: DistTensor):
    """``(LU, pivots, info)`` of a split matrix: LU in a's layout, the rest replicated."""
    comm = a._comm
    ac = a if a._split == 1 else a.resplit(1)
    lu, piv, info = _LUFactor.apply(ac.local, ac._counts, comm)
    LU = d.to_layout(wrap(lu, 1, comm, a._gshape, ac._counts), a._split, a._counts)
    return LU, wrap(piv, None, comm, piv.shape), wrap(info, None, comm, torch.Size(()))


@batch.algorithm("linalg.lu_factor", "linalg.lu_factor_ex", "linalg.lu")
def lu_factor(func, args, kwargs):
    """``linalg.lu_factor``, ``lu_factor_ex`` and ``lu`` of a split matrix (``pivot=True``)."""
    a, pivot = _factor_sig(*args, **kwargs)
    if not pivot or a.dim() != 2 or not (a.is_floating_point() or a.is_complex()):
        d.raise_global_error(func, args, kwargs)
    LU, piv, info = lu_factor_split(a)
    if func is torch.linalg.lu_factor_ex:
        return torch.return_types.linalg_lu_factor_ex((LU, piv, info))
    if func is torch.linalg.lu:
        return torch.return_types.linalg_lu(unpack(LU, permutation_order(piv.local, a._gshape[0])))
    if int(info.local):
        i = int(info.local)
        raise RuntimeError(f"torch.linalg.lu_factor: U[{i},{i}] is zero and using it on lu_solve would result in a "
                           "division by zero. If you still want to perform the factorization, consider calling "
                           "linalg.lu(A, pivot) or linalg.lu_factor_ex(A, pivot)")
    return torch.return_types.linalg_lu_factor((LU, piv))


def _replicated(t, comm) -> torch.Tensor:
    return d.to_layout(t, None, None).local if isinstance(t, DistTensor) else t


def _unpack_sig(LU_data, LU_pivots, unpack_data=True, unpack_pivots=True, *, out=None):
    return LU_data, LU_pivots, unpack_data, unpack_pivots


@batch.algorithm("lu_unpack")
def lu_unpack(func, args, kwargs):
    """``torch.lu_unpack`` of a split compact LU."""
    lu, piv, data, pivots = _unpack_sig(*args, **kwargs)
    if not isinstance(lu, DistTensor) or lu._split is None or lu.dim() != 2:
        return d.no_rule(func, args, kwargs)
    p, ell, u = unpack(lu, permutation_order(_replicated(piv, lu._comm), lu._gshape[0]))
    empty = wrap(lu.local.new_zeros(0), None, lu._comm, torch.Size((0,)))
    return torch.return_types.lu_unpack((p if pivots else empty, ell if data else empty, u if data else empty))


def _solve_sig(LU, pivots, B, *, left=True, adjoint=False, out=None):
    return LU, pivots, B, left, adjoint


@batch.algorithm("linalg.lu_solve")
def lu_solve(func, args, kwargs):
    """``linalg.lu_solve(LU, pivots, B, left=, adjoint=)``: triangular solves with the split
    LU (its strict lower part as the unit L) and a row (or column) permutation."""
    lu, piv, b, left, adjoint = _solve_sig(*args, **kwargs)
    comm = d.common_comm(t for t in (lu, piv, b) if isinstance(t, DistTensor))
    n = d.shape_of(lu)[-1]
    if len(d.shape_of(lu)) != 2 or len(d.shape_of(b)) != 2 or d.shape_of(lu)[0] != n \
            or d.shape_of(b)[0 if left else 1] != n or lu.dtype != b.dtype:
        d.raise_global_error(func, args, kwargs)
    with distributed():
        if not isinstance(lu, DistTensor) or lu._split is None:  # the factors split along columns (no communication)
            lu = (lu if isinstance(lu, DistTensor) else wrap(lu, None, comm, lu.shape)).resplit(1)
        if not isinstance(b, DistTensor):
            b = wrap(b, None, comm, b.shape)
        perm = permutation_order(_replicated(piv, comm), n)
        solve = torch.linalg.solve_triangular
        if left and not adjoint:  # U^-1 L^-1 P^T B
            x = solve(lu, solve(lu, torch.index_select(b, 0, perm), upper=False, unitriangular=True), upper=True)
        elif left:  # P L^-H U^-H B
            x = _permute_rows(solve(lu.mH, solve(lu.mH, b, upper=False), upper=True, unitriangular=True), perm)
        elif not adjoint:  # B U^-1 L^-1 P^T
            y = solve(lu, solve(lu, b, upper=True, left=False), upper=False, left=False, unitriangular=True)
            x = torch.index_select(y, 1, torch.argsort(perm))
        else:  # B P L^-H U^-H
            y = solve(lu.mH, torch.index_select(b, 1, perm), upper=True, left=False, unitriangular=True)
            x = solve(lu.mH, y, upper=False, left=False)
        return x
