"""Distributed rules, one module per rule family; importing this package registers them."""
from . import (  # noqa: F401
    autograd, concat, creation, diagonal, distance, einsum, fft, halo, indexing, integrate, linalg, nn_functional,
    pointwise, random, reductions, reshape, scans, shape, sorting, tensor_api,
)
