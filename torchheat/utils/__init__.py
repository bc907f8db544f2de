"""Utilities for training on split data: :mod:`torchheat.utils.data` (sampler, DataLoader)."""
from . import data

__all__ = ["data"]
