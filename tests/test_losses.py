"""nn.functional losses on batch-split inputs against torch on the global batch: values of
every reduction and gradients of the input and of the replicated weights."""
import re

import pytest
import torch
import torch.nn.functional as F

import torchheat as th
from torchheat.testing import assert_dist_close, skewed_counts

D = torch.float64


def _data():
    g = torch.Generator().manual_seed(1)
    n, c = 7, 4
    r = lambda *s: torch.randn(*s, generator=g, dtype=D)  # noqa: E731
    labels = torch.randint(0, c, (n,), generator=g)
    labels[2] = -100
    return {
        "x": r(n, c), "y": r(n, c), "z": r(n, c), "x3": r(n, c, 3), "labels": labels,
        "labels3": torch.randint(0, c, (n, 3), generator=g), "probs": r(n, c).softmax(1), "p01": torch.rand(n, c, generator=g, dtype=D),
        "sign": torch.randint(0, 2, (n,), generator=g).to(D) * 2 - 1, "signs": torch.randint(0, 2, (n, c), generator=g).to(D) * 2 - 1,
        "v": r(n), "w": r(n), "cw": torch.rand(c, generator=g, dtype=D) + 0.5, "pw": torch.rand(c, generator=g, dtype=D) + 0.5,
        "var": torch.rand(n, c, generator=g, dtype=D) + 0.1, "multilabel": torch.tensor([[3, 0, -1, 1]] * n),
    }


# name -> (loss(input, data, weight), reductions, split axes of the input, weight key or None)
CASES = {
    "cross_entropy": (lambda x, t, w, r: F.cross_entropy(x, t["labels"], reduction=r), 0),
    "cross_entropy_weight": (lambda x, t, w, r: F.cross_entropy(x, t["labels"], weight=w, reduction=r), 0, "cw"),
    "cross_entropy_smooth": (lambda x, t, w, r: F.cross_entropy(x, t["labels"], weight=w, label_smoothing=0.2, reduction=r), 0, "cw"),
    "cross_entropy_probs": (lambda x, t, w, r: F.cross_entropy(x, t["probs"], weight=w, label_smoothing=0.1, reduction=r), 0, "cw"),
    "cross_entropy_spatial": (lambda x, t, w, r: F.cross_entropy(x, t["labels3"], ignore_index=1, reduction=r), 0, None, "x3"),
    "cross_entropy_spatial_split2": (lambda x, t, w, r: F.cross_entropy(x, t["labels3"], weight=w, reduction=r), 2, "cw", "x3"),
    "nll_loss": (lambda x, t, w, r: F.nll_loss(x.log_softmax(1), t["labels"], weight=w, reduction=r), 0, "cw"),
    "mse_loss": (lambda x, t, w, r: F.mse_loss(x, t["y"], reduction=r), 1),
    "l1_loss": (lambda x, t, w, r: F.l1_loss(x, t["y"], reduction=r), 0),
    "smooth_l1_loss": (lambda x, t, w, r: F.smooth_l1_loss(x, t["y"], beta=0.5, reduction=r), 1),
    "huber_loss": (lambda x, t, w, r: F.huber_loss(x, t["y"], delta=0.7, reduction=r), 0),
    "binary_cross_entropy": (lambda x, t, w, r: F.binary_cross_entropy(x.sigmoid(), t["p01"], weight=w, reduction=r), 0, "pw"),
    "bce_with_logits": (lambda x, t, w, r: F.binary_cross_entropy_with_logits(x, t["p01"], pos_weight=w, reduction=r), 0, "pw"),
    "bce_with_logits_split1": (lambda x, t, w, r: F.binary_cross_entropy_with_logits(x, t["p01"], pos_weight=w, reduction=r), 1, "pw"),
    "kl_div": (lambda x, t, w, r: F.kl_div(x.log_softmax(1), t["probs"], reduction="batchmean" if r == "mean" else r), 0),
    "kl_div_log_target": (lambda x, t, w, r: F.kl_div(x.log_softmax(1), t["probs"].log(), reduction=r, log_target=True), 1),
    "poisson_nll_loss": (lambda x, t, w, r: F.poisson_nll_loss(x, t["p01"], reduction=r), 0),
    "gaussian_nll_loss": (lambda x, t, w, r: F.gaussian_nll_loss(x, t["y"], t["var"], reduction=r), 0),
    "gaussian_nll_loss_var1": (lambda x, t, w, r: F.gaussian_nll_loss(x, t["y"], t["var"][:, 0], full=True, reduction=r), 0),
    "margin_ranking_loss": (lambda x, t, w, r: F.margin_ranking_loss(x[:, 0], t["v"], t["sign"], margin=0.1, reduction=r), 0),
    "hinge_embedding_loss": (lambda x, t, w, r: F.hinge_embedding_loss(x, t["signs"], reduction=r), 1),
    "soft_margin_loss": (lambda x, t, w, r: F.soft_margin_loss(x, t["signs"], reduction=r), 0),
    "multilabel_margin_loss": (lambda x, t, w, r: F.multilabel_margin_loss(x, t["multilabel"], reduction=r), 0),
    "multilabel_soft_margin_loss": (lambda x, t, w, r: F.multilabel_soft_margin_loss(x, t["p01"].round(), weight=w, reduction=r), 0, "cw"),
    "multi_margin_loss": (lambda x, t, w, r: F.multi_margin_loss(x, t["labels"].clamp(min=0), p=2, weight=w, reduction=r), 0, "cw"),
    "cosine_embedding_loss": (lambda x, t, w, r: F.cosine_embedding_loss(x, t["y"], t["sign"], margin=0.2, reduction=r), 0),
    "triplet_margin_loss": (lambda x, t, w, r: F.triplet_margin_loss(x, t["y"], t["z"], swap=True, reduction=r), 0),
    "triplet_margin_with_distance_loss": (lambda x, t, w, r: F.triplet_margin_with_distance_loss(
        x, t["y"], t["z"], distance_function=lambda a, b: (a - b).abs().sum(-1), reduction=r), 0),
}


