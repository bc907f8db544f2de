"""Training throughput (samples/s) of a small CNN and of resnet18 on FakeData at 1 and 2
processes, one thread each: plain torch, torch's DDP under torchrun (gloo), torchheat's
DataParallel on the mpi and torch backends, and torchheat autograd-only (batch-split
DistTensors, no wrapper).

    python benchmarks/train.py [--models cnn resnet18] [--batch 32] [--steps 6] [--rounds 2] [--procs 1 2]
                               [--only DDP "DP mpi"] [--weak]

Strong scaling: the global batch (``--batch``) is the same at every process count, each
rank trains on its share. ``--weak``: weak scaling, the way data-parallel training is
usually scaled: ``--batch`` is every rank's batch, the global batch grows with p. Each configuration runs as its own job (``mpiexec -n p`` through
:func:`scaling.launch`, or ``torchrun --nproc_per_node=p``); every worker times ``--steps``
optimizer steps (forward, loss, backward, SGD step; after two warm-up steps) between
barriers, and rank 0 reports one JSON line. ``--rounds`` alternate all configurations, so
that load from other programs hits them alike; each entry is the best round. Efficiency is
samples/s at p over p times plain torch's. Autograd-only is n/a while a layer of the model
has no distributed rule (the run uses ``th.config.fallback = "error"``). "torch alone" is
the ceiling: p plain torch processes, each training on its share at the same time, that
never communicate (on p free cores its efficiency is 1; below that the machine's own
limits: shared caches and memory bandwidth, or other programs). "torch lockstep" is the
same run timed as if the ranks had waited for each other after every step at no cost (each
step as long as its slowest rank's): the ceiling of a synchronized job, which on a machine
whose cores' speeds jitter from step to step lies below "alone". Every entry comes twice:
by wall time, and by CPU time (the CPU seconds of a rank, averaged over ranks), which
counts the work done, communication included, but not time a rank spent descheduled: on
a loaded machine it says what wall time would say on free cores. A rank blocked in gloo
uses no CPU time; one waiting in MPI spins, except in DataParallel's own waits.
Targets at 2 processes: DataParallel at least as fast as DDP; efficiency >= 0.85 on the CNN.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scaling import launch  # noqa: E402

MARKER = "TRAIN_RESULT "
IMAGE = (3, 32, 32)


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


def resnet18():
    import torchvision

    return torchvision.models.resnet18(num_classes=10)


MODELS = {"cnn": small_cnn, "resnet18": resnet18}


def fake_batch(n):
    """A global batch of FakeData's kind (random images, random labels), the same on every rank."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, *IMAGE, generator=g), torch.randint(0, 10, (n,), generator=g)


