"""Distributed rules, one module per rule family; importing this package registers them."""
from . import (  # noqa: F401
    autograd, creation, indexing, linalg, nn_functional, pointwise, random, reductions, scans, shape, sorting, tensor_api,
)
