"""DASO: exactness of blocking synchronizations against one process on the global batch, the
degenerate layouts, the merge rule of a delayed synchronization (analytically, on a linear
model with constant gradients), the schedule as a pure state machine, chunked and 16-bit
sends, convergence against DataParallel, the scheduler, GradScaler and checkpoints, and the
errors (raised on every rank, never a hang).

Simulated nodes: every divisor G of the process count is a layout (2 processes: 2x1 and
1x2; 3: 3x1 and 1x3; 4: 2x2, 4x1 and 1x4). Every rank feeds its own rows of a global batch
of 12 (it divides over 1 to 4 ranks).
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import torchheat as th
from torchheat import layout
from torchheat.optim.daso import BLOCKING, Plateau, Schedule, _GlobalMean
from torchheat.testing import assert_replicated_close

BATCH, FEATURES = 12, 4


def layouts():
    p = th.get_comm().size
    return [g for g in range(1, p + 1) if p % g == 0]


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.Tanh(), nn.Linear(8, 2)).to(dtype)


def batches(n, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, FEATURES, generator=g, dtype=dtype), torch.randn(BATCH, 2, generator=g, dtype=dtype))
            for _ in range(n)]


def own_rows(t, comm):
    counts = layout.balanced_counts(t.shape[0], comm.size)
    return t[layout.offsets(counts)[comm.rank]:][:counts[comm.rank]]


def sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)


def train(model, opt, data, epochs, comm, daso=None, after_epoch=None):
    """``epochs`` passes over ``data`` (every rank its rows); returns the epoch losses."""
    losses = []
    for _ in range(epochs):
        total = 0.0
        for x, y in data:
            opt.zero_grad()
            loss = F.mse_loss(model(own_rows(x, comm)), own_rows(y, comm))
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / len(data))
        if daso is not None:
            daso.epoch_loss_logic(losses[-1])
        if after_epoch is not None:
            after_epoch()
    return losses


def params(model):
    return [p.detach().clone() for p in model.parameters()]


# -- 1. exactness, 2. degenerate layouts ----------------------------------------------------------
@pytest.mark.parametrize("g", layouts())
def test_blocking_is_one_process_on_the_global_batch(comm, g):
    data = batches(3)
    net = mlp()
    daso = th.optim.DASO(sgd(net.parameters()), total_epochs=2, ranks_per_node=g, warmup_epochs=1, cooldown_epochs=1,
                         downcast_type=torch.float32, module=net, loader=data)
    assert daso.nodes * daso.ranks_per_node == comm.size and daso.local_comm.size == g and daso.global_comm.size == daso.nodes
    train(daso.module, daso, data, 2, comm, daso)
    ref = mlp()
    opt = sgd(ref.parameters())
    for _ in range(2):
        for x, y in data:
            opt.zero_grad()
            F.mse_loss(ref(x), y).backward()
            opt.step()
    assert_replicated_close(params(net), params(ref), rtol=1e-6, atol=1e-6)


def test_one_node_is_data_parallel(comm):
    """One node of every rank: cycling changes nothing, there is no global group traffic."""
    data = batches(4)
    net, ref = mlp(), mlp()
    daso = th.optim.DASO(torch.optim.Adam(net.parameters(), lr=0.01), total_epochs=2, ranks_per_node=comm.size,
                         warmup_epochs=0, cooldown_epochs=0, max_global_skips=2, local_skip_factor=2, module=net, loader=data)
    assert daso.global_comm.size == 1 and daso.schedule.state == (2, 1, 1)
    train(daso.module, daso, data, 2, comm, daso)
    dp = th.nn.DataParallel(ref)
    train(dp, torch.optim.Adam(ref.parameters(), lr=0.01), data, 2, comm)
    assert_replicated_close(params(net), params(ref), rtol=0, atol=0)


def test_one_rank_per_node_has_no_local_sync(comm, capsys):
    data = batches(2)
    net = mlp()
    dp = th.nn.DataParallel(net)  # an existing DataParallel is pointed at the node
    daso = th.optim.DASO(sgd(net.parameters()), total_epochs=1, ranks_per_node=1, module=dp, loader=data,
                         downcast_type=torch.float32, verbose=True)
    assert daso.module is dp and dp.comm is daso.local_comm and daso.local_comm.size == 1
    with th.debug.comm_log() as log:
        train(dp, daso, data, 1, comm, daso)
    assert not [e for e in log if e.collective in ("iallreduce", "bcast") and e.ranks > 1], log
    assert ("DASO epoch 0 (cooldown): global skip 0" in capsys.readouterr().out) == (comm.rank == 0)


# -- 3. the merge rule ----------------------------------------------------------------------------
class Constant(nn.Module):
    """loss = <c, w>: the gradient is c, constant; every rank its own c."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))

    def forward(self, c):
        return (c * self.w).sum()


