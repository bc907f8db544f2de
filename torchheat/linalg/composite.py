"""``torch.linalg`` functions that are compositions of distributed ops: ``cross``,
``diagonal``, ``vander``, ``tensorinv``, ``tensorsolve``, ``polar`` and ``matrix_sqrth``.

Each rule restates torch's definition with torch calls on the DistTensors, so every step
runs by its own distributed rule (and autograd differentiates the composition exactly):

* ``cross(a, b, dim)`` is ``roll(a, -1) * roll(b, -2) - roll(a, -2) * roll(b, -1)`` along
  ``dim``: local when ``dim`` is not split, a halo exchange of the rolls when it is;
* ``diagonal`` is ``torch.diagonal`` of the last two axes (a view, split as there);
* ``vander(x, N)`` is ``[1, x, x^2, ...]`` as a cumulative product along a new last axis,
  which is never split: no communication;
* ``tensorinv`` and ``tensorsolve`` reshape (a planned redistribution) to the matrix
  problem and solve it with the distributed LU of :mod:`torchheat.linalg.solve`;
* ``polar(A) = (W V^H, V S V^H)`` from the SVD ``A = W S V^H`` of :mod:`torchheat.linalg.svd`;
* ``matrix_sqrth(A) = V sqrt(L) V^H`` from the Jacobi ``eigh`` of :mod:`torchheat.linalg.eigh`.

torch's errors come from the call on stand-ins of the global shapes, before any step runs.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.tensor([1., 2., 3.]), split=0)
>>> torch.linalg.vander(x).full().tolist()
[[1.0, 1.0, 1.0], [1.0, 2.0, 4.0], [1.0, 3.0, 9.0]]
"""
from __future__ import annotations

import math

import torch

from .. import dispatch as d
from ..ops.shape import call, global_meta, split_rule
from . import batch
from .common import distributed
from .eigh import hermitian_eig
from .svd import tall_svd


def _cross_sig(input, other, *, dim=-1, out=None):
    return input, other, dim, out


@split_rule(torch.linalg.cross)
def cross(func, args, kwargs):
    """``linalg.cross(a, b, dim)``: component ``i`` is ``a[i+1] b[i+2] - a[i+2] b[i+1]``."""
    a, b, dim, out = _cross_sig(*args, **kwargs)
    if out is not None:
        return d.no_rule(func, args, kwargs)
    meta = global_meta(func, args, kwargs)
    dim = dim % len(meta.shape) - len(meta.shape)  # from the end: the operands broadcast from the right
    with distributed():
        return torch.roll(a, -1, dim) * torch.roll(b, -2, dim) - torch.roll(a, -2, dim) * torch.roll(b, -1, dim)


def _diagonal_sig(A, *, offset=0, dim1=-2, dim2=-1):
    return A, offset, dim1, dim2


@split_rule(torch.linalg.diagonal)
def diagonal(func, args, kwargs):
    """``linalg.diagonal``: ``torch.diagonal`` with the last two axes as default."""
    a, offset, dim1, dim2 = _diagonal_sig(*args, **kwargs)
    global_meta(func, args, kwargs)
    return call(torch.diagonal, a, offset, dim1, dim2)


def _vander_sig(x, *, N=None):
    return x, N


@batch.algorithm("linalg.vander")
def vander(func, args, kwargs):
    """``linalg.vander(x, N)``: the powers ``x^0 .. x^(N-1)`` along a new last axis."""
    x, n = _vander_sig(*args, **kwargs)
    meta = global_meta(func, args, kwargs)
    n = meta.shape[-1]
    with distributed():
        powers = x.unsqueeze(-1).expand(*x.shape, n - 1).cumprod(-1)
        return torch.cat([torch.ones_like(powers[..., :1]), powers], -1).to(meta.dtype)


def _tensorinv_sig(A, ind=2, *, out=None):
    return A, ind, out


@split_rule(torch.linalg.tensorinv)
def tensorinv(func, args, kwargs):
    """``linalg.tensorinv(A, ind)``: the inverse of A as a ``prod(shape[:ind])`` square matrix."""
    a, ind, out = _tensorinv_sig(*args, **kwargs)
    if out is not None:
        return d.no_rule(func, args, kwargs)
    global_meta(func, args, kwargs)
    shape = d.shape_of(a)
    with distributed():
        return torch.linalg.inv(a.reshape(math.prod(shape[:ind]), -1)).reshape(*shape[ind:], *shape[:ind])


def _tensorsolve_sig(A, B, dims=None, *, out=None):
    return A, B, dims, out


@split_rule(torch.linalg.tensorsolve)
def tensorsolve(func, args, kwargs):
    """``linalg.tensorsolve(A, B, dims)``: ``dims`` moved to the end, then the solve of A as a
    ``B.numel()`` square matrix."""
    a, b, dims, out = _tensorsolve_sig(*args, **kwargs)
    if out is not None:
        return d.no_rule(func, args, kwargs)
    global_meta(func, args, kwargs)
    with distributed():
        if dims is not None:
            nd = a.dim()
            dims = [x % nd for x in dims]
            a = torch.movedim(a, dims, list(range(nd - len(dims), nd)))
        shape = a.shape[b.dim():]
        return torch.linalg.solve(a.reshape(b.numel(), -1), b.reshape(-1)).reshape(shape)


def _one_matrix(func, args, kwargs, square: bool):
    """The operand of a single-matrix function, after torch's checks on the global shapes."""
    a = args[0] if args else kwargs["A"]
    shape = d.shape_of(a)
    m, n = shape[-2:] if len(shape) >= 2 else (0, -1)
    if len(shape) != 2 or m < n or (square and m != n) or not (a.is_floating_point() or a.is_complex()) \
            or kwargs.get("out") is not None:
        global_meta(func, args, kwargs)
        return None
    return a


@batch.algorithm("linalg.polar")
def polar(func, args, kwargs):
    """``linalg.polar(A) = (U, H)`` of a split ``m x n`` matrix, m >= n, from its SVD."""
    a = _one_matrix(func, args, kwargs, square=False)
    if a is None:
        return d.no_rule(func, args, kwargs)
    w, s, vh = tall_svd(a)
    with distributed():
        v = vh.mH
        return torch.return_types.linalg_polar((w @ vh, (v * s) @ vh))


@batch.algorithm("linalg.matrix_sqrth")
def matrix_sqrth(func, args, kwargs):
    """``linalg.matrix_sqrth(A) = V sqrt(L) V^H`` of a split Hermitian matrix (its lower
    triangle, as torch; negative eigenvalues count as zero), in A's layout."""
    a = _one_matrix(func, args, kwargs, square=True)
    if a is None or a.is_complex():
        return d.no_rule(func, args, kwargs)
    lam, v = hermitian_eig(a)
    with distributed():
        root = (v * lam.clamp(min=0).sqrt()) @ v.mH
        return d.to_layout(root, a._split, a._counts)
