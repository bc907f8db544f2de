"""Torch's OpInfo database as a conformance suite for the pointwise, reduction, scan,
softmax, shape and spectral families.

For every OpInfo of these families, a few small sample inputs run with their tensors
replicated and distributed along every axis (balanced, with rank 0 empty, and with the
operands split along different axes), with ``fallback="error"``: values, dtypes, layouts
and gradients (float64, also of the replicated operands) must be torch's on the global
tensors. Pointwise ops also run their in-place variant. An op that fails is a failing
test unless it is in :data:`EXCLUDED`, which says why; the session summary
(``pytest_terminal_summary`` in conftest.py) prints the coverage per family.
"""
import random

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.opinfo.core import BinaryUfuncInfo, ReductionOpInfo, UnaryUfuncInfo
from torch.utils import _pytree as pytree

import torchheat as th
from torchheat.testing import check_layout, skewed_counts

SAMPLES_PER_OP = 4
MAX_NUMEL = 400  # larger sample inputs are skipped: they add time, not coverage

# Families by OpInfo class; these plain OpInfos join by name (all their variants).
NAMED = {
    "pointwise": {"where", "clamp", "lerp", "addcmul", "addcdiv", "masked_fill", "logaddexp2", "nn.functional.gelu",
                  "nn.functional.leaky_relu", "nn.functional.hardswish"},
    "reductions": {"aminmax", "max", "min", "var_mean", "std_mean", "norm", "logsumexp"},
    "scans": {"cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"},
    "softmax": {"softmax", "log_softmax", "nn.functional.softmin"},
    "linalg": {"matmul", "mm", "bmm", "mv", "dot", "vdot", "inner", "outer", "addmm", "addmv", "addr", "baddbmm", "addbmm",
               "chain_matmul", "linalg.multi_dot", "linalg.vecdot", "linalg.matmul", "__rmatmul__",
               "linalg.cholesky", "linalg.cholesky_ex", "linalg.cond", "linalg.cross", "linalg.det", "linalg.diagonal",
               "linalg.eig", "linalg.eigh", "linalg.eigvals", "linalg.eigvalsh", "linalg.householder_product", "linalg.inv",
               "linalg.inv_ex", "linalg.ldl_factor", "linalg.ldl_factor_ex", "linalg.ldl_solve", "linalg.lstsq", "linalg.lu",
               "linalg.lu_factor", "linalg.lu_factor_ex", "linalg.lu_solve", "linalg.matrix_norm", "linalg.matrix_power",
               "linalg.matrix_rank", "linalg.norm", "linalg.pinv", "linalg.polar", "linalg.qr", "linalg.slogdet",
               "linalg.solve", "linalg.solve_ex", "linalg.solve_triangular", "linalg.svd", "linalg.svdvals",
               "linalg.tensorinv", "linalg.tensorsolve", "linalg.vander", "linalg.matrix_sqrth"},
    "sorting": {"sort", "argsort", "msort", "topk", "kthvalue", "median", "nanmedian", "quantile", "nanquantile", "mode",
                "unique", "unique_consecutive", "searchsorted", "bucketize", "histc", "histogram", "bincount", "isin",
                "cov", "corrcoef"},
    "indexing": {"__getitem__", "index_select", "gather", "take", "take_along_dim", "masked_select", "nonzero",
                 "nonzero_static", "argwhere", "scatter", "scatter_add", "scatter_reduce", "index_add", "index_copy",
                 "index_fill", "index_reduce", "put", "index_put", "masked_scatter", "select_scatter", "slice_scatter",
                 "diagonal_scatter", "equal"},
    "shape": {"H", "T", "mH", "mT", "t", "transpose", "permute", "movedim", "squeeze", "unsqueeze", "narrow",
              "narrow_copy", "select", "clone", "contiguous", "reshape", "reshape_as", "view", "view_as", "flatten",
              "unflatten", "ravel", "cat", "stack", "hstack", "vstack", "dstack", "column_stack", "atleast_1d",
              "atleast_2d", "atleast_3d", "flip", "fliplr", "flipud", "rot90", "roll", "nn.functional.pad",
              "constant_pad_nd", "repeat", "tile", "repeat_interleave", "diag", "diagonal", "diag_embed", "diagflat",
              "tril", "triu", "trace", "expand", "expand_as", "broadcast_to", "split", "split_with_sizes", "chunk",
              "tensor_split", "unbind", "hsplit", "vsplit", "dsplit", "block_diag", "view_copy", "transpose_copy",
              "permute_copy", "t_copy", "diagonal_copy", "unsqueeze_copy", "squeeze_copy", "expand_copy", "unfold_copy",
              "alias_copy", "split_with_sizes_copy", "unbind_copy"},
    "spectral": {f"fft.{k}{v}" for k in ("fft", "ifft", "rfft", "irfft", "hfft", "ihfft") for v in ("", "2", "n")}
                | {"fft.fftshift", "fft.ifftshift", "trapezoid", "trapz", "cumulative_trapezoid", "gradient",
                   "histogramdd", "stft", "istft"},
    "nn.functional": {
        "nn.functional." + name for name in (
            "linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
            "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
            "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
            "adaptive_max_pool3d", "fractional_max_pool2d", "fractional_max_pool3d", "max_unpool1d", "max_unpool2d",
            "max_unpool3d", "embedding", "embedding_bag", "one_hot", "interpolate", "upsample_bilinear",
            "upsample_nearest", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "grid_sample", "unfold",
            "normalize", "scaled_dot_product_attention", "multi_head_attention_forward", "batch_norm", "layer_norm",
            "group_norm", "instance_norm", "rms_norm", "local_response_norm", "cross_entropy", "nll_loss", "mse_loss",
            "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
            "kl_div", "poisson_nll_loss", "gaussian_nll_loss", "margin_ranking_loss", "hinge_embedding_loss",
            "soft_margin_loss", "multilabel_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss",
            "cosine_embedding_loss", "triplet_margin_loss", "triplet_margin_with_distance_loss", "ctc_loss",
            "linear_cross_entropy", "dropout", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
            "prelu", "glu", "relu", "relu6", "elu", "selu", "celu", "silu", "mish", "softplus", "softsign",
            "softshrink", "hardshrink", "tanhshrink", "hardtanh", "hardsigmoid", "logsigmoid", "threshold",
        )
    },
}

