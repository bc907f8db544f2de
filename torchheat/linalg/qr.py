"""QR decomposition of split matrices: TSQR for tall-skinny row-split matrices, a blocked
Gram-Schmidt over the column blocks otherwise; the same Q and R as LAPACK.

* **TSQR** (``m x n`` split along rows, every balanced chunk at least ``n`` rows): each rank
  factors its chunk (``A_i = Q_i R_i``; a chunk of fewer than ``n`` rows is its own R), one
  allgather stacks the small R's (at most ``p*n x n``), every rank factors the stack
  (``Q_s R``) and keeps its piece: ``Q = Q_i @ Q_s[piece]``, with the signs (below) folded
  into the piece and, without autograd, written over ``Q_i`` a block of rows at a time. On
  one process it is LAPACK's QR itself. Memory: the chunk, its Q and the stack.
* **Blocked** (split along columns, or a matrix TSQR does not fit): column block j is
  orthogonalized by its owner (local QR of its panel), broadcast, and every later block is
  projected against it twice (Gram-Schmidt with reorthogonalization; R's rows of each
  rank's columns stay local). Memory: the chunk plus one ``m x b`` block.
* **Signs**: QR is unique up to the signs of Q's columns. LAPACK's Householder QR takes the
  signs that give ``tau`` in [1, 2]; reconstructing the Householder vectors from Q (an LU
  of ``Q S - I`` on its top square, Ballard et al. 2014) finds those signs, so the results
  are torch's (and independent of the process count).

``linalg.householder_product`` applies the reflectors to the identity's columns on the
row-split matrix, one allreduce of a row per reflector.

Both schemes are built from local torch ops and differentiable collectives, so gradients
are exact. ``mode='complete'`` of a tall matrix adds the orthogonal complement from the
reconstructed Householder vectors (``Q = I - V T V^H``), without gradient (as torch).

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.randn(40, 3, dtype=torch.float64), split=0)
>>> q, r = torch.linalg.qr(a)
>>> q.split_dim, r.split_dim, torch.allclose((q @ r).full(), a.full())
(0, None, True)
"""
from __future__ import annotations

import torch

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, wrap
from . import batch
from .common import broadcast, distributed, eye_rows, needs_grad, tie
from ..ops.linalg import matmul_layout
from .lu import factor


def _top_rows(q: torch.Tensor, counts, comm, k: int) -> tuple:
    """The first ``k`` rows of a row-split Q, replicated (no gradient)."""
    offs = layout.offsets(counts)
    top = tuple(max(0, min(c, k - o)) for o, c in zip(offs, counts))
    return comm.allgatherv(q[:top[comm.rank]].detach().contiguous(), top, 0)


def _signs_rows(q: torch.Tensor, counts, comm, m: int) -> torch.Tensor:
    """LAPACK's column signs for the row-split orthonormal Q (m rows; ``q``: this rank's rows
    of Q, or at least those among Q's first n)."""
    n = q.shape[1]
    top = _top_rows(q, counts, comm, n)
    from ..comm.self import SelfCommunicator  # the small top square is factored on every rank
    return factor(top, (n,), SelfCommunicator(), householder_rows=m).signs


def _times_in_place(q: torch.Tensor, small: torch.Tensor, block: int = 4096) -> torch.Tensor:
    """``q @ small`` (``small`` square) written over ``q`` a block of rows at a time: no second
    buffer of q's size (a fresh one costs its page faults, about as much as the product)."""
    buf = q.new_empty(q.shape[1], min(block, q.shape[0])).mT  # column-major, as LAPACK's Q
    for i in range(0, q.shape[0], block):
        rows = q[i:i + block]
        out = buf[:rows.shape[0]]
        torch.mm(rows, small, out=out)
        rows.copy_(out)
    return q


def tsqr(a: torch.Tensor, counts, comm):
    """Q (this rank's rows) and R (replicated) of the row-split ``m x n`` matrix, m >= n."""
    n, m = a.shape[1], sum(counts)
    if comm.size == 1:
        return torch.linalg.qr(a)  # the tree of one leaf: LAPACK's own Q and R
    rows = tuple(min(c, n) for c in counts)
    tall = a.shape[0] >= n
    q1, r1 = torch.linalg.qr(a) if tall else (None, a)
    stack = cf.all_gather(r1, comm, rows, 0)
    q2, r = torch.linalg.qr(stack)
    piece = cf.enter_replicated(q2, comm).narrow(0, layout.offsets(rows)[comm.rank], rows[comm.rank])
    # LAPACK's signs from Q's top rows only, folded into the small piece: Q is formed once.
    s = _signs_rows(q1[:n] @ piece if tall else piece, counts, comm, m).to(a.dtype)
    piece = piece * s
    if not tall:
        q = piece
    elif needs_grad(a):
        q = q1 @ piece
    else:
        q = _times_in_place(q1, piece)
    return q, s[:, None] * r