def coefficient(rank):
    return torch.arange(1, 6, dtype=torch.float64) * (rank + 1) ** 1.5


@pytest.mark.parametrize("g", layouts())
def test_delayed_merge_is_the_weighted_mean(comm, g):
    """S=8, L=1, B=2 over 20 batches: sends after batches 8 and 16, received after 10 and 18,
    merged as (2B p_now + sum p_sent) / (N + 2B); the last batch averages. Checked after every step."""
    lr, steps = 0.1, 20
    model = Constant()
    daso = th.optim.DASO(torch.optim.SGD(model.parameters(), lr=lr), total_epochs=1, ranks_per_node=g, warmup_epochs=0,
                         cooldown_epochs=0, max_global_skips=8, local_skip_factor=8, downcast_type=torch.float64)
    dp = daso.wrap(model)
    daso.last_batch = steps
    assert daso.schedule.state == (8, 1, 2)
    n, wait = daso.nodes, 2
    node_grad = [torch.stack([coefficient(r) for r in range(k * g, (k + 1) * g)]).mean(0) for k in range(n)]
    expected = [model.w.detach().clone() for _ in range(n)]
    sent = None
    for b in range(1, steps + 1):
        daso.zero_grad()
        dp(coefficient(comm.rank)).backward()
        daso.step()
        expected = [p - lr * gr for p, gr in zip(expected, node_grad)]
        if n > 1 and b in (8, 16):
            sent = [p.clone() for p in expected]
        if n > 1 and b in (8 + wait, 16 + wait):
            expected = [(2 * wait * p + sum(sent)) / (n + 2 * wait) for p in expected]
        if n > 1 and b == steps:
            expected = [sum(expected) / n] * n
        torch.testing.assert_close(model.w.detach(), expected[daso.node], rtol=1e-13, atol=1e-13, msg=f"after batch {b}")
    assert_replicated_close([model.w.detach()], [expected[0]], rtol=1e-13, atol=1e-13)


# -- 4. the schedule ----------------------------------------------------------------------------------
@pytest.mark.parametrize("patience,threshold", [(0, 0.0), (1, 0.05), (2, 0.2)])
def test_plateau_is_reduce_lr_on_plateau(patience, threshold):
    g = torch.Generator().manual_seed(patience)
    losses = (torch.rand(30, generator=g) * torch.linspace(2, 1, 30)).tolist()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=patience,
                                                               threshold=threshold, threshold_mode="rel", eps=0.0)
    plateau = Plateau(threshold, patience)
    for loss in losses:
        before = opt.param_groups[0]["lr"]
        torch_plateau.step(loss)
        assert plateau.step(loss) == (opt.param_groups[0]["lr"] < before)


