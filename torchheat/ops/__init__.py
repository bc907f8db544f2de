"""Distributed rules, one module per rule family; importing this package registers them."""
from . import autograd, creation, linalg, nn_functional, pointwise, random, reductions, scans, shape, tensor_api  # noqa: F401
