"""Eager backward: the recorded ops become a Function, the AD pass gives its adjoint, and that runs.

There is no second gradient engine: `backward()` and `autograd.grad` use the same `ad` pass as the
compiled transforms. The joint Function of a graph shape is cached, so an eager training loop runs
AD once per distinct graph. The joint's forward ops are not re-run: a cached structural plan maps
them to the recorded tensors, whose values are read (as PyTorch reads its saved tensors), and only
the adjoint ops are evaluated. Checks on freed graphs and in-place modification follow PyTorch's
rules for the tensors its nodes would save.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from gradc.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from gradc.ir.builder import Builder
from gradc.ir.core import Function as IRFunction
from gradc.ir.core import Value
from gradc.ir.passes.ad import ad
from gradc.ir.passes.dce import dce
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


def contiguous(a: np.ndarray) -> np.ndarray:
    """`a`, or a C-contiguous copy of it (np.ascontiguousarray would turn a 0-d array into shape (1,))."""
    return a if a.flags.c_contiguous else a.copy()


def resolve_inputs(record: Any) -> tuple:
    """The record's inputs as they were when it ran: a tensor overwritten in place since then
    stands for the copy that took over its old value and history (see methods._inplace)."""
    inputs = record.inputs
    for x, version in zip(inputs, record.versions):
        if x._version != version:
            return tuple(as_of(x, v) for x, v in zip(inputs, record.versions))
    return inputs


def as_of(x: Tensor, version: int) -> Tensor:
    """x as autograd saw it at `version`: the copy taken by the first recorded in-place op at or after that
    version (writes that recorded nothing, e.g. into a constant, kept its history as it was), else x."""
    history = getattr(x, "_history", None)
    if x._version == version or not history:
        return x
    later = [k for k in history if k >= version]
    return history[min(later)] if later else x


class GraphCapture:
    """The recorded graph from the leaves to some outputs, with gradient taps on non-leaf targets.

    Function parameters are the leaves, then one zero "tap" per non-leaf target that is added to
    that tensor's value: the gradient with respect to the tap is the gradient with respect to the
    tensor, while gradients still flow through it to the leaves (as torch.autograd.grad does).
    """

    def __init__(self, outputs: Sequence[Tensor], taps: Sequence[Tensor] = (), cut: frozenset = frozenset()) -> None:
        params: list[Tensor] = []
        computed: list[Tensor] = []  # in topological order (post-order of an iterative DFS)
        seen: set[int] = set()
        links: dict[int, tuple] = {}  # id(tensor) -> its op's inputs as they were when it ran
        stack: list[tuple[Tensor, bool]] = [(t, False) for t in reversed(outputs)]
        while stack:
            t, expanded = stack.pop()
            if expanded:
                computed.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            if t._record is None or id(t) in cut:  # a cut tensor stands as a leaf (staged hooks)
                params.append(t)
            else:
                stack.append((t, True))
                inputs = resolve_inputs(t._record)
                links[id(t)] = inputs
                stack.extend((x, False) for x in reversed(inputs) if id(x) not in seen)
        self.taps = [t for t in taps if t._record is not None and id(t) in seen]
        self.params = params
        self.computed = computed
        self.links = links
        self.outputs = list(outputs)

    def param_index(self) -> dict[int, int]:
        """Parameter position of each leaf and of each tapped tensor, by id."""
        index = {id(t): i for i, t in enumerate(self.params)}
        index.update({id(t): len(self.params) + i for i, t in enumerate(self.taps)})
        return index

    def inputs(self) -> list[np.ndarray]:
        # contiguous: a broadcast or transposed leaf would send every native call down its slow path
        return [contiguous(p._data) for p in self.params] + [np.zeros(t.shape, t.dtype.numpy) for t in self.taps]

    def active(self, targets: Sequence[Tensor]) -> list[Tensor]:
        """The computed tensors that a gradient flows through on its way to some target."""
        live = {id(t) for t in targets}
        result = []
        for t in self.computed:
            if any(id(x) in live for x in self.links[id(t)]):
                result.append(t)
                live.add(id(t))
        return result

    @staticmethod
    def check_saved(active: Sequence[Tensor]) -> None:
        """PyTorch's checks on the tensors its backward nodes would have saved."""
        for t in active:
            record = t._record
            if record.opdef.name in NOTHING_SAVED:
                continue
            if record.freed:
                raise RuntimeError(FREED_MESSAGE)
            modified = [(f"input {i}", x._version, v) for i, (x, v) in enumerate(zip(record.inputs, record.versions))
                        if x._version != v]
            if record.overwritten:
                modified.append(("output 0", record.overwritten, 0))
            for what, now, expected in modified:
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by an inplace "
                    f"operation: [{t.dtype.name} {list(t.shape)}], which is {what} of {record.opdef.name}, is at "
                    f"version {now}; expected version {expected} instead.")

    def key(self, wrt: Sequence[int]) -> tuple:
        """Structural key: equal keys give the same Function (so AD and compilation are cached)."""
        index = {id(t): i for i, t in enumerate(self.params)}
        parts: list[Any] = [tuple((p.shape, p.dtype) for p in self.params), tuple(wrt)]
        for i, t in enumerate(self.computed):
            index[id(t)] = len(self.params) + i
            r = t._record
            parts.append((r.opdef.name, tuple((k, format_attr(v)) for k, v in r.attrs.items()),
                          tuple(index[id(x)] for x in self.links[id(t)])))
        parts.append(tuple(index[id(t)] for t in self.taps))
        parts.append(tuple(index[id(t)] for t in self.outputs))
        return tuple(parts)

    def function(self) -> IRFunction:
        b = Builder()
        env: dict[int, Value] = {}
        values = []
        for i, p in enumerate(self.params):
            env[id(p)] = Value(p._type(), name=f"t{i}")
            values.append(env[id(p)])
        taps = {id(t): Value(t._type(), name=f"tap{i}") for i, t in enumerate(self.taps)}
        for t in self.computed:
            r = t._record
            env[id(t)] = b.emit(r.opdef.name, *(env[id(x)] for x in self.links[id(t)]), **r.attrs)
            if id(t) in taps:
                env[id(t)] = b.emit("add", env[id(t)], taps[id(t)])
        return b.function("backward", values + list(taps.values()), [env[id(t)] for t in self.outputs])

    @staticmethod
    def free(active: Sequence[Tensor]) -> None:
        for t in active:
            t._record.freed = True