def samples_per_s(model, images, labels, global_batch, steps, barrier=lambda: None, mean=float, lockstep=None):
    """Throughput of ``steps`` SGD steps on the given (local or split) batch, after two warm-up
    steps: ``[by wall time, by CPU time]``, the second with this process's CPU seconds
    averaged over ranks by ``mean``. With ``lockstep`` (a function from this rank's step
    times to every rank's), the wall time is the sum over steps of the slowest rank's step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()

    for _ in range(2):
        step()
    barrier()
    start, cpu, times = time.perf_counter(), time.process_time(), []
    for _ in range(steps):
        times.append(time.perf_counter())
        step()
        times[-1] = time.perf_counter() - times[-1]
    cpu = time.process_time() - cpu
    barrier()
    wall = time.perf_counter() - start if lockstep is None else sum(map(max, zip(*lockstep(times))))
    return [global_batch * steps / wall, global_batch * steps / mean(cpu)]


def worker(args):
    """One configuration at one process count; rank 0 prints one JSON line."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MODELS[args.models[0]]()
    if args.mode == "ddp":
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank, size = dist.get_rank(), dist.get_world_size()
        batch = args.batch * size if args.weak else args.batch
        images, labels = fake_batch(batch)
        share = slice(rank * batch // size, (rank + 1) * batch // size)
        model = nn.parallel.DistributedDataParallel(model)

        def mean(x):
            t = torch.tensor([x], dtype=torch.float64)
            dist.all_reduce(t)
            return t.item() / size

        result = samples_per_s(model, images[share], labels[share], batch, args.steps, dist.barrier, mean)
    else:
        import torchheat as th

        th.config.fallback = "error"  # autograd-only: a layer with no rule is reported as n/a
        comm = th.get_comm()
        rank, size = comm.rank, comm.size
        batch = args.batch * size if args.weak else args.batch
        images, labels = fake_batch(batch)
        share = slice(rank * batch // size, (rank + 1) * batch // size)

        def mean(x):
            return comm.allreduce(torch.tensor([x], dtype=torch.float64)).item() / size

        if args.mode in ("dp", "alone", "lockstep"):  # alone, lockstep: side by side, never communicating
            model = th.nn.DataParallel(model) if args.mode == "dp" else model
            lockstep = comm.allgather_obj if args.mode == "lockstep" else None
            result = samples_per_s(model, images[share], labels[share], batch, args.steps, comm.barrier, mean, lockstep)
        else:
            try:
                result = samples_per_s(model, th.distribute(images, 0), th.distribute(labels, 0), batch, args.steps,
                                       comm.barrier, mean)
            except th.NotDistributedError:
                result = None
    if rank == 0:
        print(MARKER + json.dumps({"samples_per_s": result}), flush=True)
    if args.mode == "ddp":  # else gloo's threads may still run at exit and abort the process
        dist.destroy_process_group()


def torchrun(args, p, options):
    """Like :func:`scaling.launch`, under ``torchrun --nproc_per_node=p``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("TORCHHEAT_BACKEND", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={p}", f"--master_port={args.port}",
           os.path.abspath(__file__), "--worker", *options]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return json.loads(lines[-1][len(MARKER):])["samples_per_s"]


def columns(procs, only=None):
    """(name, process count, how to run it) of every configuration (plain torch and those
    whose names hold a string of ``only``)."""
    out = [("torch", 1, "local", None)]
    for p in procs:
        if p > 1:
            out += [(f"torch alone p={p}", p, "mpiexec", "alone"), (f"torch lockstep p={p}", p, "mpiexec", "lockstep")]
        out += [(f"DDP p={p}", p, "torchrun", "ddp"), (f"th DP mpi p={p}", p, "mpiexec", "dp"),
                (f"th DP torch p={p}", p, "torchrun", "dp"), (f"th autograd p={p}", p, "mpiexec", "autograd")]
    return [c for c in out if c[0] == "torch" or only is None or any(s in c[0] for s in only)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batch", type=int, default=32, help="global batch size (with --weak: each rank's)")
    parser.add_argument("--weak", action="store_true", help="weak scaling: the global batch is --batch times p")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all configurations")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--only", nargs="+", default=None, help="only the configurations whose name holds one of these")
    parser.add_argument("--port", type=int, default=29635, help="torchrun's master port")
    parser.add_argument("--mpiexec", default=shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec")
    parser.add_argument("--mode", default="dp", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    torch.set_num_threads(1)
    table = {}
    for _ in range(args.rounds):
        for model in args.models:
            for name, p, how, mode in columns(args.procs, args.only):
                options = ["--models", model, "--batch", str(args.batch), "--steps", str(args.steps), "--mode", str(mode)]
                options += ["--weak"] if args.weak else []
                if how == "local":
                    torch.manual_seed(0)
                    value = samples_per_s(MODELS[model](), *fake_batch(args.batch), args.batch, args.steps)
                elif how == "mpiexec":
                    value = launch(args, p, script=__file__, marker=MARKER, field="samples_per_s", options=options)
                else:
                    value = torchrun(args, p, options)
                best = table.get((model, name))
                table[(model, name)] = value if best is None or value is None else [max(b, v) for b, v in zip(best, value)]

    names = columns(args.procs, args.only)
    batch = f"batch {args.batch} per rank" if args.weak else f"global batch {args.batch}"
    print(f"samples/s, {batch} of {IMAGE} images, {args.steps} SGD steps, 1 thread per process, "
          f"best of {args.rounds} rounds; efficiency = samples/s / (p * torch's). Each model: by wall time, and by "
          "CPU time (samples per CPU second of one rank, averaged over ranks: the work done, without time spent "
          "blocked, which a waiting gloo rank does not count and a waiting MPI rank does)")
    print(f"{'configuration':<20}" + "".join(f"{m + ' wall':>22}{m + ' cpu':>22}" for m in args.models))
    for name, p, _, _ in names:
        row = f"{name:<20}"
        for model in args.models:
            v, base = table[(model, name)], table[(model, "torch")]
            for i in range(2):
                row += f"{'n/a':>22}" if v is None else f"{f'{v[i]:8.1f} (eff {v[i] / base[i] / p:.2f})':>22}"
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
