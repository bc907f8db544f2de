"""Estimators at 1 and 2 processes against scikit-learn and plain torch, one thread each.

    python benchmarks/estimators.py [--n 100000] [--full] [--repeats 3] [--rounds 2] [--procs 1 2] [--only KMeans ...]

The data: ``n`` samples of 32 features (8 Gaussian blobs), float64; ``--full`` is the
issue's size, ``n = 10^6``. Timed: KMeans (k=8, exactly 10 Lloyd iterations from the same
centers in both libraries, ``tol=0`` and ``max_iter=10``, on ``n`` standard normal samples,
where the labels keep changing for hundreds of iterations, so neither library stops early;
both fits' ``n_iter_`` are checked), KNN predict (k=5, ``n/10`` training samples and
``n/40`` queries), Lasso (alpha=0.1) and StandardScaler ``fit_transform``. scikit-learn
and plain torch (the same torchheat estimator on a plain tensor: torch ops only, no
DistTensor) run in this process; then the script launches itself under ``mpiexec -n p``
for every p, and each worker times the estimators on the samples split along axis 0
(barriers around each run). Each entry is the best of all its runs over alternating rounds.
Prints wall and CPU times, the ratio to scikit-learn (target for KMeans at 1 process:
<= 1.2) and the parallel efficiency against torchheat at 1 process (target >= 0.85 at 2
processes).
"""
import importlib.util
import json
import os
import sys
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
_spec = importlib.util.spec_from_file_location("scaling", os.path.join(HERE, "scaling.py"))
scaling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scaling)

MARKER = "ESTIMATORS_RESULT "
FEATURES, K, ITERATIONS = 32, 8, 10
NAMES = ["KMeans", "KNN predict", "Lasso", "StandardScaler"]


def data(n):
    """The global samples (blobs) and a regression target, the same in every process."""
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(K, FEATURES, generator=g, dtype=torch.float64) * 5
    x = torch.randn(n, FEATURES, generator=g, dtype=torch.float64) + centers[torch.arange(n) % K]
    y = x @ torch.randn(FEATURES, generator=g, dtype=torch.float64) + torch.randn(n, generator=g, dtype=torch.float64)
    return x, y, (torch.arange(n) % K)


