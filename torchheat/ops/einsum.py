"""``einsum``, ``tensordot`` and ``kron`` on DistTensors, through the matrix products.

``einsum`` parses the equation (ellipses, implicit output, sublist form, repeated labels
and labels broadcast from size 1 included), then:

* in each operand, repeated labels become a diagonal, labels of size 1 that broadcast are
  squeezed, and labels no one else needs are summed (the reduction rules);
* the operands are contracted two at a time, left to right: labels in both operands that
  are kept are batch axes, those only in one are the rows (left operand) or the columns
  (right operand), those in both that are not kept are contracted. Each operand is
  permuted to ``(batch, rows, contracted)`` / ``(batch, contracted, columns)`` with its
  split label first in its group, so that merging each group into one axis is local, and
  one matrix product (:mod:`torchheat.ops.linalg`) does the rest: a split batch label
  or a split row/column label stays local; a split contracted label gives partial
  products combined by a reduce-scatter; other pairs ring or move blocks as the product's
  cost model decides. The product's axes are then unmerged and permuted to the output.

``tensordot`` is the einsum of its ``dims``; ``kron`` multiplies ``a`` and ``b`` with unit
axes interleaved and merges each pair of axes (a split of ``a`` stays where it is, scaled
by ``b``'s size; a split of ``b`` is moved by the reshape). Every block of a Kronecker
product needs all of one operand: when both are split, the smaller one is gathered. Gradients come from the
differentiable rules used on the way.

Examples
--------
>>> import torch, torchheat as th
>>> a = th.distribute(torch.arange(6.).reshape(3, 2), split=0)
>>> torch.einsum("ij,kj->ik", a, a).full().tolist()
[[1.0, 3.0, 5.0], [3.0, 13.0, 23.0], [5.0, 23.0, 41.0]]
>>> torch.kron(a, torch.ones(2, 1)).shape
torch.Size([6, 2])
"""
from __future__ import annotations

import math
import string
from typing import List, Sequence, Tuple

import torch
from torch.utils import _pytree as pytree

from .. import dispatch as d
from ..tensor import DistTensor, wrap
from .linalg import _call, _comm, _finish_call, _global_result, matmul_layout
from .shape import call


def _checked_shape(func, args, kwargs) -> torch.Size:
    """The result's global shape from a run on meta tensors; torch's CPU error if invalid."""
    def meta(a):
        return torch.empty(d.shape_of(a), dtype=a.dtype, device="meta") if isinstance(a, torch.Tensor) else a

    try:
        return d.run_local(func, *pytree.tree_map(meta, (args, kwargs))).shape
    except Exception:
        return _global_result(func, args, kwargs)


# -- the equation ---------------------------------------------------------------------------------
def _sublists(args) -> Tuple[str, list]:
    """``einsum(op0, sublist0, op1, sublist1, ..., [out])`` as an equation and operands."""
    labels = {}

    def letters(sub):
        return "".join("..." if s is Ellipsis else labels.setdefault(s, string.ascii_letters[len(labels)]) for s in sub)

    operands = list(args[0::2])
    inputs = [letters(s) for s in args[1::2]]
    if len(args) % 2:
        operands = operands[:-1]
        return ",".join(inputs) + "->" + letters(args[-1]), operands
    return ",".join(inputs), operands


def parse(equation: str, ndims: Sequence[int]) -> Tuple[List[str], str]:
    """The labels of every operand and of the output, one letter per axis (ellipses
    replaced by letters the equation does not use, right-aligned across operands).

    >>> parse("...ij,jk", [3, 2])
    (['Aij', 'jk'], 'Aik')
    """
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    inputs = lhs.split(",")
    unused = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in equation]
    widths = [n - len(s.replace("...", "")) if "..." in s else 0 for s, n in zip(inputs, ndims)]
    width = max(widths, default=0)
    ellipsis = "".join(unused[:width])
    inputs = [s.replace("...", ellipsis[width - w:]) for s, w in zip(inputs, widths)]
    if arrow:
        output = rhs.replace("...", ellipsis)
    else:
        once = [c for c in sorted(set("".join(inputs)) - set(ellipsis)) if "".join(inputs).count(c) == 1]
        output = ellipsis + "".join(once)
    return inputs, output


# -- the contraction --------------------------------------------------------------------------------
def _prepare(x, labels: str, sizes: dict, needed: str):
    """``x`` with one axis per distinct label, none broadcast from size 1, and the labels no
    one else needs summed."""
    while len(set(labels)) < len(labels):  # a repeated label: its diagonal, moved to the end
        label = next(c for c in labels if labels.count(c) > 1)
        i, j = labels.index(label), labels.index(label, labels.index(label) + 1)
        x = call(torch.diagonal, x, 0, i, j)
        labels = labels[:i] + labels[i + 1:j] + labels[j + 1:] + label
    broadcast = [i for i, c in enumerate(labels) if d.shape_of(x)[i] == 1 and sizes[c] != 1]
    if broadcast:
        x = call(torch.squeeze, x, tuple(broadcast))
        labels = "".join(c for i, c in enumerate(labels) if i not in broadcast)
    summed = [i for i, c in enumerate(labels) if c not in needed]
    if summed:
        x = call(torch.sum, x, summed)
        labels = "".join(c for i, c in enumerate(labels) if i not in summed)
    return x, labels


def _split_label(x, labels: str):
    split = x._split if isinstance(x, DistTensor) else None
    return None if split is None else labels[split]


def _permuted(x, labels: str, order: str):
    return x if labels == order else call(torch.permute, x, [labels.index(c) for c in order])


