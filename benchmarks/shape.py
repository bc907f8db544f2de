"""Shape ops that move rows between ranks, at 1 and 2 processes against plain torch.

    python benchmarks/shape.py [--n 6000000] [--repeats 5] [--procs 1 2]

Ops (float64, global input of n elements split along axis 0):
  reshape chain   x.t() (split along axis 1) -> (n/600, 600) -> (n/1000, 1000): the rows cross
                  chunk boundaries (a move to axis 0, then exchanges of flat ranges);
  cat(x, y)       two split tensors of n/2 x 2 elements each, joined along the split axis
                  (one exchange into the balanced layout);
  cat(x, y, 1)    the same along the other axis (local).
Time is the best of ``--repeats`` runs (ms). Peak memory is the high-water mark of the
process's resident set during the op above what it held before (sampled every 0.5 ms), per
rank, next to the rank's share of the input. Plain torch runs in this process; every p
runs under ``mpiexec -n p``. On a loaded machine, take the figures as rough.
"""
import argparse
import json
import importlib.util
import os
import shutil
import sys
import threading
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("scaling", os.path.join(HERE, "scaling.py"))
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)  # the shared launcher of benchmarks that start themselves under mpiexec

MARKER = "SHAPE_RESULT "
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """High-water mark of the resident set above its level on entry, sampled by a thread."""

    def __enter__(self):
        self.base = self.peak = rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss())
        self.extra = self.peak - self.base


def inputs(n):
    a = torch.linspace(-1, 1, n, dtype=torch.float64).reshape(n // 1000, 1000)
    return {"x": a, "y": torch.linspace(0, 1, n // 2, dtype=torch.float64).reshape(n // 4, 2),
            "z": torch.linspace(1, 2, n // 2, dtype=torch.float64).reshape(n // 4, 2)}


OPS = {
    "reshape chain": lambda d: d["x"].t().reshape(-1, 600).reshape(-1, 1000),
    "cat(x, y) split axis": lambda d: torch.cat([d["y"], d["z"]]),
    "cat(x, y, 1)": lambda d: torch.cat([d["y"], d["z"]], 1),
}
SHARE = {"reshape chain": ("x",), "cat(x, y) split axis": ("y", "z"), "cat(x, y, 1)": ("y", "z")}


def measure(data, repeats, barrier=lambda: None):
    result = {}
    for name, op in OPS.items():
        op(data)
        times = []
        for _ in range(repeats):
            barrier()
            start = time.perf_counter()
            out = op(data)
            barrier()
            times.append(time.perf_counter() - start)
            del out
        with PeakRSS() as peak:
            out = op(data)
        del out
        share = sum(_local_bytes(data[k]) for k in SHARE[name])
        result[name] = {"ms": min(times) * 1e3, "peak_mb": peak.extra / 2**20, "share_mb": share / 2**20}
    return result


def _local_bytes(t):
    local = t.local if hasattr(t, "local") else t
    return local.numel() * local.element_size()


def worker(args):
    import torchheat as th

    th.config.fallback = "error"
    comm = th.get_comm()
    data = {k: th.distribute(v, split=0) for k, v in inputs(args.n).items()}
    mine = measure(data, args.repeats, comm.barrier)
    every = comm.allgather_obj(mine)
    if comm.rank == 0:
        worst = {name: {"ms": mine[name]["ms"], "peak_mb": max(r[name]["peak_mb"] for r in every),
                        "share_mb": max(r[name]["share_mb"] for r in every)} for name in OPS}
        print(MARKER + json.dumps(worst), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6 * 10**6, help="global elements of x (a multiple of 6000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    launcher = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    parser.add_argument("--mpiexec", default=launcher)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    base = measure(inputs(args.n), args.repeats)
    runs = {p: scaling.launch(args, p, __file__, MARKER, field=None) for p in args.procs}
    print(f"n = {args.n:.0e} float64 elements, 1 thread per process, best of {args.repeats} runs; "
          "peak = resident memory added during the op, worst rank; share = the rank's part of the input")
    head = f"{'op':<22}{'torch ms':>10}" + "".join(f"{f'p={p} ms':>10}{'ratio':>7}" for p in args.procs)
    head += f"{'torch peak MB':>15}" + "".join(f"{f'p={p} peak/share MB':>22}" for p in args.procs)
    print(head)
    for name in OPS:
        row = f"{name:<22}{base[name]['ms']:>10.1f}"
        row += "".join(f"{runs[p][name]['ms']:>10.1f}{base[name]['ms'] / runs[p][name]['ms']:>7.2f}" for p in args.procs)
        row += f"{base[name]['peak_mb']:>15.1f}"
        row += "".join(f"{runs[p][name]['peak_mb']:>13.1f} / {runs[p][name]['share_mb']:<6.1f}" for p in args.procs)
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
