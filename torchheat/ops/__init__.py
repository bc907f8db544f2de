"""Distributed rules, one module per rule family; importing this package registers them."""
from . import autograd, creation, indexing, nn_functional, pointwise, reductions, scans, shape, tensor_api  # noqa: F401
