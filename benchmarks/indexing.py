"""Advanced indexing along the split axis vs plain torch: random int64 keys and a boolean mask.

    python benchmarks/indexing.py [--rows N] [--keys K]
    mpiexec -n 2 python benchmarks/indexing.py

Rows of a float32 (N, 4) tensor split along 0 (default N = 10^7, K = 10^6 random keys, as
in issue 7; pass smaller values on a loaded machine): ``x[keys]`` (the request-reply
all-to-all), ``x[keys] = v``, and ``x[mask]`` with a mask keeping half the rows (local
selection). Prints the best time per op, plain torch on the whole tensor in one process
in the same run, their ratio, and each rank's peak RSS growth over the input share.
"""
import argparse
import os
import resource
import time

if "OMPI_COMM_WORLD_SIZE" not in os.environ and "PMI_SIZE" not in os.environ and "WORLD_SIZE" not in os.environ:
    os.environ.setdefault("TORCHHEAT_BACKEND", "self")

import torch  # noqa: E402

import torchheat as th  # noqa: E402


def best(fn, repeat=3):
    fn()
    times = []
    for _ in range(repeat):
        th.get_comm().barrier()
        t0 = time.perf_counter()
        fn()
        th.get_comm().barrier()
        times.append(time.perf_counter() - t0)
    return min(times)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10**7)
    parser.add_argument("--keys", type=int, default=10**6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    comm = th.get_comm()
    g = torch.Generator().manual_seed(0)
    counts = th.layout.balanced_counts(args.rows, comm.size)
    start = th.layout.offsets(counts)[comm.rank]
    local = torch.arange(start * 4, (start + counts[comm.rank]) * 4, dtype=torch.float32).reshape(-1, 4)
    x = th.from_local(local, 0)
    keys = torch.randint(0, args.rows, (args.keys,), generator=g)
    value = torch.ones(args.keys, 4)
    mask = x[:, 0] % 8 < 4  # keeps half the rows, laid out like x
    share_mb = local.numel() * 4 / 2**20
    base = peak_mb()
    ops = {
        "x[keys]": lambda: x[keys],
        "x[keys] = v": lambda: x.__setitem__(keys, value),
        "x[mask]": lambda: x[mask],
    }
    rows = []
    for name, fn in ops.items():
        t = best(fn)
        grown = peak_mb() - base
        rows.append((name, t, grown))
    if comm.rank == 0:  # plain torch on the whole tensor, in this process
        full = torch.arange(args.rows * 4, dtype=torch.float32).reshape(-1, 4)
        fmask = full[:, 0] % 8 < 4
        plain = {"x[keys]": lambda: full[keys], "x[keys] = v": lambda: full.__setitem__(keys, value),
                 "x[mask]": lambda: full[fmask]}
        print(f"{comm.size} process(es), {args.rows} x 4 float32 rows, {args.keys} keys; "
              f"input share per rank {share_mb:.0f} MB")
        print(f"{'op':<14}{'torchheat s':>12}{'torch s':>10}{'ratio':>8}{'peak RSS growth MB (rank 0)':>30}")
        for name, t, grown in rows:
            tp = best(plain[name], repeat=3) if comm.size == 1 else min(timeit_plain(plain[name]) for _ in range(3))
            print(f"{name:<14}{t:>12.4f}{tp:>10.4f}{t / tp:>8.2f}{grown:>30.0f}")
    comm.barrier()


def timeit_plain(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
