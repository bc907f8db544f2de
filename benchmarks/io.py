"""Parallel I/O throughput: torchheat at 1 and 2 processes against plain h5py/numpy in one process.

    python benchmarks/io.py [--gib 0.25] [--repeats 2] [--rounds 1] [--procs 1 2] [--dir DIR]

Writes then reads a float32 (n, 64) dataset of ``--gib`` GiB (the issue's figure is 1 GiB;
the default is smaller so that a run stays short on a shared machine) to HDF5 and to npy:
first with plain h5py/numpy in this process, then with ``th.io`` under ``mpiexec -n p``
(``--worker``), split along axis 0. Before every read the file is flushed to disk and dropped
from the page cache (``posix_fadvise``), so reads come from the disk, not from memory.
Every entry is the best of ``--repeats`` runs in each of ``--rounds`` rounds, which alternate
the plain libraries and every p (this disk's speed drifts by several times within a minute,
so one long stretch per column compares the disk's moods, not the libraries). Prints GiB/s,
the ratio to the plain library, and the peak memory a rank added during the operation (its high-water mark, reset before each
run) divided by its share of the data.
"""
import argparse
import json
import importlib.util
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("scaling", os.path.join(HERE, "scaling.py"))
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)  # the shared launcher of benchmarks that start themselves under mpiexec

COLUMNS = 64
MARKER = "IO_RESULT "


def rows(gib: float) -> int:
    return int(gib * 2**30) // (COLUMNS * 4)


def rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def measured(fn, barrier=lambda: None):
    """``(seconds, peak bytes added)`` of one run of ``fn()``: the high-water mark is reset first."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = rss_bytes("VmRSS")
    barrier()
    start = time.perf_counter()
    fn()
    barrier()
    return time.perf_counter() - start, rss_bytes("VmHWM") - before


def evict(path: str) -> None:
    """Flush ``path`` to disk and drop it from the page cache, so that the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def best(runs):
    return min(r[0] for r in runs), max(r[1] for r in runs)


def merged(tables):
    """One table of ``{format: {op: (time, peak)}}`` from several rounds' (best time, largest peak)."""
    return {fmt: {op: best([t[fmt][op] for t in tables]) for op in tables[0][fmt]} for fmt in tables[0]}


def plain(args, folder):
    """Times of h5py and numpy in this process."""
    data = torch.randn(rows(args.gib), COLUMNS).numpy()
    h5, npy = os.path.join(folder, "plain.h5"), os.path.join(folder, "plain.npy")
    out = {}

    def h5_write():
        with h5py.File(h5, "w") as f:
            f.create_dataset("data", data=data)

    def h5_read():
        evict(h5)
        with h5py.File(h5, "r") as f:
            return f["data"][()]

    def np_read():
        evict(npy)
        return np.load(npy)

    for fmt, write, read in (("hdf5", h5_write, h5_read), ("npy", lambda: np.save(npy, data), np_read)):
        out[fmt] = {"write": best([measured(write) for _ in range(args.repeats)]),
                    "read": best([measured(read) for _ in range(args.repeats)])}
    return out


def worker(args):
    """Under mpiexec: each rank makes its own chunk (no global tensor), writes and reads it back."""
    import torchheat as th
    from torchheat import layout

    comm = th.get_comm()
    n = rows(args.gib)
    counts = layout.balanced_counts(n, comm.size)
    x = th.from_local(torch.randn(counts[comm.rank], COLUMNS), split=0)
    h5, npy = os.path.join(args.dir, "th.h5"), os.path.join(args.dir, "th.npy")
    out = {}

    def read(load, path):
        def run():
            if comm.rank == 0:
                evict(path)
            comm.barrier()
            return load(path)
        return run

    for fmt, path, save, load in (("hdf5", h5, lambda: th.io.save_hdf5(x, h5, "data"), lambda p: th.io.load_hdf5(p, "data")),
                                  ("npy", npy, lambda: th.io.save_npy(x, npy), th.io.load_npy)):
        results = {"write": best([measured(save, comm.barrier) for _ in range(args.repeats)]),
                   "read": best([measured(read(load, path), comm.barrier) for _ in range(args.repeats)])}
        # The slowest rank's time and the largest peak of any rank.
        every = comm.allgather_obj(results)
        out[fmt] = {op: (max(r[op][0] for r in every), max(r[op][1] for r in every)) for op in results}
        comm.barrier()
        if comm.rank == 0:
            os.remove(path)
    if comm.rank == 0:
        print(MARKER + json.dumps(out), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=0.25, help="size of the dataset in GiB (issue: 1)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per entry (the best is reported)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of all columns (the best is reported)")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts to launch")
    parser.add_argument("--dir", default=None, help="folder for the files (default: a new temporary folder)")
    launcher = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    parser.add_argument("--mpiexec", default=launcher, help="MPI launcher (default: %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    own = args.dir is None
    args.dir = args.dir or tempfile.mkdtemp(prefix="torchheat-io-")
    try:
        options = ["--gib", str(args.gib), "--repeats", str(args.repeats), "--dir", args.dir]
        rounds = [(plain(args, args.dir), {p: scaling.launch(args, p, __file__, MARKER, field=None, options=options)
                                           for p in args.procs}) for _ in range(args.rounds)]
    finally:
        if own:
            shutil.rmtree(args.dir, ignore_errors=True)
    base = merged([r[0] for r in rounds])
    runs = {p: merged([r[1][p] for r in rounds]) for p in args.procs}
    n = rows(args.gib)
    size = n * COLUMNS * 4
    print(f"float32 ({n}, {COLUMNS}) = {size / 2**30:.2f} GiB, best of {args.rounds} rounds x {args.repeats} runs; reads from disk "
          "(file evicted from the page cache); peak = memory a rank added / its share")
    print(f"{'format':<7}{'op':<7}{'who':<16}{'GiB/s':>8}{'vs plain':>10}{'peak/share':>12}")
    for fmt, lib in (("hdf5", "h5py"), ("npy", "numpy")):
        for op in ("write", "read"):
            t0, m0 = base[fmt][op]
            print(f"{fmt:<7}{op:<7}{lib + ' (1 proc)':<16}{size / t0 / 2**30:>8.2f}{1:>10.2f}{m0 / size:>12.2f}")
            for p in args.procs:
                t, m = runs[p][fmt][op]
                share = size / p
                print(f"{fmt:<7}{op:<7}{f'torchheat p={p}':<16}{size / t / 2**30:>8.2f}{t0 / t:>10.2f}{m / share:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