def _first(group: List[str], *labels) -> List[str]:
    """``group`` with the first of ``labels`` it contains moved to the front."""
    for label in labels:
        if label in group:
            return [label] + [c for c in group if c != label]
    return group


def _contract(a, la: str, b, lb: str, keep: str, sizes: dict, comm):
    """The einsum of two prepared operands keeping the labels ``keep``: one matrix product."""
    batch = [c for c in la if c in lb and c in keep]
    sa, sb = _split_label(a, la), _split_label(b, lb)
    rows = _first([c for c in la if c not in lb], sa)
    cols = _first([c for c in lb if c not in la], sb)
    inner = _first([c for c in la if c in lb and c not in keep], sa, sb)
    if not (rows or cols or inner):  # the same labels: an elementwise product
        return call(torch.mul, a, _permuted(b, lb, la)), la
    bshape = [sizes[c] for c in batch]

    def merged(x, labels, first, second):
        x = _permuted(x, labels, "".join(batch + first + second))
        return call(torch.reshape, x, bshape + [math.prod(sizes[c] for c in first), math.prod(sizes[c] for c in second)])

    prod = matmul_layout(merged(a, la, rows, inner), merged(b, lb, inner, cols), comm)
    return call(torch.reshape, prod, bshape + [sizes[c] for c in rows + cols]), "".join(batch + rows + cols)


def einsum_labels(inputs: List[str], output: str, operands: list, comm):
    """``einsum`` of ``operands`` labelled ``inputs`` into ``output`` (a DistTensor)."""
    sizes = {}
    for x, labels in zip(operands, inputs):
        for c, n in zip(labels, d.shape_of(x)):
            sizes[c] = n if sizes.get(c, 1) == 1 else sizes[c]
    prepared = []
    for i, (x, labels) in enumerate(zip(operands, inputs)):
        others = output + "".join(inputs[:i] + inputs[i + 1:])
        prepared.append(_prepare(x, labels, sizes, others))
    x, lx = prepared[0]
    for i, (y, ly) in enumerate(prepared[1:], 1):
        keep = output + "".join(l for _, l in prepared[i + 1:])
        x, lx = _prepare(x, lx, sizes, keep + ly)
        y, ly = _prepare(y, ly, sizes, keep + lx)
        x, lx = _contract(x, lx, y, ly, keep, sizes, comm)
    x, lx = _prepare(x, lx, sizes, output)
    x = _permuted(x, lx, output)
    if any(x is t for t in operands):  # a new tensor (a view, as torch's), never the input itself
        x = call(torch.permute, x, list(range(len(output))))
    if not isinstance(x, DistTensor):
        x = wrap(x, None, comm, x.shape)
    return x


def einsum(func, args, kwargs):
    """``torch.einsum(equation, *operands)`` (or a list of operands, or the sublist form)."""
    _checked_shape(func, args, kwargs)
    if isinstance(args[0], str):
        equation, operands = args[0], list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    else:
        equation, operands = _sublists(args)
    inputs, output = parse(equation, [len(d.shape_of(t)) for t in operands])
    return einsum_labels(inputs, output, operands, _comm(operands))


def tensordot(func, args, kwargs):
    """``torch.tensordot(a, b, dims)``: the einsum contracting the given axes."""
    (a, b), rest, out = _call(func, args, kwargs)
    dims = rest.pop("dims", 2)
    _checked_shape(func, (a, b), {"dims": dims})
    na, nb = len(d.shape_of(a)), len(d.shape_of(b))
    if isinstance(dims, torch.Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        da, db = list(range(na - dims, na)), list(range(dims))
    else:
        da, db = ([x] if isinstance(x, int) else list(x) for x in dims)
    da, db = [i % na for i in da], [i % nb for i in db]
    letters = iter(string.ascii_letters)
    la = [next(letters) for _ in range(na)]
    lb = [next(letters) for _ in range(nb)]
    for i, j in zip(da, db):
        lb[j] = la[i]
    output = "".join(c for i, c in enumerate(la) if i not in da) + "".join(c for j, c in enumerate(lb) if j not in db)
    result = einsum_labels(["".join(la), "".join(lb)], output, [a, b], _comm((a, b)))
    return _finish_call(result, out, func, args, kwargs)


def kron(func, args, kwargs):
    """``torch.kron(a, b)``: ``a`` and ``b`` with interleaved unit axes, multiplied, each pair
    of axes merged."""
    (a, b), rest, out = _call(func, args, kwargs)
    shape = _checked_shape(func, (a, b), rest)
    sa, sb = tuple(d.shape_of(a)), tuple(d.shape_of(b))
    nd = max(len(sa), len(sb))
    sa, sb = (1,) * (nd - len(sa)) + sa, (1,) * (nd - len(sb)) + sb
    wide_a = call(torch.reshape, a, [n for s in sa for n in (s, 1)])
    wide_b = call(torch.reshape, b, [n for s in sb for n in (1, s)])
    # the larger operand keeps its layout (every block of the result needs all of the other)
    pair = (wide_a, wide_b) if math.prod(sa) >= math.prod(sb) else (wide_b, wide_a)
    result = call(torch.reshape, call(torch.mul, *pair), list(shape))
    if not isinstance(result, DistTensor):
        result = wrap(result, None, _comm((a, b)), result.shape)
    return _finish_call(result, out, func, args, kwargs)


d.register(d.aliases("einsum"), einsum)
d.register([f for f in d.aliases("tensordot") if not d._is_inplace(f)], tensordot)
d.register([f for f in d.aliases("kron") if not d._is_inplace(f)], kron)
