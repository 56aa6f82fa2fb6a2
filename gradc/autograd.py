"""Eager backward: the recorded ops become a Function, the AD pass gives its adjoint, and that runs.

There is no second gradient engine: `backward()` and `autograd.grad` use the same `ad` pass as the
compiled transforms. The joint Function of a graph shape is cached, so an eager training loop runs
AD once per distinct graph.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from gradc.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from gradc.ir.builder import Builder
from gradc.ir.core import Function, Value
from gradc.ir.interp import run
from gradc.ir.passes.ad import ad
from gradc.ir.printer import format_attr
from gradc.tensor import Tensor, apply

__all__ = ["backward", "grad", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "GraphCapture"]

FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after they "
    "have already been freed). Saved intermediate values of the graph are freed when you call .backward() "
    "or autograd.grad(). Specify retain_graph=True if you need to backward through the graph a second "
    "time or if you need to access saved tensors after calling backward.")


# Primitives whose VJP reads no forward values: like PyTorch's nodes that save no tensors, they can be
# backpropagated through again after their graph was freed.
NOTHING_SAVED = frozenset({"add", "sub", "neg", "reshape", "permute", "broadcast_to", "reduce_sum", "slice",
                           "pad", "cast", "stop_gradient"})


class GraphCapture:
    """The recorded graph between some inputs (leaves or cut points) and some outputs."""

    def __init__(self, outputs: Sequence[Tensor], cut: Sequence[Tensor] = ()) -> None:
        cut_ids = {id(t) for t in cut}
        params: list[Tensor] = list(cut)
        computed: dict[int, Tensor] = {}
        seen = set(cut_ids)
        stack = list(outputs)
        while stack:
            t = stack.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            if t._record is None:
                params.append(t)
                continue
            computed[id(t)] = t
            stack.extend(t._record.inputs)
        self.params = params
        self.computed = sorted(computed.values(), key=lambda t: t._record.seq)
        self.outputs = list(outputs)

    def check_saved(self) -> None:
        for t in self.computed:
            record = t._record
            if record.freed and record.opdef.name not in NOTHING_SAVED:
                raise RuntimeError(FREED_MESSAGE)
            for position, (inp, version) in enumerate(zip(record.inputs, record.versions)):
                if inp._version != version:
                    raise RuntimeError(
                        "one of the variables needed for gradient computation has been modified by an "
                        f"inplace operation: [{inp.dtype.name} {list(inp.shape)}], which is input {position} "
                        f"of {record.opdef.name}, is at version {inp._version}; expected version {version} "
                        "instead.")

    def key(self, wrt: Sequence[int]) -> tuple:
        """Structural key: equal keys give the same Function (so AD and compilation are cached)."""
        index = {id(t): i for i, t in enumerate(self.params)}
        parts: list[Any] = [tuple((p.shape, p.dtype) for p in self.params), tuple(wrt)]
        for i, t in enumerate(self.computed):
            index[id(t)] = len(self.params) + i
            r = t._record
            parts.append((r.opdef.name, tuple((k, format_attr(v)) for k, v in r.attrs.items()),
                          tuple(index[id(x)] for x in r.inputs)))
        parts.append(tuple(index[id(t)] for t in self.outputs))
        return tuple(parts)

    def function(self) -> Function:
        b = Builder()
        env: dict[int, Value] = {}
        values = []
        for i, p in enumerate(self.params):
            env[id(p)] = Value(p._type(), name=f"t{i}")
            values.append(env[id(p)])
        for t in self.computed:
            r = t._record
            env[id(t)] = b.emit(r.opdef.name, *(env[id(x)] for x in r.inputs), **r.attrs)
        return b.function("backward", values, [env[id(t)] for t in self.outputs])

    def free(self) -> None:
        for t in self.computed:
            t._record.freed = True


_JOINT_CACHE: OrderedDict = OrderedDict()
_JOINT_CACHE_SIZE = 256


def joint_function(capture: GraphCapture, wrt: list[int]) -> Function:
    key = capture.key(wrt)
    joint = _JOINT_CACHE.get(key)
    if joint is None:
        joint = ad(capture.function(), wrt, seed="param")
        _JOINT_CACHE[key] = joint
        if len(_JOINT_CACHE) > _JOINT_CACHE_SIZE:
            _JOINT_CACHE.popitem(last=False)
    else:
        _JOINT_CACHE.move_to_end(key)
    return joint


def replay(fn: Function, inputs: Sequence[Tensor]) -> list[Tensor]:
    """Run a Function op by op on tensors through `apply` (records a graph when grad is enabled)."""
    env: dict[Value, Tensor] = dict(zip(fn.params, inputs))
    for op in fn.ops:
        env[op.result] = apply(op.opdef.name, *(env[v] for v in op.inputs), **op.attrs)
    return [env[r] for r in fn.results]


def _as_tensors(xs: Any) -> list[Tensor]:
    if isinstance(xs, Tensor):
        return [xs]
    return list(xs)


def _cotangents(outputs: list[Tensor], grad_outputs: Any) -> list[Tensor]:
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    grad_outputs = [grad_outputs] if isinstance(grad_outputs, Tensor) else list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"got {len(grad_outputs)} gradients for {len(outputs)} outputs")
    result = []
    for out, g in zip(outputs, grad_outputs):
        if g is None:
            if out.numel() != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            g = Tensor._from_array(np.ones(out.shape, dtype=out.dtype.numpy))
        g = g if isinstance(g, Tensor) else Tensor(np.asarray(g, dtype=out.dtype.numpy))
        if g.shape != out.shape:
            raise RuntimeError(f"Mismatch in shape: grad_output[0] has a shape of torch.Size({list(g.shape)}) "
                               f"and output[0] has a shape of torch.Size({list(out.shape)}).")
        result.append(g if g.dtype == out.dtype else Tensor._from_array(g._data.astype(out.dtype.numpy)))
    return result


def _compute(outputs: list[Tensor], grad_outputs: Any, targets: list[Tensor], cut: list[Tensor],
             retain_graph: bool | None, create_graph: bool) -> list[Tensor | None]:
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
    cotangents = _cotangents(outputs, grad_outputs)
    capture = GraphCapture(outputs, cut)
    capture.check_saved()
    position = {id(t): i for i, t in enumerate(capture.params)}
    wrt = [position[id(t)] for t in targets if id(t) in position]
    joint = joint_function(capture, wrt)
    if create_graph:
        with enable_grad():
            results = replay(joint, capture.params + cotangents)
    else:
        results = [Tensor._from_array(a) for a in run(joint, *(p._data for p in capture.params),
                                                      *(c._data for c in cotangents))]
    if not (retain_graph if retain_graph is not None else create_graph):
        capture.free()
    grads = dict(zip(wrt, results[len(outputs):]))
    return [grads.get(position.get(id(t), -1)) for t in targets]


def backward(tensors: Any, grad_tensors: Any = None, retain_graph: bool | None = None,
             create_graph: bool = False, inputs: Any = None) -> None:
    """Accumulate d(tensors)/d(leaf) into each leaf's .grad (PyTorch's torch.autograd.backward)."""
    outputs = _as_tensors(tensors)
    if inputs is not None:
        targets = _as_tensors(inputs)
        cut = [t for t in targets if t._record is not None]
    else:
        cut = []
        capture = GraphCapture(outputs)
        targets = [t for t in capture.params if t.requires_grad]
    grads = _compute(outputs, grad_tensors, targets, cut, retain_graph, create_graph)
    for leaf, g in zip(targets, grads):
        if g is None:
            continue
        if leaf.grad is None:
            leaf.grad = g if create_graph else Tensor._from_array(g._data.copy())
        elif create_graph:
            leaf.grad = leaf.grad + g
        else:
            leaf.grad._data += g._data  # accumulate in place, as PyTorch does
            leaf.grad._bump_version()


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool | None = None) -> tuple:
    """d(outputs)/d(inputs) as a tuple, without touching .grad (torch.autograd.grad)."""
    outs = _as_tensors(outputs)
    targets = _as_tensors(inputs)
    for t in targets:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    cut = [t for t in targets if t._record is not None]
    grads = _compute(outs, grad_outputs, targets, cut, retain_graph, create_graph)
    if not allow_unused:
        for g in grads:
            if g is None:
                raise RuntimeError("One of the differentiated Tensors appears to not have been used in the "
                                   "graph. Set allow_unused=True if this is the desired behavior.")
    return tuple(grads)