def blocked_qr(a: torch.Tensor, counts, comm, m: int):
    """Q and R of the column-split ``m x n`` matrix (local columns ``a``): Q's columns split
    by the new counts, R's columns by ``counts``."""
    n, p, r = sum(counts), comm.size, comm.rank
    k = min(m, n)
    offs = layout.offsets(counts)
    qcounts = tuple(max(0, min(c, k - o)) for o, c in zip(offs, counts))
    grad = needs_grad(a)
    work, blocks, q_mine, qj = a, [], a.new_zeros(m, 0), a  # (qj: what the next broadcast follows)
    for j in range(p):
        oj, tj = offs[j], qcounts[j]
        if tj == 0:
            continue
        if r == j:
            qr_j, rjj = torch.linalg.qr(work[:, :tj])
            rest = work[:, tj:]
        qj = broadcast(qr_j if r == j else None, comm, j, (m, tj), a.dtype, a.device, grad, after=qj)
        if r == j:
            q_mine = qj
            c1 = qj.mH @ rest
            rest = rest - qj @ c1
            c2 = qj.mH @ rest
            blocks.append(torch.cat([rjj, c1 + c2], 1))
            work = rest - qj @ c2
        elif r > j:
            c1 = qj.mH @ work
            work = work - qj @ c1
            c2 = qj.mH @ work
            work = work - qj @ c2
            blocks.append(c1 + c2)
        else:
            blocks.append(a.new_zeros(tj, a.shape[1]))
    rr = tie(torch.cat(blocks, 0) if blocks else a.new_zeros(0, a.shape[1]), qj)
    top = q_mine[:k].detach()
    s = factor(top, qcounts, comm, householder_rows=m).signs.to(a.dtype)
    qo = layout.offsets(qcounts)[r]
    return tie(q_mine, qj) * s[qo:qo + qcounts[r]], s[:, None] * rr, qcounts


def complement(q: torch.Tensor, counts, comm, m: int) -> torch.Tensor:
    """This rank's rows of the complete ``m x m`` Q whose first columns are the row-split Q
    (LAPACK's: from the reconstructed Householder vectors, ``I - V T V^H``)."""
    n = q.shape[1]
    from ..comm.self import SelfCommunicator
    top = _top_rows(q, counts, comm, n)
    f = factor(top, (n,), SelfCommunicator(), householder_rows=m)
    lu = f.lu
    ell, u = lu.tril(-1) + torch.eye(n, dtype=q.dtype), lu.triu()
    start, count = layout.offsets(counts)[comm.rank], counts[comm.rank]
    e = eye_rows(m, start, count, n, q.dtype, q.device)
    v = torch.linalg.solve_triangular(u, q.detach() - e, upper=True, left=False)  # (Q - [I;0]) U^-1
    t = -torch.linalg.solve_triangular(ell.mH, u, upper=True, left=False)  # -U L^-H
    vd = wrap(v, 0, comm, torch.Size((m, n)), counts)
    with distributed():
        tv = wrap(t, None, comm, t.shape) @ vd.mH  # n x m, split along its columns
        vtv = d.to_layout(matmul_layout(vd, tv, comm, 0), 0, counts)
    return eye_rows(m, start, count, m, q.dtype, q.device) - vtv.local


def _qr_sig(A, mode="reduced", *, out=None):
    return A, mode


def _tall_skinny(x: DistTensor) -> bool:
    m, n = x._gshape[-2:]
    return m >= n and min(layout.balanced_counts(m, x._comm.size)) >= n


