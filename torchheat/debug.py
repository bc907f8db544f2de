"""See where data moves: a log of every collective that torchheat runs.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.ones(6, 2), split=0)
>>> with th.debug.comm_log() as log:
...     s = x.sum()
>>> [e.collective for e in log]
['allreduce']
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, List

_active: List[List["CommEvent"]] = []


@dataclasses.dataclass(frozen=True)
class CommEvent:
    """One collective: its name, the bytes this rank sent, and the communicator size."""

    collective: str
    nbytes: int
    ranks: int


def record(collective: str, nbytes: int, ranks: int) -> None:
    """Append an event to every open log (cheap when none is open)."""
    if _active:
        event = CommEvent(collective, int(nbytes), ranks)
        for log in _active:
            log.append(event)


@contextlib.contextmanager
def comm_log() -> Iterator[List[CommEvent]]:
    """Record the collectives run inside the block into a list of :class:`CommEvent`."""
    log: List[CommEvent] = []
    _active.append(log)
    try:
        yield log
    finally:  # by identity: an equal log (two empty ones) may be open around this one
        del _active[next(i for i, open_log in enumerate(_active) if open_log is log)]