# Contractions and distances (ops/einsum.py, ops/distance.py) in the linalg family.
NAMED["linalg"] |= {"einsum", "tensordot", "kron", "cdist", "nn.functional.pdist", "nn.functional.pairwise_distance",
                    "nn.functional.cosine_similarity"}

# Families whose ops mix some axes of their input (channels, features, spatial windows) and keep
# others independent (the batch): a layout split along a mixed axis raises NotDistributedError
# by design and is skipped; the op passes only if its samples ran with some split input.
MIXED_AXES = {"nn.functional"}

# Ops of these families that are not checked, with the reason. Counted as not passed.
EXCLUDED = {
    "nn.functional.rrelu": "training=True samples draw random slopes, so torch's own result is not reproducible; "
                           "for split input torchheat raises NotDistributedError by design",
    "norm.nuc": "the nuclear norm is a sum of singular values: an SVD (linalg family), not a reduction",
    "unbind": "unbind along the split axis would give tensors that each live on one rank: NotDistributedError by design",
    "unbind_copy": "unbind along the split axis would give tensors that each live on one rank: NotDistributedError by "
                   "design",
    "view_as": "view raises torch's view error where the rows of the view would span ranks (by design, as reshape "
               "copies)",
    "view": "view raises torch's view error where the rows of the view would span ranks (by design, as reshape copies)",
    **{f"linalg.{name}": "no distributed algorithm yet for a matrix split along a matrix axis (batch-split inputs run "
                         "locally)"
       for name in ("eig", "eigvals", "ldl_factor", "ldl_factor_ex", "ldl_solve")},
    "nn.functional.multi_head_attention_forward": "its one OpInfo sample runs in training with dropout 0.5: the mask "
                                                  "comes from torchheat's random stream (the same for every process "
                                                  "count), not from torch's global generator (tests/test_nn_layers.py)",
    "linalg.eigh": "eigenvectors are compared entry by entry, and torch (LAPACK) fixes no sign for them "
                   "(tests/test_linalg_jacobi.py compares sign-invariant quantities and gradients)",
    "nn.functional.ctc_loss": "its OpInfo samples are larger than MAX_NUMEL (tests/test_losses.py covers it)",
    **{f"nn.functional.{name}": "in training mode the mask comes from torchheat's random stream (the same for every "
                                "process count), not from torch's global generator (tests/test_nn_functional.py)"
       for name in ("dropout", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout.with_train")},
    "nn.functional.fractional_max_pool2d": "its random pooling regions come from torchheat's stream (the same for every "
                                           "process count), not from torch's global generator",
    "nn.functional.fractional_max_pool3d": "its random pooling regions come from torchheat's stream (the same for every "
                                           "process count), not from torch's global generator",
}


def draws_randomly(op, sample) -> bool:
    """Whether the sample draws random numbers inside the op (attention dropout): torchheat draws
    them from its own stream (the same for every process count, tests/test_nn_layers.py), so
    torch's result, drawn from its global generator, is not the one to compare with. Such
    samples are not chosen."""
    return op.name == "nn.functional.scaled_dot_product_attention" and sample.kwargs.get("dropout_p", 0) > 0


def op_id(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def family(op):
    """The rule family an OpInfo belongs to, or None."""
    if op.name.startswith("jiterator_"):  # CUDA kernels compiled at run time: no CPU op
        return None
    if isinstance(op, (UnaryUfuncInfo, BinaryUfuncInfo)):
        return "pointwise"
    if isinstance(op, ReductionOpInfo):
        return "reductions"
    return next((f for f, names in NAMED.items() if op.name in names), None)


OPS = [op for op in op_db if family(op) and op.supported_dtypes("cpu")]


def pick_dtype(op) -> torch.dtype:
    supported = op.supported_dtypes("cpu")
    preferred = (torch.float64, torch.float32, torch.int64, torch.int32, torch.bool, torch.complex128)
    return next((t for t in preferred if t in supported), None) or sorted(supported, key=str)[0]


def samples(op, dtype):
    """The first SAMPLES_PER_OP small samples, plus later ones until two of them have
    several tensors with dimensions (the ones that exercise alignment)."""
    grad = op.supports_autograd and dtype in op.supported_backward_dtypes("cpu")
    chosen, rich = [], 0
    # The raw generator: op.sample_inputs wraps it in a tracker that inspects the stack per sample.
    for i, s in enumerate(op.sample_inputs_func(op, "cpu", dtype, grad)):
        tensors = [t for t in pytree.tree_leaves((s.input, s.args, s.kwargs)) if isinstance(t, torch.Tensor)]
        if not tensors or any(t.numel() > MAX_NUMEL for t in tensors) or draws_randomly(op, s):
            continue
        is_rich = sum(t.dim() > 0 for t in tensors) > 1
        if len(chosen) < SAMPLES_PER_OP or (is_rich and rich < 2):
            chosen.append(s)
            rich += is_rich
        if (len(chosen) >= SAMPLES_PER_OP and rich >= 2) or i == 50:
            break
    return chosen


# -- placing a sample's tensors ----------------------------------------------------------------
def configs(tensors):
    """``(axis, mode)``: axis None is replicated; otherwise ``axis`` counts in the broadcast
    rank (tensors right-aligned) and the first tensor is split along it (if it has it):
    ``"balanced"`` with every tensor that has the axis split alike, ``"skewed"`` with rank 0
    empty and the other tensors plain (replicated), ``"crossed"`` with the others split
    along their next axis."""
    yield None, None
    for axis in range(max(t.dim() for t in tensors)):
        yield axis, "balanced"
        yield axis, "skewed"
        if len(tensors) > 1:
            yield axis, "crossed"


def place(sample, axis, mode, comm):
    """The sample's (input, args, kwargs) with its tensors as fresh leaves laid out by
    ``(axis, mode)``, and the list of those leaves; None when no tensor is split so."""
    leaves, spec = pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    ndim = max(t.dim() for t in tensors)
    placed, new_leaves = [], []
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            placed.append(leaf)
            continue
        first = leaf is tensors[0]
        t = leaf.detach().clone()
        a = None if axis is None else axis - (ndim - t.dim())
        if axis is None:
            new = th.distribute(t) if first else t
        elif a >= 0 and (first or mode == "balanced"):
            new = th.distribute(t, a, counts=skewed_counts(t.shape[a], comm.size) if mode == "skewed" else None)
        elif mode == "crossed" and not first and t.dim():
            new = th.distribute(t, (max(a, 0) + 1) % t.dim())
        else:
            new = t
        new.requires_grad_(leaf.requires_grad)
        placed.append(new)
        new_leaves.append(new)
    if axis is not None and not any(isinstance(t, th.DistTensor) and t.split_dim is not None for t in new_leaves):
        return None
    return pytree.tree_unflatten(placed, spec), new_leaves


def globals_of(sample):
    """Fresh global leaves of the sample, like :func:`place` makes distributed ones."""
    leaves, spec = pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    new = [t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t for t in leaves]
    return pytree.tree_unflatten(new, spec), [t for t in new if isinstance(t, torch.Tensor)]


# -- comparing -----------------------------------------------------------------------------------
def full(t):
    return t.full() if isinstance(t, th.DistTensor) else t


def compare_outputs(got, expected, where):
    got_leaves, expected_leaves = pytree.tree_leaves(got), pytree.tree_leaves(expected)
    assert len(got_leaves) == len(expected_leaves), f"{where}: {len(got_leaves)} outputs, expected {len(expected_leaves)}"
    for g, e in zip(got_leaves, expected_leaves):
        if isinstance(e, torch.Tensor):
            assert isinstance(g, th.DistTensor), f"{where}: got a {type(g).__name__}, expected a DistTensor"
            check_layout(g)
            torch.testing.assert_close(g.full().detach(), e.detach(), equal_nan=True, msg=lambda m: f"{where}: {m}")
        else:
            assert g == e or (g != g and e != e), f"{where}: got {g!r}, expected {e!r}"


def weighted_loss(outputs, weights):
    loss = 0
    for o, w in zip(outputs, weights):
        loss = loss + (torch.view_as_real(o.resolve_conj()) if o.is_complex() else o).mul(w).sum()
    return loss


def differentiable(out, sample):
    return [o for o in pytree.tree_leaves(sample.output_process_fn_grad(out))
            if isinstance(o, torch.Tensor) and o.requires_grad and (o.is_floating_point() or o.is_complex())]


def check_sample(op, sample, comm, inplace: bool, moved: list, sizes: list, ran: list):
    """Check every layout of ``sample``; append to ``moved`` the bytes this rank sent in each
    gathering collective of each forward, to ``sizes`` the bytes that make a gather of one
    of its split inputs whole (:func:`whole_gather_bytes`, :func:`gathered_whole_input`), and
    to ``ran`` the split axis of each layout that ran."""
    (inp, args, kwargs), ref_leaves = globals_of(sample)
    try:
        expected = op(inp, *args, **kwargs)
    except Exception:  # not a valid call of torch itself: nothing to compare
        return
    ref_outs = differentiable(expected, sample)
    results = [t for t in pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    out_numel, out_bytes = max((t.numel() for t in results), default=0), sum(t.numel() * t.element_size() for t in results)
    weights, ref_grads = None, None
    if ref_outs:
        gen = torch.Generator().manual_seed(0)
        weights = [torch.randn((torch.view_as_real(o.resolve_conj()) if o.is_complex() else o).shape, generator=gen, dtype=o.real.dtype)
                   for o in ref_outs]
        try:
            weighted_loss(ref_outs, weights).backward()
            ref_grads = [t.grad for t in ref_leaves]
        except Exception:  # torch has no derivative for this input
            ref_grads = None
    for axis, mode in configs(ref_leaves):
        layout = place(sample, axis, mode, comm)
        if layout is None:
            continue
        (x, xargs, xkwargs), leaves = layout
        where = f"sample {sample.name or sample!r:.120}, split={axis} {mode or ''}"
        try:
            with th.debug.comm_log() as log:
                got = op(x, *xargs, **xkwargs)
        except th.NotDistributedError:
            if family(op) not in MIXED_AXES:
                raise
            continue  # an axis the op mixes: no rule by design (see MIXED_AXES)
        ran.append(axis)
        sizes.append(min((whole_gather_bytes(t, out_numel, out_bytes, comm.size) for t in leaves if isinstance(t, th.DistTensor)
                          and t.split_dim is not None and t.shape[t.split_dim] > 2 * comm.size), default=0))
        moved.append([e.nbytes for e in log if e.collective in GATHERS])
        compare_outputs(got, expected, where)
        if ref_grads is not None:
            outs = differentiable(pytree.tree_map(full, got), sample)
            weighted_loss(outs, weights).backward()
            for i, (leaf, g) in enumerate(zip(leaves, ref_grads)):
                mine = full(leaf.grad) if leaf.grad is not None else None
                if g is None:
                    assert mine is None or not mine.any(), f"{where}: gradient of tensor {i} should be None"
                else:
                    assert mine is not None, f"{where}: no gradient for tensor {i}"
                    torch.testing.assert_close(mine, g, equal_nan=True, msg=lambda m: f"{where}, gradient {i}: {m}")
        if inplace:
            check_inplace(op, sample, comm, axis, mode, where)


def check_inplace(op, sample, comm, axis, mode, where):
    """The in-place variant writes torch's values into the input, in the input's layout."""
    detached = type(sample)(sample.input.detach(), args=pytree.tree_map(_detach, sample.args),
                            kwargs=pytree.tree_map(_detach, sample.kwargs))
    (inp, args, kwargs), _ = globals_of(detached)
    try:
        op.inplace_variant(inp, *args, **kwargs)
        error = None
    except Exception as e:
        error = e
    (x, xargs, xkwargs), _ = place(detached, axis, mode, comm)
    if not isinstance(x, th.DistTensor):
        return
    if error is not None:
        with pytest.raises(type(error)):
            op.inplace_variant(x, *xargs, **xkwargs)
        return
    counts = x.counts
    res = op.inplace_variant(x, *xargs, **xkwargs)
    assert res is x and x.counts == counts, f"{where}: in-place result is not the input in its layout"
    torch.testing.assert_close(x.full(), inp, equal_nan=True, msg=lambda m: f"{where}, in-place: {m}")


def _detach(t):
    return t.detach() if isinstance(t, torch.Tensor) else t


@pytest.mark.parametrize("op", OPS, ids=lambda op: f"{family(op)}:{op_id(op)}")
def test_opinfo(op, comm, record_property):
    record_property("family", family(op))
    if op_id(op) in EXCLUDED:
        pytest.skip(EXCLUDED[op_id(op)])
    inplace = family(op) == "pointwise" and op.inplace_variant is not None
    random.seed(0)  # some sample generators draw scalar arguments (margins, deltas) with Python's random
    problem, moved, sizes, ran = None, [], [], []
    try:
        for sample in samples(op, pick_dtype(op)):
            writable = isinstance(sample.input, torch.Tensor) and not sample.broadcasts_input
            check_sample(op, sample, comm, inplace and writable, moved, sizes, ran)
        if family(op) in MIXED_AXES and not any(a is not None for a in ran):
            raise AssertionError("no sample ran with a split input: the op has no distributed rule")
    except Exception as e:  # every rank learns every rank's outcome: all fail alike, none hangs
        problem = f"{type(e).__name__}: {e}"
    outcomes = comm.allgather_obj((problem, moved))
    failed = [(r, p) for r, (p, _) in enumerate(outcomes) if p is not None]
    if failed:
        pytest.fail(f"{op_id(op)} on rank(s) {[r for r, _ in failed]}: {failed[0][1]}", pytrace=False)
    record_property("whole_gather", gathered_whole_input([m for _, m in outcomes], sizes))


# Collectives that leave one rank's data on others. A forward ran a whole-input gather when one
# of its gathering collectives moved (all ranks' bytes together) as much as one split input
# held, whatever the op's rule calls it.
GATHERS = ("allgather", "gather", "bcast")


def whole_gather_bytes(t, out_numel: int, out_bytes: int, ranks: int) -> int:
    """The bytes a gather must move to count as a gather of the whole input ``t``.

    Only inputs with more than two rows per rank along the split axis count (a scan's carry,
    one row of values and one of indices per rank, is less). Where the result is smaller than ``t`` (a reduction, an operand
    broadcast along the result's split axis), a gather of per-rank partial results (values
    with indices, means with squared deviations) is at most a few results per rank, so it
    must also exceed four results per rank.
    """
    size = t.numel() * t.element_size() if ranks > 1 else 0  # one rank: nothing moves
    return size if out_numel >= t.numel() else max(size, 4 * ranks * out_bytes + 1)


def gathered_whole_input(moved_per_rank, sizes) -> bool:
    """Whether some forward moved one of its split inputs whole through one gathering
    collective (all ranks' bytes summed; every rank runs the same collectives in the same
    order, and ``sizes`` is the same on every rank)."""
    return any(0 < size <= max(map(sum, zip(*(m[i] for m in moved_per_rank))), default=0) for i, size in enumerate(sizes))
