"""Distributed rules, one module per rule family; importing this package registers them."""
from . import creation, pointwise, reductions, tensor_api  # noqa: F401
