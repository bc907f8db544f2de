"""SVD and symmetric eigendecomposition of column-split matrices by one-sided (Hestenes)
block Jacobi.

The matrix ``W = A`` is split along its columns; each rank also holds the same columns of
``V`` (starting as the identity), so ``W = A V`` throughout. Every rank cuts its columns
into two blocks; the ``2p`` blocks meet pairwise in a round-robin tournament (the circle
method: ``2p - 1`` steps per sweep, every pair of blocks once). In a step each rank
orthogonalizes its two blocks together with a local SVD of ``[W_a W_b] = U_p S_p V_p^H``:
``[W_a W_b] <- U_p S_p`` and ``[V_a V_b] <- [V_a V_b] V_p`` (columns matched to the old ones
they are closest to, so the rotation is near the identity and sweeps converge quadratically). Blocks then move to the rank
that holds their next position (point-to-point sends of one block at a time; ``m x b``
and ``n x b`` per block). A sweep ends with one allreduce of the largest cosine between
columns that met; below ``max(m, n) * eps`` the columns of W are orthogonal, so
``A = U S V^H`` with ``S`` the column norms and ``U = W S^-1``. One allgather of the ``n``
norms fixes the descending order, and one redistribution sorts the columns.

Memory per rank: its columns of A and V plus one pair of blocks. ``eigh`` of a Hermitian A
runs the same sweeps on ``A + s I`` (``s = ||A||_1``, so the shifted matrix is positive
semidefinite): its SVD is its eigendecomposition, and ``V`` (a product of rotations) is
orthonormal even for repeated or zero eigenvalues. The shift costs accuracy in the small
eigenvalues: their absolute error is about ``eps * ||A||_1`` instead of ``eps * |lambda|``.

Examples
--------
>>> import torch, torchheat as th
>>> from torchheat.linalg.jacobi import svd_columns
>>> a = th.distribute(torch.tensor([[3., 0.], [0., 4.]], dtype=torch.float64), split=1)
>>> u, s, v, counts = svd_columns(a.local, a.counts, a.comm, 2)
>>> sorted(s.tolist())  # (in tournament order; sorted_columns orders them)
[3.0, 4.0]
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from .. import debug, layout

_TAG = 31
MAX_SWEEPS = 60


def _positions(p: int) -> List[Tuple[int, int]]:
    """The two tournament positions each rank holds."""
    return [(i, 2 * p - 1 - i) for i in range(p)]


def _holder(pos: int, p: int) -> int:
    return min(pos, 2 * p - 1 - pos)


def _rotate(pos: int, p: int) -> int:
    """The circle method: position 0 stays, the others move one place round."""
    return pos if pos == 0 else pos % (2 * p - 1) + 1


def _orthogonalize(w: torch.Tensor, v: torch.Tensor, tol: float) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """One Jacobi step on a pair of blocks held together: the largest cosine between
    their columns, and the rotated pair (unchanged when already orthogonal)."""
    if w.shape[1] < 2:
        return w, v, 0.0
    g = w.mH @ w
    norms = g.diagonal().real.clamp_min(torch.finfo(w.real.dtype).tiny).sqrt()
    cos = (g.abs() / norms[:, None] / norms[None, :]).fill_diagonal_(0)
    off = float(cos.max())
    if off <= tol:
        return w, v, off
    up, sp, vh = torch.linalg.svd(w, full_matrices=w.shape[0] < w.shape[1])
    k = sp.shape[0]
    us = torch.cat([up[:, :k] * sp.to(w.dtype), w.new_zeros(w.shape[0], w.shape[1] - k)], 1)
    # Each new column takes the place of the old one it is closest to, with its sign: the
    # rotation is near the identity, so columns keep their blocks and the sweeps converge
    # quadratically (in the order the SVD gives, they drift between blocks).
    rot = vh.mH
    order = _closest(rot)
    rot, us = rot[:, order], us[:, order]
    phase = rot.diagonal()
    phase = torch.where(phase == 0, torch.ones_like(phase), phase / phase.abs()).conj()
    return us * phase, v @ (rot * phase), off


def _closest(rot: torch.Tensor) -> torch.Tensor:
    """A permutation: for each old column i, the new column j with the largest ``|rot[i, j]|``
    not yet taken (greedy, largest entries first)."""
    k = rot.shape[1]
    size = rot.abs()
    order = torch.empty(k, dtype=torch.int64)
    for _ in range(k):
        i, j = divmod(int(size.argmax()), k)
        order[i] = j
        size[i, :] = -1
        size[:, j] = -1
    return order


def svd_columns(a: torch.Tensor, counts: layout.Counts, comm, m: int, shift: float = 0.0):
    """``(W, S, V, counts)`` of the column-split ``m x n`` A (local columns ``a``) plus
    ``shift * I`` (square A): this rank's columns of ``W = U S`` and of ``V``, the
    replicated singular values (descending), and the layout of the columns. ``W``'s and
    ``V``'s columns come in tournament order; :func:`sorted_columns` puts them in order."""
    p, r = comm.size, comm.rank
    n = sum(counts)
    offs = layout.offsets(counts)
    w = a.detach().clone()
    if shift:
        idx = torch.arange(offs[r], offs[r] + counts[r])
        w[idx, idx - offs[r]] += shift
    v = torch.zeros(n, counts[r], dtype=a.dtype, device=a.device)
    v[torch.arange(offs[r], offs[r] + counts[r]), torch.arange(counts[r])] = 1
    # Widths of the 2p blocks (by starting position), known on every rank.
    width = {}
    for q, (top, bottom) in enumerate(_positions(p)):
        width[top], width[bottom] = counts[q] - counts[q] // 2, counts[q] // 2
    half = width[r]
    blocks = {_positions(p)[r][0]: (w[:, :half], v[:, :half]), _positions(p)[r][1]: (w[:, half:], v[:, half:])}
    block_of = {pos: pos for pos in width}  # position -> the block (named by its first position) there
    tol = max(m, n) * torch.finfo(a.real.dtype).eps
    for _ in range(MAX_SWEEPS):
        worst = 0.0
        for step in range(2 * p - 1):
            top, bottom = _positions(p)[r]
            (wa, va), (wb, vb) = blocks[top], blocks[bottom]
            wab, vab, off = _orthogonalize(torch.cat([wa, wb], 1), torch.cat([va, vb], 1), tol)
            worst = max(worst, off)
            ka = wa.shape[1]
            blocks = {top: (wab[:, :ka], vab[:, :ka]), bottom: (wab[:, ka:], vab[:, ka:])}
            if p == 1:
                continue
            blocks = _exchange(blocks, block_of, width, comm, m, n, a)
            block_of = {_rotate(pos, p): b for pos, b in block_of.items()}
        if comm.allreduce(torch.tensor([worst], dtype=torch.float64), "max")[0] <= tol:
            break
    top, bottom = _positions(p)[r]
    w = torch.cat([blocks[top][0], blocks[bottom][0]], 1)
    v = torch.cat([blocks[top][1], blocks[bottom][1]], 1)
    mine = tuple(width[block_of[t]] + width[block_of[b]] for t, b in _positions(p))
    s = comm.allgatherv(torch.linalg.vector_norm(w, dim=0).contiguous(), mine, 0)
    return w, s, v, mine


