"""Window factories with ``split=``: ``th.signal.windows.hann(M, split=0)`` and friends, and
torch's ``hann_window``-style factories, building only this rank's chunk.

Every torch window is a pointwise function of sample positions made by ``torch.linspace``.
torch's own window function runs under a function mode that makes that ``linspace`` the
distributed :func:`torchheat.linspace` (only this rank's positions, torch's arithmetic); the
pointwise rest then runs on the chunk. No communication.

Examples
--------
>>> import torch, torchheat as th
>>> w = th.signal.windows.hann(10, split=0, dtype=torch.float64)
>>> bool(torch.allclose(w.full(), torch.signal.windows.hann(10, dtype=torch.float64)))
True
>>> bool(torch.allclose(th.hann_window(8, split=0).full(), torch.hann_window(8)))
True
"""
from __future__ import annotations

import functools

import torch
from torch.overrides import TorchFunctionMode

from ..ops.creation import distribute, linspace

__all__ = [
    "bartlett", "blackman", "cosine", "exponential", "gaussian", "general_cosine", "general_hamming", "hamming", "hann",
    "kaiser", "nuttall", "hann_window", "hamming_window", "blackman_window", "bartlett_window", "kaiser_window",
]


class _SplitLinspace(TorchFunctionMode):
    """Makes ``torch.linspace`` calls build a DistTensor with this split (a chunk per rank)."""

    def __init__(self, split, comm):
        super().__init__()
        self.split, self.comm = split, comm

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs.pop("layout", None)
            return linspace(*args, split=self.split, comm=self.comm, **kwargs)
        return func(*args, **kwargs)


def _split_window(torch_fn):
    @functools.wraps(torch_fn)
    def window(M: int, *args, split=None, comm=None, **kwargs):
        with _SplitLinspace(split, comm):
            out = torch_fn(M, *args, **kwargs)
        return out if hasattr(out, "split_dim") else distribute(out, split, comm)  # M of 0 or 1: no positions

    window.__doc__ = f"``torch.signal.windows.{torch_fn.__name__}`` with ``split=`` (this rank's chunk only)."
    return window


_W = torch.signal.windows
bartlett, blackman, cosine, exponential, gaussian, general_cosine, general_hamming, hamming, hann, kaiser, nuttall = (
    _split_window(getattr(_W, name)) for name in __all__[:11])


def hann_window(window_length: int, periodic: bool = True, *, split=None, dtype=None, device=None, comm=None,
                requires_grad=False):
    """:func:`torch.hann_window` with ``split=``: ``hann(M, sym=not periodic)``.

    >>> hann_window(4, split=0).full().tolist()
    [0.0, 0.5, 1.0, 0.5]
    """
    torch.hann_window(min(window_length, 2), periodic, dtype=dtype)  # torch's checks, on two samples
    return hann(window_length, sym=not periodic, split=split, dtype=dtype, device=device, comm=comm,
                requires_grad=requires_grad)


def hamming_window(window_length: int, periodic: bool = True, alpha: float = 0.54, beta: float = 0.46, *, split=None,
                   dtype=None, device=None, comm=None, requires_grad=False):
    """:func:`torch.hamming_window` with ``split=``: ``alpha - beta cos(2 pi n / N)``."""
    torch.hamming_window(min(window_length, 2), periodic, alpha, beta, dtype=dtype)
    return general_cosine(window_length, a=[alpha, beta], sym=not periodic, split=split, dtype=dtype, device=device,
                          comm=comm, requires_grad=requires_grad)


def blackman_window(window_length: int, periodic: bool = True, *, split=None, dtype=None, device=None, comm=None,
                    requires_grad=False):
    """:func:`torch.blackman_window` with ``split=``."""
    torch.blackman_window(min(window_length, 2), periodic, dtype=dtype)
    return blackman(window_length, sym=not periodic, split=split, dtype=dtype, device=device, comm=comm,
                    requires_grad=requires_grad)


def bartlett_window(window_length: int, periodic: bool = True, *, split=None, dtype=None, device=None, comm=None,
                    requires_grad=False):
    """:func:`torch.bartlett_window` with ``split=``."""
    torch.bartlett_window(min(window_length, 2), periodic, dtype=dtype)
    return bartlett(window_length, sym=not periodic, split=split, dtype=dtype, device=device, comm=comm,
                    requires_grad=requires_grad)


def kaiser_window(window_length: int, periodic: bool = True, beta: float = 12.0, *, split=None, dtype=None, device=None,
                  comm=None, requires_grad=False):
    """:func:`torch.kaiser_window` with ``split=``."""
    torch.kaiser_window(min(window_length, 2), periodic, beta, dtype=dtype)
    return kaiser(window_length, beta=beta, sym=not periodic, split=split, dtype=dtype, device=device, comm=comm,
                  requires_grad=requires_grad)
