"""The collective timeout: a rank stuck in a collective ends the job with a message naming the
collective, the rank and the caller's line.

The watchdog itself is tested in-process on every stage, with a fake two-rank communicator
whose collectives wait until its ``abort`` is called. The whole mechanism (a real job that
makes the classic mistake under mpiexec and torchrun) is tested by launching such jobs, which
only works from a plain process: those tests run in the self-backend stage.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import pytest
import torch

import torchheat as th
from torchheat.comm import timeout
from torchheat.comm.self import SelfCommunicator
from torchheat.config import Config, check_timeout, timeout_from_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the setting ------------------------------------------------------------------------------
def test_timeout_setting(monkeypatch):
    assert Config({}).timeout == 300.0
    assert Config({"TORCHHEAT_TIMEOUT": "2.5"}).timeout == 2.5
    for off in ("0", "none", "None", "off"):
        assert timeout_from_env({"TORCHHEAT_TIMEOUT": off}) is None
    with pytest.raises(ValueError, match=r"TORCHHEAT_TIMEOUT='soon' is not a number of seconds"):
        timeout_from_env({"TORCHHEAT_TIMEOUT": "soon"})
    with pytest.raises(ValueError, match=r"TORCHHEAT_TIMEOUT=-1.0 is not a number of seconds"):
        timeout_from_env({"TORCHHEAT_TIMEOUT": "-1"})

    monkeypatch.setattr(th.config, "timeout", 60)
    assert th.config.timeout == 60.0 and "timeout=60.0" in repr(th.config)
    th.config.timeout = 0
    assert th.config.timeout is None
    th.config.timeout = None
    assert th.config.timeout is None
    for bad, error in [("5", TypeError), (True, TypeError), (-1, ValueError), (float("nan"), ValueError)]:
        with pytest.raises(error, match=r"config.timeout=.* is not a number of seconds \(expected a number >= 0, or None\)"):
            th.config.timeout = bad
    assert check_timeout(1) == 1.0


# -- the watchdog, in-process, on every stage ---------------------------------------------------
class StuckComm(SelfCommunicator):
    """Claims to be rank 0 of 2; every blocking primitive waits until ``abort`` is called (the
    watchdog's last step) or, with ``on_wait``, runs it instead of waiting."""

    size = 2
    backend = "fake"

    def __init__(self, on_wait=None):
        super().__init__()
        self.aborted, self.codes, self.on_wait = threading.Event(), [], on_wait

    def _wait(self, *args):
        if self.on_wait is not None:
            return self.on_wait()
        if not self.aborted.wait(30):
            raise AssertionError("the watchdog did not end the stuck collective within 30 s")

    _barrier = _allreduce = _exchange = _bcast = _recv = _send = _wait

    def _allgather_list(self, t, shapes):
        self._wait()
        return [t.clone() for _ in shapes]

    def _irecv(self, t, source, tag):
        return types.SimpleNamespace(wait=self._wait)

    def abort(self, code=1):
        self.codes.append(code)
        self.aborted.set()


# Each stuck call on its own line: the message must name that line of this file.
STUCK = {
    "allreduce": lambda c: c.allreduce(torch.ones(3)),
    "barrier": lambda c: c.barrier(),
    "gatherv": lambda c: c.gatherv(torch.ones(2), (2, 2), 0),  # rank 0 receives from rank 1: named gatherv, not recv
    "reduce_scatter": lambda c: c.reduce_scatter(torch.ones(4), (2, 2)),
    "wait": lambda c: c.irecv(torch.empty(2), 1).wait(),
}


@pytest.mark.parametrize("name", STUCK)
def test_watchdog_ends_a_stuck_collective(name, monkeypatch, capsys):
    monkeypatch.setattr(th.config, "timeout", 0.2)
    comm = StuckComm()
    STUCK[name](comm)  # returns once the watchdog has called comm.abort
    err = capsys.readouterr().err
    assert comm.codes == [1]
    assert f"rank 0 of 2 (fake) has waited " in err and f" in collective {name} (th.config.timeout = 0.2 s)" in err
    line = STUCK[name].__code__.co_firstlineno
    assert f'File "{__file__}", line {line}, in <lambda>' in err.splitlines()[1], err
    assert "Stack of the waiting thread on rank 0" in err and timeout._THIS not in err  # only the caller's frames


def test_check_reports_only_calls_still_waiting(monkeypatch, capsys):
    """The watchdog's step, run by hand with a tiny limit: a call in progress is reported once (with the
    caller's line), a finished or failed call and a one-rank communicator never, nor anything while the
    timeout is off."""
    monkeypatch.setattr(th.config, "timeout", 1000.0)  # the real watchdog stays quiet

    def check_now():
        time.sleep(0.01)
        timeout.check(0.001)
        timeout.check(0.001)  # a second look does not report it again

    comm = StuckComm(on_wait=check_now)
    comm.allreduce(torch.ones(2)); line = sys._getframe().f_lineno  # noqa: E702
    err = capsys.readouterr().err
    assert comm.codes == [1] and err.count("has waited") == 1
    assert f'File "{__file__}", line {line}, in test_check_reports_only_calls_still_waiting' in err

    done = StuckComm(on_wait=lambda: None)
    done.allreduce(torch.ones(2))
    with pytest.raises(ValueError, match="is not a reduction"):
        done.allreduce(torch.ones(2), "mean")
    time.sleep(0.01)
    timeout.check(0.001)
    assert done.codes == [] and capsys.readouterr().err == ""

    one_rank = SelfCommunicator()
    one_rank._barrier = check_now
    one_rank.barrier()
    th.config.timeout = None
    StuckComm(on_wait=check_now).barrier()
    assert capsys.readouterr().err == ""


# -- real jobs that make the classic mistake (launched from the self-backend stage) --------------------
MISTAKE = """\
import torch, torchheat as th
x = th.distribute(torch.arange(100.), split=0)
if x.comm.rank == 0:
    print(x.sum().item())   # rank 1 never joins this allreduce
{after}
"""
ENDINGS = {
    "exits": "",  # rank 1 ends its program (under torchrun gloo reports the closed connection itself)
    "moves on": "x.comm.barrier()  # rank 1 waits in another collective",
}
LAUNCHERS = {
    "mpiexec": lambda script: [shutil.which("mpiexec") or "mpiexec", "-n", "2", sys.executable, script],
    "torchrun": lambda script: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", script],
}


def launch(cmd, env, limit=120):
    """Run a job in its own process group; kill the whole group if it is still running after ``limit`` s."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the job did not end within {limit} s (the timeout is 2 s):\n{out[-3000:]}")
    return proc.returncode, out


@pytest.mark.parametrize("launcher, ending", [("mpiexec", "exits"), ("mpiexec", "moves on"), ("torchrun", "moves on")])
def test_the_classic_mistake_ends_the_job(comm, tmp_path, launcher, ending):
    if comm.backend != "self":
        pytest.skip("launches its own mpiexec/torchrun job, which works from a plain process only: "
                    "runs in the self-backend stage (TORCHHEAT_BACKEND=self, the first stage of tests/run.sh)")
    if launcher == "mpiexec" and shutil.which("mpiexec") is None:
        pytest.skip("mpiexec is not installed")
    script = tmp_path / "mistake.py"
    script.write_text(MISTAKE.format(after=ENDINGS[ending]))
    env = {k: v for k, v in os.environ.items() if k != "TORCHHEAT_BACKEND"}
    env.update(TORCHHEAT_TIMEOUT="2", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, env.get("PYTHONPATH", "")]))
    returncode, out = launch(LAUNCHERS[launcher](str(script)), env)
    assert returncode != 0, out

    # Every rank that reports names its own collective and line; the first report ends the job, so
    # when both ranks wait (rank 1 moved on to a barrier) either may be the one that reports.
    backend = "mpi" if launcher == "mpiexec" else "torch"
    waits = {0: ("allreduce", 4), 1: ("barrier", 5)}
    lines = MISTAKE.format(after=ENDINGS[ending]).splitlines()
    reports = re.findall(rf"torchheat: rank (\d) of 2 \({backend}\) has waited [\d.]+ s in collective (\w+) "
                         rf"\(th.config.timeout = 2 s\), called from\n  File \"{re.escape(str(script))}\", line (\d+), "
                         rf"in <module>\n    (.*)\n", out)
    assert reports, out
    for rank, name, line, source in reports:
        assert (name, int(line)) == waits[int(rank)] and source == lines[int(line) - 1].strip(), out
    if ending == "exits":
        assert [r[0] for r in reports] == ["0"], out
