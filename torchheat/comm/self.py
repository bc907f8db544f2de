"""The one-process communicator: ``python script.py`` with no launcher and no MPI."""
from __future__ import annotations

from typing import Any, List, Optional

import torch

from .base import Communicator


class SelfCommunicator(Communicator):
    """A communicator of one rank; every collective is a local copy.

    Examples
    --------
    >>> SelfCommunicator().size
    1
    """

    backend = "self"

    @property
    def rank(self) -> int:
        return 0

    @property
    def size(self) -> int:
        return 1

    def barrier(self) -> None:
        pass

    def _bcast(self, t, root):
        pass

    def _allreduce(self, t, op):
        pass

    def _allgather_list(self, t, shapes):
        return [t.clone()]

    def _exchange(self, sends, recvs):
        pass

    def _no_peer(self, peer: int) -> None:
        raise ValueError(f"rank {peer} does not exist in a communicator of size 1")

    def send(self, t: torch.Tensor, dest: int, tag: int = 0) -> None:
        self._no_peer(dest)

    def recv(self, t: torch.Tensor, source: int, tag: int = 0) -> torch.Tensor:
        self._no_peer(source)

    def isend(self, t: torch.Tensor, dest: int, tag: int = 0) -> Any:
        self._no_peer(dest)

    def irecv(self, t: torch.Tensor, source: int, tag: int = 0) -> Any:
        self._no_peer(source)

    def allgather_obj(self, obj: Any) -> List[Any]:
        return [obj]

    def split(self, color: int, key: Optional[int] = None) -> "SelfCommunicator":
        return SelfCommunicator()
