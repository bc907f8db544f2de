"""The one-process communicator: ``python script.py`` with no launcher and no MPI."""
from __future__ import annotations

import collections
from typing import Deque, Dict

import torch

from .base import Communicator


class _Done:
    """A request of the one-process communicator: ``wait()`` runs what is left to do."""

    def __init__(self, finish):
        self._finish = finish

    def wait(self):
        if self._finish is not None:
            self._finish()
            self._finish = None

    def test(self) -> bool:
        return True


class SelfCommunicator(Communicator):
    """A communicator of one rank; every collective is a local copy.

    Examples
    --------
    >>> SelfCommunicator().size
    1
    """

    backend = "self"

    def __init__(self) -> None:
        self._mailbox: Dict[int, Deque[torch.Tensor]] = {}

    def _barrier(self) -> None:
        pass

    def _bcast(self, t, root):
        pass

    def _allreduce(self, t, op):
        pass

    def _iallreduce(self, t, op):
        return _Done(None)

    def _allgather_list(self, t, shapes):
        return [t.clone()]

    def _exchange(self, sends, recvs):
        pass

    # Point-to-point: a rank may message itself (as in MPI); messages wait in a mailbox.
    def _check_peer(self, peer: int) -> None:
        if peer != 0:
            raise ValueError(f"rank {peer} does not exist in a communicator of size 1 (expected 0)")

    def _post(self, t: torch.Tensor, dest: int, tag: int) -> None:
        self._check_peer(dest)
        self._mailbox.setdefault(tag, collections.deque()).append(t.detach().clone())

    def _take(self, t: torch.Tensor, source: int, tag: int) -> torch.Tensor:
        self._check_peer(source)
        queue = self._mailbox.get(tag)
        if not queue:
            raise RuntimeError(f"recv from rank 0 with tag={tag} would wait forever: nothing was sent to this rank")
        msg = queue.popleft()
        if msg.shape != t.shape or msg.dtype != t.dtype:
            raise ValueError(f"recv buffer {tuple(t.shape)} {t.dtype} does not fit the message {tuple(msg.shape)} {msg.dtype}")
        return t.copy_(msg)

    def _send(self, t, dest, tag):
        self._post(t, dest, tag)

    def _recv(self, t, source, tag):
        self._take(t, source, tag)

    def _isend(self, t, dest, tag):
        self._post(t, dest, tag)
        return _Done(None)

    def _irecv(self, t, source, tag):
        self._check_peer(source)
        return _Done(lambda: self._take(t, source, tag))  # matched when waited on, like MPI

    def _allgather_obj(self, obj):
        return [obj]

    def _split(self, color, key):
        return SelfCommunicator()
