"""Autograd entry points: ``backward`` and ``torch.autograd.grad`` with DistTensors.

torch's autograd engine works on local chunks. A gradient given for a DistTensor output may
be a DistTensor of the output's global shape (moved to the output's layout first) or a
plain tensor of that global shape (every rank takes its chunk of it, as for any replicated
operand); any other shape gets torch's error on every rank. ``torch.autograd.grad`` returns
the gradients of DistTensor inputs as DistTensors in the inputs' layouts.

Examples
--------
>>> import torch, torchheat as th
>>> x = th.distribute(torch.arange(6.).reshape(3, 2), split=0).requires_grad_()
>>> y = x * x
>>> y.backward(torch.ones(3, 2))            # a plain gradient of the global shape
>>> x.grad.full().tolist()
[[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
>>> (g,) = torch.autograd.grad((x ** 3).sum(), x)
>>> g.split_dim, g.shape
(0, torch.Size([3, 2]))
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import dispatch as d
from ..tensor import DistTensor, wrap


def _as_tuple(tensors) -> tuple:
    if tensors is None:
        return ()
    return (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)


def local_gradient(output: torch.Tensor, grad: Optional[torch.Tensor], i: int):
    """This rank's chunk of the gradient ``grad`` given for ``output`` (its ``i``-th position)."""
    if not isinstance(output, DistTensor):
        return grad.local if isinstance(grad, DistTensor) and grad._split is None else grad
    gshape = output._gshape
    if grad is None:
        if not output.requires_grad:
            return None  # torch's own error follows
        if gshape.numel() != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        return torch.ones_like(output.local, memory_format=torch.preserve_format)  # (no rows on some ranks)
    if not isinstance(grad, torch.Tensor):
        return grad
    if d.shape_of(grad) != gshape:
        raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {d.shape_of(grad)} and output[{i}] "
                           f"has a shape of {gshape}.")
    if isinstance(grad, DistTensor):
        return d.to_layout(grad, output._split, output._counts).local
    if output._split is None:
        return grad
    return grad.narrow(output._split, output.offset, output._counts[output._comm.rank])


def _local_gradients(outputs: Sequence[torch.Tensor], grads) -> tuple:
    grads = _as_tuple(grads) if grads is not None else (None,) * len(outputs)
    if len(grads) != len(outputs):
        raise RuntimeError(f"got {len(grads)} gradients for {len(outputs)} outputs; expected one per output")
    return tuple(local_gradient(o, g, i) for i, (o, g) in enumerate(zip(outputs, grads)))


def _tensor_backward_sig(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    return (self,), gradient, dict(retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)


def _backward_sig(tensors, grad_tensors=None, retain_graph=None, create_graph=False, grad_variables=None, inputs=None):
    return _as_tuple(tensors), grad_tensors if grad_variables is None else grad_variables, \
        dict(retain_graph=retain_graph, create_graph=create_graph, inputs=inputs)


def backward(func, args, kwargs):
    """``Tensor.backward`` and ``torch.autograd.backward``: the engine runs on local chunks
    with this rank's chunk of every given gradient."""
    outputs, grads, call = (_tensor_backward_sig if func is torch.Tensor.backward else _backward_sig)(*args, **kwargs)
    grads = _local_gradients(outputs, grads)
    return d.run_local(torch.autograd.backward, (outputs,), dict(call, grad_tensors=grads))


def _grad_sig(outputs, inputs, grad_outputs=None, **options):
    return _as_tuple(outputs), _as_tuple(inputs), grad_outputs, options


def grad(func, args, kwargs):
    """``torch.autograd.grad``: gradients of DistTensor inputs in the inputs' layouts."""
    names = ("retain_graph", "create_graph", "only_inputs", "allow_unused", "is_grads_batched", "materialize_grads")
    outputs, inputs, grad_outputs, options = _grad_sig(*args[:3], **kwargs)
    options.update(zip(names, args[3:]))
    result = d.run_local(torch.autograd.grad, (outputs, inputs), dict(options, grad_outputs=_local_gradients(outputs, grad_outputs)))
    return tuple(
        wrap(g, x._split, x._comm, x._gshape, x._counts) if g is not None and isinstance(x, DistTensor) else g
        for g, x in zip(result, inputs)
    )


d.register([torch.Tensor.backward, torch.autograd.backward], backward)
d.register([torch.autograd.grad], grad)
