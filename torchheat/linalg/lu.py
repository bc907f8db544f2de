"""Right-looking LU factorization and triangular solves of column-split matrices.

A matrix split along its columns (``split=1``; rank j holds the column block ``j``) is
factored block by block: the owner of block j factors its panel (rows from the block's
first row down) with plain torch, broadcasts it (with its pivots), and every other rank
applies the row swaps to its columns and updates them (``U12 = L11^-1 A12``,
``A22 -= L21 U12``). Each rank holds its columns and one panel: its share plus
``O(n * b)``. Triangular solves sweep the panels the same way; a right-hand side whose
columns are split (or replicated) is solved by each rank for its own columns.

These are forward algorithms without autograd; the rules in :mod:`torchheat.linalg.solve`
wrap them in functions whose backward is another distributed solve.

Examples
--------
>>> import torch, torchheat as th
>>> from torchheat.linalg.lu import factor, tri_solve
>>> a = th.distribute(torch.tensor([[2., 1.], [4., 3.]]), split=1)
>>> f = factor(a.local, a.counts, a.comm)
>>> f.perm.tolist(), f.info
([1, 0], 0)
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .. import layout
from .common import broadcast


class Factors(NamedTuple):
    """A column-split LU (``P A = L U``, L unit lower and U in one matrix), the row order
    ``perm`` (``(P A)[i] = A[perm[i]]``, replicated), the number of row swaps, the first
    zero pivot (1-based; 0: none), for Householder signs the column signs, and LAPACK's
    pivots (1-based row swaps, replicated)."""

    lu: torch.Tensor
    counts: layout.Counts
    perm: torch.Tensor
    swaps: int
    info: int
    signs: Optional[torch.Tensor]
    pivots: Optional[torch.Tensor] = None


def _householder_panel(panel: torch.Tensor, first: int, rows: int):
    """LU without pivoting of ``S Q - I`` for a panel of an orthonormal ``Q``, choosing each
    column's sign ``s`` as LAPACK's Householder QR does (its ``tau`` lies in [1, 2]; the
    last row of a square matrix has ``tau = 0``)."""
    t = panel.shape[1]
    signs = torch.empty(t, dtype=panel.real.dtype)
    for i in range(t):
        c = panel[i, i].real
        last = first + i == rows - 1 and not panel.is_complex()
        s = (1.0 if c >= 0 else -1.0) if last else (-1.0 if c >= 0 else 1.0)
        signs[i] = s
        panel[:, i] *= s
        panel[i, i] -= 1
        if panel[i, i] != 0:
            panel[i + 1:, i] /= panel[i, i]
        panel[i + 1:, i + 1:] -= panel[i + 1:, i:i + 1] * panel[i:i + 1, i + 1:]
    return panel, signs


def factor(a: torch.Tensor, counts: layout.Counts, comm, householder_rows: Optional[int] = None) -> Factors:
    """LU with partial pivoting of the column-split ``m x n`` matrix whose local columns
    are ``a`` (rank r holds ``counts[r]`` columns). With ``householder_rows=m``, ``a`` is the
    top square of an orthonormal ``m x n`` Q: no pivoting, and the signs LAPACK's QR gives."""
    a = a.detach().clone()
    m, p, r = a.shape[0], comm.size, comm.rank
    offs = layout.offsets(counts)
    perm = torch.arange(m)
    swaps, info, signs, pivots = 0, 0, [], []
    for j in range(p):
        oj, tj = offs[j], counts[j]
        if tj == 0 or oj >= m:  # (columns right of the last row belong to U only)
            continue
        kj = min(tj, m - oj)  # the pivots of this panel
        if householder_rows is not None:
            panel, s = _householder_panel(a[oj:], oj, householder_rows) if r == j else (None, None)
            panel = broadcast(panel, comm, j, (m - oj, tj), a.dtype)
            s = broadcast(s, comm, j, (tj,), a.real.dtype)
            signs.append(s)
            order = None
        else:
            if r == j:
                lu, piv, err = torch.linalg.lu_factor_ex(a[oj:])
                meta = torch.cat([piv.to(torch.int64) - 1, err.reshape(1).to(torch.int64)])
            panel = broadcast(lu if r == j else None, comm, j, (m - oj, tj), a.dtype)
            meta = broadcast(meta if r == j else None, comm, j, (kj + 1,), torch.int64)
            piv, err = meta[:kj].tolist(), int(meta[kj])
            pivots += [oj + q + 1 for q in piv]
            if err and not info:
                info = oj + err
            order = list(range(m - oj))
            for i, q in enumerate(piv):
                if q != i:
                    order[i], order[q] = order[q], order[i]
                    swaps += 1
            order = torch.tensor(order)
            perm[oj:] = perm[oj:][order]
        if r == j:
            a[oj:] = panel
            continue
        if order is not None:
            a[oj:] = a[oj:][order]
        if r > j:
            l11, l21 = panel[:kj, :kj], panel[kj:, :kj]
            u12 = torch.linalg.solve_triangular(l11, a[oj:oj + kj], upper=False, unitriangular=True)
            a[oj:oj + kj] = u12
            a[oj + kj:] -= l21 @ u12
    return Factors(a, counts, perm, swaps, info, (torch.cat(signs) if signs else torch.zeros(0)) if householder_rows is not None else None,
                   torch.tensor(pivots, dtype=torch.int32))


def tri_solve(t: torch.Tensor, counts: layout.Counts, comm, rhs: torch.Tensor, upper: bool, unit: bool = False,
              lower_part_of_lu: bool = False) -> torch.Tensor:
    """``T^-1 rhs`` for the column-split triangular ``n x n`` T (local columns ``t``); every
    rank holds all rows of its right-hand sides ``rhs`` (replicated, or its own columns).
    ``lower_part_of_lu`` reads the unit lower triangle of an LU's compact form."""
    y = rhs.detach().clone()
    n, p, r = t.shape[0], comm.size, comm.rank
    offs = layout.offsets(counts)
    order = range(p - 1, -1, -1) if upper else range(p)
    for j in order:
        oj, tj = offs[j], counts[j]
        if tj == 0:
            continue
        rows = slice(0, oj + tj) if upper else slice(oj, n)
        panel = broadcast(t[rows].detach() if r == j else None, comm, j, (oj + tj if upper else n - oj, tj), t.dtype)
        if upper:
            diag, above = panel[oj:], panel[:oj]
            xj = torch.linalg.solve_triangular(diag.triu(), y[oj:oj + tj], upper=True, unitriangular=unit)
            y[oj:oj + tj] = xj
            y[:oj] -= above @ xj
        else:
            diag, below = panel[:tj], panel[tj:]
            diag = diag.tril(-1) + torch.eye(tj, dtype=diag.dtype) if lower_part_of_lu else diag.tril()
            xj = torch.linalg.solve_triangular(diag, y[oj:oj + tj], upper=False, unitriangular=unit)
            y[oj:oj + tj] = xj
            y[oj + tj:] -= below @ xj
    return y


def lu_solve(f: Factors, comm, rhs: torch.Tensor) -> torch.Tensor:
    """``A^-1 rhs`` from the factors of A (``rhs`` as in :func:`tri_solve`)."""
    y = tri_solve(f.lu, f.counts, comm, rhs[f.perm], upper=False, unit=True, lower_part_of_lu=True)
    return tri_solve(f.lu, f.counts, comm, y, upper=True)


def diagonal_part(f: Factors, comm) -> torch.Tensor:
    """This rank's entries of U's diagonal."""
    r = comm.rank
    o, c = layout.offsets(f.counts)[r], f.counts[r]
    return f.lu[o:o + c].diagonal()
