"""Distributed matrix products and cdist at 1 and 2 processes against plain torch, one thread each.

    python benchmarks/linalg.py [--n 2048] [--repeats 3] [--rounds 2] [--procs 1 2] [--cdist-rows 20000]
                                [--decomps NAME ...]

Plain torch multiplies two global float32 n x n matrices in this process; then the script
launches itself under ``mpiexec -n p`` for every p, and each worker times the same product
with the operands split as named (``0@1``: A split along its rows, B along its columns; ``None``:
replicated), barriers around each run. Each entry is the best of all its runs over
alternating rounds. Prints wall time and CPU time (of the busiest rank), the parallel
efficiency of each (torch in one process / (p x time); target >= 0.85 at 2 processes) and
each rank's peak memory growth (resident set, largest over ranks) as a multiple of its share
of the two operands. The column ``torch xp`` is plain torch computing one rank's share (its
rows of the product) in each of p processes at once: the efficiency the machine itself
allows (memory bandwidth and caches are shared), by wall and by CPU time. On a machine
with fewer free cores than processes only the CPU-time figures mean anything. The issue's
size is ``--n 4096``.

Then ``torch.cdist(x, x)`` of a float32 ``--cdist-rows x 18`` matrix (the issue's 20000 x 18)
split along its rows (the ring of row blocks; the result is split along the rows), timed
in workers of their own so that its memory (a rank's peak growth over its share of the
result) is measured apart from the products'; its ``torch xp`` column is plain
``torch.cdist`` of a rank's rows against all rows in every process at once.
``--cdist-rows 0`` leaves it out, and ``--n 0`` the products.

A second table times the decompositions the same way: ``torch.linalg.qr`` of a float32
``TSQR_ROWS x 64`` matrix split along its rows (TSQR), and ``torch.linalg.solve`` of a
float32 ``SOLVE_N x SOLVE_N`` matrix split along its rows with one replicated right-hand
side (column-block LU), ``lu_factor`` of the same matrix split along its columns, ``svd``
and ``eigh`` of ``JACOBI_N x JACOBI_N`` matrices split along their columns (one-sided
Jacobi), and ``torch.svd_lowrank(q=20)`` of a rank-20 ``LOWRANK_ROWS x 512`` matrix split
along its rows; wall and CPU time, memory as a multiple of the rank's share of the matrix, and
for the two row-split ones the ``torch xp`` column (plain torch's same call on a rank's rows
in every process at once). ``--decomps qr svd_lowrank`` times only those (the first word of
each name), with alternating rounds as the products. The issue's sizes
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
    parser.add_argument("--decomps", nargs="+", default=None)
    known, rest = parser.parse_known_args()
    sys.argv[1:] = rest
    return known


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def timed(op, args, comm=None):
    """(best wall ms, best CPU ms) of ``op()``; in a worker the CPU time of the busiest rank."""
    if comm is None:
        return scaling.timed(op, args.repeats)
    wall, cpu = scaling.timed(op, args.repeats, comm.barrier)
    return wall, max(comm.allgather_obj(cpu))


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
        result[name] = timed(lambda: x @ y, args, comm)
        del x, y
    share = 2 * a.numel() * a.element_size() / comm.size / 2**20
    growth = max(comm.allgather_obj(peak_mib() - base))
    rows = a[:th.layout.balanced_counts(args.n, comm.size)[comm.rank]].clone()
    plain = timed(lambda: rows @ b, args, comm)  # plain torch, every rank its share at once: the machine's ceiling
    if comm.rank == 0:
        print(MARKER + json.dumps({"ms": result, "plain": plain, "memory": growth / share}), flush=True)


def cdist_worker(args, th, comm):
    whole = cdist_operand(args.cdist_rows)
    x = th.distribute(whole, 0)
    warm = th.distribute(torch.ones(4, 2), 0)
    torch.cdist(warm, warm).full()
    base = peak_mib()
    ms = timed(lambda: torch.cdist(x, x), args, comm)
    share = args.cdist_rows ** 2 * 4 / comm.size / 2**20
    growth = max(comm.allgather_obj(peak_mib() - base))
    rows = x.local.clone()
    plain = timed(lambda: torch.cdist(rows, whole), args, comm)
    if comm.rank == 0:
        print(MARKER + json.dumps({"ms": ms, "plain": plain, "memory": growth / share}), flush=True)


def header(first, procs):
    return (f"{first:<14}" + "".join(f"{f'p={p}':>9}{'eff':>6}{'cpu':>9}{'eff':>6}{'mem':>9}" for p in procs)
            + "".join(f"{f'torch x{p}':>10}{'(cpu)':>6}" for p in procs if p > 1))


def row(name, base, runs, plain, memory, procs):
    """One table row: wall and CPU time per p with their efficiencies (torch in one process /
    (p x time)), memory, and plain torch's own efficiency at p processes (wall, CPU)."""
    line = f"{name:<14}"
    for p in procs:
        line += f"{runs[p][0]:>9.1f}{base[0] / runs[p][0] / p:>6.2f}{runs[p][1]:>9.1f}{base[1] / runs[p][1] / p:>6.2f}"
        line += f"{memory[p]:>8.2f}x"
    if plain is None:  # no per-rank share of plain torch's work to time
        return line + "".join(f"{'-':>10}{'-':>6}" for p in procs if p > 1)
    return line + "".join(f"{base[0] / plain[p][0] / p:>10.2f}{base[1] / plain[p][1] / p:>6.2f}" for p in procs if p > 1)


