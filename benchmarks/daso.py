"""DASO against synchronous DataParallel when the link between nodes is slow: time per
epoch and final loss at 4 processes as 2 simulated nodes of 2 ranks.

    python benchmarks/daso.py [--epochs 6] [--batches 48] [--latency-us 500] [--mb-per-s 100] [--slowdown 10]

The nodes are simulated on one machine, so the slow inter-node network is injected: every
rank's communicator is wrapped in :class:`SlowLink`, which lets each message take
``latency + bytes / bandwidth`` of wall time, ``--slowdown`` times longer when the ranks
it joins are on different nodes (a global message) than inside one (a local message).
Non-blocking messages take that time from their start, so computation can hide it. The
default link (500 us + bytes / 100 MB/s inside a node) is slow for a real node, in the
proportion that this benchmark's CPU compute is slow for a GPU, so that communication
takes the share of a batch it takes on a cluster.
Synchronous DataParallel averages gradients over all 4 ranks every batch: every bucket is
a global message. DASO (``th.optim.DASO``, bfloat16 sends) averages gradients inside the
node every batch and parameters between the nodes every few batches, without blocking,
after one warmup epoch and before one cooldown epoch of blocking synchronizations.

The task: a 3-layer MLP (about 0.2 M parameters) classifying synthetic data from a fixed
teacher network, SGD with momentum, the same data and initial model for both. The job runs
under ``mpiexec -n 4`` (through :func:`scaling.launch`); the methods alternate for
``--rounds`` rounds and the best round's time per epoch is reported (mean over epochs,
and over DASO's cycling epochs alone); the final loss is the last epoch's mean training
loss. Target: DASO at least 25% less time per epoch than DataParallel with global messages
costing 10x local ones, at a final loss within 1.5x.
"""
import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling import launch  # noqa: E402

MARKER = "DASO_RESULT "
FEATURES, CLASSES, HIDDEN = 64, 10, 384


class SlowLink:
    """Wraps a communicator: each message takes at least ``latency + bytes / bandwidth``
    seconds, times ``slowdown`` when its ranks span simulated nodes of ``ranks_per_node``."""

    def __new__(cls, inner, ranks_per_node, latency, bandwidth, slowdown, members=None):
        from torchheat.comm.base import Communicator

        class _Slow(Communicator):
            backend = inner.backend

            def __init__(self, inner, members):
                self.inner, self.rank, self.size = inner, inner.rank, inner.size
                self.members = members
                nodes = {m // ranks_per_node for m in members}
                self.factor = slowdown if len(nodes) > 1 else 1.0

            def cost(self, nbytes):
                return self.factor * (latency + nbytes / bandwidth)

            def _blocking(self, nbytes, fn, *args):
                start = time.perf_counter()
                out = fn(*args)
                _sleep_until(start + self.cost(nbytes))
                return out

            def _later(self, nbytes, req):
                return _Late(req, time.perf_counter() + self.cost(nbytes))

            def _barrier(self):
                return self._blocking(0, self.inner._barrier)

            def _bcast(self, t, root):
                return self._blocking(t.numel() * t.element_size(), self.inner._bcast, t, root)

            def _allreduce(self, t, op):
                return self._blocking(t.numel() * t.element_size(), self.inner._allreduce, t, op)

            def _allgather_list(self, t, shapes):
                return self._blocking(t.numel() * t.element_size() * self.size, self.inner._allgather_list, t, shapes)

            def _exchange(self, sends, recvs):
                n = sum(s.numel() * s.element_size() for s in sends if s is not None)
                return self._blocking(n, self.inner._exchange, sends, recvs)

            def _send(self, t, dest, tag):
                return self._blocking(t.numel() * t.element_size(), self.inner._send, t, dest, tag)

            def _recv(self, t, source, tag):
                return self._blocking(t.numel() * t.element_size(), self.inner._recv, t, source, tag)

            def _isend(self, t, dest, tag):
                return self._later(t.numel() * t.element_size(), self.inner._isend(t, dest, tag))

            def _irecv(self, t, source, tag):
                return self._later(t.numel() * t.element_size(), self.inner._irecv(t, source, tag))

            def _iallreduce(self, t, op):
                return self._later(t.numel() * t.element_size(), self.inner._iallreduce(t, op))

            def _allgather_obj(self, obj):
                return self._blocking(64, self.inner._allgather_obj, obj)

            def _split(self, color, key):
                sub = self.inner.split(color, key)
                mine = [m for m, c in zip(self.members, self.inner.allgather_obj(color)) if c == color]
                order = [m for _, m in sorted(zip(sub.allgather_obj(key), mine))] if sub.size > 1 else mine
                return _Slow(sub, order)

        return _Slow(inner, list(range(inner.size)) if members is None else members)


class _Late:
    """A request that completes no earlier than ``deadline`` (the simulated transfer time)."""

    def __init__(self, req, deadline):
        self.req, self.deadline = req, deadline

    def wait(self):
        self.req.wait()
        _sleep_until(self.deadline)


def _sleep_until(deadline):
    left = deadline - time.perf_counter()
    if left > 0:
        time.sleep(left)


def task(n_batches, per_rank, comm, seed=0):
    """This rank's batches of a synthetic classification task (labels of a fixed teacher MLP)."""
    g = torch.Generator().manual_seed(seed)
    teacher = [torch.randn(FEATURES, 32, generator=g), torch.randn(32, CLASSES, generator=g)]
    batches = []
    for _ in range(n_batches):
        x = torch.randn(per_rank * comm.size, FEATURES, generator=g)
        y = (torch.tanh(x @ teacher[0]) @ teacher[1] + 0.5 * torch.randn(x.shape[0], CLASSES, generator=g)).argmax(1)
        rows = slice(comm.rank * per_rank, (comm.rank + 1) * per_rank)
        batches.append((x[rows], y[rows]))
    return batches


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                         nn.Linear(HIDDEN, CLASSES))