def _exchange(blocks: dict, block_of: dict, width: dict, comm, m: int, n: int, like: torch.Tensor):
    """Send each of this rank's blocks to the holder of its next position and receive the
    blocks that come to this rank's positions."""
    p, r = comm.size, comm.rank
    out, sends, recvs = {}, [], []
    for pos, (w, v) in blocks.items():
        new = _rotate(pos, p)
        dest = _holder(new, p)
        if dest == r:
            out[new] = (w, v)
        else:
            debug.record("jacobi", (w.numel() + v.numel()) * w.element_size(), 2)
            sends += [comm.isend(w.contiguous(), dest, _TAG + 2 * new), comm.isend(v.contiguous(), dest, _TAG + 2 * new + 1)]
    for old in range(2 * p):
        new = _rotate(old, p)
        if _holder(new, p) != r or _holder(old, p) == r:
            continue
        k = width[block_of[old]]
        w = torch.empty(m, k, dtype=like.dtype, device=like.device)
        v = torch.empty(n, k, dtype=like.dtype, device=like.device)
        recvs += [comm.irecv(w, _holder(old, p), _TAG + 2 * new), comm.irecv(v, _holder(old, p), _TAG + 2 * new + 1)]
        out[new] = (w, v)
    for req in recvs + sends:
        req.wait()
    return out


def sorted_columns(w: torch.Tensor, s: torch.Tensor, v: torch.Tensor, mine: layout.Counts, comm, k: int,
                   ascending: bool = False):
    """The first ``k`` columns of ``U = W S^-1`` and ``V`` in descending (or ascending) order
    of S, split along their columns in the balanced layout (one redistribution each), and
    ``S`` in that order."""
    from ..tensor import wrap
    from .common import distributed
    m, n = w.shape[0], v.shape[0]
    order = torch.sort(s, descending=not ascending, stable=True).indices[:k]
    s = s[order]
    counts = layout.balanced_counts(k, comm.size)
    wd = wrap(w, 1, comm, torch.Size((m, sum(mine))), mine)
    vd = wrap(v, 1, comm, torch.Size((n, sum(mine))), mine)
    with distributed():
        w = torch.index_select(wd, 1, order).balance()
        v = torch.index_select(vd, 1, order).balance()
    o, c = layout.offsets(counts)[comm.rank], counts[comm.rank]
    mine_s = s[o:o + c]
    u = w.local / torch.where(mine_s > 0, mine_s, torch.ones_like(mine_s)).to(w.dtype)
    return u, s, v.local, counts
