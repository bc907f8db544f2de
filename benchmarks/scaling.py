"""Strong scaling of torchheat at 1 and 2 processes against plain torch, one thread each.

    python benchmarks/scaling.py [--n 20000000] [--repeats 7] [--rounds 3] [--procs 1 2]

The script times plain torch on the global tensor itself, then launches itself under
``mpiexec -n p`` (``--worker``) for every p; each worker times the same ops on a
tensor of the same global size split along axis 0 (a barrier before and after each run)
and rank 0 reports back as one JSON line. ``--rounds`` alternate all columns (so that
load from other programs hits them alike); every entry is the best of all its runs
(rounds x repeats), which is the least disturbed by other programs on the machine.
Prints one table: time per op, speedup over torch and parallel efficiency
(speedup / p). An op with no distributed rule yet is reported as n/a.
Targets at 2 processes: efficiency >= 0.85 for the compute-heavy chain, var/std over the
split axis and softmax over the split axis of a 2-D tensor; >= 0.8 for cumsum.
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

# The global data: linspace(-10, 10, n) in float64, as a vector or as COLUMNS columns; every
# op reduces or scans over axis 0, the split axis, except the pointwise chain.
COLUMNS = 1000
SHAPES = {"1-D": lambda n: (n,), "2-D": lambda n: (n // COLUMNS, COLUMNS)}
OPS = {
    "sin(x)**2 + cos(x)**2": ("1-D", lambda x: torch.sin(x) ** 2 + torch.cos(x) ** 2),
    "sum": ("1-D", lambda x: x.sum()),
    "var(0)": ("1-D", lambda x: x.var(0)),
    "std(0)": ("1-D", lambda x: torch.std(x, 0)),
    "cumsum": ("1-D", lambda x: torch.cumsum(x, 0)),
    "softmax": ("1-D", lambda x: torch.softmax(x, 0)),
    f"softmax (n/{COLUMNS}, {COLUMNS})": ("2-D", lambda x: torch.softmax(x, 0)),
}
MARKER = "SCALING_RESULT "


def best_ms(op, x, repeats, barrier=lambda: None, clock=time.perf_counter):
    """Best time of ``op(x)`` in milliseconds over ``repeats`` runs (after one warm-up): wall
    time, or with ``clock=time.process_time`` this process's CPU time."""
    op(x)
    times = []
    for _ in range(repeats):
        barrier()
        start = clock()
        op(x)
        barrier()
        times.append(clock() - start)
    return min(times) * 1e3


def timed(op, repeats, barrier=lambda: None):
    """Best wall time and best CPU time of this process for ``op()``, in ms (after a warm-up).

    CPU time is what a loaded machine cannot inflate much: it counts this process's own work
    only, so it measures the work per rank when other programs take the cores."""
    op()
    wall, cpu = [], []
    for _ in range(repeats):
        barrier()
        w, c = time.perf_counter(), time.process_time()
        op()
        cpu.append(time.process_time() - c)
        barrier()
        wall.append(time.perf_counter() - w)
    return min(wall) * 1e3, min(cpu) * 1e3


def global_data(n, shape):
    return torch.linspace(-10, 10, n, dtype=torch.float64).reshape(SHAPES[shape](n))


def worker(args):
    """Run under mpiexec: time every op on the split tensor; rank 0 prints one JSON line."""
    import torchheat as th

    th.config.fallback = "error"  # an op with no rule is reported, never gathered
    comm = th.get_comm()
    data = {shape: th.distribute(global_data(args.n, shape), split=0) for shape in SHAPES}
    result = {}
    for name, (shape, op) in OPS.items():
        try:
            result[name] = best_ms(op, data[shape], args.repeats, comm.barrier)
        except th.NotDistributedError:
            result[name] = None
    if comm.rank == 0:
        print(MARKER + json.dumps({"procs": comm.size, "backend": comm.backend, "ms": result}), flush=True)


def launch(args, p, script=__file__, marker=MARKER, field="ms", options=None):
    """Times of every op at ``p`` processes (None for n/a), from a child mpiexec job running
    ``script --worker`` (with ``options``, by default ``--n`` and ``--repeats``), which reports
    one JSON line after ``marker`` (its ``field``, or all of it when ``field`` is None)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TORCHHEAT_BACKEND="mpi")
    options = ["--n", str(args.n), "--repeats", str(args.repeats)] if options is None else options
    cmd = [args.mpiexec, "-n", str(p), sys.executable, os.path.abspath(script), "--worker", *options]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(marker)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    report = json.loads(lines[-1][len(marker):])
    return report if field is None else report[field]


def parse_args(doc, repeats=7, rounds=3, names=None):
    """The command line of the benchmarks that launch themselves at several process counts
    (with ``names``, the benchmark's cases: ``--only`` picks some of them)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if names is not None:
        parser.add_argument("--only", nargs="+", default=list(names), choices=names, metavar="NAME",
                            help=f"only these cases, of {', '.join(names)}")
    parser.add_argument("--n", type=int, default=2 * 10**7, help="global number of elements")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per op and round (the best is reported)")
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds of all columns")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to launch")
    # The launcher next to this Python (a virtual environment's MPI) before the one on PATH.
    launcher = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    parser.add_argument("--mpiexec", default=launcher, help="MPI launcher (default: %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def main():
    args = parse_args(__doc__)
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)

    # Rounds alternate torch and every process count, so that load from other programs on
    # the machine hits all columns alike; each entry is the best over rounds.
    rounds = []
    for _ in range(args.rounds):
        data = {shape: global_data(args.n, shape) for shape in SHAPES}
        times = {"torch": {name: best_ms(op, data[shape], args.repeats) for name, (shape, op) in OPS.items()}}
        del data
        times.update({p: launch(args, p) for p in args.procs})
        rounds.append(times)

    def best_over_rounds(column, name):
        values = [r[column][name] for r in rounds]
        return None if None in values else min(values)

    base = {name: best_over_rounds("torch", name) for name in OPS}
    runs = {p: {name: best_over_rounds(p, name) for name in OPS} for p in args.procs}

    print(f"n = {args.n:.0e} float64 elements, 1 thread per process, best of {args.rounds} rounds "
          f"x {args.repeats} runs (ms)")
    header = f"{'op':<28}{'torch':>9}" + "".join(f"{f'p={p}':>9}" for p in args.procs)
    header += "".join(f"{f'speedup p={p}':>13}" for p in args.procs) + "".join(f"{f'eff p={p}':>9}" for p in args.procs)
    print(header)
    for name in OPS:
        ms = [runs[p][name] for p in args.procs]
        row = f"{name:<28}{base[name]:>9.1f}" + "".join(f"{'n/a' if t is None else f'{t:.1f}':>9}" for t in ms)
        row += "".join(f"{'n/a' if t is None else f'{base[name] / t:.2f}':>13}" for t in ms)
        row += "".join(f"{'n/a' if t is None else f'{base[name] / t / p:.2f}':>9}" for t, p in zip(ms, args.procs))
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
