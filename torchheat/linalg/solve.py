"""Solvers of split square matrices: ``linalg.solve``, ``inv`` (and their ``_ex`` forms,
which return LAPACK's ``info``), ``det``, ``slogdet`` by the column-block LU of
:mod:`torchheat.linalg.lu`, ``cholesky`` by a right-looking blocked Cholesky,
``solve_triangular``, and ``lstsq`` (QR for ``gels``, the pseudo-inverse for the
rank-revealing drivers).

The matrix is moved to the column split (one all-to-all) and factored there; a right-hand
side is solved for its own columns on every rank (replicated right-hand sides on every
rank alike). Gradients: ``solve``'s backward is a solve with ``A^H`` (``dB = A^-H dX``,
``dA = -dB X^H``), ``det``/``slogdet``'s uses ``A^-H``, both again distributed; ``cholesky``
and ``lstsq`` are built from local torch ops and differentiable collectives. A singular
(or not positive-definite) matrix is seen by the owner of the failing panel, whose flag
travels with the panel broadcast: every rank raises torch's error.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.tensor([[2., 1.], [1., 3.]]), split=0)
>>> x = torch.linalg.solve(a, torch.tensor([3., 4.]))
>>> x.full().tolist()
[1.0, 1.0]
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..tensor import DistTensor, wrap
from . import batch
from .common import broadcast, distributed, needs_grad, tie
from .lu import diagonal_part, factor, lu_solve, tri_solve


def _square(func, args, kwargs, a) -> None:
    if a.dim() != 2 or a._gshape[0] != a._gshape[1] or not (a.is_floating_point() or a.is_complex()):
        d.raise_global_error(func, args, kwargs)


def _columns(a: DistTensor) -> DistTensor:
    return a if a._split == 1 else a.resplit(1)


def _singular(name: str, info: int):
    if name.startswith("inv"):
        return torch.linalg.LinAlgError(f"linalg.{name}: The diagonal element {info} is zero, the inversion could not be "
                                        "completed because the input matrix is singular.")
    return torch.linalg.LinAlgError(f"torch.linalg.{name}: The solver failed because the input matrix is singular.")


class _Solve(torch.autograd.Function):
    """``X = A^-1 B`` for the column-split A (local columns) and a right-hand side held with
    all its rows (replicated, or this rank's columns: ``b_split``), and LAPACK's ``info``
    (the first zero pivot, 1-based; the same on every rank). A singular A raises when
    ``check``; otherwise X holds what the zero pivot leaves (inf, nan), as in torch."""

    @staticmethod
    def forward(ctx, a, b, counts, comm, b_split, b_counts, name, check):
        f = factor(a, counts, comm)
        if f.info and check:
            raise _singular(name, f.info)
        x = lu_solve(f, comm, b)
        ctx.meta = (counts, comm, b_split, b_counts, name)
        ctx.save_for_backward(a, x)
        info = torch.tensor(f.info, dtype=torch.int32)
        ctx.mark_non_differentiable(info)
        return x, info

    @staticmethod
    def backward(ctx, gx, _):
        counts, comm, b_split, b_counts, name = ctx.meta
        a, x = ctx.saved_tensors
        n = a.shape[0]
        A = wrap(a, 1, comm, torch.Size((n, n)), counts)
        k = sum(b_counts) if b_split is not None else x.shape[1]
        G = wrap(gx, b_split, comm, torch.Size((n, k)), b_counts)
        X = wrap(x, b_split, comm, torch.Size((n, k)), b_counts)
        with distributed():
            gb = solve_matrix(A.mH, G, name)
            ga = d.to_layout(matmul_layout(-gb, X.mH, comm, 1), 1, counts) if ctx.needs_input_grad[0] else None
        return (ga.local if ga is not None else None), gb.local, None, None, None, None, None, None


from ..ops.linalg import matmul_layout  # noqa: E402


def _right_hand_side(b, comm):
    """``B`` for a solver: split along its columns as it is, otherwise whole on every rank."""
    if isinstance(b, DistTensor) and b._split == 1:
        return b, 1, b._counts
    return (d.to_layout(b, None, None) if isinstance(b, DistTensor) else wrap(b, None, comm, b.shape)), None, None


def solve_matrix_ex(a: DistTensor, b, name: str = "solve", check: bool = True):
    """``A^-1 B`` for a split square A and an ``n x k`` B (any layout), and ``info`` (a
    replicated int32 scalar, 0 unless A is singular; see :class:`_Solve`); X in B's layout
    (a row-split B's rows are gathered: ``n x k`` per rank)."""
    comm = a._comm
    ac = _columns(a)
    bl, split, counts = _right_hand_side(b, comm)
    x, info = _Solve.apply(ac.local, bl.local, ac._counts, comm, split, counts, name, check)
    out = wrap(x, split, comm, d.shape_of(b), counts)
    if isinstance(b, DistTensor) and b._split == 0:
        out = d.to_layout(out, 0, b._counts)
    return out, wrap(info, None, comm, torch.Size(()))


def solve_matrix(a: DistTensor, b, name: str = "solve") -> DistTensor:
    """``A^-1 B`` as :func:`solve_matrix_ex`, raising torch's error for a singular A."""
    return solve_matrix_ex(a, b, name)[0]


def _solve_sig(A, B, *, left=True, out=None):
    return A, B, left, True


def _solve_ex_sig(A, B, *, left=True, check_errors=False, out=None):
    return A, B, left, check_errors


@batch.algorithm("linalg.solve", "linalg.solve_ex")
def solve(func, args, kwargs):
    """``linalg.solve(A, B)`` and ``solve_ex`` (with ``info``) for a split square A
    (``left=False`` as the transposed problem ``A^T X^T = B^T``)."""
    ex = func is torch.linalg.solve_ex
    a, b, left, check = (_solve_ex_sig if ex else _solve_sig)(*args, **kwargs)
    if not isinstance(a, DistTensor) or a._split is None or kwargs.get("out") is not None:
        return d.no_rule(func, args, kwargs)
    _square(func, args, kwargs, a)
    sb = d.shape_of(b)
    if a.dtype != b.dtype or len(sb) not in (1, 2) or sb[0 if left or len(sb) == 1 else 1] != a._gshape[0]:
        d.raise_global_error(func, args, kwargs)
    name = "solve_ex" if ex else "solve"
    with distributed():
        if len(sb) == 1:
            x, info = solve_matrix_ex(a, b.unsqueeze(-1), name, check)
            x = x.squeeze(-1)
        elif left:
            x, info = solve_matrix_ex(a, b, name, check)
        else:
            bt = b.mT if isinstance(b, DistTensor) else wrap(b.mT, None, a._comm, b.mT.shape)
            x, info = solve_matrix_ex(a.mT, bt, name, check)
            x = x.mT
    return torch.return_types.linalg_solve_ex((x, info)) if ex else x


def inverse(a: DistTensor, name: str = "inv", check: bool = True):
    """``A^-1`` of a split square A in A's layout (the solve of ``A X = I``, I split along its
    columns), and ``info`` as :func:`solve_matrix_ex`."""
    from ..ops.creation import eye
    n = a._gshape[0]
    x, info = solve_matrix_ex(a, eye(n, split=1, dtype=a.dtype, device=a.device, comm=a._comm), name, check)
    return d.to_layout(x, a._split, a._counts), info


def _inv_ex_sig(A, *, check_errors=False, out=None):
    return A, check_errors


@batch.algorithm("linalg.inv", "inverse", "linalg.inv_ex")
def inv(func, args, kwargs):
    """``linalg.inv`` and ``inv_ex`` (with ``info``, raising only with ``check_errors``)."""
    if func is torch.linalg.inv_ex:
        a, check = _inv_ex_sig(*args, **kwargs)
        _square(func, args, kwargs, a)
        return torch.return_types.linalg_inv_ex(inverse(a, "inv_ex", check))
    a = args[0] if args else kwargs["A" if "A" in kwargs else "input"]
    _square(func, args, kwargs, a)
    return inverse(a)[0]


class _LogDet(torch.autograd.Function):
    """``(sign, log|det|)`` of the column-split A from its LU; backward ``g * A^-H``."""

    @staticmethod
    def forward(ctx, a, counts, comm):
        f = factor(a, counts, comm)
        u = diagonal_part(f, comm)
        logabs = comm.allreduce(u.abs().log().sum().reshape(1))[0]
        phase = u / u.abs() if u.is_complex() else u.sign()
        sign = comm.allreduce(phase.prod().reshape(1), "prod")[0] * (-1) ** f.swaps
        ctx.meta = (counts, comm)
        ctx.save_for_backward(a)
        ctx.mark_non_differentiable(sign)
        return sign, logabs

    @staticmethod
    def backward(ctx, gsign, glogabs):
        counts, comm = ctx.meta
        (a,) = ctx.saved_tensors
        n = a.shape[0]
        A = wrap(a, 1, comm, torch.Size((n, n)), counts)
        from ..ops.creation import eye
        with distributed():
            inv_h = solve_matrix(A.mH, eye(n, split=1, dtype=a.dtype, device=a.device, comm=comm), "inv")
            ga = d.to_layout(inv_h, 1, counts).local * glogabs
        return ga, None, None


def logdet_parts(a: DistTensor):
    """Sign and log of the absolute determinant of a split square matrix (differentiable)."""
    ac = _columns(a)
    return _LogDet.apply(ac.local, ac._counts, a._comm)


@batch.algorithm("linalg.det", "det", "linalg.slogdet", "slogdet", "logdet")
def determinant(func, args, kwargs):
    """``det``, ``slogdet`` and ``logdet`` (NaN for a negative determinant, as torch): the
    product of U's diagonal (summed as logarithms) and the sign of the row swaps."""
    a = args[0] if args else kwargs["A" if "A" in kwargs else "input"]
    _square(func, args, kwargs, a)
    if a.is_complex():
        return d.no_rule(func, args, kwargs)
    sign, logabs = logdet_parts(a)

    def scalar(t):
        return wrap(t, None, a._comm, torch.Size(()))

    if func in (torch.linalg.det, torch.det, torch.Tensor.det):
        return scalar(sign * logabs.exp())
    if func in (torch.logdet, torch.Tensor.logdet):
        return scalar(torch.where(sign < 0, torch.full_like(logabs, float("nan")), torch.where(sign == 0, -torch.inf, logabs)))
    # torch's sign requires grad (with a zero gradient): tie it to logabs, finite even where that is -inf
    out = (scalar(sign.detach() + 0 * torch.nan_to_num(logabs)), scalar(logabs))
    return torch.return_types.linalg_slogdet(out) if func is torch.linalg.slogdet else torch.return_types.slogdet(out)


# -- Cholesky ------------------------------------------------------------------------------------
def cholesky_columns(a: torch.Tensor, counts, comm):
    """Right-looking blocked Cholesky of the column-split Hermitian A (its lower triangle):
    this rank's columns of L, and the first failing leading minor (0: none)."""
    n, p, r = a.shape[0], comm.size, comm.rank
    offs = layout.offsets(counts)
    grad = needs_grad(a)
    work, panel, info, mine = a, a, 0, None
    for j in range(p):
        oj, tj = offs[j], counts[j]
        if tj == 0:
            continue
        if r == j:
            l11, err = torch.linalg.cholesky_ex(work[oj:oj + tj])
            l21 = torch.linalg.solve_triangular(l11.mH, work[oj + tj:], upper=True, left=False)
            mine = torch.cat([work.new_zeros(oj, tj), l11, l21])
            block = torch.cat([l11, l21])
            flag = err.reshape(1).to(torch.int64)
        panel = broadcast(block if r == j else None, comm, j, (n - oj, tj), a.dtype, a.device, grad, after=panel)
        flag = broadcast(flag if r == j else None, comm, j, (1,), torch.int64)
        if int(flag) and not info:
            info = oj + int(flag)
        if r > j:  # update this rank's columns, rows from its own first row (the lower part)
            mo = offs[r] - oj
            work = torch.cat([work[:offs[r]], work[offs[r]:] - panel[mo:] @ panel[mo:mo + counts[r]].mH])
    if mine is None:
        mine = a.new_zeros(n, 0)
    return tie(mine, panel), info


@batch.algorithm("linalg.cholesky", "linalg.cholesky_ex")
def cholesky(func, args, kwargs):
    """``linalg.cholesky(A, upper=False)`` of a split Hermitian positive-definite matrix."""
    a = args[0] if args else kwargs["A" if "A" in kwargs else "input"]
    upper = kwargs.get("upper", args[1] if len(args) > 1 else False)
    _square(func, args, kwargs, a)
    with distributed():  # the upper triangle of A is the lower one of A^H
        if needs_grad(a):  # torch's gradient is that of a Hermitian input: A's values, the symmetric part's gradient
            sym = (a + a.mH) / 2
            a = a.detach() + (sym - sym.detach())
        ac = _columns(a.mH if upper else a)
    ell, info = cholesky_columns(ac.local, ac._counts, a._comm)
    lower = wrap(ell, 1, a._comm, a._gshape, ac._counts)
    with distributed():
        out = lower.mH if upper else lower
        out = d.to_layout(out, a._split, a._counts)
    if func is torch.linalg.cholesky_ex:
        return torch.return_types.linalg_cholesky_ex((out, wrap(torch.tensor(info, dtype=torch.int32), None, a._comm, torch.Size(()))))
    if info:
        raise torch.linalg.LinAlgError(f"linalg.cholesky: The factorization could not be completed because the input is not "
                                       f"positive-definite (the leading minor of order {info} is not positive-definite).")
    return out


# -- least squares -------------------------------------------------------------------------------
def _lstsq_sig(A, B, rcond=None, *, driver=None):
    return A, B, rcond, driver


DRIVERS = ("gels", "gelsy", "gelsd", "gelss")


def _full_rank_error(r) -> None:
    """torch's error where the triangular factor has an exact zero on its diagonal (gels)."""
    with distributed():
        zero = r.diagonal() == 0
        if bool(zero.any()):
            code = int(zero.to(torch.uint8).argmax()) + 1
            raise torch.linalg.LinAlgError("torch.linalg.lstsq: The least squares solution could not be computed because "
                                           f"the input matrix does not have full rank (error code: {code}).")


@batch.algorithm("linalg.lstsq")
def lstsq(func, args, kwargs):
    """``linalg.lstsq(A, B, rcond, driver)`` of an ``m x n`` A (split, or replicated with a
    split B); the solution in the layout the products give.

    ``gels`` (QR, A of full rank): ``X = R^-1 Q^H B`` from ``A = Q R`` when m >= n (TSQR for
    a tall row-split A), the minimum-norm ``X = Q R^-H B`` from ``A^H = Q R`` when m < n.
    ``gelsy`` (the default), ``gelsd``, ``gelss`` (rank-revealing): ``X = pinv(A) B`` with
    the singular values above ``rcond * s_max`` (default ``rcond``: ``eps * max(m, n)``), the
    minimum-norm least-squares solution also of a rank-deficient A; ``rank`` is their number.
    Residuals (``|A X - B|^2`` per column) as torch: for m > n, not for ``gelsy``, and for the
    rank-revealing drivers only when A has full rank."""
    a, b, rcond, driver = _lstsq_sig(*args, **kwargs)
    driver = driver or "gelsy"
    sa, sb = d.shape_of(a), d.shape_of(b) if isinstance(b, torch.Tensor) else None
    if len(sa) != 2 or sb is None or len(sb) not in (1, 2) or sb[0] != sa[0] or a.dtype != b.dtype \
            or driver not in DRIVERS or not (a.is_floating_point() or a.is_complex()):
        d.raise_global_error(func, args, kwargs)
    comm = d.common_comm(t for t in (a, b) if isinstance(t, DistTensor))
    (m, n), vector = sa, len(sb) == 1
    if not isinstance(a, DistTensor) or a._split is None:  # a replicated A: split it (no communication)
        a = (a if isinstance(a, DistTensor) else wrap(a, None, comm, a.shape)).resplit(0)
    real = a.real.dtype if a.is_complex() else a.dtype
    empty = wrap(torch.zeros(0, dtype=real), None, comm, torch.Size((0,)))
    with distributed():
        bm = b.unsqueeze(-1) if vector else b
        if driver == "gels":
            q, r = torch.linalg.qr(a if m >= n else a.mH)
            _full_rank_error(r)
            x = torch.linalg.solve_triangular(r, q.mH @ bm, upper=True) if m >= n else \
                q @ torch.linalg.solve_triangular(r.mH, bm, upper=False)
            rank, sv, full_rank = wrap(torch.zeros(0, dtype=torch.int64), None, comm, torch.Size((0,))), empty, True
        else:
            from .svd import pseudo_inverse
            p, s, cut = pseudo_inverse(a, None, rcond)
            x = p @ bm
            rank = (s > cut).sum()
            sv = s if driver in ("gelsd", "gelss") else empty
            full_rank = int(rank) == n
        residuals = empty
        if m > n and driver != "gelsy" and full_rank:
            residuals = (a @ x - bm).abs().pow(2).sum(0).to(real)
        if vector:
            x = x.squeeze(-1)
    return torch.return_types.linalg_lstsq((x, residuals, rank, sv))


# -- triangular solves ---------------------------------------------------------------------------
class _TriSolve(torch.autograd.Function):
    """``X = T^-1 B`` for the column-split triangular T; backward ``dB = T^-H dX``,
    ``dT = -(dB X^H)`` on T's triangle."""

    @staticmethod
    def forward(ctx, t, b, counts, comm, upper, unit, b_split, b_counts):
        x = tri_solve(t, counts, comm, b, upper, unit)
        ctx.meta = (counts, comm, upper, unit, b_split, b_counts)
        ctx.save_for_backward(t, x)
        return x

    @staticmethod
    def backward(ctx, gx):
        counts, comm, upper, unit, b_split, b_counts = ctx.meta
        t, x = ctx.saved_tensors
        n = t.shape[0]
        k = sum(b_counts) if b_split is not None else x.shape[1]
        T = wrap(t, 1, comm, torch.Size((n, n)), counts)
        G = wrap(gx, b_split, comm, torch.Size((n, k)), b_counts)
        X = wrap(x, b_split, comm, torch.Size((n, k)), b_counts)
        with distributed():
            gb = triangular(T.mH, G, not upper, unit)
            ga = None
            if ctx.needs_input_grad[0]:
                ga = d.to_layout(matmul_layout(-gb, X.mH, comm, 1), 1, counts)
                ga = (ga.triu(int(unit)) if upper else ga.tril(-int(unit))).local
        return ga, gb.local, None, None, None, None, None, None


def triangular(t: DistTensor, b, upper: bool, unit: bool) -> DistTensor:
    """``T^-1 B`` for a split triangular T and an ``n x k`` B (any layout; X in B's layout)."""
    comm = t._comm
    tc = _columns(t)
    bl, split, counts = _right_hand_side(b, comm)
    x = _TriSolve.apply(tc.local, bl.local, tc._counts, comm, upper, unit, split, counts)
    out = wrap(x, split, comm, d.shape_of(b), counts)
    if isinstance(b, DistTensor) and b._split == 0:
        out = d.to_layout(out, 0, b._counts)
    return out


def _tri_sig(A, B, *, upper, left=True, unitriangular=False, out=None):
    return A, B, upper, left, unitriangular


@batch.algorithm("linalg.solve_triangular")
def solve_triangular(func, args, kwargs):
    """``linalg.solve_triangular`` with a split triangular A (``left=False`` as the
    transposed problem ``A^T X^T = B^T``)."""
    a, b, upper, left, unit = _tri_sig(*args, **kwargs)
    if a.dim() != 2 or d.shape_of(b).__len__() != 2 or kwargs.get("out") is not None:
        return d.no_rule(func, args, kwargs)
    sa, sb = d.shape_of(a), d.shape_of(b)
    if sa[0] != sa[1] or a.dtype != b.dtype or sb[0 if left else 1] != sa[0] or not (a.is_floating_point() or a.is_complex()):
        d.raise_global_error(func, args, kwargs)
    if not isinstance(a, DistTensor) or a._split is None:
        # T whole on every rank: each rank solves for its columns of B (its rows when left=False)
        axis = 1 if left else 0
        bl = b if b._split == axis else d.to_layout(b, axis, layout.balanced_counts(sb[axis], b._comm.size))
        t = d.replicated_operand(a, b._comm, -1, 0, 0)
        x = torch.linalg.solve_triangular(t, bl.local, upper=upper, left=left, unitriangular=unit)
        return wrap(x, axis, b._comm, sb, bl._counts)
    if left:
        return triangular(a, b, upper, unit)
    with distributed():
        bt = b.mT if isinstance(b, DistTensor) else wrap(b.mT, None, a._comm, b.mT.shape)
        return triangular(a.mT, bt, not upper, unit).mT


# -- matrix powers -------------------------------------------------------------------------------
@batch.algorithm("linalg.matrix_power", "matrix_power")
def matrix_power(func, args, kwargs):
    """``linalg.matrix_power(A, k)`` of a split square A: repeated squaring with distributed
    products (of ``A^-1`` for a negative k); the result in A's layout."""
    a = args[0] if args else kwargs["A" if "A" in kwargs else "input"]
    k = args[1] if len(args) > 1 else kwargs["n"]
    if not isinstance(k, int) or a.dim() != 2 or a._gshape[0] != a._gshape[1]:
        d.raise_global_error(func, args, kwargs)
    if k == 0:  # the identity; A gets torch's zero gradient
        from ..ops.creation import eye
        e = d.to_layout(eye(a._gshape[0], split=a._split, dtype=a.dtype, device=a.device, comm=a._comm), a._split, a._counts)
        return wrap(tie(e.local, a.local), a._split, a._comm, a._gshape, a._counts)
    with distributed():
        base, out, k = (torch.linalg.inv(a) if k < 0 else a), None, abs(k)
        while k:
            if k & 1:
                out = base if out is None else out @ base
            k >>= 1
            if k:
                base = base @ base
        return d.to_layout(out, a._split, a._counts)