def run(method, args, world, data):
    import torchheat as th

    net = model()
    sgd = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    if method == "daso":
        opt = th.optim.DASO(sgd, total_epochs=args.epochs, ranks_per_node=args.ranks_per_node, warmup_epochs=1,
                            cooldown_epochs=1, max_global_skips=8, module=net, loader=data, comm=world)
        wrapped = opt.module
    else:
        opt, wrapped = sgd, th.nn.DataParallel(net, comm=world)
    times, losses, phases = [], [], []
    for _ in range(args.epochs):
        phases.append(opt.schedule.phase() if method == "daso" else "sync")
        world.inner.barrier()
        start = time.perf_counter()
        total = 0.0
        for x, y in data:
            opt.zero_grad()
            loss = F.cross_entropy(wrapped(x), y)
            loss.backward()
            opt.step()
            total += loss.item()
        world.inner.barrier()
        times.append(time.perf_counter() - start)
        mean = world.inner.allreduce(torch.tensor([total / len(data)], dtype=torch.float64)).item() / world.size
        losses.append(mean)
        if method == "daso":
            opt.epoch_loss_logic(mean, loss_globally_averaged=True)
    return times, losses, phases


def worker(args):
    import torchheat as th

    torch.set_num_threads(1)
    comm = th.get_comm()
    world = SlowLink(comm, args.ranks_per_node, args.latency_us * 1e-6, args.mb_per_s * 1e6, args.slowdown)
    data = task(args.batches, args.per_rank, comm)
    best = {}
    for _ in range(args.rounds):
        for method in ("sync", "daso"):
            times, losses, phases = run(method, args, world, data)
            if method not in best or sum(times) < sum(best[method][0]):
                best[method] = (times, losses, phases)
    if comm.rank == 0:
        params = sum(p.numel() for p in model().parameters())
        print(MARKER + json.dumps({"best": best, "params": params}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--ranks-per-node", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batches", type=int, default=48, help="batches per epoch")
    parser.add_argument("--per-rank", type=int, default=16, help="samples per rank and batch")
    parser.add_argument("--latency-us", type=float, default=500.0, help="latency of a local message")
    parser.add_argument("--mb-per-s", type=float, default=100.0, help="bandwidth of a local message")
    parser.add_argument("--slowdown", type=float, default=10.0, help="cost of a global message over a local one")
    parser.add_argument("--rounds", type=int, default=2)
    launcher = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    parser.add_argument("--mpiexec", default=launcher)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    options = ["--ranks-per-node", str(args.ranks_per_node), "--epochs", str(args.epochs), "--batches", str(args.batches),
               "--per-rank", str(args.per_rank), "--latency-us", str(args.latency_us), "--mb-per-s", str(args.mb_per_s),
               "--slowdown", str(args.slowdown), "--rounds", str(args.rounds)]
    report = launch(args, args.procs, script=__file__, marker=MARKER, field=None, options=options)
    nodes = args.procs // args.ranks_per_node
    print(f"{args.procs} processes = {nodes} nodes x {args.ranks_per_node}; MLP of {report['params']} parameters; "
          f"{args.epochs} epochs of {args.batches} batches of {args.per_rank} samples per rank")
    print(f"local message: {args.latency_us:g} us + bytes / {args.mb_per_s:g} MB/s; global message: {args.slowdown:g}x that")
    sync_times, sync_losses, _ = report["best"]["sync"]
    daso_times, daso_losses, phases = report["best"]["daso"]
    cycling = [t for t, ph in zip(daso_times, phases) if ph == "cycling"]
    per_epoch = {"sync": sum(sync_times) / len(sync_times), "daso": sum(daso_times) / len(daso_times)}
    print(f"{'method':<24}{'s/epoch':>10}{'s/epoch (cycling)':>20}{'final loss':>12}{'vs sync':>10}")
    print(f"{'DataParallel (sync)':<24}{per_epoch['sync']:>10.3f}{'':>20}{sync_losses[-1]:>12.4f}{'':>10}")
    cyc = f"{sum(cycling) / len(cycling):.3f}" if cycling else "n/a"
    print(f"{'DASO (bfloat16 sends)':<24}{per_epoch['daso']:>10.3f}{cyc:>20}{daso_losses[-1]:>12.4f}"
          f"{per_epoch['daso'] / per_epoch['sync']:>10.2f}")
    print(f"time per epoch: {100 * (1 - per_epoch['daso'] / per_epoch['sync']):.0f}% less (target >= 25%); "
          f"final loss {daso_losses[-1] / sync_losses[-1]:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
