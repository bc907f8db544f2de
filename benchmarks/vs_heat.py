"""torchheat against Heat 1.8 (the Helmholtz Analytics Toolkit) at 1 and 2 processes, one thread each.

    python benchmarks/vs_heat.py [--small] [--repeats 3] [--rounds 1] [--procs 1 2]

Heat is not a dependency of torchheat. Install it, with torchheat, in a virtual
environment of its own and run this script with that environment's Python::

    python3 -m venv /tmp/heatvenv && . /tmp/heatvenv/bin/activate
    pip install torch mpi4py mpich scipy h5py scikit-learn numpy torchvision pillow
    pip install heat==1.8.0 --no-deps   # Heat 1.8 pins torch<2.11.1; it imports on newer torch
    pip install -e . --no-deps          # torchheat, from the repository root

The script launches itself under ``mpiexec -n p`` for every p; each worker builds the same
global data with both libraries (split along the sample axis, or as named), and times
torchheat and Heat alternately, case by case, in the same processes (barriers around each
run; the best of all runs over ``--rounds`` x ``--repeats``). Cases (the issues' sizes;
``--small`` shrinks every size for a quick run):

- float32 4096 x 4096 matmul for splits ``0@0``, ``1@0``, ``0@1``, ``0@None`` (A's split @ B's);
- float32 ``cdist`` of a 20000 x 18 matrix split along its rows, against itself;
- KMeans of 10^6 x 32 float64 standard normal samples (estimators.py's, on which neither
  library converges early), k=8, from the same initial centers, exactly ``ITERATIONS``
  Lloyd iterations (``tol=0``, checked by torchheat's ``n_iter_`` / Heat's ``tol=None``),
  reported per iteration;
- KNN predict (k=5; training set n/10 samples, n/400 queries: Heat computes the whole
  queries x training distance matrix, which at estimators.py's n/40 queries is 20 GB);
- Lasso (alpha=0.1) by a fixed number of coordinate-descent sweeps on standardized data
  (Heat's solver assumes columns of unit mean square and takes the intercept as a leading
  column of ones; on such data both run the same iterates, and the coefficients are checked);
- StandardScaler ``fit_transform``.

Prints two tables, of wall and of CPU times (rank 0's process; on a loaded machine the
steadier figure): torchheat's and Heat's times and the ratio Heat / torchheat at every p
(target: >= 3 at 2 processes). A case that fails in Heat is reported with its error.
``--only NAME ...`` runs the cases whose names start with one of the given words.
"""
import argparse
import importlib.util
import json
import os
import sys
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

# The estimators' data (blobs), sizes and the shared launcher (scaling.py) come from estimators.py.
HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("estimators", os.path.join(HERE, "estimators.py"))
estimators = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(estimators)
scaling = estimators.scaling

MARKER = "VS_HEAT_RESULT "
PAIRS = {"0@0": (0, 0), "1@0": (1, 0), "0@1": (0, 1), "0@None": (0, None)}
FEATURES, K, ITERATIONS = estimators.FEATURES, estimators.K, estimators.ITERATIONS
SWEEPS, ALPHA = 5, 0.1
SIZES = {"full": {"matmul": 4096, "cdist": 20000, "samples": 10 ** 6},
         "small": {"matmul": 1024, "cdist": 4000, "samples": 10 ** 5}}


def cases(size, th, ht):
    """Every case as ``name -> (torchheat call, Heat call, check)``; ``check`` (or None) returns a
    number printed beside the row (Lasso: the largest coefficient difference)."""
    g = torch.Generator().manual_seed(0)
    n = size["matmul"]
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = {}
    for name, (sa, sb) in PAIRS.items():
        ta, tb = th.distribute(a, sa), th.distribute(b, sb)
        ha, hb = ht.array(a, split=sa), ht.array(b, split=sb)
        out[f"matmul {name}"] = (lambda ta=ta, tb=tb: ta @ tb, lambda ha=ha, hb=hb: ha @ hb, None)
    c = torch.randn(size["cdist"], 18, generator=g)
    tc, hc = th.distribute(c, 0), ht.array(c, split=0)
    out["cdist"] = (lambda: torch.cdist(tc, tc), lambda: ht.spatial.cdist(hc, hc), None)

    x, y, labels = estimators.data(size["samples"])
    tx, hx = th.distribute(x, 0), ht.array(x, split=0)
    xk, init = estimators.kmeans_data(size["samples"])
    txk, hxk = th.distribute(xk, 0), ht.array(xk, split=0)
    out["KMeans / iteration"] = (
        lambda: estimators.fixed_iterations(th.cluster.KMeans(K, init=init, max_iter=ITERATIONS, tol=0).fit(txk)),
        lambda: ht.cluster.KMeans(K, init=ht.array(init), max_iter=ITERATIONS, tol=None).fit(hxk), None)

    n_train, n_query = x.shape[0] // 10, x.shape[0] // 400
    tknn = th.neighbors.KNeighborsClassifier(5).fit(th.distribute(x[:n_train], 0), th.distribute(labels[:n_train], 0))
    hknn = ht.classification.KNeighborsClassifier(5)
    hknn.fit(ht.array(x[:n_train], split=0), ht.array(labels[:n_train], split=0))
    tq, hq = th.distribute(x[-n_query:], 0), ht.array(x[-n_query:], split=0)
    out["KNN predict"] = (lambda: tknn.predict(tq), lambda: hknn.predict(hq), None)

    z = (x - x.mean(0)) / x.std(0, unbiased=False)  # unit mean square columns, as Heat's solver assumes
    tz, ty = th.distribute(z, 0), th.distribute(y, 0)
    hz, hy = ht.array(torch.cat([torch.ones(len(z), 1, dtype=z.dtype), z], 1), split=0), ht.array(y, split=0)
    tlasso = th.linear_model.Lasso(alpha=ALPHA, max_iter=SWEEPS, tol=0)
    hlasso = ht.regression.Lasso(lam=ALPHA, max_iter=SWEEPS, tol=None)

    def lasso_check():
        coef = tlasso.coef_.full() if isinstance(tlasso.coef_, th.DistTensor) else tlasso.coef_
        return float((coef.double() - hlasso.coef_.larray.flatten().cpu().double()).abs().max())

    out["Lasso"] = (lambda: tlasso.fit(tz, ty), lambda: hlasso.fit(hz, hy), lasso_check)
    out["StandardScaler"] = (lambda: th.preprocessing.StandardScaler().fit_transform(tx),
                             lambda: ht.preprocessing.StandardScaler().fit_transform(hx), None)
    return out