def _attrs_key(attrs: dict) -> tuple:
    try:
        key = tuple(attrs.items())
        hash(key)
        return key
    except TypeError:  # array-valued attributes
        return tuple((k, format_attr(v)) for k, v in attrs.items())


def forward_plan(joint: IRFunction, capture: GraphCapture) -> list[int]:
    """For each op of `joint`: the index of the recorded tensor that already holds its value, or -1.

    A joint op with the same primitive, attributes and (mapped) operands as a recorded op has the
    recorded value, so the eager backward reads forward values instead of recomputing them. The
    match is structural, hence one plan serves every graph with the same cache key.
    """
    n = len(capture.params)
    index = {id(t): i for i, t in enumerate(capture.params)}
    known: dict[tuple, int] = {}
    for k, t in enumerate(capture.computed):
        index[id(t)] = n + k
        r = t._record
        operands = tuple(index[id(x)] for x in capture.links[id(t)])
        known.setdefault((r.opdef.name, _attrs_key(r.attrs), operands), n + k)
    ids: dict[Value, int] = {p: i for i, p in enumerate(joint.params[:n])}
    taps = set(joint.params[n:n + len(capture.taps)])
    plan = []
    for op in joint.ops:
        hit = -1
        operands = [ids.get(v, -1) for v in op.inputs]
        if op.opdef.name == "add" and op.inputs[1] in taps and operands[0] >= n:
            hit = operands[0]  # value + tap (zero) is the tapped value
        elif -1 not in operands:
            hit = known.get((op.opdef.name, _attrs_key(op.attrs), tuple(operands)), -1)
        if hit >= 0:
            ids[op.result] = hit
        plan.append(hit - n if hit >= n else -1)
    return plan


_JOINT_CACHE: OrderedDict = OrderedDict()
_JOINT_CACHE_SIZE = 256
TIER_UP_AFTER = 2  # backend "auto": a graph shape's second backward compiles its adjoint natively


class JointEntry:
    """A cached joint Function with its forward plan, and (once tiered up) its native adjoint with the
    positions (in capture.computed) of the recorded forward values that the adjoint reads."""

    __slots__ = ("joint", "plan", "uses", "native", "saved")

    def __init__(self, joint: IRFunction, plan: list[int]) -> None:
        self.joint, self.plan, self.uses, self.native, self.saved = joint, plan, 0, None, ()


