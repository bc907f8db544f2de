"""The collective timeout: a rank that waits in a collective longer than ``th.config.timeout``
ends the whole job with a message, instead of hanging forever.

Every blocking method of a :class:`~torchheat.comm.Communicator` is marked with
:func:`blocking`: on entry it notes the time and the collective's name for the calling
thread (a dict store, well under a microsecond), on exit it removes the note. One daemon
thread per process (started by the first marked call) wakes a few times per timeout and,
when a note is older than the timeout, prints which collective, which rank and which line
of the caller's code is waiting, then calls the communicator's ``abort`` (MPI: ``Abort`` of
the world; torch.distributed: exit, and torchrun stops the other workers). The backends'
blocking calls release the GIL while they wait, so the watchdog runs; nothing is polled on
the collective's own path.

An uncaught exception on one rank ends the job the same way (:func:`abort_on_uncaught_exception`):
its traceback is printed, then the communicator aborts, so the other ranks do not wait in a
collective for a rank that is gone.

The classic mistake it catches, under ``mpiexec -n 2``::

    if comm.rank == 0:
        print(x.sum().item())   # rank 0 waits in allreduce for a rank 1 that never comes

Examples
--------
>>> import torchheat as th
>>> th.config.timeout          # seconds; None or 0: wait forever  # doctest: +SKIP
300.0
"""
from __future__ import annotations

import functools
import os
import sys
import threading
import time
import traceback
from typing import Dict, Optional, Tuple

from ..config import config

# thread id -> (start time, collective name, communicator) of the blocking call it is in.
_waiting: Dict[int, Tuple[float, str, object]] = {}
_reported: Dict[int, tuple] = {}  # the note already reported per thread (when abort returned: tests)
_watchdog: Optional[threading.Thread] = None
_lock = threading.Lock()

_THIS = os.path.abspath(__file__)
_PACKAGE = os.path.dirname(os.path.dirname(_THIS))
_get_ident, _monotonic = threading.get_ident, time.monotonic
_GRACE = 0.5  # seconds between the report and the abort


def blocking(name: str):
    """Mark a Communicator method as a blocking call named ``name`` (see :func:`call`)."""
    def decorate(method):
        @functools.wraps(method)
        def marked(comm, *args, **kwargs):
            return call(comm, name, method, comm, *args, **kwargs)
        return marked
    return decorate


