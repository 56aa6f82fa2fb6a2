"""Backward hooks: one per-tensor table, one engine step, used by every kind of hook.

Each tensor that has hooks carries one `TensorHooks` table holding
  - `grad`: `hook(grad) -> new grad or None`, run on the gradient reaching the tensor
    (`Tensor.register_hook`);
  - `post_accumulate`: `hook(tensor)`, run after a backward accumulated into a leaf's .grad
    (`Tensor.register_post_accumulate_grad_hook`; DistributedDataParallel's bucketed allreduce);
  - `retains_grad`: a non-leaf tensor keeps its gradient in .grad (`Tensor.retain_grad`);
  - `group`: a `HookGroup` the tensor belongs to: the gradients of all its members are handed to
    the group at once, and it may replace them (a module call's inputs and outputs, for full
    backward hooks and pre-hooks: gradc.nn.hooks).
`queue_callback(fn)` runs fn once, when the backward that is running ends.

The eager engine (gradc.autograd) asks `live()` once per backward: while no table exists anywhere it
takes its plain path (one adjoint, no scan for hooks). Otherwise `staged_backward` cuts the graph at
each "unit" (a non-leaf tensor with gradient hooks, or all members of a group): a unit is visited
after every unit its gradient flows through, and the gradient reaching it comes from the outputs and
from the units already visited (their final gradients, through stand-ins that own their records),
with every unit standing as a leaf. Its hooks run, then it joins the sources. A last pass from all
sources gives the targets' gradients. k units cost k + 1 backward passes.

Traced code (gradc.grad, value_and_grad, compile_step) has no Python at run time: a tensor's gradient
hooks become a `custom_vjp` (HookRule) whose VJP runs them on the traced cotangent while AD runs, so
what they return is compiled in; they run once per trace and see traced tensors.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Sequence

from gradc.tensor import Tensor

__all__ = ["TensorHooks", "HookGroup", "RemovableHandle", "register_hook", "retain_grad",
           "register_post_accumulate_grad_hook", "queue_callback", "live", "grad_hooks", "join_group",
           "staged_backward", "leaf_gradient", "after_accumulate", "backward_done", "traced_hooks"]

_live = [0]  # TensorHooks tables alive, all tensors together: the engine's one check for the plain path
_callbacks: list[Callable[[], Any]] = []
_ids = itertools.count()


class TensorHooks:
    """All the hooks of one tensor (it lives and dies with the tensor, see the module docstring)."""

    __slots__ = ("grad", "post_accumulate", "retains_grad", "group")

    def __init__(self, grad: dict | None = None, post_accumulate: dict | None = None, retains_grad: bool = False,
                 group: HookGroup | None = None) -> None:
        self.grad: dict[int, Callable] = {} if grad is None else grad
        self.post_accumulate: dict[int, Callable] = {} if post_accumulate is None else post_accumulate
        self.retains_grad = retains_grad
        self.group = group
        _live[0] += 1

    def __del__(self) -> None:
        _live[0] -= 1

    def __reduce__(self) -> tuple:  # a copied tensor's table is counted like any other
        return TensorHooks, (self.grad, self.post_accumulate, self.retains_grad, self.group)

    def cuts(self) -> bool:
        """Whether the gradient flowing on from this tensor depends on Python (hooks, a group)."""
        return bool(self.grad) or self.group is not None


class HookGroup:
    """Tensors whose gradients are handed over together: `arrived(grads)` gets one gradient per member
    (None where none reached it) and returns the gradients that flow on (None: no gradient flows)."""

    members: list[Tensor]

    def arrived(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        raise NotImplementedError


class RemovableHandle:
    """What register_*hook returns: `.remove()` unregisters the hook (torch.utils.hooks.RemovableHandle)."""

    def __init__(self, table: dict) -> None:
        self.table = table
        self.id = next(_ids)

    def remove(self) -> None:
        self.table.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def live() -> bool:
    return _live[0] > 0


def table_of(t: Tensor, create: bool = False) -> TensorHooks | None:
    table = t.__dict__.get("_hook_table")
    if table is None and create:
        table = t.__dict__["_hook_table"] = TensorHooks()
    return table


def grad_hooks(t: Tensor) -> list[Callable]:
    table = t.__dict__.get("_hook_table")
    return list(table.grad.values()) if table is not None else []


# ----------------------------------------------------------------------------- registration

def register_hook(self: Tensor, hook: Callable[[Tensor], Any]) -> RemovableHandle:
    """hook(grad) is called with this tensor's gradient during backward; what it returns replaces it."""
    if self.is_traced:  # inside gradc.grad/compile_step: the hook is traced into the adjoint
        if not self.dtype.is_float:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        self._value = traced_hooks(self, [hook])
        return RemovableHandle({})
    if not self.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    hooks = table_of(self, create=True).grad
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


