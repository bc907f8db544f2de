"""Reductions: reduce the local chunk, then combine the partial results over ranks.

When the split axis survives a reduction, it is local (no communication) and the result
keeps the split. When the split axis is reduced, every rank reduces its chunk and one
collective combines the partial results; the result is replicated. Values, dtypes,
errors and gradients (of any order) are torch's on the global tensor, for uneven and empty
chunks too (an empty chunk contributes the reduction's identity):

* sums (``sum, nansum, mean, nanmean, count_nonzero, any, all``): an allreduce of the
  partial sums, whose backward passes the gradient through;
* non-linear combines (``prod, var, std, var_mean, std_mean, vector_norm, norm,
  logsumexp``): the per-rank partial results (products; Chan et al.'s mean and sum of
  squared deviations; norms; logsumexps) are gathered and combined with torch, so autograd
  differentiates the combine too;
* selections (``amax, amin, aminmax, max, min, argmax, argmin``): the global extreme and
  its first global index; the gradient goes where torch sends it (shared by the ties for
  ``amax``/``max(x)``, to the returned index for ``max(x, dim)``).

16-bit floats are accumulated and combined in float32. Errors that depend on metadata are
raised on every rank before any collective, a rank whose chunk is empty included.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(12.).reshape(4, 3), split=0)
>>> x.sum().item(), x.sum(1).split_dim, x.mean(0).split_dim
(66.0, 0, None)
>>> x.max(0).indices.tolist(), x.argmax().item()
([3, 3, 3], 11)
"""
from __future__ import annotations

import functools
import math
import warnings

import torch
from torch.utils import _pytree as pytree

from .. import dispatch as d, layout
from ..comm import functional as cf
from ..tensor import DistTensor, adopt, wrap
from .pointwise import elementwise, write_out

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_REAL = {torch.complex32: torch.float16, torch.complex64: torch.float32, torch.complex128: torch.float64}
_NUMPY_NAMES = {"axis": "dim", "keepdims": "keepdim"}
_NO_INDEX = torch.iinfo(torch.int64).max  # the global index of a candidate an empty chunk does not have
_BLOCK = 1 << 17  # elements per block of blocked_moments: small enough to stay in cache
_SCALAR = torch.Size([])
_NO_KEYWORDS = {}  # (read only)


# -- calls, layouts and errors ----------------------------------------------------------------
def bind(signature, func, args, kwargs):
    """The arguments of a call, bound by ``signature`` (a Python stub of the torch function).

    numpy's ``axis``/``keepdims`` are accepted as torch accepts them; a call torch rejects
    gets torch's error. A plain input (with a DistTensor ``out=``) is taken as replicated.
    On a rank whose chunk is empty, torch's checks are run first (:func:`agree_on_errors`).
    """
    try:
        bound = signature(*args, **kwargs)
    except TypeError:
        call = {_NUMPY_NAMES.get(k, k): v for k, v in kwargs.items()}
        try:
            bound = signature(*args, **call)
        except TypeError:
            d.raise_global_error(func, args, kwargs)
    x = bound[0]
    if not isinstance(x, DistTensor):
        comm = d.common_comm(a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, DistTensor))
        return (wrap(x, None, comm, x.shape),) + bound[1:]
    if x._split is not None and not x._counts[x._comm.rank]:  # (cheaper than the local x.shape)
        agree_on_errors(func, args, kwargs, x)
    return bound


