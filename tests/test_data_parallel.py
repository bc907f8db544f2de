"""Distributed training: exactness against one process on the global batch, DataParallel,
the non-blocking allreduce under it, and the end of a job where one rank raises.

The exactness tests train a small MLP (linear layers written with ``@`` so that they run
on batch-split DistTensors through the matmul rules, ReLU, Tanh, Dropout with p=0) for a
few steps of SGD (momentum, weight decay) and Adam, three ways: plain autograd on
batch-split DistTensors (balanced and with an empty chunk), DataParallel on plain per-rank
batches (equal sizes: the global batch of 12 divides over 1, 2 and 3 ranks), and
DataParallel on batch-split DistTensors (no second reduction). Every rank must end with
the parameters of one process on the global batches, bitwise the same on every rank.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn

import torchheat as th
from torchheat import layout
from torchheat.testing import assert_replicated_close, skewed_counts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH, FEATURES, STEPS = 12, 5, 4


class Dense(nn.Linear):
    """nn.Linear through matmul and add (rules every layout has)."""

    def forward(self, x):
        return x @ self.weight.mT + self.bias


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(Dense(FEATURES, 16), nn.ReLU(), nn.Dropout(0.0), Dense(16, 8), nn.Tanh(), Dense(8, 2))


def batches(steps=STEPS):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, FEATURES, generator=g), torch.randn(BATCH, 2, generator=g)) for _ in range(steps)]


def mse(out, target):
    return ((out - target) ** 2).mean()


OPTIMIZERS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
    "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
}


def train(model, make_opt, data, feed):
    """STEPS optimizer steps; ``feed(x, y)`` gives what the model and the loss see."""
    opt = make_opt(model.parameters())
    for x, y in data:
        opt.zero_grad()
        xb, yb = feed(x, y)
        mse(model(xb), yb).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def own_rows(t, comm):
    """This rank's balanced share of a global batch, as a plain tensor."""
    counts = layout.balanced_counts(t.shape[0], comm.size)
    return t[layout.offsets(counts)[comm.rank]:][:counts[comm.rank]]


FEEDS = {
    "autograd-split": (False, lambda comm: lambda x, y: (th.distribute(x, 0), th.distribute(y, 0))),
    "autograd-skewed": (False, lambda comm: lambda x, y: (th.distribute(x, 0, counts=skewed_counts(BATCH, comm.size)),
                                                          th.distribute(y, 0, counts=skewed_counts(BATCH, comm.size)))),
    "dp-per-rank": (True, lambda comm: lambda x, y: (own_rows(x, comm), own_rows(y, comm))),
    "dp-split": (True, lambda comm: lambda x, y: (th.distribute(x, 0), th.distribute(y, 0))),
    "dp-skewed": (True, lambda comm: lambda x, y: (th.distribute(x, 0, counts=skewed_counts(BATCH, comm.size)),
                                                   th.distribute(y, 0, counts=skewed_counts(BATCH, comm.size)))),
}


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("feed", sorted(FEEDS))
def test_training_is_exact(comm, opt, feed):
    data = batches()
    expected = train(mlp(), OPTIMIZERS[opt], data, lambda x, y: (x, y))
    wrap, make_feed = FEEDS[feed]
    model = mlp()
    if wrap:
        model = th.nn.DataParallel(model, bucket_cap_mb=1e-4)  # three buckets
    assert_replicated_close(train(model, OPTIMIZERS[opt], data, make_feed(comm)), expected, rtol=1e-5, atol=1e-5)


