"""``th.fft``: torch.fft's transforms (they run distributed on DistTensors) and the sample
frequency factories with ``split=``, which build only this rank's chunk.

Examples
--------
>>> import torch, torchheat as th
>>> f = th.fft.fftfreq(8, split=0)
>>> f.shape, bool((f.full() == torch.fft.fftfreq(8)).all())
(torch.Size([8]), True)
>>> bool((th.fft.rfftfreq(7, 0.5, split=0).full() == torch.fft.rfftfreq(7, 0.5)).all())
True
"""
from __future__ import annotations

import torch
from torch.fft import (  # noqa: F401  (DistTensor operands dispatch to torchheat's rules)
    fft, fft2, fftn, fftshift, hfft, hfft2, hfftn, ifft, ifft2, ifftn, ifftshift, ihfft, ihfft2, ihfftn, irfft, irfft2,
    irfftn, rfft, rfft2, rfftn,
)

from .ops.creation import _index_chunk, _probe
from .tensor import DistTensor, make_leaf


def _frequencies(torch_fn, n, d, length, signed, split, dtype, device, comm, requires_grad) -> DistTensor:
    dtype = _probe(torch_fn, n, d, dtype=dtype, requires_grad=requires_grad).dtype  # torch's checks and dtype
    comm, split, counts, lo, hi = _index_chunk(length, split, comm)
    k = torch.arange(lo, hi, device=device)
    if signed:  # the second half counts the negative frequencies
        k = torch.where(k < (n + 1) // 2, k, k - n)
    local = k.to(dtype).mul_(1.0 / (n * d))  # torch's own arithmetic: the same bits
    return make_leaf(local, split, comm, torch.Size([length]), counts, requires_grad)


def fftfreq(n: int, d: float = 1.0, *, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """The sample frequencies of a length-``n`` transform; see :func:`torch.fft.fftfreq`.

    >>> fftfreq(4, split=0).full().tolist()
    [0.0, 0.25, -0.5, -0.25]
    """
    return _frequencies(torch.fft.fftfreq, n, d, n, True, split, dtype, device, comm, requires_grad)


def rfftfreq(n: int, d: float = 1.0, *, split=None, dtype=None, device=None, comm=None, requires_grad=False) -> DistTensor:
    """The sample frequencies of a length-``n`` real transform (``n // 2 + 1`` of them); see
    :func:`torch.fft.rfftfreq`.

    >>> rfftfreq(4, split=0).full().tolist()
    [0.0, 0.25, 0.5]
    """
    return _frequencies(torch.fft.rfftfreq, n, d, n // 2 + 1, False, split, dtype, device, comm, requires_grad)