def test_schedule_phases_plateaus_reset():
    s = Schedule(total_epochs=13, warmup_epochs=2, cooldown_epochs=2, max_global_skips=8, skip_reduction_factor=2,
                 local_skip_factor=4, stability_level=0.1, patience=1)
    losses = [5, 4, 3, 2.9, 2.8, 1, 0.99, 0.98, 0.97, 0.96, 0.95, 0.5]
    states = [s.state] + [s.end_epoch(x) for x in losses]
    assert [s.phase(e) for e in range(13)] == ["warmup"] * 2 + ["cycling"] * 9 + ["cooldown"] * 2
    assert states == [BLOCKING, BLOCKING,   # warmup: its losses are not tested
                      (8, 2, 2),            # the first cycling epoch
                      (8, 2, 2),            # after 3: the best
                      (8, 2, 2),            # 2.9: not 10% better (1 bad epoch)
                      (4, 1, 1),            # 2.8: 2 bad epochs > patience: plateau
                      (4, 1, 1),            # 1: better
                      (4, 1, 1),            # 0.99: 1 bad
                      (2, 1, 0),            # 0.98: plateau
                      (2, 1, 0),            # 0.97
                      (1, 1, 0),            # 0.96: plateau
                      BLOCKING, BLOCKING]   # cooldown


def test_schedule_resets_at_one_and_without_warmup():
    s = Schedule(total_epochs=10, warmup_epochs=0, cooldown_epochs=0, max_global_skips=4, local_skip_factor=2, patience=0)
    assert s.phase() == "cycling" and s.state == (4, 2, 1)  # warmup_epochs=0: cycling from the start
    assert [s.end_epoch(1.0) for _ in range(5)] == [(4, 2, 1), (2, 1, 0), (1, 1, 0), (4, 2, 1), (2, 1, 0)]
    assert [s.end_epoch(None) for _ in range(2)] == [(2, 1, 0)] * 2  # no loss: no plateau test
    blocking = Schedule(total_epochs=3, warmup_epochs=2, cooldown_epochs=2)  # the phases overlap: all blocking
    assert [blocking.state] + [blocking.end_epoch(1.0) for _ in range(3)] == [BLOCKING] * 4
    one = Schedule(total_epochs=2, warmup_epochs=0, cooldown_epochs=0, max_global_skips=1)
    assert one.state == (1, 1, 0)


# -- 5. chunked and 16-bit sends -----------------------------------------------------------------------
@pytest.mark.parametrize("wire", [torch.float32, torch.bfloat16, torch.float16])
def test_global_mean_sums_in_float32_for_any_chunk(comm, wire):
    n = 23
    mine = torch.randn(n, generator=torch.Generator().manual_seed(comm.rank)) * 10
    copies = [torch.randn(n, generator=torch.Generator().manual_seed(r)) * 10 for r in range(comm.size)]
    total = copies[0].to(wire).float()
    for c in copies[1:]:
        total += c.to(wire).float()
    expected = (total / comm.size).to(wire)
    for chunk in (1, 5, 10**7):
        got = _GlobalMean(comm, mine, wire, chunk).start().wait()
        assert got.dtype == wire
        assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8)), chunk


def cycling_run(g, chunk, downcast, data):
    net = mlp()
    daso = th.optim.DASO(sgd(net.parameters()), total_epochs=2, ranks_per_node=g, warmup_epochs=0, cooldown_epochs=0,
                         max_global_skips=2, local_skip_factor=1, sending_chunk_size=chunk, downcast_type=downcast,
                         module=net, loader=data)
    train(daso.module, daso, data, 2, th.get_comm(), daso)
    return params(net)


@pytest.mark.parametrize("g", layouts())
def test_chunk_size_does_not_change_the_result(comm, g):
    data = batches(5)
    runs = [cycling_run(g, chunk, torch.bfloat16, data) for chunk in (1, 7, 10**7)]  # 7 < a layer's 32 weights
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))
    assert_replicated_close(runs[0], runs[0])
    if g < comm.size:  # the last synchronization left bfloat16 values
        assert all(torch.equal(p, p.to(torch.bfloat16).float()) for p in runs[0])