def kmeans_data(n):
    """KMeans' samples (standard normal: no clusters to settle on, so Lloyd's iterations do not
    converge within ``ITERATIONS``) and its initial centers, the same in every process."""
    x = torch.randn(n, FEATURES, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return x, x[:K].clone()


def fixed_iterations(km):
    """``km`` after checking that it ran exactly ``ITERATIONS`` Lloyd iterations."""
    if km.n_iter_ != ITERATIONS:
        raise RuntimeError(f"{type(km).__module__}.KMeans stopped after {km.n_iter_} of {ITERATIONS} iterations")
    return km


def torchheat_tasks(x, y, labels, xk, init, th):
    """The timed calls of torchheat's estimators on ``x`` and ``xk`` (split or plain)."""
    n_train, n_query = x.shape[0] // 10, x.shape[0] // 40

    def balanced(t):  # a slice of a split tensor keeps the rows where they are: spread it over the ranks
        return t.balance() if isinstance(t, th.DistTensor) else t

    knn = th.neighbors.KNeighborsClassifier(5).fit(balanced(x[:n_train]), balanced(labels[:n_train]))
    query = balanced(x[-n_query:])
    return {
        "KMeans": lambda: fixed_iterations(th.cluster.KMeans(K, init=init, max_iter=ITERATIONS, tol=0).fit(xk)),
        "KNN predict": lambda: knn.predict(query),
        "Lasso": lambda: th.linear_model.Lasso(alpha=0.1).fit(x, y),
        "StandardScaler": lambda: th.preprocessing.StandardScaler().fit_transform(x),
    }


def sklearn_tasks(x, y, labels, xk, init):
    from sklearn import cluster, linear_model, neighbors, preprocessing

    x, y, labels, xk, init = x.numpy(), y.numpy(), labels.numpy(), xk.numpy(), init.numpy()
    n_train, n_query = x.shape[0] // 10, x.shape[0] // 40
    knn = neighbors.KNeighborsClassifier(5).fit(x[:n_train], labels[:n_train])
    return {
        "KMeans": lambda: fixed_iterations(cluster.KMeans(K, init=init, n_init=1, max_iter=ITERATIONS, tol=0).fit(xk)),
        "KNN predict": lambda: knn.predict(x[-n_query:]),
        "Lasso": lambda: linear_model.Lasso(alpha=0.1).fit(x, y),
        "StandardScaler": lambda: preprocessing.StandardScaler().fit_transform(x),
    }


def best_times(task, repeats, barrier=lambda: None):
    """``[wall, cpu]``: the best wall time and the best CPU time of this process (ms) of
    ``task()`` over ``repeats`` runs after one warm-up (on a loaded machine the CPU time
    is the steadier figure; waiting in MPI may count as CPU time)."""
    task()
    wall = cpu = float("inf")
    for _ in range(repeats):
        barrier()
        start, start_cpu = time.perf_counter(), time.process_time()
        task()
        barrier()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return [wall * 1e3, cpu * 1e3]


def time_all(tasks, args, barrier=lambda: None):
    """``best_times`` of the tasks named in ``args.only``."""
    return {name: best_times(tasks[name], args.repeats, barrier) for name in args.only}


def worker(args):
    import torchheat as th

    th.config.fallback = "error"
    comm = th.get_comm()
    x, y, labels = data(args.n)
    xk, init = kmeans_data(args.n)
    tasks = torchheat_tasks(th.distribute(x, 0), th.distribute(y, 0), th.distribute(labels, 0), th.distribute(xk, 0),
                            init, th)
    result = time_all(tasks, args, comm.barrier)
    if comm.rank == 0:
        print(MARKER + json.dumps(result), flush=True)


def main():
    if "--full" in sys.argv:
        sys.argv.remove("--full")
        sys.argv += ["--n", str(10 ** 6)]
    sys.argv += [] if "--n" in sys.argv else ["--n", str(10 ** 5)]
    args = scaling.parse_args(__doc__, repeats=3, rounds=2, names=NAMES)
    torch.set_num_threads(1)
    if args.worker:
        return worker(args)
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise SystemExit("this benchmark compares with scikit-learn: pip install scikit-learn") from None
    import torchheat as th

    rounds = []
    options = ["--n", str(args.n), "--repeats", str(args.repeats), "--only", *args.only]
    for _ in range(args.rounds):
        x, y, labels = data(args.n)
        xk, init = kmeans_data(args.n)
        times = {"scikit-learn": time_all(sklearn_tasks(x, y, labels, xk, init), args),
                 "torch": time_all(torchheat_tasks(x, y, labels, xk, init, th), args)}
        del x, y, labels, xk
        times.update({p: scaling.launch(args, p, __file__, MARKER, field=None, options=options) for p in args.procs})
        rounds.append(times)
    print(f"{args.n} x {FEATURES} float64 samples, 1 thread per process, best of {args.rounds} rounds x "
          f"{args.repeats} runs (ms); KMeans: k={K}, exactly {ITERATIONS} iterations in both libraries")
    cols = ["scikit-learn", "torch"] + list(args.procs)
    for i, what in enumerate(["wall time", "CPU time (of rank 0)"]):
        best = {col: {name: min(r[col][name][i] for r in rounds) for name in args.only} for col in rounds[0]}
        header = f"{what:<16}" + "".join(f"{c if isinstance(c, str) else f'p={c}':>14}" for c in cols)
        header += "".join(f"{f'/sklearn p={p}':>15}" for p in args.procs)
        header += "".join(f"{f'eff p={p}':>9}" for p in args.procs if p != 1)
        print(header)
        for name in args.only:
            row = f"{name:<16}" + "".join(f"{best[c][name]:>14.1f}" for c in cols)
            row += "".join(f"{best[p][name] / best['scikit-learn'][name]:>15.2f}" for p in args.procs)
            if 1 in args.procs:
                row += "".join(f"{best[1][name] / best[p][name] / p:>9.2f}" for p in args.procs if p != 1)
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
