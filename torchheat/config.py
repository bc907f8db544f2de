"""Global settings: ``th.config.fallback`` decides what happens to ops with no distributed rule.

Examples
--------
>>> import torchheat as th
>>> th.config.fallback
'gather'
>>> th.config.fallback = "error"; th.config.fallback = "gather"
"""
from __future__ import annotations

FALLBACKS = ("gather", "error")


class Config:
    """Settings shared by all DistTensors of this process (set them the same on every rank)."""

    def __init__(self) -> None:
        self._fallback = "gather"

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

    def __repr__(self) -> str:
        return f"Config(fallback={self._fallback!r})"


config = Config()


class NotDistributedError(NotImplementedError):
    """A torch function was called on a split DistTensor but has no distributed rule."""
