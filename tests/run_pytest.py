"""Run pytest on this rank of an mpiexec/torchrun job.

Rank 0 reports as usual; other ranks keep quiet unless their tests fail, then print
their report with a rank header. Each rank exits with its own pytest status, so the
launcher fails if any rank fails.
"""
import contextlib
import io
import os
import sys

import pytest


def rank() -> int:
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def main(args):
    r = rank()
    if r == 0:
        return pytest.main(args)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = pytest.main(args + ["-p", "no:cacheprovider"])
    if status not in (0, 5):
        print(f"\n===== report of rank {r} (exit {status}) =====\n{out.getvalue()}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