def _layouts(t, axis, comm):
    yield th.distribute(t, axis)
    if comm.size > 1:
        yield th.distribute(t, axis, counts=skewed_counts(t.shape[axis], comm.size))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", CASES)
def test_loss(name, reduction, comm):
    fn, axis, wkey, xkey = (CASES[name] + (None, None))[:4]
    data = _data()
    t = data[xkey or "x"]
    w = data[wkey].clone().requires_grad_() if wkey else None
    tt = t.clone().requires_grad_()
    try:
        expected = fn(tt, data, w, reduction)
    except RuntimeError:  # torch has no gradient for these weights
        w = w.detach()
        expected = fn(tt, data, w, reduction)
    weights = torch.randn(expected.shape, dtype=D)
    (expected * weights).sum().backward()
    ref_w = w.grad.clone() if w is not None and w.requires_grad else None
    for x in _layouts(t, axis, comm):
        x.requires_grad_()
        if w is not None and w.requires_grad:
            w.grad = None
        got = fn(x, data, w, reduction)
        assert_dist_close(got, expected)
        (got * weights).sum().backward()
        assert_dist_close(x.grad, tt.grad, split=axis)
        if w is not None and w.requires_grad:
            torch.testing.assert_close(w.grad, ref_w)


def test_ctc_loss(comm):
    g = torch.Generator().manual_seed(3)
    T, n, c, s = 6, 5, 4, 3
    logits = torch.randn(T, n, c, generator=g, dtype=D)
    targets = torch.randint(1, c, (n, s), generator=g)
    in_len, tgt_len = torch.tensor([6, 5, 6, 4, 6]), torch.tensor([3, 2, 1, 3, 2])
    for reduction in ("mean", "sum", "none"):
        tt = logits.clone().requires_grad_()
        expected = F.ctc_loss(tt.log_softmax(2), targets, in_len, tgt_len, reduction=reduction)
        expected.sum().backward()
        for x in _layouts(logits, 1, comm):
            x.requires_grad_()
            got = F.ctc_loss(x.log_softmax(2), targets, in_len, tgt_len, reduction=reduction)
            assert_dist_close(got, expected)
            got.sum().backward()
            assert_dist_close(x.grad, tt.grad, split=1)