def call(comm, name: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, a blocking call of ``comm`` named ``name``, watched by the watchdog.

    Nested calls (a gatherv made of recvs) keep the outermost name; a communicator of one
    rank never waits and is not watched, nor is any call while the timeout is off.
    """
    tid = _get_ident()
    if comm.size == 1 or not config._timeout or tid in _waiting:
        return fn(*args, **kwargs)
    _waiting[tid] = (_monotonic(), name, comm)
    if _watchdog is None:
        _start()
    try:
        return fn(*args, **kwargs)
    finally:
        _waiting.pop(tid, None)


class Request:
    """A pending point-to-point operation of any backend; ``wait()`` completes it (watched).

    >>> import torch, torchheat as th
    >>> comm = th.get_comm()
    >>> req = comm.isend(torch.ones(2), comm.rank)      # a rank may message itself
    >>> comm.recv(torch.empty(2), comm.rank).tolist()
    [1.0, 1.0]
    >>> req.wait()
    """

    __slots__ = ("_comm", "_req")

    def __init__(self, comm, req):
        self._comm, self._req = comm, req

    def wait(self) -> None:
        call(self._comm, "wait", self._req.wait)

    def test(self) -> bool:
        """Whether the operation has completed, without blocking; ``wait()`` is still
        needed to finish it. On MPI each call also drives the progress of non-blocking
        collectives, which otherwise advance only inside MPI calls."""
        req = self._req
        return req.test() if hasattr(req, "test") else req.is_completed()  # (a torch.distributed Work)


def _start() -> None:
    global _watchdog
    with _lock:
        if _watchdog is None:
            _watchdog = threading.Thread(target=_watch, name="torchheat-timeout", daemon=True)
            _watchdog.start()


def _forget() -> None:
    """A forked child has no watchdog thread and waits in no collective."""
    global _watchdog
    _watchdog = None
    _waiting.clear()
    _reported.clear()


os.register_at_fork(after_in_child=_forget)


def _watch() -> None:
    while True:
        limit = config._timeout
        time.sleep(min(1.0, limit / 8) if limit else 1.0)  # a note is reported at most 1 s late
        limit = config._timeout
        if limit:
            check(limit)


def check(limit: float) -> None:
    """Report and abort every blocking call older than ``limit`` seconds (the watchdog's step)."""
    now = _monotonic()
    for tid, note in _waiting.copy().items():
        if now - note[0] <= limit or _reported.get(tid) is note:
            continue
        frame = sys._current_frames().get(tid)
        if frame is None or _waiting.get(tid) is not note:  # it finished meanwhile
            continue
        _reported[tid] = note
        start, name, comm = note
        _write(message(name, comm, now - start, limit, frame))
        time.sleep(_GRACE)  # the launcher forwards the message before the abort kills the job's output streams
        comm.abort(1)


def message(name: str, comm, waited: float, limit: float, frame) -> str:
    """What the watchdog prints: the collective, the rank, the caller's line, what to do."""
    caller = _caller(frame)
    where = "  (no caller outside torchheat)\n"
    if caller is not None:
        where = "".join(traceback.StackSummary.extract([(caller, caller.f_lineno)]).format())
    stack = [entry for entry in traceback.extract_stack(frame) if os.path.abspath(entry.filename) != _THIS]
    return (
        f"torchheat: rank {comm.rank} of {comm.size} ({comm.backend}) has waited {waited:.1f} s in collective "
        f"{name} (th.config.timeout = {limit:g} s), called from\n{where}"
        "Some rank has not made the same call: every rank must make the same collective calls in the same\n"
        "order, and a collective under `if rank == 0:` or a rank that stopped early leaves the others waiting.\n"
        "Ending the job. th.config.timeout or TORCHHEAT_TIMEOUT sets the limit in seconds (None or 0: no limit).\n"
        f"Stack of the waiting thread on rank {comm.rank} (most recent call last):\n"
        + "".join(traceback.format_list(stack))
    )


def abort_on_uncaught_exception(comm) -> None:
    """Make an exception that ends one rank's program end the whole job (through
    ``comm.abort``, as the watchdog does) instead of leaving the other ranks waiting in a
    collective until the timeout. The traceback is printed first; installed once per process
    by the world communicators of the mpi and torch backends."""
    previous = sys.excepthook
    if getattr(previous, "_torchheat_abort", False):
        return

    def hook(kind, value, tb):
        previous(kind, value, tb)
        _write("")
        time.sleep(_GRACE)  # the launcher forwards the traceback before the abort kills the job's output streams
        comm.abort(1)

    hook._torchheat_abort = True
    sys.excepthook = hook


def _caller(frame):
    """The caller's frame: from the innermost frame out, past the waiting call's frames in
    torchheat, the first frame outside torchheat and torch (else the first outside torchheat)."""
    import torch

    torch_dir = os.path.dirname(os.path.abspath(torch.__file__)) + os.sep
    entered, fallback = False, None
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if path.startswith(_PACKAGE + os.sep):
            entered = True
        elif entered:
            if not path.startswith(torch_dir):
                return frame
            fallback = fallback or frame
        frame = frame.f_back
    return fallback


def _write(text: str) -> None:
    """To ``sys.stderr`` and, where a program or notebook replaced it, to the process's own
    stderr too; everything flushed, since the job ends next."""
    targets = [sys.stderr] if sys.__stderr__ in (None, sys.stderr) else [sys.stderr, sys.__stderr__]
    for stream in [sys.stdout] + targets:
        try:
            if stream is not sys.stdout:
                stream.write(text)
            stream.flush()
        except Exception:  # noqa: BLE001  (a closed or odd stream: the others still get the message)
            pass
