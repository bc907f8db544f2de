#!/usr/bin/env bash
# The whole test suite: one process (self backend, no MPI), MPI on 1, 2 and 3 processes,
# and torchrun with 2 workers. Extra arguments go to pytest (e.g. -k resplit, tests/test_comm.py).
# A test that hangs fails after TORCHHEAT_TEST_TIMEOUT seconds (pytest-timeout, thread method:
# it prints the test's stack and ends the process, and the launcher then stops all ranks).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
timeout_s=${TORCHHEAT_TEST_TIMEOUT:-240}
pytest_args=(-q -p no:cacheprovider --timeout="$timeout_s" --timeout-method=thread "$@")
[ $# -gt 0 ] || pytest_args+=(tests)
status=0
run() {
  echo "=== $1"; shift
  if ! "$@"; then status=1; echo "=== FAILED: $*"; fi
}
run "self backend, 1 process, no MPI" env TORCHHEAT_BACKEND=self python tests/run_pytest.py "${pytest_args[@]}"
for n in 1 2 3; do
  run "mpi backend, $n processes" mpiexec -n "$n" python tests/run_pytest.py "${pytest_args[@]}"
done
run "torch backend (torchrun, gloo), 2 workers" torchrun --nproc_per_node=2 --master_port="${TORCHHEAT_TEST_PORT:-29533}" \
  tests/run_pytest.py "${pytest_args[@]}"
if [ $# -eq 0 ]; then
  run "examples/quickstart.py, 1 process" python examples/quickstart.py
  run "examples/quickstart.py, mpi, 2 processes" mpiexec -n 2 python examples/quickstart.py
fi
exit $status
