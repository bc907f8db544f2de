"""Distributed rules, one module per rule family; importing this package registers them."""
from . import autograd, creation, nn_functional, pointwise, reductions, reshape, scans, shape, tensor_api  # noqa: F401
