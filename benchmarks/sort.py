"""torch.sort of a split 1-D tensor (float32 and int64) at 1 and 2 processes against torch.sort
in one process, one thread each, and the peak memory per rank.

    python benchmarks/sort.py [--n 10000000] [--repeats 3] [--procs 1 2]

Plain torch is timed in this process; for every p the script launches itself under
``mpiexec -n p`` (``--worker``), each rank builds its chunk of random data (its own
generator: no rank ever holds the global tensor) and times ``torch.sort`` of the split
tensor (a barrier before and after each run); every entry is the best of ``--repeats``
runs. Peak memory is the growth of the process's peak RSS during the sorts, as a multiple
of the bytes of the rank's share of the input. Target: 2 processes at least 1.3x faster
than torch in one process.
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

DTYPES = {"float32": torch.float32, "int64": torch.int64}
MARKER = "SORT_RESULT "


def chunk(n, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(n, generator=gen, dtype=dtype)
    return torch.randint(-(1 << 40), 1 << 40, (n,), generator=gen, dtype=dtype)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))


def best_ms(op, x, repeats, barrier=lambda: None):
    """Best wall time of ``op(x)`` in ms over ``repeats`` runs (after one warm-up), and the
    growth of the peak RSS over the RSS before (Linux: the peak is reset first)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status("VmRSS:")
    op(x)
    times = []
    for _ in range(repeats):
        barrier()
        start = time.perf_counter()
        op(x)
        barrier()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3, _status("VmHWM:") - before


def worker(args):
    import torchheat as th

    th.config.fallback = "error"
    comm = th.get_comm()
    counts = th.layout.balanced_counts(args.n, comm.size)
    result = {}
    for name, dtype in DTYPES.items():
        local = chunk(counts[comm.rank], dtype, seed=comm.rank)
        x = th.from_local(local, 0)
        ms, grown = best_ms(torch.sort, x, args.repeats, comm.barrier)
        share = local.numel() * local.element_size()
        memory = max(comm.allgather_obj(grown / share))
        result[name] = {"ms": ms, "memory": memory}
        del x, local
    if comm.rank == 0:
        print(MARKER + json.dumps({"procs": comm.size, "backend": comm.backend, "result": result}), flush=True)


def launch(args, p):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TORCHHEAT_BACKEND="mpi")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(p), sys.executable, os.path.abspath(__file__),
           "--worker", "--n", str(args.n), "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    for line in out.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])["result"]
    raise RuntimeError(f"mpiexec -n {p} failed:\n{out.stdout}\n{out.stderr}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    plain = {}
    for name, dtype in DTYPES.items():
        x = chunk(args.n, dtype, seed=0)
        ms, grown = best_ms(torch.sort, x, args.repeats)
        plain[name] = {"ms": ms, "memory": grown / (x.numel() * x.element_size())}
        del x
    runs = {p: launch(args, p) for p in args.procs}
    print(f"torch.sort of {args.n:.0e} elements, 1 thread per process (best of {args.repeats}); "
          "memory: peak RSS growth per rank / bytes of the rank's share of the input")
    header = f"{'dtype':>8} | {'torch ms':>9} {'mem':>5} | " + " | ".join(f"{f'p={p} ms':>9} {'speedup':>7} {'mem':>5}" for p in runs)
    print(header)
    print("-" * len(header))
    for name in DTYPES:
        row = f"{name:>8} | {plain[name]['ms']:9.1f} {plain[name]['memory']:5.2f} | "
        row += " | ".join(f"{r[name]['ms']:9.1f} {plain[name]['ms'] / r[name]['ms']:7.2f} {r[name]['memory']:5.2f}"
                          for r in runs.values())
        print(row)


if __name__ == "__main__":
    main()
