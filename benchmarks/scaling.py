"""Strong scaling of torchheat at 1 and 2 processes against plain torch, one thread each.

    python benchmarks/scaling.py [--n 20000000] [--repeats 7] [--rounds 3] [--procs 1 2]

The script times plain torch on the global tensor itself, then launches itself under
``mpiexec -n p`` (``--worker``) for every p; each worker times the same ops on a
tensor of the same global size split along its only axis (median of ``--repeats``
runs, a barrier before and after each run) and rank 0 reports back as one JSON line.
``--rounds`` alternate all columns (so that load from other programs hits them alike)
and the median over rounds is reported. Prints one table: time per op, speedup over
torch and parallel efficiency (speedup / p). An op with no distributed rule yet is
reported as n/a.
Target: efficiency >= 0.85 at 2 processes for the compute-heavy chain.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# The global data: x = linspace(-10, 10, n) in float64; every op reduces or scans over
# the split axis (the only axis) except the pointwise chain.
OPS = {
    "sin(x)**2 + cos(x)**2": lambda x: torch.sin(x) ** 2 + torch.cos(x) ** 2,
    "sum": lambda x: x.sum(),
    "var": lambda x: x.var(),
    "cumsum": lambda x: torch.cumsum(x, 0),
    "softmax": lambda x: torch.softmax(x, 0),
}
MARKER = "SCALING_RESULT "


def median_ms(op, x, repeats, barrier=lambda: None):
    """Median wall time of ``op(x)`` in milliseconds (after one warm-up call)."""
    op(x)
    times = []
    for _ in range(repeats):
        barrier()
        start = time.perf_counter()
        op(x)
        barrier()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def worker(args):
    """Run under mpiexec: time every op on the split tensor; rank 0 prints one JSON line."""
    import torchheat as th

    th.config.fallback = "error"  # an op with no rule is reported, never gathered
    comm = th.get_comm()
    x = th.linspace(-10, 10, args.n, split=0, dtype=torch.float64)
    result = {}
    for name, op in OPS.items():
        try:
            result[name] = median_ms(op, x, args.repeats, comm.barrier)
        except th.NotDistributedError:
            result[name] = None
    if comm.rank == 0:
        print(MARKER + json.dumps({"procs": comm.size, "backend": comm.backend, "ms": result}), flush=True)


def launch(args, p):
    """Times of every op at ``p`` processes (None for n/a), from a child mpiexec job."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TORCHHEAT_BACKEND="mpi")
    cmd = [args.mpiexec, "-n", str(p), sys.executable, os.path.abspath(__file__), "--worker",
           "--n", str(args.n), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed with exit status {proc.returncode}")
    return json.loads(lines[-1][len(MARKER):])["ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2 * 10**7, help="global number of elements")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per op (the median is reported)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of all columns")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to launch")
    # The launcher next to this Python (a virtual environment's MPI) before the one on PATH.
    launcher = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    parser.add_argument("--mpiexec", default=launcher, help="MPI launcher (default: %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)

    # Rounds alternate torch and every process count, so that load from other programs on
    # the machine hits all columns alike; each entry is the median over rounds.
    rounds = []
    for _ in range(args.rounds):
        x = torch.linspace(-10, 10, args.n, dtype=torch.float64)
        times = {"torch": {name: median_ms(op, x, args.repeats) for name, op in OPS.items()}}
        del x
        times.update({p: launch(args, p) for p in args.procs})
        rounds.append(times)

    def median_over_rounds(column, name):
        values = [r[column][name] for r in rounds]
        return None if None in values else statistics.median(values)

    base = {name: median_over_rounds("torch", name) for name in OPS}
    runs = {p: {name: median_over_rounds(p, name) for name in OPS} for p in args.procs}

    print(f"n = {args.n:.0e} float64 elements, 1 thread per process, median of {args.rounds} rounds "
          f"x {args.repeats} runs (ms)")
    header = f"{'op':<24}{'torch':>9}" + "".join(f"{f'p={p}':>9}" for p in args.procs)
    header += "".join(f"{f'speedup p={p}':>13}" for p in args.procs) + "".join(f"{f'eff p={p}':>9}" for p in args.procs)
    print(header)
    for name in OPS:
        ms = [runs[p][name] for p in args.procs]
        row = f"{name:<24}{base[name]:>9.1f}" + "".join(f"{'n/a' if t is None else f'{t:.1f}':>9}" for t in ms)
        row += "".join(f"{'n/a' if t is None else f'{base[name] / t:.2f}':>13}" for t in ms)
        row += "".join(f"{'n/a' if t is None else f'{base[name] / t / p:.2f}':>9}" for t, p in zip(ms, args.procs))
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