def qr_split(x: DistTensor, mode: str):
    """``linalg.qr`` of a split matrix (a 2-D DistTensor split along one of its axes)."""
    comm, (m, n) = x._comm, x._gshape
    if _tall_skinny(x) or (x._split == 0 and m >= n and all(c >= n or c == 0 for c in x._counts)):
        x = x if x._split == 0 else x.resplit(0)
        q, r = tsqr(x.local, x._counts, comm)
        rd = wrap(r, None, comm, r.shape)
        if mode == "complete" and m > n:
            with torch.no_grad():
                q = complement(q, x._counts, comm, m)
            r = torch.cat([r, r.new_zeros(m - n, n)]).detach()
            return wrap(q, 0, comm, torch.Size((m, m)), x._counts), wrap(r, None, comm, r.shape)
        qd = wrap(q, 0, comm, torch.Size((m, n)), x._counts)
        return qd, rd
    x = x if x._split == 1 else x.resplit(1)
    q, r, qcounts = blocked_qr(x.local, x._counts, comm, m)
    k = min(m, n)
    qd = wrap(q, 1, comm, torch.Size((m, k)), qcounts)
    rd = wrap(r, 1, comm, torch.Size((k, n)), x._counts)
    if mode == "complete" and m > n:
        with torch.no_grad():
            rows = qd.resplit(0)
            full = complement(rows.local, rows._counts, comm, m)
        r = torch.cat([r, r.new_zeros(m - n, r.shape[1])]).detach()
        return wrap(full, 0, comm, torch.Size((m, m)), rows._counts), wrap(r, 1, comm, torch.Size((m, n)), x._counts)
    return qd, rd


@batch.algorithm("linalg.qr")
def qr(func, args, kwargs):
    """``linalg.qr`` (``reduced``, ``r``, ``complete``) of a split matrix."""
    x, mode = _qr_sig(*args, **kwargs)
    if x.dim() != 2 or mode not in ("reduced", "r", "complete") or not (x.is_floating_point() or x.is_complex()):
        return d.no_rule(func, args, kwargs) if x.dim() > 2 else d.raise_global_error(func, args, kwargs)
    q, r = qr_split(x, mode)
    if mode == "r":
        q = wrap(q.local.new_zeros(0), None, x._comm, torch.Size((0,)))
    return torch.return_types.linalg_qr((q, r))


# -- Householder products ------------------------------------------------------------------------
def householder_rows(a: torch.Tensor, tau: torch.Tensor, counts, comm) -> torch.Tensor:
    """This rank's rows of ``H_1 ... H_k`` (its first n columns) for the row-split ``m x n``
    A holding the reflectors ``v_i`` below its diagonal (unit diagonal implied) and the
    replicated ``tau`` (k): the reflectors applied last to first to the identity's columns,
    each ``Q -= tau_i v_i (v_i^H Q)`` with one allreduce of the row ``v_i^H Q``."""
    start = layout.offsets(counts)[comm.rank]
    rows = torch.arange(start, start + a.shape[0], device=a.device)[:, None]
    cols = torch.arange(a.shape[1], device=a.device)[None, :]
    eye = (rows == cols).to(a.dtype)
    v = torch.where(rows > cols, a, eye)
    tau = cf.enter_replicated(tau, comm)
    q = eye
    for i in reversed(range(tau.shape[0])):
        vi = v[:, i:i + 1]
        w = cf.enter_replicated(cf.all_reduce(vi.mH @ q, comm), comm)
        q = q - tau[i] * (vi @ w)
    return q


def _householder_sig(input, tau, *, out=None):
    return input, tau, out


@batch.algorithm("linalg.householder_product")
def householder_product(func, args, kwargs):
    """``linalg.householder_product(A, tau)`` of an ``m x n`` A (split along rows: no exchange;
    along columns: moved to rows and back; replicated, with a split tau: its rows kept), tau
    (at most n entries) replicated on every rank."""
    a, tau, out = _householder_sig(*args, **kwargs)
    sa, st = d.shape_of(a), d.shape_of(tau)
    if len(sa) != 2 or len(st) != 1 or out is not None:
        return d.no_rule(func, args, kwargs)
    if sa[0] < sa[1] or st[0] > sa[1] or a.dtype != tau.dtype or not (a.is_floating_point() or a.is_complex()):
        d.raise_global_error(func, args, kwargs)
    comm = d.common_comm(t for t in (a, tau) if isinstance(t, DistTensor))
    if not isinstance(a, DistTensor):
        a = wrap(a, None, comm, sa)
    rows = a if a._split == 0 else a.resplit(0)  # (a replicated A: each rank keeps its rows)
    t = tau.resplit(None).local if isinstance(tau, DistTensor) else tau  # k numbers, fewer than A's columns
    q = wrap(householder_rows(rows.local, t, rows._counts, comm), 0, comm, sa, rows._counts)
    return d.to_layout(q, a._split, a._counts)
