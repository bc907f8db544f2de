"""torch.fft on split tensors at 1 and 2 processes against plain torch, one thread each.

    python benchmarks/fft.py [--full] [--repeats 3] [--rounds 2] [--procs 1 2]

Transforms (the issue's sizes with ``--full``; by default each side is a quarter, or the
1-D length a sixteenth, so that the run fits a small shared machine):
  fft2   a 4096 x 4096 complex64 tensor split along its rows (a slab: two all-to-alls);
  fft    a 1-D complex64 signal of 2^24 split along its axis (the four-step FFT: three
         all-to-alls and two small rebalancing exchanges);
  rfftn  a 256^3 float32 tensor split along axis 0 (a pencil: the other two axes first).
Plain torch runs in this process; every p runs under ``mpiexec -n p`` (benchmarks/scaling.py's
launcher). ``--rounds`` alternate all columns; every entry is the best of all its runs (ms).
Prints time, speedup over torch and parallel efficiency (speedup / p), in wall time and, in the
rows marked ``(cpu)``, in CPU time (of the busiest rank; MPICH busy-polls while it waits, so
waiting counts as well): on a machine that other programs load, the CPU rows are the steadier.
Targets at 2 processes: efficiency >= 0.8 for fft2, >= 0.6 for the 1-D fft.

The last lines bound what any row-split fft2 can reach. Each of p ranks transforms, at least,
its 1/p of the rows and its 1/p of the columns, each a batched 1-D pass along the contiguous
axis (torch's fastest call; a pass along a strided axis is slower, and torch's own ``fft2`` does
its column pass inside one multi-dimensional transform that no per-axis call reaches); and the
columns reach it, and its result leaves it, through two all-to-alls, each at least one copy of
its chunk. Timed here in one process with nothing else running, the copies into memory
already touched, ``torch / (p * (two passes + two copies))`` is a ceiling on the efficiency at p (a tight one
with ``--full``; the default sizes fit in cache, where it can exceed 1).
"""
import argparse
import importlib.util
import json
import os
import shutil
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("scaling", os.path.join(HERE, "scaling.py"))
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)  # the shared launcher and timer of the benchmarks

MARKER = "FFT_RESULT "
CPU = " (cpu)"  # the row of CPU times (of the busiest rank): less disturbed by a loaded machine than wall time


def cases(full: bool):
    """name -> (global shape, dtype, transform)."""
    side, n, cube = (4096, 2**24, 256) if full else (1024, 2**20, 128)
    return {
        f"fft2 {side}^2 c64": ((side, side), torch.complex64, torch.fft.fft2),
        f"fft 2^{n.bit_length() - 1} c64": ((n,), torch.complex64, torch.fft.fft),
        f"rfftn {cube}^3 f32": ((cube,) * 3, torch.float32, torch.fft.rfftn),
    }


def data(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, dtype=dtype, generator=gen)


def least_slab_work(chunk):
    """One rank's least work in a slab fft2 (``chunk`` is overwritten): two batched 1-D passes,
    each followed by a copy into memory already touched (the all-to-all's share); one fresh
    result, as torch's ``fft2`` allocates."""
    out = torch.fft.fft(chunk, dim=-1)
    chunk.copy_(out)
    torch.fft.fft(chunk, dim=-1, out=out)
    chunk.copy_(out)


def worker(args):
    import torchheat as th

    th.config.fallback = "error"  # no rule means a failure, never a gather
    comm = th.get_comm()
    result = {}
    for name, (shape, dtype, fn) in cases(args.full).items():
        x = th.distribute(data(shape, dtype), split=0)
        result[name] = scaling.best_ms(fn, x, args.repeats, comm.barrier)
        cpu = scaling.best_ms(fn, x, args.repeats, comm.barrier, time.process_time)
        result[name + CPU] = comm.allreduce(torch.tensor([cpu], dtype=torch.float64), "max").item()  # the busiest rank
        del x
    if comm.rank == 0:
        print(MARKER + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="the issue's sizes (4096^2, 2^24, 256^3)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--mpiexec", default=shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    options = ["--repeats", str(args.repeats)] + (["--full"] if args.full else [])
    fft2 = next(iter(cases(args.full)))  # the first case
    side = cases(args.full)[fft2][0][0]
    rounds = []
    for _ in range(args.rounds):
        times = {"torch": {}}
        for name, (shape, dtype, fn) in cases(args.full).items():
            times["torch"][name] = scaling.best_ms(fn, data(shape, dtype), args.repeats)
            times["torch"][name + CPU] = scaling.best_ms(fn, data(shape, dtype), args.repeats, clock=time.process_time)
        times["ceiling"] = {p: scaling.best_ms(least_slab_work, data((side // p, side), torch.complex64), args.repeats)
                            for p in args.procs if p > 1}
        times.update({p: scaling.launch(args, p, __file__, MARKER, field=None, options=options) for p in args.procs})
        rounds.append(times)
    best = {c: {name: min(r[c][name] for r in rounds) for name in rounds[0]["torch"]} for c in ["torch", *args.procs]}
    print(f"1 thread per process, best of {args.rounds} rounds x {args.repeats} runs (ms)")
    head = f"{'transform':<28}{'torch':>9}" + "".join(f"{f'p={p}':>9}" for p in args.procs)
    print(head + "".join(f"{f'speedup p={p}':>13}" for p in args.procs) + "".join(f"{f'eff p={p}':>9}" for p in args.procs))
    for name, base in best["torch"].items():
        ms = [best[p][name] for p in args.procs]
        row = f"{name:<28}{base:>9.1f}" + "".join(f"{t:>9.1f}" for t in ms)
        row += "".join(f"{base / t:>13.2f}" for t in ms) + "".join(f"{base / t / p:>9.2f}" for t, p in zip(ms, args.procs))
        print(row)
    for p in [p for p in args.procs if p > 1]:
        least = min(r["ceiling"][p] for r in rounds)
        print(f"{fft2} ceiling at p={p}: two local passes and two copies of 1/{p} take {least:.1f} ms, "
              f"so efficiency <= {best['torch'][fft2] / least / p:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