def retain_grad(self: Tensor) -> None:
    """A non-leaf tensor keeps its gradient in .grad (a leaf does anyway)."""
    if not self.requires_grad:
        raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
    if self._record is not None:
        table_of(self, create=True).retains_grad = True


def register_post_accumulate_grad_hook(self: Tensor, hook: Callable[[Tensor], Any]) -> RemovableHandle:
    """hook(tensor) runs after a backward has accumulated into the leaf `tensor`'s .grad."""
    if not self.is_leaf:
        raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
    if not self.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    hooks = table_of(self, create=True).post_accumulate
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


def join_group(t: Tensor, group: HookGroup) -> None:
    table_of(t, create=True).group = group


def queue_callback(callback: Callable[[], Any]) -> None:
    """callback() runs once, when the backward that is running now ends."""
    _callbacks.append(callback)


def _retains_grad(t: Tensor) -> bool:
    table = t.__dict__.get("_hook_table")
    return table is not None and table.retains_grad


Tensor.register_hook = register_hook
Tensor.retain_grad = retain_grad
Tensor.register_post_accumulate_grad_hook = register_post_accumulate_grad_hook
Tensor.retains_grad = property(_retains_grad)


# ----------------------------------------------------------------------------- the eager engine's step

def run_grad_hooks(t: Tensor, g: Tensor) -> Tensor:
    table = t.__dict__.get("_hook_table")
    if table is None:
        return g
    for hook in list(table.grad.values()):
        new = hook(g)
        if new is not None:
            if not isinstance(new, Tensor) or new.shape != g.shape:
                raise RuntimeError(f"hook returned a gradient of shape {list(getattr(new, 'shape', ()))}, expected "
                                   f"{list(g.shape)}")
            g = new
    return g


def leaf_gradient(leaf: Tensor, g: Tensor) -> Tensor:
    """A leaf's gradient after its gradient hooks (non-leaf targets had theirs in staged_backward)."""
    return run_grad_hooks(leaf, g) if leaf._record is None else g


def after_accumulate(leaf: Tensor) -> None:
    table = leaf.__dict__.get("_hook_table")
    if table is not None and table.post_accumulate:
        for hook in list(table.post_accumulate.values()):
            hook(leaf)


def backward_done() -> None:
    while _callbacks:
        _callbacks.pop(0)()


def _stand_in(t: Tensor) -> Tensor:
    """A tensor with t's value and history, so that a capture expands it while t itself is cut."""
    s = Tensor._from_array(t._data)
    s._record, s.requires_grad, s._versions = t._record, True, t._versions
    return s


class _Unit:
    __slots__ = ("members", "group", "last")

    def __init__(self, group: HookGroup | None, last: int) -> None:
        self.members: list[Tensor] = []
        self.group, self.last = group, last


