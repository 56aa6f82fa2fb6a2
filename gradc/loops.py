"""gradc.scan(f, init, xs, length=None, reverse=False): a loop that is ONE op in the IR (JAX's lax.scan).

`f(carry, x) -> (new_carry, y)` is traced once into the body Function of a `scan` op (gradc/ir/scan.py);
carry, x and y are pytrees (tuples, lists, dicts, None) of tensors. Tensors the body closes over (weights,
traced or eager) become the op's loop-invariant operands, so gradients reach them. Works eagerly (the op
is evaluated and recorded for backward like any primitive) and inside traced functions.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gradc import functional as F
from gradc.ir.core import Function, ShapeError, TensorType, Value
from gradc.ir.scan import optimized, part_types
from gradc.tensor import Tensor, Trace, apply, tracing

__all__ = ["scan"]


# ----------------------------------------------------------------------------- pytrees

def flatten(tree: Any, path: str = "") -> tuple[list, Any]:
    """(leaves, structure); structure is hashable-free nested description used by unflatten."""
    if tree is None:
        return [], None
    if isinstance(tree, (tuple, list)):
        leaves, subs = [], []
        for i, t in enumerate(tree):
            lv, s = flatten(t, f"{path}[{i}]")
            leaves += lv
            subs.append(s)
        return leaves, (type(tree), subs)
    if isinstance(tree, dict):
        leaves, subs = [], []
        for k in sorted(tree):
            lv, s = flatten(tree[k], f"{path}[{k!r}]")
            leaves += lv
            subs.append((k, s))
        return leaves, (dict, subs)
    return [(path, tree)], "leaf"


def unflatten(structure: Any, leaves: list) -> Any:
    it = iter(leaves)

    def build(s: Any) -> Any:
        if s is None:
            return None
        if s == "leaf":
            return next(it)
        kind, subs = s
        if kind is dict:
            return {k: build(sub) for k, sub in subs}
        return kind(build(sub) for sub in subs)
    return build(structure)


def describe(structure: Any) -> str:
    if structure is None:
        return "None"
    if structure == "leaf":
        return "*"
    kind, subs = structure
    if kind is dict:
        return "{" + ", ".join(f"{k!r}: {describe(s)}" for k, s in subs) + "}"
    inner = ", ".join(describe(s) for s in subs)
    return f"({inner},)" if kind is tuple and len(subs) == 1 else (f"({inner})" if kind is tuple else f"[{inner}]")


def as_tensor(path: str, x: Any, what: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (np.ndarray, float, int, np.generic)) and not isinstance(x, bool):
        return F.to_tensor(np.asarray(x, dtype=np.float32) if isinstance(x, float) else x)
    raise TypeError(f"scan: {what}{path} is a {type(x).__name__}; carries and xs are pytrees of tensors")


# ----------------------------------------------------------------------------- tracing the body

class BodyTrace(Trace):
    """A Trace whose foreign tensors (values of an enclosing trace, eager tensors that require grad) become
    body params: the scan's loop-invariant operands."""

    def __init__(self) -> None:
        super().__init__()
        self.own: set[Value] = set()
        self.seen_ops = 0
        self.consts: list[Tensor] = []
        self.const_params: list[Value] = []
        self.by_id: dict[int, Value] = {}

    def lift(self, t: Tensor) -> Value:
        v = t._value
        if v is not None:
            if v not in self.own:
                ops = self.builder.ops
                self.own.update(op.result for op in ops[self.seen_ops:])
                self.seen_ops = len(ops)
            if v in self.own:
                return v
        elif not t.requires_grad:  # an eager constant (a Python scalar, a buffer): a const op of the body
            return super().lift(t)
        if id(t) not in self.by_id:
            p = Value(t._type(), name=f"k{len(self.consts)}")
            self.by_id[id(t)] = p
            self.consts.append(t)  # (kept alive here, so its id is not reused)
            self.const_params.append(p)
        return self.by_id[id(t)]


