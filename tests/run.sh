#!/usr/bin/env bash
# The whole test suite, in stages that split the work by process count (CI budget: 30 minutes
# on 2 cores):
#   self backend, 1 process, no MPI  every test module
#   mpi, 2 processes                 every module but the OpInfo conformance
#   mpi, 3 processes                 every module (uneven chunks everywhere)
#   mpi, 1 process                   the backend-specific modules (MPI communicator of size 1)
#   torchrun (gloo), 2 workers       the backend-specific modules and the foundation
# then the quickstart on 1 and on 2 MPI processes. Arguments go to pytest and run in every
# stage instead (e.g. `bash tests/run.sh -k resplit`, `bash tests/run.sh tests/test_comm.py`).
# A test that hangs fails after TORCHHEAT_TEST_TIMEOUT seconds (pytest-timeout, thread method:
# it prints the test's stack and ends the process, and the launcher then stops all ranks); a
# collective left waiting ends its job after TORCHHEAT_TIMEOUT seconds, naming itself.
# The last line is the summary: each stage passed or failed, and the time taken.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export TORCHHEAT_TIMEOUT=${TORCHHEAT_TIMEOUT:-180}
timeout_s=${TORCHHEAT_TEST_TIMEOUT:-240}
pytest_args=(-q -p no:cacheprovider --timeout="$timeout_s" --timeout-method=thread)
backend_tests=(tests/test_comm.py tests/test_backends.py tests/test_timeout.py)
foundation_tests=("${backend_tests[@]}" tests/test_tensor.py tests/test_errors.py tests/test_autograd.py tests/test_creation.py tests/test_linalg.py
                  tests/test_distance.py tests/test_data_parallel.py tests/test_optim.py tests/test_daso.py)

summary=()
failed=0
start=$SECONDS
stage() {  # stage NAME COMMAND...: run it, remember whether it passed
  local name=$1 t0=$SECONDS; shift
  echo "=== $name"
  if "$@"; then summary+=("$name: passed ($((SECONDS - t0)) s)"); else summary+=("$name: FAILED ($((SECONDS - t0)) s)"); failed=1; fi
}
pytest_on() {  # pytest_on LAUNCHER... -- TESTS...
  local launcher=() tests=()
  while [ "$1" != "--" ]; do launcher+=("$1"); shift; done; shift
  tests=("$@")
  [ "$user_args" = 1 ] && tests=("${extra[@]}")
  "${launcher[@]}" tests/run_pytest.py "${pytest_args[@]}" "${tests[@]}"
  local status=$?
  [ "$user_args" = 1 ] && [ "$status" = 5 ] && return 0  # a selection with no test in this stage
  return $status
}
extra=("$@")
user_args=$([ $# -gt 0 ] && echo 1 || echo 0)
port=${TORCHHEAT_TEST_PORT:-29533}

stage "self backend, 1 process" pytest_on env TORCHHEAT_BACKEND=self python -- tests
stage "mpi, 2 processes" pytest_on mpiexec -n 2 python -- tests --ignore=tests/test_opinfo.py
stage "mpi, 3 processes" pytest_on mpiexec -n 3 python -- tests
stage "mpi, 1 process" pytest_on mpiexec -n 1 python -- "${backend_tests[@]}"
stage "torchrun (gloo), 2 workers" pytest_on torchrun --nproc_per_node=2 --master_port="$port" -- "${foundation_tests[@]}"
if [ "$user_args" = 0 ]; then
  stage "quickstart, 1 process" python examples/quickstart.py
  stage "quickstart, mpi 2 processes" mpiexec -n 2 python examples/quickstart.py
fi
joined=$(printf '%s; ' "${summary[@]}")
echo "summary ($((SECONDS - start)) s): ${joined%; }"
exit $failed
