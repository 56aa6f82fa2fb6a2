"""Backward through tensors with hooks: the graph is cut at each hooked non-leaf tensor.

The eager engine computes a whole backward as one adjoint Function, so a hook that changes the
gradient of an intermediate tensor needs that gradient before the rest is computed. Hooked tensors
are visited latest first: the gradient reaching one comes from the outputs and from the hooked
tensors after it (already final, through stand-ins that own their records), with every hooked tensor
standing as a leaf; the hooks run on it, and it joins the sources. A last pass from all sources gives
the leaves' gradients. k hooked tensors cost k + 1 backward passes.
"""

from __future__ import annotations

from typing import Any

from gradc.autograd import GraphCapture, _compute, _cotangents, retaining_backward
from gradc.tensor import Tensor


def _stand_in(t: Tensor) -> Tensor:
    """A tensor with t's value and history, so that a capture expands it while t itself is cut."""
    s = Tensor._from_array(t._data)
    s._record, s.requires_grad, s._versions = t._record, True, t._versions
    return s


def run_hooks(t: Tensor, g: Tensor) -> Tensor:
    for hook in list(t.__dict__.get("_hooks", {}).values()):
        new = hook(g)
        if new is not None:
            if not isinstance(new, Tensor) or new.shape != g.shape:
                raise RuntimeError(f"hook returned a gradient of shape {list(getattr(new, 'shape', ()))}, expected "
                                   f"{list(g.shape)}")
            g = new
    return g


def staged_backward(capture: GraphCapture, grad_tensors: Any, targets: list[Tensor], retain_graph: bool | None,
                    create_graph: bool) -> list:
    hooked = [t for t in reversed(capture.computed) if t.__dict__.get("_hooks")]
    cut = frozenset(id(t) for t in hooked)
    sources = list(capture.outputs)
    cotangents = _cotangents(sources, grad_tensors)
    for h in hooked:
        stage = GraphCapture(sources, (), cut)
        if not any(p is h for p in stage.params):
            continue  # no gradient reaches it: PyTorch does not call its hooks either
        (g,) = _compute(stage, cotangents, [h], True, create_graph)
        if g is None:
            continue
        g = run_hooks(h, g)
        if h.__dict__.get("_retains_grad"):
            h.grad = g if h.grad is None else h.grad + g
        sources.append(_stand_in(h))
        cotangents.append(g)
    final = GraphCapture(sources, (), cut)
    return retaining_backward(final, cotangents, targets, retain_graph, create_graph)


class HookRule:
    """The custom VJP of a traced tensor with hooks: identity forward, the hooks traced on its cotangent."""

    def __init__(self, hooks: list) -> None:
        self.hooks = hooks

    def __repr__(self) -> str:
        return f"tensor_hooks#{id(self):x}"

    def vjp(self, b: Any, g: Any, out: Any, x: Any, value: Any) -> tuple:
        from gradc.grad_mode import enable_grad
        from gradc.tensor import Trace, tracing
        trace = Trace()
        trace.builder = b
        with tracing(trace), enable_grad():
            grad = Tensor._from_value(g)
            for hook in self.hooks:
                new = hook(grad)
                if new is not None:
                    if not isinstance(new, Tensor) or new.shape != grad.shape:
                        raise RuntimeError(f"hook returned a gradient of shape {list(getattr(new, 'shape', ()))}, "
                                           f"expected {list(grad.shape)}")
                    grad = new
            v = trace.lift(grad)
        return (v if v.dtype == g.dtype else b.emit("cast", v, dtype=g.dtype)), None


def traced_hooks(t: Tensor, hooks: list) -> Any:
    """t's traced value, wrapped so that AD runs the hooks on its gradient (and native code ignores it)."""
    from gradc.tensor import current_trace
    trace = current_trace()
    value = trace.lift(t)
    return trace.builder.emit("custom_vjp", value, value, rule=HookRule(hooks))