def worker(args):
    """Run under mpiexec: time both libraries on every case; rank 0 prints one JSON line."""
    import heat as ht
    import torchheat as th

    warnings.simplefilter("ignore")  # torchheat's ConvergenceWarning at a fixed sweep count
    th.config.fallback = "error"  # an op with no distributed rule fails, never gathers
    comm = th.get_comm()
    result = {}
    for name, (tcall, hcall, check) in cases(SIZES[args.size], th, ht).items():
        if args.only and not any(name.startswith(word) for word in args.only):
            continue
        per = ITERATIONS if name.startswith("KMeans") else 1
        row = {"torchheat": [t / per for t in estimators.best_times(tcall, args.repeats, comm.barrier)]}
        try:
            row["heat"] = [t / per for t in estimators.best_times(hcall, args.repeats, comm.barrier)]
        except Exception as error:  # a Heat function broken on this torch: report it, go on
            row["heat"] = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        row["check"] = check() if check and not isinstance(row["heat"], str) else None
        result[name] = row
    if comm.rank == 0:
        print(MARKER + json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--only", nargs="+", default=[])
    own, sys.argv[1:] = parser.parse_known_args()
    args = scaling.parse_args(__doc__, repeats=3, rounds=1)
    args.size, args.only = "small" if own.small else "full", own.only
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    try:
        import heat  # noqa: F401
    except Exception as error:
        raise SystemExit(f"this benchmark compares with Heat, which could not be imported ({error}); "
                         "it is not a dependency of torchheat: install it in a separate virtual "
                         "environment as this script's docstring says") from None
    options = ["--repeats", str(args.repeats)] + (["--small"] if own.small else [])
    options += ["--only"] + own.only if own.only else []
    rounds = [{p: scaling.launch(args, p, __file__, MARKER, field=None, options=options) for p in args.procs}
              for _ in range(args.rounds)]

    def best(p, name, lib, i):
        values = [r[p][name][lib] for r in rounds]
        failed = [v for v in values if isinstance(v, str)]
        return failed[0] if failed else min(v[i] for v in values)

    size = SIZES[args.size]
    print(f"torchheat vs Heat {heat.__version__} (torch {torch.__version__}), 1 thread per process, best of "
          f"{args.rounds} rounds x {args.repeats} runs (ms). matmul: float32 {size['matmul']}^2; cdist: float32 "
          f"{size['cdist']} x 18; estimators: {size['samples']} x {FEATURES} float64 (KMeans k={K}, {ITERATIONS} "
          f"iterations; Lasso {SWEEPS} sweeps)")
    notes = []
    for i, what in enumerate(["wall time", "CPU time"]):
        print(f"{what:<20}" + "".join(f"{f'th p={p}':>11}{f'heat p={p}':>11}{f'ratio p={p}':>11}" for p in args.procs))
        for name in rounds[0][args.procs[0]]:
            row = f"{name:<20}"
            for p in args.procs:
                t, h = best(p, name, "torchheat", i), best(p, name, "heat", i)
                if isinstance(h, str):
                    notes += [f"{name} at p={p}: Heat failed: {h}"] if i == 0 else []
                    row += f"{t:>11.1f}{'failed':>11}{'':>11}"
                else:
                    row += f"{t:>11.1f}{h:>11.1f}{h / t:>11.2f}"
                check = rounds[-1][p][name].get("check")
                if check is not None and i == 0:
                    notes.append(f"{name} at p={p}: largest coefficient difference torchheat - Heat: {check:.1e}")
            print(row)
    print("ratio: Heat's time / torchheat's (target >= 3 at p=2); CPU time: rank 0's process")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