def test_split_batches_are_not_reduced_twice(comm):
    """On a batch-split DistTensor the exact autograd has summed the gradients already."""
    x, y = batches(1)[0]
    ref = mlp()
    mse(ref(x), y).backward()
    model = th.nn.DataParallel(mlp())
    with th.debug.comm_log() as log:
        mse(model(th.distribute(x, 0)), th.distribute(y, 0)).backward()
    assert not [e for e in log if e.collective == "iallreduce"]
    assert_replicated_close([p.grad for p in model.parameters()], [p.grad for p in ref.parameters()], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cap_mb, buckets", [(1e-6, 6), (1e-4, 3), (25, 1)])
def test_buckets(comm, cap_mb, buckets):
    """One non-blocking allreduce per bucket; the average of the per-rank gradients."""
    x, y = (own_rows(t, comm) for t in batches(1)[0])
    local = mlp()
    mse(local(x), y).backward()
    expected = [torch.stack(comm.allgather_list(p.grad, [p.shape] * comm.size)).mean(0) for p in local.parameters()]
    model = th.nn.DataParallel(mlp(), bucket_cap_mb=cap_mb)
    assert len(model._buckets) == buckets
    with th.debug.comm_log() as log:
        mse(model(x), y).backward()
    reduced = [e for e in log if e.collective == "iallreduce"]
    assert len(reduced) == (buckets if comm.size > 1 else 0)
    assert_replicated_close([p.grad for p in model.parameters()], expected, rtol=1e-6, atol=1e-7)


def test_the_first_bucket_closes_after_1_mb(comm):
    """As in DDP: the last layers' gradients are reduced while backward computes the others'."""
    net = torch.nn.Sequential(torch.nn.Linear(16, 1024), torch.nn.Linear(1024, 512), torch.nn.Linear(512, 10))
    assert [len(b.params) for b in th.nn.DataParallel(net)._buckets] == [4, 2]  # 2.1 MB, then 68 KB
    assert len(th.nn.DataParallel(net, bucket_cap_mb=4)._buckets) == 2


def test_no_sync_accumulates(comm):
    data = batches(2)
    ref = mlp()
    for x, y in data:
        mse(ref(x), y).backward()
    model = th.nn.DataParallel(mlp())
    with model.no_sync(), th.debug.comm_log() as log:
        mse(model(own_rows(data[0][0], comm)), own_rows(data[0][1], comm)).backward()
    assert not [e for e in log if e.collective == "iallreduce"]
    mse(model(own_rows(data[1][0], comm)), own_rows(data[1][1], comm)).backward()
    assert_replicated_close([p.grad for p in model.parameters()], [p.grad for p in ref.parameters()], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("set_to_none", [True, False])
def test_gradients_across_steps(comm, set_to_none):
    """Reduced gradients stay in their buckets: ``zero_grad(set_to_none=False)`` keeps every
    ``.grad`` the same tensor from step to step (as in torch) and the next backward reduces
    them in place; after ``zero_grad()`` a gradient kept from an earlier step is never
    overwritten. The parameters are one process's on the global batch either way."""
    data = batches()
    ref, model = mlp(), th.nn.DataParallel(mlp(), bucket_cap_mb=1e-4)
    ref_opt, opt = OPTIMIZERS["sgd"](ref.parameters()), OPTIMIZERS["sgd"](model.parameters())
    kept = pointers = None
    for x, y in data:
        ref_opt.zero_grad(set_to_none=set_to_none)
        opt.zero_grad(set_to_none=set_to_none)
        mse(ref(x), y).backward()
        mse(model(own_rows(x, comm)), own_rows(y, comm)).backward()
        if kept is None:
            kept = [(p.grad, p.grad.clone()) for p in model.parameters()]
        elif not set_to_none:
            pointers = pointers or [p.grad.data_ptr() for p in model.parameters()]
            assert [p.grad.data_ptr() for p in model.parameters()] == pointers
        ref_opt.step()
        opt.step()
    assert_replicated_close([p.detach() for p in model.parameters()], [p.detach() for p in ref.parameters()],
                            rtol=1e-5, atol=1e-5)
    if set_to_none:
        assert all(torch.equal(g, copy) for g, copy in kept)


class Branchy(nn.Module):
    """``a`` is used on rank 0 only, ``never`` nowhere."""

    def __init__(self):
        super().__init__()
        self.body, self.a, self.never = nn.Linear(3, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        h = self.body(x)
        return self.a(h) if th.get_comm().rank == 0 else h


def test_unused_parameters(comm):
    x = torch.randn(4, 3) + comm.rank
    torch.manual_seed(0)
    local = Branchy()
    local(x).sum().backward()
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in local.parameters()]
    expected = [torch.stack(comm.allgather_list(g, [g.shape] * comm.size)).mean(0) for g in grads]
    expected[-2:] = [None, None]  # no rank has a gradient for `never`: it stays None, as in one process
    torch.manual_seed(0)
    model = th.nn.DataParallel(Branchy(), bucket_cap_mb=1e-6, find_unused_parameters=True)
    model(x).sum().backward()
    assert_replicated_close([p.grad for p in model.parameters()], expected, rtol=1e-6, atol=1e-7)

    model = th.nn.DataParallel(Branchy(), find_unused_parameters=False)
    if comm.size == 1:
        return model(x).sum().backward()  # nothing is reduced on one process
    for _ in range(2):  # the failed backward left nothing behind: the next one fails alike
        with pytest.raises(RuntimeError, match=r"DataParallel: parameters \['a.bias', 'a.weight', 'never.bias', "
                                               r"'never.weight'\] got no gradient on some rank .* find_unused_parameters=True"):
            model(x).sum().backward()
        model.zero_grad()


def test_parameters_broadcast_at_wrap(comm):
    torch.manual_seed(comm.rank)  # different parameters on every rank
    module = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    module[1].running_mean.fill_(comm.rank)
    rank0 = comm.allgather_obj([t.detach().clone() for t in module.state_dict().values()])[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        th.nn.DataParallel(module)
    warned = [w for w in caught if "differed between ranks" in str(w.message)]
    assert len(warned) == (comm.size > 1) and all(w.category is RuntimeWarning for w in warned)
    assert_replicated_close(list(module.state_dict().values()), rank0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        th.nn.DataParallel(module)  # equal now: no warning


def test_buffers_stay_identical(comm):
    """Per-rank batches: BatchNorm's statistics are the rank's own (as in DDP); its running
    statistics are rank 0's update, the same on every rank after every forward."""
    torch.manual_seed(0)
    model = th.nn.DataParallel(nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 1)))
    bn = model.module[0]
    for step in range(2):
        x = torch.randn(4, 3) + comm.rank + step
        before = bn.running_mean.clone()
        model(x).sum().backward()
        x0 = comm.allgather(x)[0]
        assert_replicated_close(bn.running_mean, 0.9 * before + 0.1 * x0.mean(0), rtol=1e-6, atol=1e-7)
    model.eval()
    with th.debug.comm_log() as log:
        model(torch.randn(2, 3))
    assert not log  # nothing changes buffers in eval mode: nothing is broadcast


def test_bad_batches(comm):
    model = th.nn.DataParallel(mlp())
    x = torch.randn(6, FEATURES)
    for bad, what in [(th.distribute(x, 1), "split along 1"), (th.distribute(x), "replicated")]:
        with pytest.raises(ValueError, match=rf"DataParallel expects inputs split along the batch axis dim=0 or plain "
                                             rf"per-rank tensors, got a DistTensor of shape \(6, 5\) {what}"):
            model(bad)
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        th.nn.DataParallel(lambda t: t)
    with pytest.raises(ValueError, match="bucket_cap_mb=0 is not a positive number"):
        th.nn.DataParallel(mlp(), bucket_cap_mb=0)


def test_state_dict_like_ddp(comm):
    model = th.nn.DataParallel(mlp())
    assert list(model.state_dict()) == ["module." + k for k in mlp().state_dict()]


# -- the non-blocking allreduce ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32, torch.int16])
@pytest.mark.parametrize("op", ["sum", "prod", "max", "min"])
def test_iallreduce(comm, dtype, op):
    if dtype.is_floating_point and op in ("max", "min"):
        with pytest.raises(ValueError, match=f"iallreduce has no floating-point op='{op}'"):
            comm.iallreduce(torch.ones(2, dtype=dtype), op)
        return
    values = torch.arange(6).reshape(2, 3) % 3 + 1 + comm.rank
    everyone = torch.stack([torch.arange(6).reshape(2, 3) % 3 + 1 + r for r in range(comm.size)])
    expected = {"sum": everyone.sum(0), "prod": everyone.prod(0), "max": everyone.amax(0), "min": everyone.amin(0)}[op]
    t, t2 = values.to(dtype), torch.ones(2, 3, dtype=dtype)
    first, second = comm.iallreduce(t, op), comm.iallreduce(t2, "sum")  # two in flight at once
    while not first.test():  # testing drives it to completion
        pass
    first.wait()
    second.wait()
    assert t.dtype == dtype and torch.equal(t, expected.to(dtype))
    assert torch.equal(t2, torch.full((2, 3), comm.size, dtype=dtype))


def test_iallreduce_bad_input(comm):
    with pytest.raises(ValueError, match=r"iallreduce reduces real 32/64-bit floats and integers .* got op='sum' on torch.float16"):
        comm.iallreduce(torch.ones(2, dtype=torch.float16))
    with pytest.raises(ValueError, match="iallreduce works in place on a contiguous tensor"):
        comm.iallreduce(torch.ones(2, 3).t())
    with pytest.raises(ValueError, match="op='land'"):
        comm.iallreduce(torch.ones(2), "land")


# -- an exception on one rank ends the job ----------------------------------------------------
RAISES = """\
import torch, torchheat as th
comm = th.get_comm()
model = th.nn.DataParallel(torch.nn.Linear(3, 1))
if comm.rank == 1:
    raise RuntimeError("rank 1 fails in its own loop")
model(torch.ones(2, 3)).sum().backward()   # rank 0 waits in the gradient allreduce
comm.barrier()
"""
LAUNCHERS = {
    "mpiexec": lambda script: [shutil.which("mpiexec") or "mpiexec", "-n", "2", sys.executable, script],
    "torchrun": lambda script: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_an_exception_on_one_rank_ends_the_job(comm, tmp_path, launcher):
    if comm.backend != "self":
        pytest.skip("launches its own mpiexec/torchrun job, which works from a plain process only: runs in the self-backend stage")
    if launcher == "mpiexec" and shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not installed")
    script = tmp_path / "raises.py"
    script.write_text(RAISES)
    env = {k: v for k, v in os.environ.items() if k != "TORCHHEAT_BACKEND"}
    env.update(TORCHHEAT_TIMEOUT="300", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, env.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(LAUNCHERS[launcher](str(script)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)  # far below the collective timeout of 300 s
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the job did not end within 60 s:\n{out[-3000:]}")
    assert proc.returncode != 0, out
    assert re.search(r"RuntimeError: rank 1 fails in its own loop", out), out
    assert "has waited" not in out, out  # ended by the exception, not by the timeout
