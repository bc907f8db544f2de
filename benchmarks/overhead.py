"""Per-op overhead of DistTensor over plain torch on one process.

    python benchmarks/overhead.py

Prints microseconds per op on 100-element tensors (plain torch, a do-nothing
``__torch_function__`` subclass as the floor any subclass pays, DistTensor replicated
and split) and the time ratio DistTensor / torch on 10^7-element tensors. Targets: at
most 8 us added per op on small tensors, ratio at most 1.05 on large ones.

    mpiexec -n 2 python benchmarks/overhead.py --collectives
    torchrun --nproc_per_node=2 benchmarks/overhead.py --collectives

Prints what the collective timeout's watchdog costs per call on small collectives (a
scalar allreduce, ``x.sum()`` of a split 100-element tensor): th.config.timeout off vs on.
"""
import argparse
import os
import timeit

os.environ.setdefault("TORCHHEAT_BACKEND", "self")

import torch  # noqa: E402

import torchheat as th  # noqa: E402


class Passthrough(torch.Tensor):
    """The cheapest possible subclass: forwards every call to torch."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))


OPS = {
    "x + y": lambda x, y: x + y,
    "x + 1": lambda x, y: x + 1,
    "exp": lambda x, y: x.exp(),
    "sum": lambda x, y: x.sum(),
    "mean(dim=0)": lambda x, y: x.mean(dim=0),
}


def per_call_us(fn, number, repeat):
    """Best-of-``repeat`` time of one call in microseconds (the minimum filters out noise)."""
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=100, help="elements of the small tensors")
    parser.add_argument("--large", type=int, default=10**7, help="elements of the large tensors")
    parser.add_argument("--collectives", action="store_true", help="the timeout's cost per collective (under a launcher)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.collectives:
        return collectives(args.small)

    t, u = torch.randn(args.small), torch.randn(args.small)
    variants = {
        "torch": (t, u),
        "passthrough": (t.as_subclass(Passthrough), u.as_subclass(Passthrough)),
        "split=None": (th.distribute(t), th.distribute(u)),
        "split=0": (th.distribute(t, split=0), th.distribute(u, split=0)),
    }
    # Rounds interleave every (op, variant) pair, so that bursts of load from elsewhere hit them alike.
    rounds, number = 40, 2000
    times = {}
    for _ in range(rounds):
        for name, op in OPS.items():
            for k, (x, y) in variants.items():
                t = per_call_us(lambda x=x, y=y: op(x, y), number, 1)
                times[name, k] = min(times.get((name, k), t), t)
    print(f"Small tensors ({args.small} elements), microseconds per op, best of {rounds} interleaved rounds x {number} calls")
    print(f"{'op':<12}" + "".join(f"{k:>13}" for k in variants) + f"{'added (split=0)':>17}")
    for name in OPS:
        row = "".join(f"{times[name, k]:>13.2f}" for k in variants)
        print(f"{name:<12}{row}{times[name, 'split=0'] - times[name, 'torch']:>17.2f}")

    big_t, big_u = torch.randn(args.large), torch.randn(args.large)
    big = {"torch": (big_t, big_u), "split=0": (th.distribute(big_t, split=0), th.distribute(big_u, split=0))}
    print(f"\nLarge tensors ({args.large:.0e} elements), milliseconds per op, best of 7 x 5 calls")
    print(f"{'op':<12}{'torch':>13}{'split=0':>13}{'ratio':>9}")
    for name, op in OPS.items():
        times = {k: per_call_us(lambda x=x, y=y: op(x, y), 5, 7) / 1e3 for k, (x, y) in big.items()}
        print(f"{name:<12}{times['torch']:>13.3f}{times['split=0']:>13.3f}{times['split=0'] / times['torch']:>9.3f}")


# -- the collective timeout's cost per call ------------------------------------------------------------
def collectives(small):
    """Microseconds per call with th.config.timeout off and on, on the launcher's backend (rank 0 prints).

    The two settings alternate, repeat by repeat, so both see the same machine; the best repeat counts.
    """
    from torchheat.comm import timeout

    env = {k: v for k, v in os.environ.items() if k != "TORCHHEAT_BACKEND"}  # the launcher decides, not the default above
    comm = th.comm.make_comm(th.comm.detect_backend(env))
    number, repeat = (2000, 25) if comm.backend == "mpi" else (100, 7)  # gloo: about 260 us per scalar allreduce
    scalar, x = torch.ones(()), th.distribute(torch.randn(small), split=0, comm=comm)
    calls = {
        "marker around a no-op": lambda: timeout.call(comm, "noop", int),
        "allreduce scalar, sum": lambda: comm.allreduce(scalar),
        "allreduce scalar, max": lambda: comm.allreduce(scalar, "max"),
        f"x.sum(), {small} el. split": lambda: x.sum(),
    }
    saved, times = th.config.timeout, {}
    for name, fn in calls.items():
        for _ in range(repeat):
            for setting in (None, 300):
                th.config.timeout = setting
                comm.barrier()
                best = times.get((name, setting), float("inf"))
                times[name, setting] = min(best, per_call_us(fn, number, 1))
    th.config.timeout = saved
    if comm.rank == 0:
        print(f"Collectives on {comm.size} processes ({comm.backend}), microseconds per call, best of {repeat} x {number} calls")
        print(f"{'call':<28}{'timeout off':>13}{'timeout 300 s':>15}{'added':>9}")
        for name in calls:
            off, on = times[name, None], times[name, 300]
            print(f"{name:<28}{off:>13.2f}{on:>15.2f}{on - off:>9.2f}")


if __name__ == "__main__":
    main()
