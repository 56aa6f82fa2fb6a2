"""IR builder: `emit(op, *inputs, **attrs)` runs the op's shape rule and appends the op.

VJP rules and front ends build IR only through a Builder, so every op in every Function was
type-checked by its registry rule when it was made.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from gradc.ir.core import Function, Op, ShapeError, TensorType, Value
from gradc.ir.ops import COMPARE_PREDICATES, OPS


def canonical_attr(name: str, value: Any) -> Any:
    """Attributes are immutable Python values: tuples of ints, scalars, dtypes or arrays."""
    if name == "value":
        array = np.asarray(value)
        if array.ndim == 0:
            return array.item()
        return array.copy()
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(int(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    return value


class Builder:
    """Appends type-checked ops to a list; `b.add(x, y)` is `b.emit("add", x, y)`."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        # scratch space shared by the VJP rules of one AD pass (keyed by rule): e.g. which outputs of a
        # multi-output call received a cotangent, so a custom backward can tell "no gradient" from zero
        self.ad_notes: dict = {}
        self.after_ad: list[Callable[[], Any]] = []  # run once the AD pass has visited every op

    def emit(self, name: str, *inputs: Value, **attrs: Any) -> Value:
        opdef = OPS[name]
        if len(inputs) != opdef.arity and opdef.arity >= 0:  # arity < 0: variadic
            raise ShapeError(f"{name} takes {opdef.arity} operands, got {len(inputs)}")
        missing = set(opdef.attrs) - set(attrs)
        extra = set(attrs) - set(opdef.attrs)
        if missing or extra:
            raise ShapeError(f"{name} takes attributes {list(opdef.attrs)}, got {sorted(attrs)}")
        attrs = {k: canonical_attr(k, attrs[k]) for k in opdef.attrs}
        if "value" in attrs:  # constants are stored at their own precision, so the text is exact
            attrs["value"] = canonical_attr("value", np.asarray(attrs["value"], dtype=attrs["dtype"].numpy))
        result_type = opdef.shape([v.type for v in inputs], attrs)
        result = Value(result_type)
        op = Op(opdef, tuple(inputs), attrs, result)
        result.op = op
        self.ops.append(op)
        return result

    def __getattr__(self, name: str) -> Callable[..., Value]:
        if name in OPS:
            return lambda *inputs, **attrs: self.emit(name, *inputs, **attrs)
        if name in COMPARE_PREDICATES:
            return lambda x, y: self.emit("compare", x, y, pred=name)
        raise AttributeError(name)

    # helpers that keep rules short; each is a no-op when nothing needs doing
    def scalar(self, value: float, like: Value) -> Value:
        """A constant filled with `value`, of the shape and dtype of `like`."""
        return self.emit("const", value=value, shape=like.shape, dtype=like.dtype)

    def constant(self, value: Any, type: TensorType) -> Value:
        return self.emit("const", value=value, shape=type.shape, dtype=type.dtype)

    def reshape_to(self, x: Value, shape: Sequence[int]) -> Value:
        return x if x.shape == tuple(shape) else self.emit("reshape", x, shape=tuple(shape))

    def broadcast_to(self, x: Value, shape: Sequence[int]) -> Value:
        return x if x.shape == tuple(shape) else self.emit("broadcast_to", x, shape=tuple(shape))

    def cast_to(self, x: Value, dtype: Any) -> Value:
        return x if x.dtype == dtype else self.emit("cast", x, dtype=dtype)

    def function(self, name: str, params: list[Value], results: list[Value]) -> Function:
        return Function(name, list(params), list(self.ops), list(results))


def inline(b: Builder, fn: Function, args: Sequence[Value]) -> list[Value]:
    """Re-emit fn's ops into b with its params bound to args; returns the mapped results."""
    env: dict[Value, Value] = dict(zip(fn.params, args, strict=True))
    for op in fn.ops:
        env[op.result] = b.emit(op.opdef.name, *(env[v] for v in op.inputs), **op.attrs)
    return [env[r] for r in fn.results]


def clone(fn: Function, name: str | None = None) -> Function:
    """A copy of fn with fresh Values (passes never share Values between Functions)."""
    b = Builder()
    params = [Value(p.type, name=p.name) for p in fn.params]
    results = inline(b, fn, params)
    return Function(name or fn.name, params, b.ops, results, dict(fn.meta))