def best(rounds, pick):
    """Entry-wise best (wall, CPU) over the rounds of ``pick(round)``."""
    return tuple(min(pick(r)[i] for r in rounds) for i in (0, 1))


LEGEND = ("wall and cpu in ms (cpu: the busiest rank's CPU time), eff = torch in one process / (p x time); "
          "torch xp: plain torch computing a rank's share in each of p processes at once, the efficiency this "
          "machine itself allows (wall, cpu)")


def alternating_rounds(args, plain_torch, options=None) -> list:
    """``args.rounds`` rounds, each timing plain torch in this process (``plain_torch()``
    builds its operands and returns their times) and then a worker job at every p."""
    rounds = []
    for _ in range(args.rounds):
        times = {"torch": plain_torch()}
        times.update({p: scaling.launch(args, p, __file__, MARKER, field=None, options=options) for p in args.procs})
        rounds.append(times)
    return rounds


def cdist_rows(args):
    """The cdist table row: best times over the rounds, efficiency and memory per p."""
    options = ["--n", str(args.n), "--repeats", str(args.repeats), "--cdist-worker", "--cdist-rows", str(args.cdist_rows)]

    def plain_torch():
        x = cdist_operand(args.cdist_rows)
        return timed(lambda: torch.cdist(x, x), args)

    rounds = alternating_rounds(args, plain_torch, options)
    base = best(rounds, lambda r: r["torch"])
    print(f"\nfloat32 cdist({args.cdist_rows} x {CDIST_FEATURES}, itself), split along the rows; torch in one process: "
          f"{base[0]:.1f} ms (cpu {base[1]:.1f})")
    print(header("op", args.procs))
    runs = {p: best(rounds, lambda r: r[p]["ms"]) for p in args.procs}
    plain = {p: best(rounds, lambda r: r[p]["plain"]) for p in args.procs}
    memory = {p: max(r[p]["memory"] for r in rounds) for p in args.procs}
    print(row("cdist", base, runs, plain, memory, args.procs))
    print("mem: a rank's peak resident-memory growth / its share of the result; " + LEGEND)


def decomp_operands(only=None):
    """name -> (global matrix, the call on it): the same on every process; ``only``: the
    first words of the names to keep."""
    g = torch.Generator().manual_seed(0)
    env = lambda name, default: int(os.environ.get(name, default))  # noqa: E731
    rows, n, k = env("TSQR_ROWS", 200000), env("SOLVE_N", 1024), env("JACOBI_N", 192)
    low = env("LOWRANK_ROWS", 20000)
    rhs = torch.randn(n, 1, generator=g)
    square = torch.randn(n, n, generator=g) + n ** 0.5 * torch.eye(n)
    sym = torch.randn(k, k, generator=g)
    ops = {
        "qr (TSQR)": (torch.randn(rows, 64, generator=g), 0, lambda x: torch.linalg.qr(x)),
        "solve": (square, 0, lambda x: torch.linalg.solve(x, rhs)),
        "lu_factor": (square, 1, lambda x: torch.linalg.lu_factor(x)),
        "svd (Jacobi)": (torch.randn(k, k, generator=g), 1, lambda x: torch.linalg.svd(x)),
        "eigh (Jacobi)": (sym + sym.mT, 1, lambda x: torch.linalg.eigh(x)),
        "svd_lowrank": (torch.randn(low, 20, generator=g) @ torch.randn(20, 512, generator=g), 0,
                        lambda x: torch.svd_lowrank(x, q=20)),
    }
    return {k: v for k, v in ops.items() if only is None or k.split()[0] in only}


