"""Matrix products for every pair of operand layouts, with exact gradients.

A product ``C = A @ B`` of (batches of) matrices ``A (n, k)`` and ``B (k, m)``, each
replicated or split along one axis, runs by one of three schemes:

* **local**: the shared axis ``k`` is not split (``A`` split along ``n``, ``B`` along
  ``m``, or a batch axis split): each rank multiplies its chunk, no communication;
* **reduce-scatter**: ``k`` is split (``A`` along ``k`` and/or ``B`` along ``k``): each rank
  multiplies its part of ``k`` and one reduce-scatter sums the partial products into a
  split result; the full-size result is never allreduced;
* **ring**: the other pairs (``n``-split ``A`` with ``k``-split ``B``, both split along
  ``n``/``m``, ...): the blocks of one operand travel around the ring of ranks while each
  rank multiplies with the block it holds, the next block already on its way
  (non-blocking sends). Memory per rank: its chunks, the result chunk and two blocks.

Cost model for the ring of ``A (split n) @ B (split m)``: the operand that travels moves
``(p-1)/p`` of itself per rank, so the smaller one of ``A`` (``n*k``) and ``B`` (``k*m``)
travels, which fixes the result's split (``n`` when ``B`` travels); an explicit result
split (:func:`matmul`'s ``split=``) overrides it. Every result can be moved to another split
by one exchange afterwards. The backward of each scheme is two products of the same kind
(``dA = dC @ B^H``, ``dB = A^H @ dC`` in the operands' layouts), so gradients of any order
are exact.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.arange(12.).reshape(4, 3), split=0)
>>> b = th.distribute(torch.ones(3, 2), split=0)
>>> c = a @ b
>>> c.split_dim, c.full().tolist()
(0, [[3.0, 3.0], [12.0, 12.0], [21.0, 21.0], [30.0, 30.0]])
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch.utils import _pytree as pytree

from .. import debug, dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, relayout, wrap
from .pointwise import elementwise, write_out

_RING_TAG = 23


class Operand(NamedTuple):
    """A local chunk of a (batch of) matrices: ``split`` is None, -2 (rows), -1 (columns)
    or a batch axis (>= 0, counted in this operand's dims); ``counts`` as in DistTensor."""

    t: torch.Tensor
    split: Optional[int]
    counts: Optional[layout.Counts]


def _h(x: Operand) -> Operand:
    """The conjugate transpose of the matrices (the split moves with its axis)."""
    return Operand(x.t.mH, {-1: -2, -2: -1}.get(x.split, x.split), x.counts)


def _mine(counts, comm):
    return layout.offsets(counts)[comm.rank], counts[comm.rank]


def _ring(block: torch.Tensor, counts: layout.Counts, axis: int, comm, acc: Optional[torch.Tensor] = None):
    """Yield ``(q, block_q)`` for every rank q: first this rank's own block, then the others'
    as they come around the ring (each rank passes on the block it holds to the next rank).
    The next block is received while the caller works with the current one.

    With ``acc`` (a tensor shaped like ``block``), every step yields ``(q, block_q, part_q)``
    instead: the caller adds its contribution to block q into the zero tensor ``part_q``; the
    sums travel one step behind their block (received while the caller works) and at the end
    ``acc`` holds every rank's contribution to this rank's block, summed (the gradient of a
    travelling operand)."""
    p, r = comm.size, comm.rank
    current, q = block.contiguous(), r
    if p > 1:
        debug.record("ring", block.numel() * block.element_size() * (p - 1) * (1 if acc is None else 2), p)
    arriving, sends, total = None, [], None
    for step in range(p):
        requests = []
        if step < p - 1:
            nq = (q - 1) % p
            shape = list(block.shape)
            shape[axis] = counts[nq]
            incoming = torch.empty(shape, dtype=block.dtype, device=block.device)
            if current.numel():
                requests.append(comm.isend(current, (r + 1) % p, _RING_TAG))
            if incoming.numel():
                requests.append(comm.irecv(incoming, (r - 1) % p, _RING_TAG))
        if acc is None:
            yield q, current
        else:
            total = torch.zeros_like(current)
            yield q, current, total
            if arriving is not None:  # the earlier ranks' sums for block q
                for request in arriving[1]:
                    request.wait()
                total += arriving[0]
            for request in sends:
                request.wait()
            if p > 1:  # pass the sums on; receive those of the next block (at the last step: my own)
                sends = [comm.isend(total, (r + 1) % p, _RING_TAG + 1)] if total.numel() else []
                buf = torch.empty(shape if step < p - 1 else acc.shape, dtype=acc.dtype, device=acc.device)
                arriving = (buf, [comm.irecv(buf, (r - 1) % p, _RING_TAG + 1)] if buf.numel() else [])
        for request in requests:
            request.wait()
        if step < p - 1:
            current, q = incoming, nq
    if acc is not None:
        if p > 1:
            for request in arriving[1] + sends:
                request.wait()
            total = arriving[0]
        acc.copy_(total)


def _ring_product(a, b, kind: str, counts, comm) -> torch.Tensor:
    """The local result of a ring scheme (no autograd).

    ``"B-rows"``: A split n, B split k (B's row blocks travel, ``counts``); result split n.
    ``"A-cols"``: A split k, B split m (A's column blocks travel); result split m.
    ``"B-cols"``: A split n, B split m (B's column blocks travel); result split n.
    ``"A-rows"``: A split n, B split m (A's row blocks travel); result split m.
    """
    off = layout.offsets(counts)
    if kind == "B-rows":
        out = None
        for q, bq in _ring(b, counts, -2, comm):
            out = _accumulate(out, a.narrow(-1, off[q], counts[q]), bq)
        return out
    if kind == "A-cols":
        out = None
        for q, aq in _ring(a, counts, -1, comm):
            out = _accumulate(out, aq, b.narrow(-2, off[q], counts[q]))
        return out
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    if kind == "B-cols":
        out = torch.empty(batch + (a.shape[-2], sum(counts)), dtype=torch.result_type(a, b), device=a.device)
        for q, bq in _ring(b, counts, -1, comm):
            torch.matmul(a, bq, out=out.narrow(-1, off[q], counts[q]))
        return out
    out = torch.empty(batch + (sum(counts), b.shape[-1]), dtype=torch.result_type(a, b), device=a.device)
    for q, aq in _ring(a, counts, -2, comm):
        torch.matmul(aq, b, out=out.narrow(-2, off[q], counts[q]))
    return out


def _accumulate(out: Optional[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``out + x @ y``, added in place (no temporary product) where the shapes allow it."""
    if out is None:
        return x @ y
    if out.dim() == 2 and x.dim() == 2 and y.dim() == 2 and out.dtype == torch.result_type(x, y):
        return out.addmm_(x, y)
    return out.add_(x @ y)


# The ring schemes: (A's split, B's split, kind) -> (the result's split, whose counts it takes).
_RINGS = {"B-rows": -2, "A-cols": -1, "B-cols": -2, "A-rows": -1}


class _RingMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, kind, a_split, a_counts, b_split, b_counts, comm):
        ctx.meta = (kind, a_split, a_counts, b_split, b_counts, comm)
        ctx.save_for_backward(a, b)
        travels = b_counts if kind[0] == "B" else a_counts
        return _ring_product(a, b, kind, travels, comm)

    @staticmethod
    def backward(ctx, grad):
        kind, a_split, a_counts, b_split, b_counts, comm = ctx.meta
        a, b = ctx.saved_tensors
        A, B = Operand(a, a_split, a_counts), Operand(b, b_split, b_counts)
        G = Operand(grad, _RINGS[kind], a_counts if _RINGS[kind] == -2 else b_counts)
        da = product(G, _h(B), comm, want=(a_split, a_counts)).t.sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        db = product(_h(A), G, comm, want=(b_split, b_counts)).t.sum_to_size(b.shape) if ctx.needs_input_grad[1] else None
        return (da, db) + (None,) * 6


def _move(x: Operand, split, counts, comm) -> Operand:
    """``x`` in the layout (split, counts), by one exchange (or a slice / a gather)."""
    if x.split == split and (split is None or x.counts == counts):
        return x
    if split is None:
        return Operand(cf.all_gather(x.t, comm, x.counts, x.split % x.t.dim()), None, None)
    if x.split is None:
        return Operand(cf.scatter(x.t, comm, counts, split % x.t.dim()), split, counts)
    gshape = list(x.t.shape)
    gshape[x.split] = sum(x.counts)
    src, dst = x.split % x.t.dim(), split % x.t.dim()
    send, recv, shape = layout.exchange_plan(tuple(gshape), src, x.counts, dst, counts, comm.rank)
    return Operand(cf.exchange(x.t, comm, send, recv, shape), split, counts)


def _sum_partials(a: torch.Tensor, b: torch.Tensor, comm, want, rows: int, cols: int) -> Operand:
    """The partial products ``a @ b`` of every rank summed: reduce-scattered along the wanted
    matrix axis (rows by default), or allreduced when a replicated result is wanted. Without
    autograd the reduce-scatter is a ring fused with the products (:func:`_summed_blocks`)."""
    split, counts = want
    if split is None:
        return Operand(cf.all_reduce(a @ b, comm), None, None)
    counts = counts or layout.balanced_counts(rows if split == -2 else cols, comm.size)
    if comm.size == 1 or (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)):
        part = a @ b
        return Operand(part if comm.size == 1 else cf.reduce_scatter(part, comm, counts, split % part.dim()), split, counts)
    return Operand(_summed_blocks(a, b, split, counts, comm), split, counts)


def _summed_blocks(a: torch.Tensor, b: torch.Tensor, axis: int, counts: layout.Counts, comm) -> torch.Tensor:
    """This rank's block (``counts`` along the result's matrix ``axis``) of the sum over ranks
    of ``a @ b``, by a ring reduce-scatter fused with the products (no autograd).

    At step s rank r multiplies out its part of block ``(r + s + 1) % p`` (rows of ``a`` or
    columns of ``b``), adds the partial sum of that block that rank r + 1 passed on, and passes
    the result to rank r - 1; after p steps it holds the sum of its own block. No full-size
    partial product is formed: three blocks of memory instead of a whole result and a
    received copy of it, and each block's product runs while the previous one travels."""
    p, r = comm.size, comm.rank
    off = layout.offsets(counts)
    sending, receiving, arrived = None, None, None
    for step in range(p):
        q = (r + step + 1) % p
        part = _block(a, b, axis, q, off, counts)
        if step:
            if receiving is not None:
                receiving.wait()
            part += arrived
            if sending is not None:
                sending.wait()
        if step < p - 1:
            debug.record("ring", part.numel() * part.element_size(), p)
            sending = comm.isend(part, (r - 1) % p, _RING_TAG + 2) if part.numel() else None
            shape = list(part.shape)
            shape[axis] = counts[(q + 1) % p]
            arrived = torch.empty(shape, dtype=part.dtype, device=part.device)
            receiving = comm.irecv(arrived, (r + 1) % p, _RING_TAG + 2) if arrived.numel() else None
    return part


def _block(a: torch.Tensor, b: torch.Tensor, axis: int, q: int, off, counts) -> torch.Tensor:
    """Block q of ``a @ b`` along the result's matrix ``axis`` (-2: rows of ``a``, -1: columns of ``b``)."""
    if axis == -2:
        return a.narrow(-2, off[q], counts[q]) @ b
    return a @ b.narrow(-1, off[q], counts[q])


def product(a: Operand, b: Operand, comm, want=None, prefer: Optional[int] = -2) -> Operand:
    """``a @ b`` on local chunks of matrices (any batch dims, neither split along a batch
    axis), as an Operand; ``want = (split, counts)`` asks for that result layout; ``prefer``
    is the matrix axis (or None: replicated) that summed partial products are scattered
    along when nothing is asked."""
    sa, sb = a.split, b.split
    n, m = a.t.shape[-2], b.t.shape[-1]
    if sa == -2:
        n = sum(a.counts)
    if sb == -1:
        m = sum(b.counts)
    if sa is None and sb is None:
        out = Operand(a.t @ b.t, None, None)
    elif sa == -2 and sb is None:
        out = Operand(a.t @ cf.enter_replicated(b.t, comm), -2, a.counts)
    elif sa is None and sb == -1:
        out = Operand(cf.enter_replicated(a.t, comm) @ b.t, -1, b.counts)
    elif sa == -1 and sb == -2:
        if a.counts != b.counts:
            b = _move(b, -2, a.counts, comm)
        return _finish(_sum_partials(a.t, b.t, comm, want or (prefer, None), n, m), want, comm)
    elif sa is None and sb == -2:
        start, count = _mine(b.counts, comm)
        return _finish(_sum_partials(d.replicated_operand(a.t, comm, a.t.dim() - 1, start, count), b.t, comm, want or (prefer, None), n, m), want, comm)
    elif sa == -1 and sb is None:
        start, count = _mine(a.counts, comm)
        return _finish(_sum_partials(a.t, d.replicated_operand(b.t, comm, b.t.dim() - 2, start, count), comm, want or (prefer, None), n, m), want, comm)
    else:
        kind = _ring_kind(a, b, want, n, m)
        local = _RingMatmul.apply(a.t, b.t, kind, sa, a.counts, sb, b.counts, comm)
        split = _RINGS[kind]
        out = Operand(local, split, a.counts if split == -2 else b.counts)
    return _finish(out, want, comm)


def _ring_kind(a: Operand, b: Operand, want, n: int, m: int) -> str:
    """The ring scheme for the pairs of splits that are neither local nor a reduce-scatter:
    A split n with B split k, A split k with B split m, and A split n with B split m (the
    smaller operand travels unless the result's split is asked for)."""
    if (a.split, b.split) == (-2, -2):
        return "B-rows"
    if (a.split, b.split) == (-1, -1):
        return "A-cols"
    wanted = want[0] if want is not None else None
    if wanted in (-1, -2):
        return "A-rows" if wanted == -1 else "B-cols"
    k = a.t.shape[-1]
    return "B-cols" if k * m <= n * k else "A-rows"


def _finish(out: Operand, want, comm) -> Operand:
    if want is None:
        return out
    split, counts = want
    if split is not None and counts is None:
        size = out.t.shape[split] if out.split != split else sum(out.counts)
        counts = layout.balanced_counts(size, comm.size)
    return _move(out, split, counts, comm)


# -- DistTensor handlers ----------------------------------------------------------------------
def _meta(t) -> torch.Tensor:
    return torch.empty(d.shape_of(t), dtype=t.dtype, device="meta")


def _matmul_shape(a, b) -> Optional[torch.Size]:
    """torch.matmul's result shape for operand shapes ``a`` and ``b``, or None if torch rejects them."""
    if not a or not b:
        return None
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        return None
    batch = layout.broadcast_shapes(a2[:-2], b2[:-2])
    if batch is None:
        return None
    return torch.Size(tuple(batch) + (a2[-2],) * (len(a) > 1) + (b2[-1],) * (len(b) > 1))


# The operand ranks torch accepts per function (None: any), and the matmul they mean.
_RANKS = {"mm": (2, 2), "bmm": (3, 3), "mv": (2, 1), "dot": (1, 1), "vdot": (1, 1), "outer": (1, 1), "ger": (1, 1),
          "addmm": (2, 2), "addmv": (2, 1), "addr": (1, 1), "baddbmm": (3, 3), "addbmm": (3, 3)}


def _product_shape(name: str, a, b) -> Optional[torch.Size]:
    ranks = _RANKS.get(name)
    if ranks is not None and (len(a), len(b)) != ranks:
        return None
    if name in ("outer", "ger", "addr"):
        return torch.Size((a[0], b[0]))
    if name in ("bmm", "baddbmm", "addbmm") and a[0] != b[0]:
        return None
    if name in ("dot", "vdot") and a != b:
        return None
    if name == "inner":
        if not a or not b:
            return layout.broadcast_shapes(a, b)
        return torch.Size(a[:-1] + b[:-1]) if a[-1] == b[-1] else None
    shape = _matmul_shape(a, b)
    return shape if name != "addbmm" or shape is None else shape[1:]


def _global_result(func, args, kwargs, shape: Optional[torch.Size] = None) -> torch.Size:
    """The result's global shape: ``shape`` (worked out by the caller, None when the call is
    invalid), checked against torch's rules for the operands' dtypes; for an invalid call,
    torch's CPU error, on every rank alike (from zero-stride stand-ins of the global
    shapes: an invalid call fails before it computes anything)."""
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    if shape is not None and len({t.dtype for t in tensors}) == 1:
        return shape

    def stand_in(a):
        return torch.zeros((), dtype=a.dtype, device=a.device).expand(d.shape_of(a)) if isinstance(a, torch.Tensor) else a

    try:
        return func(*pytree.tree_map(stand_in, args), **pytree.tree_map(stand_in, kwargs)).shape
    except Exception as error:
        raise error.with_traceback(None) from None


def _operand(x, axis_of_vector: Optional[int]) -> Operand:
    """A matmul operand (a DistTensor or a plain tensor, which is replicated) as matrices:
    a vector becomes one row (``axis_of_vector=-2``) or one column (``-1``)."""
    split, counts = (x._split, x._counts) if isinstance(x, DistTensor) else (None, None)
    t = x.local if isinstance(x, DistTensor) else x
    nd = t.dim()
    if nd == 1:
        t = t.unsqueeze(axis_of_vector)
        return Operand(t, None if split is None else (-1 if axis_of_vector == -2 else -2), counts)
    if split is not None:
        split = split - nd if split >= nd - 2 else split
    return Operand(t, split, counts)


def matmul_layout(a, b, comm, split: Optional[int] = None, shape=None) -> DistTensor:
    """``a @ b`` (torch.matmul's semantics) for DistTensors or plain tensors in any layouts;
    ``split`` asks for the result's split axis. Called with torch-function dispatch off."""
    if shape is None:
        shape = _global_result(torch.matmul, (a, b), {}, _matmul_shape(d.shape_of(a), d.shape_of(b)))
    va, vb = len(d.shape_of(a)) == 1, len(d.shape_of(b)) == 1
    A, B = _operand(a, -2), _operand(b, -1)
    nd = len(shape) + va + vb  # the result's dims with the vectors' unit axes kept
    batch_dims = nd - 2
    if (A.split is not None and A.split >= 0) or (B.split is not None and B.split >= 0):
        out = _batch_product(A, B, shape, nd, comm)
    else:
        want = None
        if split is not None:
            axis = layout.normalize_split(split, len(shape))
            if axis >= batch_dims:  # a matrix axis of the result
                want = (-2 if axis == batch_dims and not va else -1, None)
        prefer = None if va and vb else (-1 if va else -2)  # never split along a dropped unit axis
        out = product(A, B, comm, want=want, prefer=prefer)
    local, out_split = out.t, out.split
    if va:
        local = local.squeeze(-2)
    if vb:
        local = local.squeeze(-1)
    if out_split is not None and out_split < 0:
        out_split += nd
        out_split -= va and out_split == nd - 1
    result = wrap(local, out_split, comm, shape, out.counts)
    if split is not None and layout.normalize_split(split, len(shape)) != out_split:
        axis = layout.normalize_split(split, len(shape))
        result = relayout(result, axis, layout.balanced_counts(shape[axis], comm.size))
    return result


def _batch_product(A: Operand, B: Operand, shape, nd: int, comm, fn=torch.matmul) -> Operand:
    """A product with an operand split along a batch axis that the result keeps: the other
    operand joins that layout (or is replicated where it broadcasts), then each rank
    multiplies its batches (``fn``: any batched function of two stacks of matrices that
    broadcasts their batch axes as matmul does, e.g. cdist)."""
    ref = None
    for x in (A, B):
        if x.split is not None and x.split >= 0:
            axis = x.split + nd - x.t.dim()
            if shape[axis] == sum(x.counts):  # the batch axis is not broadcast
                ref = (axis, x.counts)
                break
    locals_ = []
    for x in (A, B):
        if ref is None:
            locals_.append(_move(x, None, None, comm).t)
            continue
        axis = ref[0] - (nd - x.t.dim())
        full = 0 <= axis < x.t.dim() - 2 and _extent(x, axis) == shape[ref[0]]
        if full and x.split is not None:
            locals_.append(_move(x, axis, ref[1], comm).t)
        else:
            y = _move(x, None, None, comm).t
            start, count = _mine(ref[1], comm)
            locals_.append(d.replicated_operand(y, comm, axis if full else -1, start, count))
    if ref is None:
        return Operand(fn(locals_[0], locals_[1]), None, None)
    return Operand(fn(locals_[0], locals_[1]), ref[0], ref[1])


def _extent(x: Operand, axis: int) -> int:
    return sum(x.counts) if x.split is not None and x.split % x.t.dim() == axis else x.t.shape[axis]


# The operands' keyword names in torch's signatures.
_OPERAND_NAMES = ("input", "other", "mat2", "vec", "tensor", "vec2", "mat1", "batch1", "batch2", "mat", "x", "y")


def _call(func, args, kwargs):
    """(tensor operands in order, other keyword arguments, out) of a product call."""
    kwargs = dict(kwargs)
    out = kwargs.pop("out", None)
    operands = list(args) + [kwargs.pop(k) for k in _OPERAND_NAMES if k in kwargs]
    return operands, kwargs, out


def _comm(operands):
    return d.common_comm(t for t in operands if isinstance(t, DistTensor))


def _finish_call(result, out, func, args, kwargs):
    return result if out is None else write_out(out, result, func, (args, kwargs))


def matmul(func, args, kwargs):
    """``matmul``, ``@``, ``mm``, ``bmm``, ``mv``, ``dot``, ``vdot``, ``inner`` (up to 2-D),
    ``outer``/``ger``: torch.matmul of (conjugated, transposed, reshaped) operands."""
    (a, b), rest, out = _call(func, args, kwargs)
    if func is torch.Tensor.__rmatmul__:
        a, b = b, a
    name = d.func_name(func).rpartition(".")[2].removeprefix("__").removesuffix("__").removeprefix("r")
    sa, sb = d.shape_of(a), d.shape_of(b)
    shape = _global_result(torch.matmul if func is torch.Tensor.__rmatmul__ else func, (a, b), rest,
                           None if rest else _product_shape(name, sa, sb))
    comm = _comm((a, b))
    if func in _VDOT:
        a = elementwise(torch.conj_physical, (a,), {}) if a.is_complex() else a
    elif func in _INNER:
        if len(d.shape_of(a)) > 2 or len(d.shape_of(b)) > 2:
            raise NotImplementedError(f"{d.func_name(func)} of tensors with more than 2 dims has no distributed rule yet")
        if len(d.shape_of(a)) == 0 or len(d.shape_of(b)) == 0:
            return _finish_call(elementwise(torch.mul, (a, b), {}), out, func, args, kwargs)
        if len(d.shape_of(b)) == 2:
            b = _transposed(b)
    elif func in _OUTER:
        a, b = _unsqueezed(a, 1), _unsqueezed(b, 0)
    return _finish_call(matmul_layout(a, b, comm, shape=shape), out, func, args, kwargs)


def _transposed(x):
    """``x.mT`` of a 2-D DistTensor or plain tensor (a view; the split moves with its axis)."""
    if not isinstance(x, DistTensor):
        return x.mT
    split = None if x._split is None else 1 - x._split
    return wrap(x.local.mT, split, x._comm, torch.Size(reversed(x._gshape)), x._counts)


def _unsqueezed(x, axis: int):
    """A 1-D DistTensor or plain tensor with a unit axis inserted at ``axis`` (0 or 1)."""
    if not isinstance(x, DistTensor):
        return x.unsqueeze(axis)
    split = None if x._split is None else (1 if axis == 0 else 0)
    shape = (1, x._gshape[0]) if axis == 0 else (x._gshape[0], 1)
    return wrap(x.local.unsqueeze(axis), split, x._comm, torch.Size(shape), x._counts)


def add_product(func, args, kwargs):
    """``addmm, addmv, addr, baddbmm, addbmm``: ``beta * input + alpha * product``."""
    (inp, a, b), rest, out = _call(func, args, kwargs)
    beta, alpha = rest.pop("beta", 1), rest.pop("alpha", 1)
    name = d.func_name(func).rpartition(".")[2]
    shape = _product_shape(name, d.shape_of(a), d.shape_of(b))
    if shape is not None and layout.broadcast_shapes(d.shape_of(inp), shape) != shape:
        shape = None
    shape = _global_result(func, (inp, a, b), {"beta": beta, "alpha": alpha}, None if rest else shape)
    comm = _comm((inp, a, b))
    if _local_addmm(func, inp, a, b, shape):  # rows times a replicated matrix: torch's fused kernel per chunk
        local = torch.addmm(cf.enter_replicated(_plain(inp), comm), a.local, cf.enter_replicated(_plain(b), comm),
                            beta=beta, alpha=alpha)
        return _finish_call(wrap(local, 0, comm, torch.Size(shape), a._counts), out, func, args, kwargs)
    if func in _ADDR:
        a, b = _unsqueezed(a, 1), _unsqueezed(b, 0)
    prod = matmul_layout(a, b, comm)
    if func in _ADDBMM:
        from .reductions import sum_

        prod = sum_(torch.sum, (prod, 0), {})
    if alpha != 1:
        prod = elementwise(torch.mul, (prod, alpha), {})
    if beta == 0:  # torch ignores input then (NaN included)
        result = elementwise(torch.add, (prod, torch.zeros(shape, dtype=prod.dtype, device=prod.device)), {}) \
            if tuple(prod.shape) != tuple(shape) else prod
    else:
        result = elementwise(torch.add, (inp if beta == 1 else elementwise(torch.mul, (inp, beta), {}), prod), {})
    return _finish_call(result, out, func, args, kwargs)


def _local_addmm(func, inp, a, b, shape) -> bool:
    """Whether ``addmm`` runs as one local addmm: ``a`` split along rows, ``b`` and an input
    that broadcasts along the rows (a bias) not split."""
    return func in (torch.addmm, torch.Tensor.addmm) and shape is not None and isinstance(a, DistTensor) \
        and a._split == 0 and isinstance(b, torch.Tensor) and _plain(b) is not None and isinstance(inp, torch.Tensor) \
        and _plain(inp) is not None and (len(d.shape_of(inp)) < 2 or d.shape_of(inp)[0] == 1)


def _plain(t):
    """A replicated DistTensor's chunk or a plain tensor as is (None for a split one)."""
    if isinstance(t, DistTensor):
        return t.local if t._split is None else None
    return t


def chain(func, args, kwargs):
    """``linalg.multi_dot`` and ``chain_matmul``: the products from left to right."""
    operands, rest, out = _call(func, args, kwargs)
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    shape = _chain_shape([d.shape_of(t) for t in operands], func is torch.linalg.multi_dot)
    shape = _global_result(func, ([*operands],) if func is torch.linalg.multi_dot else tuple(operands), rest, None if rest else shape)
    comm = _comm(operands)
    result = operands[0]
    for i, x in enumerate(operands[1:]):
        result = matmul_layout(result, x, comm)
    if not isinstance(result, DistTensor):
        result = wrap(result, None, comm, result.shape)
    if result._gshape != shape:  # multi_dot drops the unit axes of 1-D first/last operands
        result = wrap(result.local.reshape(shape) if result._split is None else result.local, result._split, comm, shape, result._counts)
    return _finish_call(result, out, func, args, kwargs)


def _chain_shape(shapes, ends_may_be_vectors: bool) -> Optional[torch.Size]:
    if len(shapes) < 2 or (len(shapes) == 1 and not ends_may_be_vectors):
        return None
    inner = shapes[1:-1]
    if any(len(s) != 2 for s in inner) or not all(len(s) in ((1, 2) if ends_may_be_vectors else (2,)) for s in (shapes[0], shapes[-1])):
        return None
    shape = shapes[0]
    for s in shapes[1:]:
        shape = _matmul_shape(shape, s)
        if shape is None:
            return None
    return shape


def vecdot(func, args, kwargs):
    """``linalg.vecdot(x, y, dim=-1)``: ``sum(x.conj() * y, dim)``."""
    from .reductions import sum_

    (x, y), rest, out = _call(func, args, kwargs)
    dim = rest.pop("dim", -1)
    both = layout.broadcast_shapes(d.shape_of(x), d.shape_of(y))
    valid = both is not None and isinstance(dim, int) and -len(both) <= dim < len(both) and not rest
    _global_result(func, (x, y), {"dim": dim, **rest}, both if valid else None)
    if x.is_complex():
        x = elementwise(torch.conj_physical, (x,), {})
    return _finish_call(sum_(torch.sum, (elementwise(torch.mul, (x, y), {}), dim), {}), out, func, args, kwargs)


_VDOT = set(d.aliases("vdot"))
_INNER = set(d.aliases("inner"))
_OUTER = set(d.aliases("outer") + d.aliases("ger"))
_ADDR = set(d.aliases("addr"))
_ADDBMM = set(d.aliases("addbmm"))


def _functions(*names):
    """The out-of-place Python functions of these names (in-place forms write: no rule yet)."""
    return [f for name in names for f in d.aliases(name) if not d._is_inplace(f)]


d.register(_functions("matmul", "mm", "bmm", "mv", "dot", "vdot", "inner", "outer", "ger")
           + [torch.linalg.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__], matmul)
d.register(_functions("addmm", "addmv", "addr", "baddbmm", "addbmm"), add_product)
d.register(d.aliases("multi_dot") + d.aliases("chain_matmul"), chain)
d.register(d.aliases("vecdot"), vecdot)
