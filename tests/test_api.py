"""The torch API keeps its meaning on a DistTensor.

* No DistTensor attribute changes the meaning of a ``torch.Tensor`` name (``x.split(2)``,
  ``x.gather(1, idx)`` are torch's).
* Every public torch function reaches ``DistTensor.__torch_function__`` (so it runs
  distributed, or raises ``NotDistributedError``), except the few listed in
  ``torchheat.dispatch.BYPASSES``, which the docs name. Found by calling them, not assumed.
* Ops that return views or write into their input never fall back to a gathered copy.
"""
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing._internal.common_methods_invocations import op_db

import torchheat as th
from torchheat import dispatch
from torchheat.comm.self import SelfCommunicator
from torchheat.tensor import DistTensor

# DistTensor's own definitions of Tensor names: each keeps the name's meaning.
OVERRIDES = {
    "__torch_function__": "the dispatch entry point",
    "__repr__": "a Tensor repr, of the local chunk (printing must not communicate)",
    "__deepcopy__": "deepcopy keeps the layout",
    "__reduce_ex__": "pickling keeps the layout and the saving rank",
}
# Python attributes every class has.
CLASS_PLUMBING = {"__module__", "__doc__", "__dict__", "__weakref__", "__annotations__", "__qualname__",
                  "__firstlineno__", "__static_attributes__", "__parameters__", "__orig_bases__"}
# Public callables that are not computations on a tensor: they never need a rule.
NOT_COMPUTATIONS = {
    "torch.is_tensor", "torch.is_storage", "torch.is_vulkan_available", "torch.classproperty", "torch.vmap",
    "torch.prepare_multiprocessing_environment", "torch.as_tensor", "torch.asarray",  # (these two return x itself)
    "F.has_torch_function_unary", "F.has_torch_function_variadic",
}
NAMESPACES = {"torch": torch, "torch.linalg": torch.linalg, "torch.special": torch.special, "torch.fft": torch.fft,
              "F": F}
NOT_CALLED = {"set_default_tensor_type", "set_default_dtype", "manual_seed", "seed", "set_printoptions", "save", "load",
              "use_deterministic_algorithms", "set_num_threads", "set_num_interop_threads", "compile",
              "set_grad_enabled", "set_anomaly_enabled", "set_warn_always", "set_flush_denormal"}


def test_no_tensor_name_is_shadowed():
    shadowed = sorted(n for n in vars(DistTensor) if hasattr(torch.Tensor, n) and n not in set(OVERRIDES) | CLASS_PLUMBING)
    assert not shadowed, f"DistTensor redefines torch.Tensor names: {shadowed}"
    public = [n for n in dir(torch.Tensor) if not n.startswith("_")]
    assert len(public) > 300
    changed = [n for n in public if n not in OVERRIDES and inspect.getattr_static(DistTensor, n) is not inspect.getattr_static(torch.Tensor, n)]
    assert not changed, f"these torch.Tensor names resolve to something else on DistTensor: {changed}"


def test_split_and_gather_are_torchs(comm):
    t = torch.arange(12.0).reshape(4, 3)
    r = th.distribute(t)  # replicated: torch's own results
    assert [p.tolist() for p in r.split(2)] == [p.tolist() for p in t.split(2)]
    assert [p.tolist() for p in torch.split(r, [1, 3])] == [p.tolist() for p in torch.split(t, [1, 3])]
    idx = torch.tensor([[0], [2], [1], [0]])
    assert r.gather(1, idx).tolist() == t.gather(1, idx).tolist()
    assert th.distribute(t, split=0).gather_to(0) is None or comm.rank == 0


class Recorder:
    """Records every function that reaches ``DistTensor.__torch_function__``."""

    def __init__(self, monkeypatch):
        self.seen = []
        entry = DistTensor.__dict__["__torch_function__"].__func__

        def record(cls, func, types, args=(), kwargs=None):
            self.seen.append(func)
            return entry(cls, func, types, args, kwargs)

        monkeypatch.setattr(DistTensor, "__torch_function__", classmethod(record))

    def bypasses(self, call) -> bool:
        """Whether ``call()`` completed without any function reaching the handler."""
        self.seen.clear()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = call()
        except Exception:  # not a valid call (or correctly refused): nothing computed
            return False
        return out is not NotImplemented and not self.seen


one_process_only = pytest.mark.skipif(
    th.get_comm().size > 1, reason="dispatch coverage does not depend on the process count (its tensors live on a "
    "one-rank communicator): it runs in the one-process stages")


def one_process_split(t):
    """A split DistTensor on a one-rank communicator: dispatch is the same on any process count."""
    return th.distribute(t, split=0, comm=SelfCommunicator())


