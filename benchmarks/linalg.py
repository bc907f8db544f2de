"""Distributed matrix products and cdist at 1 and 2 processes against plain torch, one thread each.

    python benchmarks/linalg.py [--n 2048] [--repeats 3] [--rounds 2] [--procs 1 2] [--cdist-rows 20000]

Plain torch multiplies two global float32 n x n matrices in this process; then the script
launches itself under ``mpiexec -n p`` for every p, and each worker times the same product
with the operands split as named (``0@1``: A split along its rows, B along its columns; ``None``:
replicated), barriers around each run. Each entry is the best of all its runs over
alternating rounds. Prints time, speedup, parallel efficiency (speedup / p; target >= 0.85 at
2 processes) and each rank's peak memory growth (resident set, largest over ranks) as a
multiple of its share of the two operands. The issue's size is ``--n 4096``.

Then ``torch.cdist(x, x)`` of a float32 ``--cdist-rows x 18`` matrix (the issue's 20000 x 18)
split along its rows (the ring of row blocks; the result is split along the rows), timed
in workers of their own so that its memory (a rank's peak growth over its share of the
result) is measured apart from the products'. ``--cdist-rows 0`` leaves it out.
"""
import argparse
import importlib.util
import json
import os
import resource
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("scaling", os.path.join(HERE, "scaling.py"))
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)

CDIST_FEATURES = 18
PAIRS = {"0@0": (0, 0), "1@0": (1, 0), "0@1": (0, 1), "1@1": (1, 1), "0@None": (0, None)}
MARKER = "LINALG_RESULT "


def operands(n):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)


def cdist_operand(rows):
    return torch.randn(rows, CDIST_FEATURES, generator=torch.Generator().manual_seed(1))


def own_options():
    """This script's options (removed from the command line that scaling.parse_args reads)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cdist-rows", type=int, default=20000)
    parser.add_argument("--cdist-worker", action="store_true")
    known, rest = parser.parse_known_args()
    sys.argv[1:] = rest
    return known


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def worker(args):
    import torchheat as th

    th.config.fallback = "error"
    comm = th.get_comm()
    if args.cdist_worker:
        return cdist_worker(args, th, comm)
    a, b = operands(args.n)
    warm = th.distribute(torch.ones(4, 4), 0)
    (warm @ warm.full()).full()  # first-call costs (imports, caches) are not the products' memory
    result, base = {}, peak_mib()
    for name, (sa, sb) in PAIRS.items():
        x, y = th.distribute(a, sa), th.distribute(b, sb)
        result[name] = scaling.best_ms(lambda _: x @ y, None, args.repeats, comm.barrier)
        del x, y
    share = 2 * a.numel() * a.element_size() / comm.size / 2**20
    growth = max(comm.allgather_obj(peak_mib() - base))
    if comm.rank == 0:
        print(MARKER + json.dumps({"ms": result, "memory": growth / share}), flush=True)


def cdist_worker(args, th, comm):
    x = th.distribute(cdist_operand(args.cdist_rows), 0)
    warm = th.distribute(torch.ones(4, 2), 0)
    torch.cdist(warm, warm).full()
    base = peak_mib()
    ms = scaling.best_ms(lambda _: torch.cdist(x, x), None, args.repeats, comm.barrier)
    share = args.cdist_rows ** 2 * 4 / comm.size / 2**20
    growth = max(comm.allgather_obj(peak_mib() - base))
    if comm.rank == 0:
        print(MARKER + json.dumps({"ms": ms, "memory": growth / share}), flush=True)


def cdist_rows(args):
    """The cdist table row: best times over the rounds, efficiency and memory per p."""
    rounds = []
    options = ["--n", str(args.n), "--repeats", str(args.repeats), "--cdist-worker", "--cdist-rows", str(args.cdist_rows)]
    for _ in range(args.rounds):
        x = cdist_operand(args.cdist_rows)
        times = {"torch": scaling.best_ms(lambda _: torch.cdist(x, x), None, args.repeats)}
        del x
        times.update({p: scaling.launch(args, p, __file__, MARKER, field=None, options=options) for p in args.procs})
        rounds.append(times)
    base = min(r["torch"] for r in rounds)
    print(f"\nfloat32 cdist({args.cdist_rows} x {CDIST_FEATURES}, itself), split along the rows; torch in one process: "
          f"{base:.1f} ms")
    print(f"{'op':<10}" + "".join(f"{f'p={p}':>10}{f'eff p={p}':>10}{f'mem p={p}':>10}" for p in args.procs))
    row = f"{'cdist':<10}"
    for p in args.procs:
        ms, mem = min(r[p]["ms"] for r in rounds), max(r[p]["memory"] for r in rounds)
        row += f"{ms:>10.1f}{base / ms / p:>10.2f}{mem:>9.2f}x"
    print(row)
    print("mem: a rank's peak resident-memory growth / its share of the result")


def main():
    sys.argv += [] if "--n" in sys.argv else ["--n", "2048"]
    own = own_options()
    args = scaling.parse_args(__doc__, repeats=3, rounds=2)
    args.cdist_rows, args.cdist_worker = own.cdist_rows, own.cdist_worker
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    rounds = []
    for _ in range(args.rounds):
        a, b = operands(args.n)
        times = {"torch": scaling.best_ms(lambda _: a @ b, None, args.repeats)}
        del a, b
        times.update({p: scaling.launch(args, p, __file__, MARKER, field=None) for p in args.procs})
        rounds.append(times)
    base = min(r["torch"] for r in rounds)
    print(f"float32 {args.n} x {args.n} @ {args.n} x {args.n}, 1 thread per process, best of {args.rounds} rounds "
          f"x {args.repeats} runs (ms); torch in one process: {base:.1f} ms")
    print(f"{'splits':<10}" + "".join(f"{f'p={p}':>10}{f'eff p={p}':>10}{f'mem p={p}':>10}" for p in args.procs))
    for name in PAIRS:
        row = f"{name:<10}"
        for p in args.procs:
            ms = min(r[p]["ms"][name] for r in rounds)
            mem = max(r[p]["memory"] for r in rounds)
            row += f"{ms:>10.1f}{base / ms / p:>10.2f}{mem:>9.2f}x"
        print(row)
    print("mem: a rank's peak resident-memory growth over all products / its share of the two operands")
    if args.cdist_rows:
        cdist_rows(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