def joint_function(capture: GraphCapture, wrt: list[int]) -> JointEntry:
    """The AD pass's joint Function for this graph shape and its forward plan (both cached)."""
    key = capture.key(wrt)
    entry = _JOINT_CACHE.get(key)
    if entry is None:
        joint = ad(capture.function(), wrt, seed="param")
        entry = JointEntry(joint, forward_plan(joint, capture))
        _JOINT_CACHE[key] = entry
        if len(_JOINT_CACHE) > _JOINT_CACHE_SIZE:
            _JOINT_CACHE.popitem(last=False)
    else:
        _JOINT_CACHE.move_to_end(key)
    return entry


def native_adjoint(entry: JointEntry, num_outputs: int) -> Any:
    """The compiled gradients-only Function for this graph shape, or None to interpret (tiered)."""
    from gradc import api
    backend = api.get_backend()
    if backend == "interp":
        return None
    entry.uses += 1
    if entry.native is None and (backend == "native" or entry.uses >= TIER_UP_AFTER) and api.native_available():
        from gradc.codegen import compile_function
        adjoint, entry.saved = reading_saved_values(entry.joint, entry.plan, num_outputs)
        entry.native = compile_function(api.optimize(dce(adjoint)))
    return entry.native


def reading_saved_values(joint: IRFunction, plan: list[int], num_outputs: int) -> tuple[IRFunction, tuple]:
    """The gradients-only adjoint of `joint` whose forward values come in as arguments, as PyTorch's nodes
    read their saved tensors: each planned non-layout op the gradients need becomes a parameter after
    the joint's own (its recorded tensor's position in capture.computed is returned), so the forward's
    GEMMs are not run a second time. Layout ops (views) and unplanned ops are recomputed in the kernels."""
    results = joint.results[num_outputs:]
    live = set(results)
    reads: dict[Value, int] = {}
    for op, k in reversed(list(zip(joint.ops, plan))):
        if op.result not in live:
            continue
        if k >= 0 and op.opdef.kind != "layout":
            reads[op.result] = k
        else:
            live.update(op.inputs)
    b = Builder()
    env: dict[Value, Value] = {p: Value(p.type, name=p.name) for p in joint.params}
    saved = [(v, k) for op, k in zip(joint.ops, plan) if (v := op.result) in reads]
    for i, (v, _) in enumerate(saved):
        env[v] = Value(v.type, name=f"saved{i}")
    for op in joint.ops:
        if op.result in live and op.result not in reads:
            env[op.result] = b.emit(op.opdef.name, *(env[x] for x in op.inputs), **op.attrs)
    params = [env[p] for p in joint.params] + [env[v] for v, _ in saved]
    return b.function(f"{joint.name}_adjoint", params, [env[r] for r in results]), tuple(k for _, k in saved)


def evaluate(joint: IRFunction, plan: list[int], capture: GraphCapture, args: list[Any]) -> list[Any]:
    """Run `joint` on numpy arrays (or, when `args` are Tensors, through `apply` so that the adjoint
    is itself recorded: create_graph=True); planned forward values come from the recorded tensors."""
    tensors = bool(args) and isinstance(args[0], Tensor)
    env: dict[Value, Any] = dict(zip(joint.params, args))
    computed = capture.computed
    with np.errstate(all="ignore"):  # NaN and inf propagate as values, as in native code
        for op, k in zip(joint.ops, plan):
            if k >= 0:
                env[op.result] = computed[k] if tensors else computed[k]._data
            elif tensors:
                env[op.result] = apply(op.opdef.name, *(env[v] for v in op.inputs), **op.attrs)
            else:
                env[op.result] = np.asarray(op.opdef.eval(*(env[v] for v in op.inputs), **op.attrs),
                                            dtype=op.result.dtype.numpy)
    return [env[r] for r in joint.results[len(capture.outputs):]]


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


