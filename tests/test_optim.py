"""Optimizers on replicated parameters: every torch.optim optimizer (for-loop, foreach and
fused paths) after a distributed backward, and ShardedOptimizer (ZeRO-1) against the
unsharded optimizer, with parameter groups, a learning-rate schedule and checkpoints.

Gradients come from a linear model on a batch-split DistTensor (the exact global gradient
on every rank); the reference is plain torch on the global batch.
"""
import pytest
import torch
import torch.nn as nn

import torchheat as th
from torchheat.testing import assert_replicated_close, skewed_counts

STEPS = 2
FUSED = ("SGD", "Adam", "AdamW", "Adagrad")  # the ones with a fused CPU path
OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True),
    "Adam": dict(lr=0.01, amsgrad=True),
    "AdamW": dict(lr=0.01, weight_decay=0.1),
    "Adamax": dict(lr=0.01),
    "NAdam": dict(lr=0.01),
    "RAdam": dict(lr=0.01),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True),
    "Rprop": dict(lr=0.01),
    "Adagrad": dict(lr=0.1),
    "Adadelta": dict(lr=1.0),
    "ASGD": dict(lr=0.01),
}
PATHS = [(name, path) for name in OPTIMIZERS for path in ("for-loop", "foreach") + (("fused",) if name in FUSED else ())]


class Model(nn.Module):
    """Two layers through matmul (rules every layout has)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w1, self.b1 = nn.Parameter(torch.randn(4, 6) / 2), nn.Parameter(torch.zeros(6))
        self.w2 = nn.Parameter(torch.randn(6, 1) / 2)

    def forward(self, x):
        return torch.tanh(x @ self.w1 + self.b1) @ self.w2


def data():
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(9, 4, generator=g), torch.randn(9, 1, generator=g)) for _ in range(STEPS)]


def run(opt, model, batches, split, schedule=None):
    for x, y in batches:
        if split:
            counts = skewed_counts(9, th.get_comm().size)
            x, y = th.distribute(x, 0, counts=counts), th.distribute(y, 0, counts=counts)

        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        opt.step(closure) if isinstance(opt, torch.optim.LBFGS) else (closure(), opt.step())
        if schedule is not None:
            schedule.step()
    return [p.detach() for p in model.parameters()]


def options(name, path):
    kw = dict(OPTIMIZERS[name])
    kw.update({"for-loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[path])
    return kw


@pytest.mark.parametrize("name, path", PATHS + [("LBFGS", "closure")])
def test_torch_optimizers_step_replicated_parameters_identically(comm, name, path):
    cls = getattr(torch.optim, name)
    kw = dict(lr=0.5, max_iter=4) if name == "LBFGS" else options(name, path)
    batches = data()
    ref = Model()
    expected = run(cls(ref.parameters(), **kw), ref, batches, split=False)
    model = Model()
    assert_replicated_close(run(cls(model.parameters(), **kw), model, batches, split=True), expected, rtol=1e-5, atol=1e-6)


def groups(model):
    return [{"params": [model.w1, model.b1]}, {"params": [model.w2], "lr": 0.003}]


@pytest.mark.parametrize("name, path", [(n, p) for n, p in PATHS if n in ("SGD", "Adam", "AdamW", "RMSprop")])
def test_sharded_optimizer_is_the_unsharded_one(comm, name, path):
    cls, kw = getattr(torch.optim, name), options(name, path)
    batches = data()
    ref = Model()
    plain = cls(groups(ref), **kw)
    expected = run(plain, ref, batches, split=False, schedule=torch.optim.lr_scheduler.StepLR(plain, 1, gamma=0.5))
    model = Model()
    sharded = th.optim.ShardedOptimizer(cls, groups(model), **kw)
    got = run(sharded, model, batches, split=True, schedule=torch.optim.lr_scheduler.StepLR(sharded, 1, gamma=0.5))
    assert_replicated_close(got, expected, rtol=1e-5, atol=1e-6)
    assert [g["lr"] for g in sharded.param_groups] == [g["lr"] for g in plain.param_groups]

    # state for the owned parameters only: each parameter's state on exactly one rank
    owned = [int(any(p is q for q in sharded.state)) for p in model.parameters()]
    assert comm.allreduce(torch.tensor(owned)).tolist() == [1, 1, 1]

    # the state dict is the unsharded optimizer's, on every rank
    saved, expected_sd = sharded.state_dict(), plain.state_dict()
    assert saved["param_groups"] == expected_sd["param_groups"]
    assert sorted(saved["state"]) == sorted(expected_sd["state"])
    for k, state in expected_sd["state"].items():
        assert sorted(saved["state"][k]) == sorted(state)
        assert_replicated_close([saved["state"][k][s] for s in sorted(state)], [state[s] for s in sorted(state)], rtol=1e-5, atol=1e-6)


def test_sharded_optimizer_checkpoints(comm):
    """Two plain steps, the plain optimizer's state dict loaded into a sharded one, two more
    steps: the parameters of four plain steps; and back into a plain optimizer."""
    batches = data() + data()
    ref = Model()
    plain = torch.optim.Adam(groups(ref), lr=0.01)
    expected = run(plain, ref, batches, split=False)

    model = Model()
    first = torch.optim.Adam(groups(model), lr=0.01)
    run(first, model, batches[:2], split=True)
    sharded = th.optim.ShardedOptimizer(torch.optim.Adam, groups(model), lr=0.01)
    sharded.load_state_dict(first.state_dict())
    run(sharded, model, batches[2:3], split=True)
    last = torch.optim.Adam(groups(model), lr=0.01)
    last.load_state_dict(sharded.state_dict())
    assert_replicated_close(run(last, model, batches[3:], split=True), expected, rtol=1e-5, atol=1e-6)


def test_more_ranks_than_parameters(comm):
    w = nn.Parameter(torch.ones(3))
    opt = th.optim.ShardedOptimizer(torch.optim.SGD, [w], lr=0.5)
    w.grad = torch.ones(3)
    opt.step()
    assert_replicated_close(w.detach(), torch.full((3,), 0.5))
    assert list(opt.state_dict()["state"]) == []  # plain SGD without momentum keeps no state


def test_owners_balance_the_elements():
    from torchheat.optim.sharded import owners

    assert owners([10, 1, 5, 5], 2) == [0, 0, 1, 1]
    assert owners([3, 3, 3], 3) == [0, 1, 2] and owners([3, 3], 1) == [0, 0]


def test_sharded_optimizer_bad_input(comm):
    model = Model()
    with pytest.raises(TypeError, match="optimizer_cls must be a torch.optim.Optimizer subclass"):
        th.optim.ShardedOptimizer(lambda ps: None, model.parameters())
    with pytest.raises(ValueError, match="LBFGS couples all parameters"):
        th.optim.ShardedOptimizer(torch.optim.LBFGS, model.parameters())
    with pytest.raises(TypeError, match="ShardedOptimizer shards replicated parameters, got a DistTensor split along 0"):
        th.optim.ShardedOptimizer(torch.optim.SGD, [th.distribute(torch.ones(4), 0).requires_grad_()], lr=0.1)
    opt = th.optim.ShardedOptimizer(torch.optim.SGD, groups(model), lr=0.1)
    with pytest.raises(ValueError, match="parameter groups of other sizes"):
        opt.load_state_dict({"state": {}, "param_groups": [{"params": [0, 1, 2]}]})
