"""Global settings: ``th.config.fallback`` decides what happens to ops with no distributed rule;
``th.config.timeout`` how long a rank waits in a collective before the job is ended.

Examples
--------
>>> import torchheat as th
>>> th.config.fallback
'gather'
>>> th.config.fallback = "error"; th.config.fallback = "gather"
>>> saved = th.config.timeout
>>> th.config.timeout = 60; th.config.timeout
60.0
>>> th.config.timeout = saved
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional

FALLBACKS = ("gather", "error")
DEFAULT_TIMEOUT = 300.0


def check_timeout(value, name: str = "config.timeout") -> Optional[float]:
    """``value`` as seconds (a float > 0), or None for no timeout (``None`` or 0)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}={value!r} is not a number of seconds (expected a number >= 0, or None)")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name}={value!r} is not a number of seconds (expected a number >= 0, or None)")
    return float(value) if value else None


def timeout_from_env(environ: Mapping[str, str] = os.environ) -> Optional[float]:
    """The timeout ``TORCHHEAT_TIMEOUT`` asks for (seconds; ``0`` or ``none`` disables it), else
    the default of 300 s.

    >>> timeout_from_env({}), timeout_from_env({"TORCHHEAT_TIMEOUT": "2.5"}), timeout_from_env({"TORCHHEAT_TIMEOUT": "0"})
    (300.0, 2.5, None)
    """
    text = environ.get("TORCHHEAT_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    if text.lower() in ("none", "off"):
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"TORCHHEAT_TIMEOUT={text!r} is not a number of seconds (expected a number >= 0, or 'none')") from None
    return check_timeout(seconds, "TORCHHEAT_TIMEOUT")


class Config:
    """Settings shared by all DistTensors of this process (set them the same on every rank)."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self._fallback = "gather"
        self._timeout = timeout_from_env(environ)

    @property
    def fallback(self) -> str:
        """``"gather"``: gather split operands, compute, return replicated (warns once per op);
        ``"error"``: raise :class:`torchheat.NotDistributedError`."""
        return self._fallback

    @fallback.setter
    def fallback(self, value: str) -> None:
        if value not in FALLBACKS:
            raise ValueError(f"config.fallback={value!r} is not a policy (expected one of {FALLBACKS})")
        self._fallback = value

    @property
    def timeout(self) -> Optional[float]:
        """Seconds a rank may wait in one collective (default 300, or ``TORCHHEAT_TIMEOUT``);
        past it the job ends with a message naming the collective, the rank and the caller's
        line. ``None`` or 0: wait forever. Set it the same on every rank."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        self._timeout = check_timeout(value)

    def __repr__(self) -> str:
        return f"Config(fallback={self._fallback!r}, timeout={self._timeout!r})"


config = Config()


class NotDistributedError(NotImplementedError):
    """A torch function was called on a split DistTensor but has no distributed rule."""
