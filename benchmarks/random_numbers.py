"""Throughput of torchheat's random factories at 1 and 2 processes against plain torch, one thread each.

    python benchmarks/random_numbers.py [--n 20000000] [--repeats 5] [--rounds 2] [--procs 1 2]

Plain torch draws the global tensor in this process (``torch.rand(n)``, ...); then the script
launches itself under ``mpiexec -n p`` for every p, and each worker draws a tensor of the
same global size split along axis 0 (barriers around each run). Rounds alternate all
columns (so that load from other programs hits them alike); each entry is the best of all
its runs. Prints wall and CPU time per draw (CPU: of the busiest rank, which load from other
programs does not inflate), throughput relative to torch (torch CPU time / torchheat's at 1
process: target >= 0.5) and the parallel efficiency at p processes (torchheat at 1 process /
(p x torchheat at p), by CPU time and by wall time: target >= 0.85 for split=0). On a machine
with fewer free cores than processes only the CPU-time figures mean anything.
"""
import functools
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

_spec = importlib.util.spec_from_file_location("scaling", os.path.join(HERE, "scaling.py"))
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)


@functools.lru_cache(maxsize=1)
def ones(n):
    return torch.ones(n)

COLUMNS = 100
# name -> (plain torch on the global size n, torchheat's draw of the same global tensor)
OPS = {
    "rand float32": (lambda n: torch.rand(n), lambda th, n: th.rand(n, split=0)),
    "randn float32": (lambda n: torch.randn(n), lambda th, n: th.randn(n, split=0)),
    "rand float64": (lambda n: torch.rand(n, dtype=torch.float64), lambda th, n: th.rand(n, split=0, dtype=torch.float64)),
    "randn float64": (lambda n: torch.randn(n, dtype=torch.float64), lambda th, n: th.randn(n, split=0, dtype=torch.float64)),
    "randn bfloat16": (lambda n: torch.randn(n, dtype=torch.bfloat16), lambda th, n: th.randn(n, split=0, dtype=torch.bfloat16)),
    "randint(0, 100)": (lambda n: torch.randint(0, 100, (n,)), lambda th, n: th.randint(0, 100, (n,), split=0)),
    f"randn (n/{COLUMNS}, {COLUMNS}) split=1": (lambda n: torch.randn(n // COLUMNS, COLUMNS),
                                                lambda th, n: th.randn(n // COLUMNS, COLUMNS, split=1)),
    "randperm(n / 10)": (lambda n: torch.randperm(n // 10), lambda th, n: th.randperm(n // 10, split=0)),
    "dropout(p=0.5)": (lambda n: F.dropout(ones(n), 0.5), None),
}
MARKER = "RANDOM_RESULT "


def worker(args):
    """Run under mpiexec: time every draw; rank 0 prints one JSON line (CPU: the busiest rank)."""
    import torchheat as th

    comm = th.get_comm()
    ones = th.ones(args.n, split=0)
    draws = {name: (lambda: F.dropout(ones, 0.5)) if make is None else (lambda make=make: make(th, args.n))
             for name, (_, make) in OPS.items()}
    share = args.n // comm.size  # plain torch drawing a rank's share on every rank at once: the machine's own ceiling
    result, plain = {}, {}
    for name, draw in draws.items():
        wall, cpu = scaling.timed(draw, args.repeats, comm.barrier)
        result[name] = (wall, max(comm.allgather_obj(cpu)))
        wall, cpu = scaling.timed(lambda f=OPS[name][0]: f(share), args.repeats, comm.barrier)
        plain[name] = (wall, max(comm.allgather_obj(cpu)))
    if comm.rank == 0:
        print(MARKER + json.dumps({"procs": comm.size, "ms": result, "plain": plain}), flush=True)


def main():
    args = scaling.parse_args(__doc__, repeats=5, rounds=2)
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    rounds = []
    for _ in range(args.rounds):
        times = {"torch": {name: scaling.timed(lambda f=plain: f(args.n), args.repeats) for name, (plain, _) in OPS.items()}}
        for p in args.procs:
            got = scaling.launch(args, p, __file__, MARKER, field=None)
            times[p], times[f"torch x{p}"] = got["ms"], got["plain"]
        rounds.append(times)
    columns = ["torch"] + args.procs
    others = [p for p in args.procs if p > 1]
    best = {(c, k): {name: min(r[c][name][k] for r in rounds) for name in OPS}
            for c in columns + [f"torch x{p}" for p in others] for k in (0, 1)}
    print(f"n = {args.n:.0e} elements, 1 thread per process, best of {args.rounds} rounds x {args.repeats} runs (ms); "
          "cpu = CPU time of the busiest rank")
    header = f"{'draw':<30}" + "".join(f"{f'{kind} {c}':>11}" for kind in ("wall", "cpu") for c in columns)
    one = args.procs[0]
    header += f"{'vs torch':>10}" + "".join(f"{f'eff p={p}':>10}{f'(wall)':>8}{'torch':>7}" for p in others)
    print(header)
    for name in OPS:
        row = f"{name:<30}" + "".join(f"{best[c, k][name]:>11.1f}" for k in (0, 1) for c in columns)
        row += f"{best['torch', 1][name] / best[one, 1][name]:>10.2f}"
        row += "".join(f"{best[one, 1][name] * one / (best[p, 1][name] * p):>10.2f}"
                       f"{best[one, 0][name] * one / (best[p, 0][name] * p):>8.2f}"
                       f"{best['torch', 1][name] / (best[f'torch x{p}', 1][name] * p):>7.2f}" for p in others)
        print(row)
    print("torch: plain torch drawing a 1/p share in each of p processes at once (CPU time), the efficiency this "
          "machine itself allows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