@one_process_only
def test_every_torch_function_reaches_the_handler(monkeypatch):
    recorder = Recorder(monkeypatch)
    found = set()
    for label, namespace in NAMESPACES.items():
        for name in dir(namespace):
            f = getattr(namespace, name)
            if name.startswith("_") or name in NOT_CALLED or not callable(f) or inspect.isclass(f) or inspect.ismodule(f):
                continue
            for shape in ((4, 4), (3, 4, 4)):
                x = one_process_split(torch.randn(shape, dtype=torch.float64))
                for extra in ((), (x,), (0,), (1,), (x, x)):
                    if recorder.bypasses(lambda: f(x, *extra)):
                        found.add(f"{label}.{name}")
    for name in dir(torch.Tensor):
        if name.startswith("_") or name in OVERRIDES:
            continue
        for extra in ((), (0,), (1,), ("x",)):
            x = one_process_split(torch.randn(4, 4, dtype=torch.float64))
            try:
                method = getattr(x, name)
            except Exception:  # noqa: BLE001 -- a property refused for split data (x.T): it reached the handler
                continue
            if callable(method) and recorder.bypasses(lambda: method(*[x if e == "x" else e for e in extra])):
                found.add(f"Tensor.{name}")
    found -= NOT_COMPUTATIONS
    assert found == set(dispatch.BYPASSES), (
        f"not documented in dispatch.BYPASSES: {sorted(found - set(dispatch.BYPASSES))}; "
        f"listed but reaching the handler now: {sorted(set(dispatch.BYPASSES) - found)}")


@one_process_only
def test_every_opinfo_reaches_the_handler(monkeypatch):
    """The first sample of every OpInfo in torch's database, with its input split."""
    recorder = Recorder(monkeypatch)
    found, tried = [], 0
    for op in op_db:
        dtypes = op.supported_dtypes("cpu")
        dtype = next((d for d in (torch.float64, torch.float32) if d in dtypes), None)
        if dtype is None:
            continue
        try:
            sample = next(iter(op.sample_inputs_func(op, "cpu", dtype, False)))
        except Exception:  # noqa: BLE001 -- a sample generator torch cannot run here
            continue
        t = sample.input
        if not isinstance(t, torch.Tensor) or t.layout != torch.strided or t.dim() == 0 or t.shape[0] < 2:
            continue
        x = one_process_split(t)
        tried += 1
        if recorder.bypasses(lambda: op.op(x, *sample.args, **sample.kwargs)):
            found.append(op.name)
    assert tried > 400
    assert not found, f"these ops compute on the local chunk without reaching the handler: {found}"


@pytest.mark.parametrize("name, write", [
    ("view(-1).add_(1)", lambda x: x.view(-1).add_(1)),
    ("[0].fill_(7)", lambda x: x[0].fill_(7)),
    ("T.mul_(2)", lambda x: x.T.mul_(2)),
    ("select(1, 0).add_(100)", lambda x: x.select(1, 0).add_(100)),
    ("narrow(0, 1, 2).zero_()", lambda x: x.narrow(0, 1, 2).zero_()),
    ("unbind(1)[0].neg_()", lambda x: x.unbind(1)[0].neg_()),
    ("resize_(2, 2)", lambda x: x.resize_(2, 2)),
    ("x[0] = 5", lambda x: x.__setitem__(0, 5)),
])
def test_views_and_writes_never_fall_back_to_a_copy(comm, name, write):
    """Under the default "gather" policy too: a write through a gathered copy would be lost."""
    t = torch.arange(12.0).reshape(4, 3)
    x = th.distribute(t, split=0)
    with th.debug.comm_log() as log:
        try:
            th.config.fallback = "gather"
            write(x)
            raised = None
        except th.NotDistributedError as err:
            raised = str(err)
        finally:
            th.config.fallback = "error"
    # Either a distributed rule handled it (the write reached x, as in torch), or it was refused.
    expected = t.clone()
    write(expected)
    if raised is None:
        assert torch.equal(x.full(), expected), f"{name}: the write did not reach the input"
    else:
        # refused as having no rule, or as a write into a copy standing in for a view (x[0] of a split axis)
        assert ("view of, or writes into" in raised or "writes into a copy" in raised) \
            and not [e for e in log if e.collective == "allgather"]
        assert torch.equal(x.full(), t)


def test_replicated_views_alias_and_in_place_shape_changes_update_the_shape(comm):
    t = torch.arange(6.0).reshape(2, 3)
    for change, args in (("t_", ()), ("transpose_", (0, 1)), ("unsqueeze_", (0,)), ("squeeze_", ()),
                         ("resize_", ((3, 2),)), ("as_strided_", ((3, 2), (1, 3))), ("swapdims_", (0, 1))):
        x, y = th.distribute(t.clone()), t.clone()
        getattr(x, change)(*args)
        getattr(y, change)(*args)
        assert x.shape == y.shape and x.dim() == y.dim() and torch.equal(x.local, y), change
    x = th.distribute(t.clone())
    x.view(-1).add_(1)
    x[0].fill_(7)
    x.T.mul_(2)
    expected = t.clone()
    expected.view(-1).add_(1)
    expected[0].fill_(7)
    expected.T.mul_(2)
    assert torch.equal(x.local, expected)


def test_a_copy_standing_in_for_a_view_refuses_writes(comm):
    # A row picked along the split axis is a copy (broadcast from its owner), marked as such:
    # in-place writes into it, or into views of it, raise instead of being lost.
    x = th.ones(3, 2)
    x._copy_of = "x[0] along the split axis"
    for write in (lambda t: t.add_(1), lambda t: t.view(-1).fill_(7), lambda t: t.T.zero_()):
        with pytest.raises(th.NotDistributedError, match="writes into a copy of x\\[0\\]"):
            write(x)
    assert (x + 1)._copy_of is None and bool((x == 1).all())