@pytest.mark.parametrize("g", layouts())
def test_bfloat16_blocking_sync_is_sum_then_divide(comm, g):
    lr = 0.1
    model = Constant().float()
    daso = th.optim.DASO(torch.optim.SGD(model.parameters(), lr=lr), total_epochs=1, ranks_per_node=g, module=model)
    daso.last_batch = 1
    w0 = model.w.detach().clone()
    daso.zero_grad()
    daso.module(coefficient(comm.rank).float()).backward()
    daso.step()
    n = daso.nodes
    nodes = [w0 - lr * torch.stack([coefficient(r).float() for r in range(k * g, (k + 1) * g)]).mean(0) for k in range(n)]
    if n == 1:
        expected = nodes[0]
    else:
        total = nodes[0].bfloat16().float()
        for p in nodes[1:]:
            total += p.bfloat16().float()
        expected = (total / n).bfloat16().float()
        assert torch.equal(model.w.detach(), model.w.detach().bfloat16().float())
    assert_replicated_close([model.w.detach()], [expected], rtol=1e-6, atol=1e-7)


# -- 6. convergence ---------------------------------------------------------------------------------------
def blobs(n_batches, seed=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 2, (BATCH,), generator=g)
        x = torch.randn(BATCH, FEATURES, generator=g) + 0.5 * (2 * y[:, None] - 1)  # overlapping: a loss floor
        out.append((x, F.one_hot(y, 2).float()))
    return out


@pytest.mark.parametrize("g", layouts())
def test_converges_like_data_parallel(comm, g):
    data, epochs = blobs(8), 6
    net = mlp()
    daso = th.optim.DASO(sgd(net.parameters()), total_epochs=epochs, ranks_per_node=g, warmup_epochs=1, cooldown_epochs=1,
                         max_global_skips=4, patience=0, module=net, loader=data)
    model = daso.module
    seen = []

    def check():
        assert_replicated_close(params(net) + [b.detach() for b in net.buffers()], params(net), rtol=0, atol=0)
        seen.append(daso.schedule.state)

    losses = train(model, daso, data, epochs, comm, daso, after_epoch=check)
    ref = mlp()
    ref_losses = train(th.nn.DataParallel(ref), sgd(ref.parameters()), data, epochs, comm)
    assert losses[-1] <= 1.5 * ref_losses[-1], (losses, ref_losses)
    assert any(s[0] > 0 for s in seen)  # some epochs cycled


# -- scheduler, GradScaler, checkpoints -------------------------------------------------------------
def test_scheduler_steps_once_per_epoch(comm):
    data = batches(2)
    net = mlp()
    opt = sgd(net.parameters())
    daso = th.optim.DASO(opt, total_epochs=3, scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), module=net,
                         loader=data)
    train(daso.module, daso, data, 2, comm, daso)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.25)
    net2 = mlp()
    opt2 = sgd(net2.parameters())
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt2, factor=0.5, patience=0)
    daso2 = th.optim.DASO(opt2, total_epochs=3, scheduler=plateau, module=net2, loader=data)
    train(daso2.module, daso2, data, 1, comm)   # no epoch_loss_logic: counted at the next epoch, no loss to test
    for _ in range(2):  # the same loss twice: one plateau
        train(daso2.module, daso2, data, 1, comm)
        daso2.epoch_loss_logic(1.0)
    assert daso2.schedule.epoch == 3 and opt2.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5)


@pytest.mark.parametrize("g", layouts()[-1:] + layouts()[:1])
def test_grad_scaler_gives_the_same_parameters(comm, g):
    data = batches(4)
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**8)):
        net = mlp()
        daso = th.optim.DASO(sgd(net.parameters()), total_epochs=1, ranks_per_node=g, warmup_epochs=0, cooldown_epochs=0,
                             max_global_skips=2, module=net, loader=data)
        for x, y in data:
            daso.zero_grad()
            loss = F.mse_loss(daso.module(own_rows(x, comm)), own_rows(y, comm))
            (loss if scaler is None else scaler.scale(loss)).backward()
            daso.step(scaler=scaler)
        results.append(params(net))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_state_dict_round_trip(comm):
    data = batches(2)
    net = mlp()
    daso = th.optim.DASO(sgd(net.parameters()), total_epochs=4, warmup_epochs=0, cooldown_epochs=0, module=net, loader=data)
    train(daso.module, daso, data, 2, comm, daso)
    state = daso.state_dict()
    net2 = mlp()
    other = th.optim.DASO(sgd(net2.parameters()), total_epochs=4, warmup_epochs=0, cooldown_epochs=0, loader=data,
                          module=net2)
    other.load_state_dict(state)
    assert other.schedule.state_dict() == daso.schedule.state_dict()
    assert other.local_optimizer.state_dict()["state"][0]["momentum_buffer"].equal(state["local_optimizer"]["state"][0]["momentum_buffer"])


