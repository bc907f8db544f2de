"""Backend selection: the launcher's environment picks the communicator; one process needs no MPI."""
import os
import subprocess
import sys

import pytest

import torchheat as th
from torchheat.comm import detect_backend

TORCHRUN = {"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "GROUP_RANK": "0"}
MPIEXEC = {"PMI_RANK": "0", "PMI_SIZE": "2", "HYDRA_CONTROL_FD": "7"}


@pytest.mark.parametrize("environ, expected", [
    ({}, "self"),
    ({"PATH": "/bin", "HOME": "/home/u"}, "self"),
    (TORCHRUN, "torch"),
    ({"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "node0"}, "torch"),  # a hand-made torch.distributed job
    ({"RANK": "1", "WORLD_SIZE": "4"}, "self"),  # no rendezvous address: not a torch job
    (MPIEXEC, "mpi"),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
    ({"PMIX_RANK": "3"}, "mpi"),
    ({"SLURM_NTASKS": "8"}, "mpi"),
    ({"SLURM_NTASKS": "1"}, "self"),
    ({**MPIEXEC, **TORCHRUN}, "torch"),  # torchrun's own variables win
    ({**MPIEXEC, "TORCHHEAT_BACKEND": "self"}, "self"),  # the override wins
    ({**TORCHRUN, "TORCHHEAT_BACKEND": "mpi"}, "mpi"),
    ({"TORCHHEAT_BACKEND": "torch"}, "torch"),
    ({"TORCHHEAT_BACKEND": ""}, "self"),  # empty means unset
])
def test_detect_backend_is_a_function_of_the_environment(environ, expected):
    before = dict(environ)
    assert detect_backend(environ) == expected
    assert environ == before


def test_unknown_backend_override():
    with pytest.raises(ValueError, match=r"TORCHHEAT_BACKEND='nccl' is not a backend \(expected 'mpi', 'torch' or 'self'\)"):
        detect_backend({"TORCHHEAT_BACKEND": "nccl"})
    with pytest.raises(ValueError, match=r"backend='gloo' is not a backend"):
        th.comm.make_comm("gloo")


def test_the_launcher_decides_the_backend(comm):
    env = os.environ
    if env.get("TORCHHEAT_BACKEND"):
        expected = env["TORCHHEAT_BACKEND"]
    elif "TORCHELASTIC_RUN_ID" in env:
        expected = "torch"
    elif "PMI_RANK" in env:
        expected = "mpi"
    else:
        expected = "self"
    assert comm.backend == expected == detect_backend(env)
    assert th.get_comm() is comm and comm.size >= 1
    if expected == "self":
        assert comm.size == 1


PROGRAM = """
import sys, torch, torchheat as th
t = torch.arange(12.).reshape(4, 3)
x = th.distribute(t, split=0)
assert x.comm.backend == "self" and x.comm.size == 1, x.comm
y = (x * 2 + 1).exp().sum()
assert torch.allclose(y.full(), (t * 2 + 1).exp().sum())
x.resplit_(1)
assert x.split_dim == 1 and torch.equal(x.full(), t)
z = th.from_local(torch.ones(2, 3), split=0); z.balance_()
assert "mpi4py" not in sys.modules, "mpi4py was imported"
print("ok")
"""


def test_one_process_never_imports_mpi(comm):
    """A plain ``python`` run, and TORCHHEAT_BACKEND=self even inside an MPI environment, work
    without touching MPI. Rank 0 runs the two child processes; every rank checks their outcome."""
    outcomes = None
    if comm.rank == 0:
        base = {"PATH": os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1"}
        envs = [base, {**base, "TORCHHEAT_BACKEND": "self", "PMI_RANK": "0", "PMI_SIZE": "1"}]
        procs = [subprocess.Popen([sys.executable, "-c", PROGRAM], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for env in envs]  # both run at once
        outcomes = [(p.returncode, out.strip(), err[-2000:]) for p in procs for out, err in [p.communicate(timeout=120)]]
    for returncode, stdout, stderr in comm.allgather_obj(outcomes)[0]:
        assert returncode == 0 and stdout == "ok", stderr