def trace_body(f: Callable, carry: list[Tensor], carry_tree: Any, x_types: list[TensorType], x_tree: Any,
               ) -> tuple[Function, list[Tensor], Any]:
    t = BodyTrace()
    carry_params = [Value(c._type(), name=f"carry{i}") for i, c in enumerate(carry)]
    x_params = [Value(ty, name=f"x{i}") for i, ty in enumerate(x_types)]
    t.own.update(carry_params + x_params)
    with tracing(t):
        carry_in = unflatten(carry_tree, [Tensor._from_value(p) for p in carry_params])
        x_in = unflatten(x_tree, [Tensor._from_value(p) for p in x_params])
        out = f(carry_in, x_in)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError("scan: the body must return a pair (new_carry, y)")
        new_carry, y = out
        new_leaves, new_tree = flatten(new_carry)
        if new_tree != carry_tree:
            raise TypeError(f"scan: the body's carry output has structure {describe(new_tree)}, but its carry "
                            f"input has structure {describe(carry_tree)}; they must be the same")
        new_tensors = [as_tensor(path, c, "the carry output carry") for path, c in new_leaves]
        for (path, c), old in zip(new_leaves, carry):
            if c._type() != old._type():
                raise TypeError(f"scan: the input carry component carry{path} has type {old._type()} but the "
                                f"corresponding output carry component has type {c._type()}, so the carry "
                                f"changes type between iterations")
        y_leaves, y_tree = flatten(y)
        y_tensors = [as_tensor(path, v, "the body output y") for path, v in y_leaves]
        results = [t.lift(c) for c in new_tensors] + [t.lift(v) for v in y_tensors]
    body = Function(getattr(f, "__name__", "body") if str(getattr(f, "__name__", "")).isidentifier() else "body",
                    t.const_params + carry_params + x_params, t.builder.ops, results)
    return optimized(body), t.consts, y_tree


# ----------------------------------------------------------------------------- the front end

def scan(f: Callable, init: Any, xs: Any = None, length: int | None = None, reverse: bool = False) -> tuple:
    """(final carry, stacked ys) of carry, y = f(carry, x) over the leading axis of xs, as jax.lax.scan."""
    carry_leaves, carry_tree = flatten(init)
    carry = [as_tensor(path, c, "init") for path, c in carry_leaves]
    x_leaves, x_tree = flatten(xs)
    xs_t = [as_tensor(path, x, "xs") for path, x in x_leaves]
    for (path, _), x in zip(x_leaves, xs_t):
        if x.ndim == 0:
            raise ValueError(f"scan: xs{path} is a scalar; every xs leaf needs a leading axis to scan over")
    sizes = sorted({x.shape[0] for x in xs_t})
    if len(sizes) > 1:
        detail = ", ".join(f"xs{path} has {x.shape[0]}" for (path, _), x in zip(x_leaves, xs_t))
        raise ValueError(f"scan got values with different leading axis sizes: {detail}")
    if length is not None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise TypeError(f"scan: length must be a non-negative int, got {length!r}")
        if sizes and sizes[0] != length:
            raise ValueError(f"scan got `length` argument of {length} which disagrees with leading axis sizes "
                             f"{sizes}")
    elif not sizes:
        raise ValueError("scan got no values to scan over and `length` not provided")
    n = length if length is not None else sizes[0]
    x_types = [TensorType(x.shape[1:], x.dtype) for x in xs_t]
    body, consts, y_tree = trace_body(f, carry, carry_tree, x_types, x_tree)
    try:
        flat = apply("scan", *consts, *carry, *xs_t, body=body, num_consts=len(consts), num_carry=len(carry),
                     length=n, reverse=bool(reverse))
    except ShapeError as e:
        raise TypeError(str(e)) from None
    parts, offset = [], 0
    for ty in part_types(body, len(carry), n):
        piece = apply("slice", flat, starts=(offset,), stops=(offset + ty.size,), steps=(1,))
        parts.append(apply("reshape", piece, shape=ty.shape))
        offset += ty.size
    return unflatten(carry_tree, parts[:len(carry)]), unflatten(y_tree, parts[len(carry):])