DECOMPS = ("qr (TSQR)", "solve", "lu_factor", "svd (Jacobi)", "eigh (Jacobi)", "svd_lowrank")
ROW_SHARE = ("qr (TSQR)", "svd_lowrank")  # the work on a rank's rows is the same call on fewer rows


def decomp_worker(args):
    import torchheat as th

    th.config.fallback = "error"
    comm = th.get_comm()
    result, memory, plain = {}, {}, {}
    for name, (a, split, fn) in decomp_operands(args.decomps).items():
        x = th.distribute(a, split)
        fn(th.distribute(a[:64 * comm.size], 0) if name.startswith("qr") else x)  # first-call costs
        base = peak_mib()
        result[name] = timed(lambda: fn(x), args, comm)
        share = a.numel() * a.element_size() / comm.size / 2**20
        memory[name] = max(comm.allgather_obj(peak_mib() - base)) / share
        if split == 0 and name in ROW_SHARE:  # plain torch on a rank's rows, every rank at once: the machine's ceiling
            rows = x.local.clone()
            plain[name] = timed(lambda: fn(rows), args, comm)
        del x
    if comm.rank == 0:
        print(MARKER + json.dumps({"ms": result, "memory": memory, "plain": plain}), flush=True)


def decomp_table(args):
    """The decompositions' table: best times over the rounds, efficiency, memory and (for the
    row-split QR and svd_lowrank) plain torch's own efficiency at p processes."""
    names = [name for name in DECOMPS if name in decomp_operands(args.decomps)]
    options = ["--n", str(args.n), "--repeats", str(args.repeats)] + (["--decomps", *args.decomps] if args.decomps else [])
    os.environ["LINALG_DECOMP"] = "1"
    rounds = alternating_rounds(
        args, lambda: {name: timed(lambda: fn(a), args) for name, (a, _, fn) in decomp_operands(args.decomps).items()},
        options)
    del os.environ["LINALG_DECOMP"]
    base = {name: best(rounds, lambda r: r["torch"][name]) for name in names}
    print("\ndecompositions (float32; torch in one process, ms: " + ", ".join(f"{k} {base[k][0]:.1f}" for k in names) + ")")
    print(header("op", args.procs))
    for name in names:
        runs = {p: best(rounds, lambda r: r[p]["ms"][name]) for p in args.procs}
        memory = {p: max(r[p]["memory"][name] for r in rounds) for p in args.procs}
        if all(name in r[p]["plain"] for r in rounds for p in args.procs):
            plain = {p: best(rounds, lambda r: r[p]["plain"][name]) for p in args.procs}
            print(row(name, base[name], runs, plain, memory, args.procs))
        else:
            print(row(name, base[name], runs, None, memory, args.procs))
    print("mem: a rank's peak resident-memory growth / its share of the matrix; " + LEGEND)


def products_table(args):
    """The products' table (``--n`` x ``--n`` operands, every pair of splits)."""

    def plain_torch():
        a, b = operands(args.n)
        return timed(lambda: a @ b, args)

    rounds = alternating_rounds(args, plain_torch)
    base = best(rounds, lambda r: r["torch"])
    print(f"float32 {args.n} x {args.n} @ {args.n} x {args.n}, 1 thread per process, best of {args.rounds} rounds "
          f"x {args.repeats} runs; torch in one process: {base[0]:.1f} ms (cpu {base[1]:.1f})")
    print(header("splits", args.procs))
    plain = {p: best(rounds, lambda r: r[p]["plain"]) for p in args.procs}
    memory = {p: max(r[p]["memory"] for r in rounds) for p in args.procs}
    for name in PAIRS:
        print(row(name, base, {p: best(rounds, lambda r: r[p]["ms"][name]) for p in args.procs}, plain, memory, args.procs))
    print("mem: a rank's peak resident-memory growth over all products / its share of the two operands; " + LEGEND)


def main():
    sys.argv += [] if "--n" in sys.argv else ["--n", "2048"]
    own = own_options()
    args = scaling.parse_args(__doc__, repeats=3, rounds=2)
    args.cdist_rows, args.cdist_worker, args.decomps = own.cdist_rows, own.cdist_worker, own.decomps
    torch.set_num_threads(1)
    if args.worker:
        return decomp_worker(args) if os.environ.get("LINALG_DECOMP") else worker(args)
    if args.n:
        products_table(args)
    if args.cdist_rows:
        cdist_rows(args)
    decomp_table(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