def agree_on_errors(func, args, kwargs, x: DistTensor) -> None:
    """Raise, on a rank whose chunk of ``x`` is empty, the error torch raises on the ranks
    that hold data: torch skips its dtype checks for empty input (``cumsum_`` of a bool
    chunk), and the ranks must agree before any collective.

    The call is replayed on a stand-in of at most one element: ``x``'s global shape with
    every axis cut to 1 (a size-0 axis stays 0, so emptiness is torch's on the global
    tensor). Nothing happens when the global split axis is empty too. No communication.
    """
    if not x._gshape[x._split]:
        return
    stand_in = torch.zeros([min(n, 1) for n in x._gshape], dtype=x.dtype, device=x.device)
    call = {k: (stand_in if v is x else v) for k, v in kwargs.items() if k != "out"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stand-in's warnings (degrees of freedom) are not the tensor's
        try:
            func(*(stand_in if a is x else a for a in args), **call)
        except Exception as error:
            raise error.with_traceback(None) from None


@functools.lru_cache(maxsize=4096)
def _dims(dim, ndim: int):
    dims = layout.reduced_dims(dim, ndim)
    if isinstance(dim, tuple) and len(dim) > len(dims):
        raise ValueError(f"dim {dim} repeats an axis")  # replaced by torch's own message
    return dims


def dims_of(dim, x: DistTensor, func, args, kwargs):
    """The normalized reduced axes (None or ``()``: all of them); torch's error for a bad or
    repeated ``dim``."""
    try:
        return _dims(tuple(dim) if type(dim) is list else dim, len(x._gshape))
    except (IndexError, TypeError, ValueError):
        d.raise_global_error(func, args, kwargs)


def one_dim(dim, x: DistTensor, func, args, kwargs):
    """``(dim,)`` for an argument that must be one int axis (``max(x, dim)``, ``prod``, ...)."""
    if not isinstance(dim, int) or isinstance(dim, bool):
        d.raise_global_error(func, args, kwargs)
    return dims_of(dim, x, func, args, kwargs)


def torch_error(func, x: DistTensor, args, kwargs):
    """Raise torch's exception for this call on the global tensor, on every rank alike.

    The call is replayed on a zero-stride CPU stand-in of the global shape (CPU kernels
    check dtypes that meta kernels do not), then on ``dispatch.raise_global_error``'s.
    """
    stand_in = torch.zeros((), dtype=x.dtype).expand(x._gshape)
    call = {k: (stand_in if v is x else v) for k, v in kwargs.items() if k != "out"}
    try:
        d.run_local(func, tuple(stand_in if a is x else a for a in args), call)
    except Exception as error:
        raise error.with_traceback(None) from None
    d.raise_global_error(func, args, kwargs)


def needs_grad(t: torch.Tensor) -> bool:
    return t.requires_grad and torch.is_grad_enabled()


def is_local(x: DistTensor, dims) -> bool:
    """Whether reducing ``dims`` needs no communication: the split axis survives, or one
    rank holds the whole tensor."""
    return x._split not in dims or x._comm.size == 1


@functools.lru_cache(maxsize=4096)
def _reduced_layout(gshape, split, dims, keepdim):
    return layout.reduced_split(split, dims, keepdim), layout.reduced_shape(gshape, dims, keepdim)


def local_reduction(func, args, kwargs, x: DistTensor, dims, keepdim):
    """The reduction of the local chunk by torch itself, wrapped with the layout that survives
    (the split axis, or one rank holds everything). Handlers run with torch-function
    dispatch off, so ``func`` sees the local chunk."""
    out = kwargs.get("out")
    local = func(*args, **kwargs) if out is None else func(*args, **{k: v for k, v in kwargs.items() if k != "out"})
    split, gshape = _reduced_layout(x._gshape, x._split, dims, keepdim)
    counts = None if split is None else x._counts
    if type(local) is torch.Tensor and local is not x:  # fresh (the common case): no other operand is a tensor
        result = adopt(local, split, x._comm, gshape, counts)
    else:
        result = d.wrap_result(local, split, x._comm, gshape, counts)
    return result if out is None else write_out(out, result, func, (args, kwargs))


def finish(result, x: DistTensor, dims, keepdim, func, args, kwargs):
    """A reduction over the split axis, computed with keepdim alike on every rank: drop the
    reduced axes, wrap it replicated, write ``out=``."""
    if not keepdim:
        result = _each(lambda t: t.squeeze(dims), result)
    result = d.wrap_result(result, None, x._comm, layout.reduced_shape(x._gshape, dims, keepdim), None)
    out = kwargs.get("out")
    return result if out is None else write_out(out, result, func, (args, kwargs))


def combine(part: torch.Tensor, comm) -> torch.Tensor:
    """The sum over ranks of ``part``, a partial result this handler just computed: reduced
    in place (no copy) unless a gradient needs the differentiable collective."""
    return cf.all_reduce(part, comm) if needs_grad(part) else comm.allreduce_(part)


def full_reduction(x: DistTensor, dims, keepdim: bool, kwargs) -> bool:
    """Whether the call reduces every axis to a 0-d result with no ``out=``: then the partial
    result is 0-d on every rank and needs no squeeze (the scalar fast path)."""
    return not keepdim and len(dims) == len(x._gshape) and kwargs.get("out") is None


def scalar(total: torch.Tensor, x: DistTensor) -> DistTensor:
    """The replicated 0-d DistTensor of ``total``, a result this handler just computed."""
    return adopt(total, None, x._comm, _SCALAR)


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``t.to(dtype)``, skipped when it is one already (``to`` costs microseconds even then)."""
    return t if t.dtype == dtype else t.to(dtype)


def gather_parts(parts, comm) -> list:
    """Every rank's ``parts`` stacked along a new leading axis, as
    :func:`torchheat.comm.functional.all_gather_parts` (differentiable). An empty part (a
    result with a size-0 axis, empty on every rank alike) needs no communication."""
    full = [p for p in parts if p.numel()]
    gathered = iter(cf.all_gather_parts(full, comm) if full else ())
    return [next(gathered) if p.numel() else p.unsqueeze(0).expand((comm.size,) + p.shape) for p in parts]


def _each(fn, result):
    return fn(result) if isinstance(result, torch.Tensor) else type(result)(fn(t) for t in result)


def _numel(shape, dims) -> int:
    return math.prod(shape[i] for i in dims)


def sum_dtype(dtype: torch.dtype) -> torch.dtype:
    """torch's result dtype of a sum or product: integers and bools add up in int64."""
    return dtype if dtype.is_floating_point or dtype.is_complex else torch.int64


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def real_or_complex(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point or dtype.is_complex


# -- sums ----------------------------------------------------------------------------------
def keyword_only(kwargs):
    """The ``dtype``/``out`` keywords of a ``_reduce_sig`` call, for a local call that passes
    input, dim and keepdim by position: torch parses every keyword again there (about 0.6 us
    on a DistTensor)."""
    if "dtype" not in kwargs and "out" not in kwargs:
        return _NO_KEYWORDS
    return {k: v for k, v in kwargs.items() if k == "dtype" or k == "out"}


def _reduce_sig(input, dim=None, keepdim=False, *, dtype=None, out=None):
    return input, dim, keepdim, dtype


def _dim_sig(input, dim=None, keepdim=False, *, out=None):
    return input, dim, keepdim


def _aminmax_sig(input, *, dim=None, keepdim=False, out=None):
    return input, dim, keepdim


def _logsumexp_sig(input, dim, keepdim=False, *, out=None):
    return input, dim, keepdim


def _count_sig(input, dim=None):
    return input, dim


def sum_(func, args, kwargs):
    """``sum``, ``nansum``: partial sums per rank, then one allreduce."""
    x, dim, keepdim, dtype = bind(_reduce_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, (x, dim, keepdim), keyword_only(kwargs), x, dims, keepdim)
    nan = func in _NAN
    if nan and x.dtype.is_complex:
        torch_error(func, x, args, kwargs)
    dtype = dtype or sum_dtype(x.dtype)
    reduce = torch.nansum if nan else torch.sum
    if full_reduction(x, dims, keepdim, kwargs):  # (a dtype= keyword costs microseconds: only when it changes it)
        acc = acc_dtype(dtype)
        part = reduce(x) if acc == sum_dtype(x.dtype) else reduce(x, dtype=acc)
        return scalar(cast(combine(part, x._comm), dtype), x)
    part = reduce(x, dims, keepdim=True, dtype=acc_dtype(dtype))
    return finish(cast(combine(part, x._comm), dtype), x, dims, keepdim, func, args, kwargs)


def mean(func, args, kwargs):
    """``mean``: the global sum over the global number of elements; ``nanmean``: over the
    global number of non-NaN elements (both sums travel in one allreduce)."""
    x, dim, keepdim, dtype = bind(_reduce_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, (x, dim, keepdim), keyword_only(kwargs), x, dims, keepdim)
    nan = func in _NAN
    dtype = dtype or x.dtype
    if not real_or_complex(dtype) or (nan and not x.dtype.is_floating_point):
        torch_error(func, x, args, kwargs)
    acc = acc_dtype(dtype)
    if nan:
        numbers = (~x.isnan()).sum(dims, keepdim=True, dtype=acc)
        part = torch.stack([torch.nansum(x, dims, keepdim=True, dtype=acc), numbers])
        total, n = cf.all_reduce(part, x._comm).unbind(0)
    elif full_reduction(x, dims, keepdim, kwargs):
        return scalar(cast(combine(torch.sum(x, dtype=acc), x._comm) / _numel(x._gshape, dims), dtype), x)
    else:
        total, n = combine(torch.sum(x, dims, keepdim=True, dtype=acc), x._comm), _numel(x._gshape, dims)
    return finish(cast(total / n, dtype), x, dims, keepdim, func, args, kwargs)


def count_nonzero(func, args, kwargs):
    """``count_nonzero``: local counts, one allreduce."""
    x, dim = bind(_count_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, False)
    part = (x != 0).sum(dims, keepdim=True)
    return finish(x._comm.allreduce(part, "sum"), x, dims, False, func, args, kwargs)


def any_all(func, args, kwargs):
    """``any``/``all``: local truth values, one logical allreduce. ``dim=()`` reduces nothing."""
    x, dim, keepdim = bind(_dim_sig, func, args, kwargs)
    dims = () if isinstance(dim, (tuple, list)) and not dim else dims_of(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    anyone = func in _ANY
    part = (torch.any if anyone else torch.all)(x, dims, keepdim=True)
    return finish(x._comm.allreduce(part, "max" if anyone else "min"), x, dims, keepdim, func, args, kwargs)


# -- non-linear combines of gathered partial results ----------------------------------------
def prod(func, args, kwargs):
    """``prod``: partial products per rank, multiplied over ranks (gathered when a gradient
    is needed: torch's own product rule then handles zeros exactly)."""
    x, dim, keepdim, dtype = bind(_reduce_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs) if dim is None else one_dim(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    dtype = dtype or sum_dtype(x.dtype)
    if dim is None:
        part = torch.prod(x, dtype=acc_dtype(dtype)).reshape((1,) * len(x._gshape))
    else:
        part = torch.prod(x, dims[0], keepdim=True, dtype=acc_dtype(dtype))
    if needs_grad(part):
        total = gather_parts([part], x._comm)[0].prod(0)
    else:
        total = x._comm.allreduce(part, "prod")
    return finish(cast(total, dtype), x, dims, keepdim, func, args, kwargs)


def _var_sig(input, dim=None, unbiased=None, keepdim=False, *, correction=None, out=None):
    return input, dim, unbiased, keepdim, correction


def _var_mean_sig(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return input, dim, unbiased, keepdim, correction


def var_std(func, args, kwargs):
    """``var, std, var_mean, std_mean`` with any ``correction``/``unbiased`` (and ``out=``
    where torch has it)."""
    name = _VAR_NAMES[func]
    x, dim, unbiased, keepdim, correction = bind(_var_mean_sig if name.endswith("_mean") else _var_sig, func, args, kwargs)
    if isinstance(dim, bool):  # var(x, unbiased)
        dim, unbiased = None, dim
    if correction is None:
        correction = 0 if unbiased is False else 1
    dims = dims_of(dim, x, func, args, kwargs)
    if not real_or_complex(x.dtype):
        torch_error(func, x, args, kwargs)
    if is_local(x, dims):
        if x.numel():
            return local_reduction(func, args, kwargs, x, dims, keepdim)
        with warnings.catch_warnings():  # torch's warning would be about the empty chunk, not the tensor
            warnings.simplefilter("ignore")
            result = local_reduction(func, args, kwargs, x, dims, keepdim)
        _check_dof(name, _numel(x._gshape, dims), correction)
        return result
    var, mean_ = moments(x, dims, correction, name)
    spread = (_std(var) if name.startswith("std") else var).to(_REAL.get(x.dtype, x.dtype))
    result = (spread, mean_.to(x.dtype)) if name.endswith("_mean") else spread
    return finish(result, x, dims, keepdim, func, args, kwargs)


def moments(x: DistTensor, dims, correction, name="var"):
    """Global ``(var, mean)`` over ``dims`` (which include the split axis), with keepdim.

    Every rank's mean and sum of squared deviations ``M2`` (:func:`chunk_moments`) are
    gathered and merged by :func:`merge_moments`. Differentiable.
    """
    comm = x._comm
    per_row = _numel(x._gshape, [i for i in dims if i != x._split])
    n = [c * per_row for c in x._counts]
    means, m2s = gather_parts(chunk_moments(x, dims, n[comm.rank], two_pass=not name.endswith("_mean")), comm)
    mean_, m2 = merge_moments(means, m2s, n)
    total = sum(n)
    _check_dof(name, total, correction)
    return m2 / max(total - correction, 0), mean_


def chunk_moments(x: torch.Tensor, dims, count: int, two_pass: bool = False):
    """``(mean, M2)`` of this rank's chunk (``count`` elements) over ``dims``, with keepdim,
    in double precision (complex128 for complex data; M2 is real).

    A reduction over the whole chunk of real data with no gradient takes
    :func:`blocked_moments` when ``two_pass`` (torch's var and std reduce a whole tensor in
    two passes, its var_mean with a Welford kernel that is several times slower);
    otherwise torch's var_mean over ``dims``.
    """
    merge = torch.complex128 if x.dtype.is_complex else torch.float64  # the partials are small
    if not count:  # an empty chunk: weight 0 (zeros that stay on the autograd graph)
        zero = x.sum(dims, keepdim=True)
        return zero.to(merge), zero.abs().to(torch.float64)
    if two_pass and len(dims) == x.dim() and x.is_floating_point() and x.device.type == "cpu" and not needs_grad(x):
        shape = (1,) * x.dim()
        return tuple(m.reshape(shape) for m in blocked_moments(x.reshape(-1)))
    var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
    if x.dtype not in (torch.float64, torch.complex128):  # recover the digits mean lost to x's precision
        mean = mean.to(merge) + (x - mean).mean(dims, keepdim=True).to(merge)
    return mean.to(merge), var.to(torch.float64) * count


def blocked_moments(flat: torch.Tensor):
    """``(mean, M2)`` of a 1-D real tensor in float64, block by block.

    A full-size temporary (``x - mean``) costs more than the arithmetic; a block of
    ``_BLOCK`` elements is copied to float64, centred on its own mean and squared while it is
    in cache, and the blocks are merged like ranks.
    """
    buf = torch.empty(min(flat.numel(), _BLOCK), dtype=torch.float64, device=flat.device)
    blocks, means, m2s = flat.split(_BLOCK), [], []
    for block in blocks:
        centred = buf[:block.numel()].copy_(block)
        means.append(centred.mean())
        centred.sub_(means[-1])
        m2s.append(torch.dot(centred, centred))
    return merge_moments(torch.stack(means), torch.stack(m2s), [block.numel() for block in blocks])


def merge_moments(means: torch.Tensor, m2s: torch.Tensor, counts):
    """Mean and M2 of the union of parts (stacked along axis 0) of ``counts`` elements each
    (a list of ints), by Chan et al.'s parallel formula
    ``M2 = sum_i (M2_i + n_i |mean_i - mean|^2)``: no cancellation however large the mean.

    The mean is a weighted average (``w_i = n_i / n``) taken as
    ``ref + sum_i (w_i mean_i - w_i ref)`` around one part's mean ``ref``: it cannot overflow
    where the means do not, and equal means merge exactly. An empty part adds nothing.
    """
    ref = means[max(range(len(counts)), key=counts.__getitem__)]
    counts = torch.tensor(counts, dtype=torch.float64, device=m2s.device).reshape((-1,) + (1,) * (means.dim() - 1))
    weights = counts / counts.sum()
    mean = ref + (weights * means - weights * ref).sum(0)
    spread = torch.where(counts > 0, counts * _abs2(means - mean), 0)
    return mean, (m2s + spread).sum(0)


def _check_dof(name, n, correction):
    if n - correction <= 0:
        warnings.warn(f"{name}(): degrees of freedom is <= 0. Correction should be strictly less than "
                      "the reduction factor (input numel divided by output numel).", stacklevel=5)


def _abs2(t: torch.Tensor) -> torch.Tensor:
    return t.real.square() + t.imag.square() if t.is_complex() else t.square()


def _std(var: torch.Tensor) -> torch.Tensor:
    # sqrt's gradient is infinite at 0 where torch's std has 0: take sqrt only where var > 0.
    positive = var > 0
    return torch.where(positive, torch.where(positive, var, 1).sqrt(), var)


def _vector_norm_sig(x, ord=2, dim=None, keepdim=False, *, dtype=None, out=None):
    return x, ord, dim, keepdim, dtype


def vector_norm(func, args, kwargs):
    """``linalg.vector_norm`` for every ``ord``."""
    x, ord, dim, keepdim, dtype = bind(_vector_norm_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs)
    if not real_or_complex(x.dtype):
        torch_error(func, x, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    return finish(norm_over_split(x, ord, dims, dtype, func, args, kwargs), x, dims, keepdim, func, args, kwargs)


def _norm_sig(input, p="fro", dim=None, keepdim=False, out=None, dtype=None):
    return input, p, dim, keepdim, dtype


def norm(func, args, kwargs):
    """``torch.norm``/``Tensor.norm``: ``'fro'`` and numbers are vector norms over ``dim``;
    matrix norms (``'nuc'``) over the split axis are left to the linalg rules."""
    x, p, dim, keepdim, dtype = bind(_norm_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    if isinstance(p, str) and not (p == "fro" and (dim is None or isinstance(dim, int) or len(dim) <= 2)):
        return d.no_rule(func, args, kwargs)
    if not real_or_complex(x.dtype):
        torch_error(func, x, args, kwargs)
    ord = 2 if p is None or isinstance(p, str) else p
    return finish(norm_over_split(x, ord, dims, dtype, func, args, kwargs), x, dims, keepdim, func, args, kwargs)


def norm_over_split(x: DistTensor, ord, dims, dtype, func, args, kwargs):
    """Global vector norm over ``dims`` (which include the split axis), with keepdim.

    ``ord=0`` counts nonzeros (an allreduce); ``ord=±inf`` is the extreme of ``|x|`` (ties
    share the gradient, as in torch); any other ord is the same norm of the per-rank norms.
    """
    real = _REAL.get(dtype or x.dtype, dtype or x.dtype)
    acc = dtype or acc_dtype(x.dtype)
    no_identity = (ord < 0 or math.isinf(ord)) and _numel(x._gshape, dims) == 0
    if no_identity or torch.promote_types(x.dtype, acc) != acc:  # or a narrowing dtype=
        torch_error(func, x, args, kwargs)
    if math.isinf(ord):
        return extreme(x.to(acc).abs(), x, dims, largest=ord > 0).to(real)
    if ord < 0:  # an empty chunk has no negative norm: it counts as one infinite element
        part = torch.linalg.vector_norm(nonempty(x.to(acc).abs(), x._split, False), ord, dims, keepdim=True)
    elif x.shape[x._split] or ord == 0:
        part = torch.linalg.vector_norm(x, ord, dims, keepdim=True, dtype=acc)
    else:  # zeros on the autograd graph; torch's second derivative of an empty norm is NaN
        part = x.sum(dims, keepdim=True, dtype=acc).abs()
    if ord == 0:
        return cf.all_reduce(part, x._comm).to(real)
    return torch.linalg.vector_norm(gather_parts([part], x._comm)[0], ord, 0).to(real)


def logsumexp(func, args, kwargs):
    """``logsumexp``: the logsumexp of the per-rank logsumexps (each stable on its own:
    both steps subtract their maximum first)."""
    x, dim, keepdim = bind(_logsumexp_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    if isinstance(dim, (tuple, list)) and not dim:
        torch_error(func, x, args, kwargs)  # unlike sum, torch rejects dim=() here
    dtype = x.dtype if real_or_complex(x.dtype) else torch.get_default_dtype()
    part = torch.logsumexp(x.to(acc_dtype(dtype)), dims, keepdim=True)  # -inf for an empty chunk
    total = torch.logsumexp(gather_parts([part], x._comm)[0], 0)
    return finish(cast(total, dtype), x, dims, keepdim, func, args, kwargs)


# -- selections: extremes and their indices ------------------------------------------------
def extreme_identity(dtype: torch.dtype, largest: bool):
    """The value that loses to every element: the lowest for a max, the highest for a min."""
    if dtype == torch.bool:
        return not largest
    if dtype.is_floating_point:
        return -math.inf if largest else math.inf
    info = torch.iinfo(dtype)
    return info.min if largest else info.max


def nonempty(t: torch.Tensor, axis: int, largest: bool) -> torch.Tensor:
    """``t``, or one row of the identity along ``axis`` if ``t`` has none (an extreme of
    nothing has no value; the identity never wins against data). Stays on ``t``'s autograd
    graph, so that every rank's result requires grad alike."""
    if t.shape[axis]:
        return t
    shape = list(t.shape)
    shape[axis] = 1
    return torch.cat([t, torch.full(shape, extreme_identity(t.dtype, largest), dtype=t.dtype, device=t.device)], axis)


def _ties(t: torch.Tensor, value: torch.Tensor, nan: bool) -> torch.Tensor:
    """Where ``t`` equals the extreme ``value`` (with ``nan``: NaN ties NaN, as for ``max(x)``)."""
    eq = t == value
    return eq | (t.isnan() & value.isnan()) if nan else eq


class _Select(torch.autograd.Function):
    """``value`` (replicated), chosen from the local ``x`` elsewhere; backward sends its
    gradient to ``x`` scaled by ``weight`` (which elements were chosen, and their share).

    The replicated gradient enters split data there, so it goes through
    :func:`torchheat.comm.functional.enter_replicated`: second derivatives are exact.
    """

    @staticmethod
    def forward(ctx, x, weight, value, comm):
        ctx.save_for_backward(weight)
        ctx.comm = comm
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return cf.enter_replicated(grad, ctx.comm) * weight, None, None, None


def extreme(t: torch.Tensor, x: DistTensor, dims, largest: bool, nan_ties: bool = False) -> torch.Tensor:
    """Global amax (``largest``) or amin over ``dims``, which include the split axis, of
    ``t`` (local data in ``x``'s layout), with keepdim.

    One allreduce (NaN wins, as in torch); with a gradient, one allgather of (local
    extreme, local tie count) instead: torch shares the gradient evenly by the ties of the
    whole tensor.
    """
    comm, kernel = x._comm, torch.amax if largest else torch.amin
    part = kernel(nonempty(t, x._split, largest), dims, keepdim=True)
    if not needs_grad(t):
        return comm.allreduce(part, "max" if largest else "min")
    part = part.detach()
    values, counts = gather_parts([part, _ties(t, part, nan_ties).sum(dims, keepdim=True)], comm)
    value = kernel(values, 0)
    count = torch.where(_ties(values, value, nan_ties), counts, 0).sum(0)
    return _Select.apply(t, _ties(t, value, nan_ties).to(t.dtype) / count, value, comm)


def arg_extreme(x: DistTensor, dim, largest: bool):
    """``(values, global indices)`` of the first maximum (``largest``) or minimum along
    ``dim``, the split axis, or of the flattened tensor (``dim=None``: global row-major
    order), with keepdim.

    Every rank contributes its local extreme and that element's global index (an empty
    chunk contributes none) in one allgather; the extreme with the lowest global index
    wins, as torch returns the first occurrence (a NaN is the extreme).
    """
    comm, split = x._comm, x._split
    start = layout.offsets(x._counts)[comm.rank]
    chunk = nonempty(x, split, largest)
    kernel = torch.max if largest else torch.min
    if dim is None:
        value, index = kernel(chunk.reshape(-1), 0)
        coords = torch.unravel_index(index, chunk.shape)
        index = sum((c + start if i == split else c) * math.prod(x._gshape[i + 1:]) for i, c in enumerate(coords))
        value, index = value.reshape((1,) * chunk.dim()), index.reshape((1,) * chunk.dim())
    else:
        value, index = kernel(chunk, dim, keepdim=True)
        index = index + start
    if x.shape[split] == 0:
        index = torch.full_like(index, _NO_INDEX)
    values, indices = gather_parts([value.detach(), index], comm)
    best = (torch.amax if largest else torch.amin)(values, 0)
    return best, torch.where(_ties(values, best, nan=True), indices, _NO_INDEX).amin(0)


def _empty_extent(x: DistTensor, dims) -> bool:
    return any(x._gshape[i] == 0 for i in dims)


def _extreme_locally(func, args, kwargs, x: DistTensor, dims, keepdim):
    """The checks every extreme-value reduction shares: torch's error for complex input or an
    empty global extent, and the local result when no communication is needed (else None)."""
    if x.dtype.is_complex:
        torch_error(func, x, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    if _empty_extent(x, dims):
        torch_error(func, x, args, kwargs)
    return None


def amax_amin(func, args, kwargs):
    """``amax``/``amin``: local extremes, one allreduce."""
    x, dim, keepdim = bind(_dim_sig, func, args, kwargs)  # amax's dim=() is all dims, as None
    dims = dims_of(dim, x, func, args, kwargs)
    local = _extreme_locally(func, args, kwargs, x, dims, keepdim)
    if local is not None:
        return local
    return finish(extreme(x, x, dims, func in _LARGEST), x, dims, keepdim, func, args, kwargs)


def aminmax(func, args, kwargs):
    """``aminmax``: both extremes in one allgather (amin and amax each, with a gradient)."""
    x, dim, keepdim = bind(_aminmax_sig, func, args, kwargs)
    dims = dims_of(dim, x, func, args, kwargs) if dim is None else one_dim(dim, x, func, args, kwargs)
    local = _extreme_locally(func, args, kwargs, x, dims, keepdim)
    if local is not None:
        return local
    if needs_grad(x):
        low, high = extreme(x, x, dims, False), extreme(x, x, dims, True)
    else:
        parts = [torch.amin(nonempty(x, x._split, False), dims, keepdim=True),
                 torch.amax(nonempty(x, x._split, True), dims, keepdim=True)]
        lows, highs = gather_parts(parts, x._comm)
        low, high = lows.amin(0), highs.amax(0)
    return finish(torch.return_types.aminmax((low, high)), x, dims, keepdim, func, args, kwargs)


def max_min(func, args, kwargs):
    """``max``/``min``: ``max(x)`` and ``max(x, dim)`` are reductions, ``max(x, other)`` is
    the elementwise maximum (a pointwise op)."""
    if (len(args) > 1 and isinstance(args[1], torch.Tensor)) or "other" in kwargs:
        return elementwise(func, args, kwargs)
    x, dim, keepdim = bind(_dim_sig, func, args, kwargs)
    largest = func in _LARGEST
    if x.dtype.is_complex:
        torch_error(func, x, args, kwargs)
    if dim is None:  # the extreme of all elements; ties share the gradient
        dims = dims_of(None, x, func, args, kwargs)
        if is_local(x, dims):
            return local_reduction(func, args, kwargs, x, dims, False)
        if _empty_extent(x, dims):
            torch_error(func, x, args, kwargs)
        return finish(extreme(x, x, dims, largest, nan_ties=True), x, dims, False, func, args, kwargs)
    dims = one_dim(dim, x, func, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    if _empty_extent(x, dims):
        torch_error(func, x, args, kwargs)
    values, indices = arg_extreme(x, dims[0], largest)
    if needs_grad(x):  # the gradient goes to the returned index
        shape = [1] * x.dim()
        shape[dims[0]] = -1
        start = layout.offsets(x._counts)[x._comm.rank]
        rows = torch.arange(start, start + x.shape[dims[0]], device=x.device).reshape(shape)
        values = _Select.apply(x, (rows == indices).to(x.dtype), values, x._comm)
    kind = torch.return_types.max if largest else torch.return_types.min
    return finish(kind((values, indices)), x, dims, keepdim, func, args, kwargs)


def argmax_argmin(func, args, kwargs):
    """``argmax``/``argmin``: global indices of the first extreme."""
    x, dim, keepdim = bind(_dim_sig, func, args, kwargs)
    dims = dims_of(None, x, func, args, kwargs) if dim is None else one_dim(dim, x, func, args, kwargs)
    if x.dtype.is_complex or x.dtype == torch.bool:
        torch_error(func, x, args, kwargs)
    if is_local(x, dims):
        return local_reduction(func, args, kwargs, x, dims, keepdim)
    if _empty_extent(x, dims):
        torch_error(func, x, args, kwargs)
    _, index = arg_extreme(x, dim if dim is None else dims[0], func in _LARGEST)
    return finish(index, x, dims, keepdim, func, args, kwargs)


# -- registration --------------------------------------------------------------------------
_NAN = set(d.aliases("nansum") + d.aliases("nanmean"))
_ANY = set(d.aliases("any"))
_LARGEST = set(d.aliases("amax") + d.aliases("max") + d.aliases("argmax"))
_VAR_NAMES = {f: name for name in ("var", "std", "var_mean", "std_mean") for f in d.aliases(name)}

d.register(d.aliases("sum") + d.aliases("nansum"), sum_)
d.register(d.aliases("mean") + d.aliases("nanmean"), mean)
d.register(d.aliases("count_nonzero"), count_nonzero)
d.register(d.aliases("any") + d.aliases("all"), any_all)
d.register(d.aliases("prod"), prod)
d.register(list(_VAR_NAMES), var_std)
d.register(d.aliases("vector_norm"), vector_norm)
d.register([torch.norm, torch.Tensor.norm], norm)
d.register(d.aliases("logsumexp"), logsumexp)
d.register(d.aliases("amax") + d.aliases("amin"), amax_amin)
d.register(d.aliases("aminmax"), aminmax)
d.register(d.aliases("max") + d.aliases("min"), max_min)
d.register(d.aliases("argmax") + d.aliases("argmin"), argmax_argmin)
