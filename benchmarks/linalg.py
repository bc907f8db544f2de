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

A second table times the decompositions the same way: ``torch.linalg.qr`` of a float32
``TSQR_ROWS x 64`` matrix split along its rows (TSQR), and ``torch.linalg.solve`` of a
float32 ``SOLVE_N x SOLVE_N`` matrix split along its rows with one replicated right-hand
side (column-block LU), ``lu_factor`` of the same matrix split along its columns, ``svd``
and ``eigh`` of ``JACOBI_N x JACOBI_N`` matrices split along their columns (one-sided
Jacobi), and ``torch.svd_lowrank(q=20)`` of a rank-20 ``LOWRANK_ROWS x 512`` matrix split
along its rows; memory as a multiple of the rank's share of the matrix. The issue's sizes
are ``TSQR_ROWS=1000000 SOLVE_N=4096 LOWRANK_ROWS=100000`` (environment variables; defaults
200000, 1024 and 20000; ``JACOBI_N`` 192).
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
def decomp_operands():
    """name -> (global matrix, the call on it): the same on every process."""
    g = torch.Generator().manual_seed(0)
    env = lambda name, default: int(os.environ.get(name, default))  # noqa: E731
    rows, n, k = env("TSQR_ROWS", 200000), env("SOLVE_N", 1024), env("JACOBI_N", 192)
    low = env("LOWRANK_ROWS", 20000)
    rhs = torch.randn(n, 1, generator=g)
    square = torch.randn(n, n, generator=g) + n ** 0.5 * torch.eye(n)
    sym = torch.randn(k, k, generator=g)
    return {
        "qr (TSQR)": (torch.randn(rows, 64, generator=g), 0, lambda x: torch.linalg.qr(x)),
        "solve": (square, 0, lambda x: torch.linalg.solve(x, rhs)),
        "lu_factor": (square, 1, lambda x: torch.linalg.lu_factor(x)),
        "svd (Jacobi)": (torch.randn(k, k, generator=g), 1, lambda x: torch.linalg.svd(x)),
        "eigh (Jacobi)": (sym + sym.mT, 1, lambda x: torch.linalg.eigh(x)),
        "svd_lowrank": (torch.randn(low, 20, generator=g) @ torch.randn(20, 512, generator=g), 0,
                        lambda x: torch.svd_lowrank(x, q=20)),
    }


DECOMPS = ("qr (TSQR)", "solve", "lu_factor", "svd (Jacobi)", "eigh (Jacobi)", "svd_lowrank")


def decomp_worker(args):
    import torchheat as th

    th.config.fallback = "error"
    comm = th.get_comm()
    result, memory = {}, {}
    for name, (a, split, fn) in decomp_operands().items():
        x = th.distribute(a, split)
        fn(th.distribute(a[:64 * comm.size], 0) if name.startswith("qr") else x)  # first-call costs
        base = peak_mib()
        result[name] = scaling.best_ms(lambda _: fn(x), None, args.repeats, comm.barrier)
        share = a.numel() * a.element_size() / comm.size / 2**20
        memory[name] = max(comm.allgather_obj(peak_mib() - base)) / share
        del x
    if comm.rank == 0:
        print(MARKER + json.dumps({"ms": result, "memory": memory}), flush=True)


def decomp_table(args):
    base = {name: scaling.best_ms(lambda _: fn(a), None, args.repeats) for name, (a, _, fn) in decomp_operands().items()}
    os.environ["LINALG_DECOMP"] = "1"
    runs = {p: scaling.launch(args, p, __file__, MARKER, field=None) for p in args.procs}
    del os.environ["LINALG_DECOMP"]
    print("decompositions (float32, ms; torch in one process: " + ", ".join(f"{k} {v:.1f}" for k, v in base.items()) + ")")
    print(f"{'op':<14}" + "".join(f"{f'p={p}':>10}{f'eff p={p}':>10}{f'mem p={p}':>10}" for p in args.procs))
    for name in DECOMPS:
        row = f"{name:<14}"
        for p in args.procs:
            ms, mem = runs[p]["ms"][name], runs[p]["memory"][name]
            row += f"{ms:>10.1f}{base[name] / ms / p:>10.2f}{mem:>9.2f}x"
        print(row)
    print("mem: a rank's peak resident-memory growth / its share of the matrix")


def main():
    sys.argv += [] if "--n" in sys.argv else ["--n", "2048"]
    own = own_options()
    args = scaling.parse_args(__doc__, repeats=3, rounds=2)
    args.cdist_rows, args.cdist_worker = own.cdist_rows, own.cdist_worker
    torch.set_num_threads(1)
    if args.worker:
        return decomp_worker(args) if os.environ.get("LINALG_DECOMP") else worker(args)
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
    decomp_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