def _compute(capture: GraphCapture, grad_outputs: Any, targets: list[Tensor], retain_graph: bool | None,
             create_graph: bool) -> list[Tensor | None]:
    outputs = capture.outputs
    for i, out in enumerate(outputs):
        if not out.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have a grad_fn")
    cotangents = _cotangents(outputs, grad_outputs)
    active = capture.active(targets)
    capture.check_saved(active)
    position = capture.param_index()
    wrt = [position[id(t)] for t in targets if id(t) in position]
    entry = joint_function(capture, wrt)
    joint, plan = entry.joint, entry.plan
    inputs = capture.inputs()
    native = None if create_graph else native_adjoint(entry, len(outputs))
    if create_graph:
        with enable_grad():
            params = capture.params + [Tensor._from_array(a) for a in inputs[len(capture.params):]]
            results = evaluate(joint, plan, capture, params + cotangents)
    elif native is not None:  # one native call: the adjoint, reading the recorded forward values it needs
        computed = capture.computed
        saved = [contiguous(computed[k]._data) for k in entry.saved]
        results = [Tensor._from_array(a) for a in native(*inputs, *(c._data for c in cotangents), *saved)]
    else:
        results = [Tensor._from_array(np.array(a)) for a in
                   evaluate(joint, plan, capture, inputs + [c._data for c in cotangents])]
    if not (retain_graph if retain_graph is not None else create_graph):
        capture.free(active)
    grads = dict(zip(wrt, results))
    return [grads.get(position.get(id(t), -1)) for t in targets]


def backward(tensors: Any, grad_tensors: Any = None, retain_graph: bool | None = None,
             create_graph: bool = False, inputs: Any = None) -> None:
    """Accumulate d(tensors)/d(leaf) into each leaf's .grad (PyTorch's torch.autograd.backward)."""
    outputs = _as_tensors(tensors)
    if inputs is not None:
        targets = _as_tensors(inputs)
        capture = GraphCapture(outputs, targets)
    else:
        capture = GraphCapture(outputs)
        targets = [t for t in capture.params if t.requires_grad]
    hooked = hooks.live()  # the one check of the plain path: no tensor anywhere has hooks
    if hooked:
        targets, grads = hooks.staged_backward(capture, grad_tensors, targets, retain_graph, create_graph,
                                               every_leaf=inputs is None)
    else:
        grads = _compute(capture, grad_tensors, targets, retain_graph, create_graph)
    taken: set[int] = set()  # gradients already stored as some leaf's .grad (a target listed twice)
    # leaves in reverse order of use, the order a reverse-mode walk completes them (and PyTorch runs their hooks)
    for leaf, g in reversed(list(zip(targets, grads))):
        if g is None:
            continue
        # _compute's results are fresh arrays nobody else holds; a transposed one is copied to C order
        owned = not hooked and id(g) not in taken and g._data.flags.c_contiguous
        if hooked:
            g = hooks.leaf_gradient(leaf, g)
        if leaf.grad is None:
            leaf.grad = g if create_graph or owned else Tensor._from_array(g._data.copy())
            taken.add(id(g))
        elif create_graph:
            leaf.grad = leaf.grad + g
        else:
            leaf.grad._data += g._data  # accumulate in place, as PyTorch does
            leaf.grad._bump_version()
        if hooked:
            hooks.after_accumulate(leaf)  # e.g. DistributedDataParallel's bucketed allreduce
    hooks.backward_done()


def grad(outputs: Any, inputs: Any, grad_outputs: Any = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool | None = None) -> tuple:
    """d(outputs)/d(inputs) as a tuple, without touching .grad (torch.autograd.grad)."""
    outs = _as_tensors(outputs)
    targets = _as_tensors(inputs)
    for t in targets:
        if not t.requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    capture = GraphCapture(outs, targets)
    if hooks.live():  # PyTorch runs tensor and module hooks (and retains grads) in autograd.grad too
        _, grads = hooks.staged_backward(capture, grad_outputs, targets, retain_graph, create_graph)
        grads = [None if g is None else hooks.leaf_gradient(t, g) for t, g in zip(targets, grads)]
    else:
        grads = _compute(capture, grad_outputs, targets, retain_graph, create_graph)
    if not allow_unused:
        for i, g in enumerate(grads):
            if g is None:
                raise RuntimeError(f"The differentiated Tensor at index {i} appears to not have been used in "
                                   "the graph. Set allow_unused=True if this is the desired behavior.")
    return tuple(grads)


from gradc.autograd import hooks  # noqa: E402  (binds Tensor.register_hook and the other hook methods)
from gradc.autograd.function import Function, FunctionCtx, Variable, once_differentiable  # noqa: E402

__all__ += ["Function", "FunctionCtx", "once_differentiable", "Variable"]
from gradc.autograd import functional  # noqa: E402, F401
