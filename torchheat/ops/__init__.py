"""Distributed rules, one module per rule family; importing this package registers them."""
from . import (  # noqa: F401
    autograd, batch, concat, creation, diagonal, distance, einsum, fft, halo, indexing, integrate, linalg, losses,
    nn_functional, nn_layers, normalization, pointwise, random, reductions, reshape, scans, shape, sorting, stft,
    tensor_api,
)