def _units(capture: Any, targets: Sequence[Tensor]) -> list[_Unit]:
    """The hooked units of the capture, each after every unit that its gradient flows through."""
    units: list[_Unit] = []
    by_key: dict[int, int] = {}
    member_of: dict[int, int] = {}
    hooked = [(position, t, table) for position, t in enumerate(capture.computed)
              if (table := t.__dict__.get("_hook_table")) is not None and table.cuts()]
    if not hooked:
        return units
    needed = {id(t) for t in capture.active(targets)} | {id(t) for t in targets}  # PyTorch skips other nodes
    for position, t, table in hooked:
        if id(t) not in needed:
            continue
        key = id(table.group) if table.group is not None else id(t)
        k = by_key.get(key)
        if k is None:
            k = by_key[key] = len(units)
            units.append(_Unit(table.group, position))
            # a group hands over all its members, those no gradient reaches (not in this graph) too
            units[k].members = list(table.group.members) if table.group is not None else [t]
        units[k].last = position
        member_of[id(t)] = k
    if len(units) < 2:
        return units
    # above[k]: the units some member of unit k is computed from; k is visited before all of them
    above = [0] * len(units)
    reach: dict[int, int] = {}
    for t in capture.computed:
        mask = 0
        for x in capture.links[id(t)]:
            mask |= reach.get(id(x), 0)
        k = member_of.get(id(t))
        if k is not None:
            above[k] |= mask
            mask |= 1 << k
        if mask:
            reach[id(t)] = mask
    waiting = [0] * len(units)
    for k, mask in enumerate(above):
        if mask >> k & 1:
            raise RuntimeError("a hook group's tensors are computed from one another: their gradients cannot be "
                               "handed over together")
        for j in range(len(units)):
            if mask >> j & 1:
                waiting[j] += 1
    ready = [(-u.last, k) for k, u in enumerate(units) if not waiting[k]]
    heapq.heapify(ready)
    order = []
    while ready:  # latest first among those ready: the order a reverse-mode walk reaches them
        _, k = heapq.heappop(ready)
        order.append(units[k])
        for j in range(len(units)):
            if above[k] >> j & 1:
                waiting[j] -= 1
                if not waiting[j]:
                    heapq.heappush(ready, (-units[j].last, j))
    return order


def staged_backward(capture: Any, grad_tensors: Any, targets: list[Tensor], retain_graph: bool | None,
                    create_graph: bool, every_leaf: bool = False) -> tuple[list[Tensor], list]:
    """The targets and their gradients with every hook applied on the way (see the module docstring).

    Non-leaf targets get their gradient after their own hooks; leaves' gradient hooks are the caller's
    (`leaf_gradient`, run as each leaf is accumulated). Tensors that retain_grad receive .grad. With
    `every_leaf` (backward without inputs=), the targets grow by the leaves that a gradient a group
    returned reaches outside the graph (a module input that the module did not use gets zeros, as in PyTorch).
    """
    from gradc.autograd import GraphCapture, _compute, _cotangents
    units = _units(capture, targets)
    cut = frozenset(id(m) for u in units for m in u.members)
    sources = list(capture.outputs)
    cotangents = _cotangents(sources, grad_tensors)
    final: dict[int, Tensor] = {}
    for unit in units:
        stage = GraphCapture(sources, (), cut)
        present = {id(p) for p in stage.params}
        reached = [m for m in unit.members if id(m) in present]
        if not reached:
            continue  # no gradient reaches it: PyTorch does not call its hooks either
        got = dict(zip(map(id, reached), _compute(stage, cotangents, reached, True, create_graph)))
        grads = [got.get(id(m)) for m in unit.members]
        if all(g is None for g in grads):
            continue
        for k, m in enumerate(unit.members):
            if grads[k] is not None:
                grads[k] = run_grad_hooks(m, grads[k])
                if _retains_grad(m):  # after the tensor's hooks, before its group's (PyTorch's order)
                    m.grad = grads[k] if m.grad is None else m.grad + grads[k]
        if unit.group is not None:
            grads = unit.group.arrived(grads)
        for m, g in zip(unit.members, grads):
            if g is not None:
                final[id(m)] = g
                sources.append(_stand_in(m))
                cotangents.append(g)
    rest = [t for t in targets if id(t) not in cut]
    last = GraphCapture(sources, [t for t in rest if t._record is not None], cut) if units else capture
    if every_leaf and units:
        known = {id(t) for t in targets}
        extra = [p for p in last.params if p.requires_grad and id(p) not in cut and id(p) not in known]
        targets, rest = targets + extra, rest + extra
    watched = [t for t in last.computed if _retains_grad(t)]
    if watched:
        last.taps = list(dict.fromkeys(last.taps + watched))
    grads = _compute(last, cotangents, rest + watched, retain_graph, create_graph)
    for t, g in zip(watched, grads[len(rest):]):
        if g is not None:
            t.grad = g if t.grad is None else t.grad + g
    by_target = dict(zip(map(id, rest), grads))
    by_target.update(final)
    return targets, [by_target.get(id(t)) for t in targets]


# ----------------------------------------------------------------------------- traced code

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
