"""Distributed rules, one module per rule family; importing this package registers them."""
from . import autograd, concat, creation, diagonal, halo, nn_functional, pointwise, reductions, reshape, scans, shape, tensor_api  # noqa: F401