def test_legacy_arguments_and_modules(comm):
    data = _data()
    x = th.distribute(data["x"], 0)
    assert_dist_close(F.mse_loss(x, data["y"], size_average=False), F.mse_loss(data["x"], data["y"], size_average=False))
    loss = torch.nn.CrossEntropyLoss(weight=data["cw"], label_smoothing=0.1)
    assert_dist_close(loss(x, data["labels"]), loss(data["x"], data["labels"]))
    labels = th.distribute(data["labels"], 0)  # targets split alike
    assert_dist_close(F.nll_loss(x, labels), F.nll_loss(data["x"], data["labels"]))


# A bad target only one rank holds (the last row: the last rank's; the first with rank 0 empty: rank 1's).
BAD_TARGETS = {
    "cross_entropy": lambda x, t: F.cross_entropy(x, t),
    "nll_loss, sum": lambda x, t: F.nll_loss(x, t, reduction="sum"),
    "nll_loss, none": lambda x, t: F.nll_loss(x, t, reduction="none"),
    "multi_margin_loss": lambda x, t: F.multi_margin_loss(x, t),
}


@pytest.mark.parametrize("name", BAD_TARGETS)
def test_a_bad_target_on_one_rank_raises_torchs_error_on_every_rank(name, comm):
    fn, x = BAD_TARGETS[name], torch.randn(5, 4, dtype=D)
    for row, counts in ((-1, None), (0, skewed_counts(5, comm.size))):
        for value in (4, -3):
            t = torch.tensor([0, 1, 2, 3, 1])
            t[row] = value
            try:
                fn(x, t)
            except Exception as e:
                kind, message = type(e), str(e).splitlines()[0]
            with pytest.raises(kind, match=re.escape(message)):
                fn(th.distribute(x, 0, counts=counts), th.distribute(t, 0, counts=counts))
    p = torch.rand(5, 4, dtype=D)
    p[-1, 0] = 1.5  # a probability above 1 on the last rank
    with pytest.raises(RuntimeError, match=re.escape("all elements of input should be between 0 and 1")):
        F.binary_cross_entropy(th.distribute(p, 0), torch.rand(5, 4, dtype=D))


def test_bad_class_index_raises_everywhere(comm):
    data = _data()
    labels = data["labels"].clone()
    labels[-1] = 9  # on the last rank only
    with pytest.raises((IndexError, RuntimeError)):
        F.cross_entropy(th.distribute(data["x"], 0), labels)
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        F.mse_loss(th.distribute(data["x"], 0), data["y"], reduction="bogus")



def _bad_values():
    """Calls with a bad value on the last rank only, in an argument other than a class index:
    (loss, its tensors, the axis each is split along)."""
    x, var = torch.randn(5, 4, dtype=D), torch.ones(5, dtype=D)
    var[-1] = -1
    labels = torch.tensor([[0, 1, -1, 0]] * 4 + [[1, 7, -1, 0]])
    pixels = torch.zeros(2, 5, dtype=torch.long)
    pixels[-1, -1] = 9
    return {
        "gaussian_nll_loss, negative var": (lambda x, v: F.gaussian_nll_loss(x[:, 0], x[:, 1], v), (x, var), (0, 0)),
        "multilabel_margin_loss, label out of range": (F.multilabel_margin_loss, (x, labels), (0, 0)),
        "cross_entropy, split along a spatial axis": (F.cross_entropy, (torch.randn(2, 4, 5, dtype=D), pixels), (2, 1)),
    }


@pytest.mark.parametrize("name", list(_bad_values()))
def test_a_bad_value_on_one_rank_raises_torchs_error_on_every_rank(name, comm):
    fn, tensors, axes = _bad_values()[name]
    try:
        fn(*tensors)
    except Exception as e:
        kind, message = type(e), str(e).splitlines()[0]
    with pytest.raises(kind, match=re.escape(message)):
        fn(*(th.distribute(t, a) for t, a in zip(tensors, axes)))