# -- 7. errors: on every rank, never a hang --------------------------------------------------------------
BAD = [
    (dict(total_epochs=0), ValueError, "total_epochs"),
    (dict(warmup_epochs=-1), ValueError, "warmup_epochs"),
    (dict(max_global_skips=0), ValueError, "max_global_skips"),
    (dict(sending_chunk_size=0), ValueError, "sending_chunk_size"),
    (dict(skip_reduction_factor=1), ValueError, "skip_reduction_factor"),
    (dict(stability_level=1.5), ValueError, "stability_level"),
    (dict(downcast_type=torch.int8), ValueError, "downcast_type"),
    (dict(ranks_per_node=0), ValueError, "ranks_per_node"),
    (dict(loader=iter([])), TypeError, "loader"),
]


@pytest.mark.parametrize("kwargs,kind,match", BAD, ids=[next(iter(k)) for k, _, _ in BAD])
def test_bad_arguments(comm, kwargs, kind, match):
    net = mlp()
    kwargs = dict(dict(total_epochs=2), **kwargs)
    with pytest.raises(kind, match=match):
        th.optim.DASO(sgd(net.parameters()), **kwargs)


def test_bad_optimizer_and_scheduler(comm):
    net = mlp()
    with pytest.raises(TypeError, match="local_optimizer"):
        th.optim.DASO(net.parameters(), total_epochs=1)
    other = sgd(mlp().parameters())
    with pytest.raises(ValueError, match="scheduler"):
        th.optim.DASO(sgd(net.parameters()), 1, scheduler=torch.optim.lr_scheduler.StepLR(other, 1))


def test_nodes_that_do_not_match(comm):
    net = mlp()
    with pytest.raises(ValueError, match="does not divide"):
        th.optim.DASO(sgd(net.parameters()), 1, ranks_per_node=comm.size + 1)
    if comm.size > 1:  # ranks that disagree on the layout
        with pytest.raises(ValueError, match="differs between ranks"):
            th.optim.DASO(sgd(net.parameters()), 1, ranks_per_node=1 if comm.rank == 0 else comm.size)


def test_bad_last_batch_and_call_order(comm):
    net = mlp()
    daso = th.optim.DASO(sgd(net.parameters()), 1, ranks_per_node=1)
    with pytest.raises(ValueError, match="last_batch"):   # never set
        daso.step()
    daso.last_batch = 2 if comm.rank == 0 else 3
    if comm.size > 1:
        with pytest.raises(ValueError, match="the same on every rank"):
            daso.step()
    daso.last_batch = 2
    with pytest.raises(RuntimeError, match="once after an epoch's last batch"):
        daso.epoch_loss_logic(1.0)
    if comm.size > 1:
        unwrapped = th.optim.DASO(sgd(net.parameters()), 1, ranks_per_node=comm.size)
        unwrapped.last_batch = 1
        with pytest.raises(RuntimeError, match="wrapped"):
            unwrapped.step()


@pytest.mark.parametrize("g", layouts())
def test_nan_before_a_send_raises_everywhere(comm, g):
    data = batches(2)
    net = mlp()
    daso = th.optim.DASO(sgd(net.parameters()), total_epochs=1, ranks_per_node=g, module=net, loader=data)
    x, y = data[0]
    daso.zero_grad()
    F.mse_loss(daso.module(own_rows(x, comm)), own_rows(y, comm)).backward()
    if comm.rank == 0:  # rank 0 sends in the first synchronization
        with torch.no_grad():
            net[0].weight[0, 0] = math.nan
    if daso.nodes > 1:
        with pytest.raises(FloatingPointError, match="not finite"):
            daso.step()
    else:  # one node: no global synchronization, as DataParallel
        daso.step()
        assert torch.isnan(net[0].weight[0, 0]) == (comm.rank == 0)
