"""Algebraic simplification and constant folding.

The identities keep numpy's results bit for bit, NaN, inf and signed zeros included: `x * 0` is
NOT folded (it is NaN for x = inf or NaN), nor is `x - x`, and for floats `x + 0.0` is not `x`
(`-0.0 + 0.0` is `+0.0`, and `1 / (x + 0.0)` would change sign) while `x + -0.0` and `x - 0.0` are.
`stop_gradient` is kept, since a later `ad` depends on it.

Constant folding evaluates ops whose operands are all `const`s with the registry's own eval rule:
any op whose result is small (<= FOLD_LIMIT elements), and elementwise and layout ops of filled
constants at any size (a filled const stays a filled const). Array constants holding one value
become filled constants.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc.ir.builder import Builder
from gradc.ir.core import Function, IRError, TensorType, Value
from gradc.ir.ops import ELEMENTWISE, OPS

FOLD_LIMIT = 64
FILL_PRESERVING = ("reshape", "permute", "broadcast_to", "slice", "reduce_max")  # same value out
NOT_FOLDED = ("const", "iota", "stop_gradient")


def filled_value(v: Value) -> Any:
    """The scalar of a filled `const` (the same value everywhere), else None."""
    if v.op is not None and v.op.name == "const" and not isinstance(v.op.attrs["value"], np.ndarray):
        return v.op.attrs["value"]
    return None


def is_filled_with(v: Value, number: float) -> bool:
    value = filled_value(v)
    return value is not None and value == number


def is_additive_identity(v: Value, negative_zero: bool) -> bool:
    """v is a filled zero that leaves any x unchanged bit for bit in x + v (negative_zero) or x - v."""
    value = filled_value(v)
    if value is None or value != 0:
        return False
    return not v.dtype.is_float or bool(np.signbit(value)) == negative_zero


def as_fill(array: np.ndarray) -> Any:
    """The scalar that fills `array` bit for bit (so -0.0 and NaN payloads count), else None."""
    if array.size == 0:
        return np.zeros((), array.dtype).item()
    first = array.flat[0]
    if np.full(array.shape, first, array.dtype).tobytes() == np.ascontiguousarray(array).tobytes():
        return first.item()
    return None


def cheap_rows(v: Value) -> bool:
    """v (through reshapes) is computed by an elementwise nest: its rows cost the same in any order."""
    while v.op is not None and v.op.name == "reshape":
        v = v.op.inputs[0]
    return v.op is not None and v.op.opdef.kind == "elementwise"


class Simplifier:
    def __init__(self) -> None:
        self.b = Builder()
        self.single_use: set[Value] = set()  # new values whose original had exactly one use

    def emit(self, name: str, *inputs: Value, **attrs: Any) -> Value:
        """Emit an op, or an equivalent existing/cheaper value when a rule applies."""
        replacement = self.rewrite(name, inputs, attrs)
        if replacement is None:
            return self.b.emit(name, *inputs, **attrs)
        expected = OPS[name].shape([v.type for v in inputs], attrs)
        if replacement.type != expected:  # a wrong rule must fail loudly, not change types
            raise IRError(f"simplify rewrote {name} of type {expected} to a value of type {replacement.type}")
        return replacement

    def rewrite(self, name: str, ins: tuple[Value, ...], attrs: dict[str, Any]) -> Value | None:
        rule = getattr(self, f"rule_{name}", None)
        out = rule(*ins, **attrs) if rule is not None else None
        if out is None and name not in NOT_FOLDED and all(v.op is not None and v.op.name == "const"
                                                          for v in ins):
            out = self.fold(name, ins, attrs)
        return out

    # --- constant folding
    def fold(self, name: str, ins: tuple[Value, ...], attrs: dict[str, Any]) -> Value | None:
        opdef = OPS[name]
        t: TensorType = opdef.shape([v.type for v in ins], attrs)
        scalars = [filled_value(v) for v in ins]
        try:
            with np.errstate(all="ignore"):
                if all(s is not None for s in scalars) and (opdef.kind == ELEMENTWISE or name in FILL_PRESERVING):
                    if opdef.kind == ELEMENTWISE:
                        arrays = [np.asarray(s, dtype=v.dtype.numpy) for s, v in zip(scalars, ins)]
                        value = np.asarray(opdef.eval(*arrays, **attrs), dtype=t.dtype.numpy).item()
                    else:
                        value = scalars[0]
                    return self.b.emit("const", value=value, shape=t.shape, dtype=t.dtype)
                if t.size > FOLD_LIMIT:
                    return None
                arrays = [v.op.opdef.eval(**v.op.attrs) for v in ins]
                out = np.asarray(opdef.eval(*arrays, **attrs), dtype=t.dtype.numpy)
        except (ArithmeticError, IndexError, ValueError, TypeError):
            return None  # e.g. a gather out of bounds: leave the error to run time
        fill = as_fill(out)
        return self.b.emit("const", value=out if fill is None else fill, shape=t.shape, dtype=t.dtype)

    # --- identities (each returns a replacement or None)
    def rule_const(self, value: Any, shape: tuple[int, ...], dtype: Any) -> Value | None:
        fill = as_fill(value) if isinstance(value, np.ndarray) else None
        return None if fill is None else self.b.emit("const", value=fill, shape=shape, dtype=dtype)

    def rule_add(self, x: Value, y: Value) -> Value | None:
        if is_additive_identity(y, negative_zero=True):
            return x
        if is_additive_identity(x, negative_zero=True):
            return y
        if y.op is not None and y.op.name == "neg":  # x + -y is x - y in IEEE arithmetic
            return self.emit("sub", x, y.op.inputs[0])
        if x.op is not None and x.op.name == "neg":
            return self.emit("sub", y, x.op.inputs[0])
        return None

    def rule_sub(self, x: Value, y: Value) -> Value | None:
        if is_additive_identity(y, negative_zero=False):
            return x
        if is_additive_identity(x, negative_zero=True) and x.dtype.name != "bool" and filled_value(y) is None:
            return self.emit("neg", y)  # -0.0 - y is -y exactly
        return None

    def rule_mul(self, x: Value, y: Value) -> Value | None:
        if is_filled_with(y, 1):
            return x
        if is_filled_with(x, 1):
            return y
        return None

    def rule_div(self, x: Value, y: Value) -> Value | None:
        return x if is_filled_with(y, 1) else None

    def rule_pow(self, x: Value, y: Value) -> Value | None:
        return x if is_filled_with(y, 1) else None

    def rule_neg(self, x: Value) -> Value | None:
        return x.op.inputs[0] if x.op is not None and x.op.name == "neg" else None

    def rule_stop_gradient(self, x: Value) -> Value | None:
        return x if x.op is not None and x.op.name == "stop_gradient" else None

    def rule_where(self, c: Value, x: Value, y: Value) -> Value | None:
        if x is y:
            return x
        fill = filled_value(c)
        return None if fill is None else (x if fill else y)

    def rule_cast(self, x: Value, dtype: Any) -> Value | None:
        return x if x.dtype == dtype else None

    def rule_reshape(self, x: Value, shape: tuple[int, ...]) -> Value | None:
        if x.shape == tuple(shape):
            return x
        if x.op is not None and x.op.name == "reshape":
            return self.emit("reshape", x.op.inputs[0], shape=shape)
        return None

    def rule_matmul(self, a: Value, w: Value) -> Value | None:
        """matmul(rows permuted, w) = (matmul(rows, w)) with its rows permuted: when the rows of `a` are a
        permute (keeping the last axis) of a buffer, e.g. an RNN's (T, B) outputs read batch-first by a head
        Linear, the GEMM reads the buffer in place and the permute moves to the product, where its elementwise
        readers (bias, loss) take it as index math instead of a transposed copy of `a`."""
        if a.type.rank != 2 or w.type.rank != 2 or a.op is None or a.op.name != "reshape":
            return None
        p = a.op.inputs[0]
        if p.op is None or p.op.name != "permute" or p.type.rank < 3:
            return None
        q, order = p.op.inputs[0], tuple(p.op.attrs["perm"])
        if (order[-1] != q.type.rank - 1 or order == tuple(range(q.type.rank)) or p.shape[-1] != a.shape[1]
                or cheap_rows(q)):
            return None  # (the reshape must only merge the rows: the permute keeps each row's elements)
        (m, k), n = a.shape, w.shape[1]
        product = self.emit("matmul", self.emit("reshape", q, shape=(m, k)), w)
        rows = self.emit("reshape", product, shape=q.shape[:-1] + (n,))
        return self.emit("reshape", self.emit("permute", rows, perm=order), shape=(m, n))

    def rule_permute(self, x: Value, perm: tuple[int, ...]) -> Value | None:
        if tuple(perm) == tuple(range(x.type.rank)):
            return x
        moved = self.permute_of_product(x, tuple(perm))
        if moved is not None:
            return moved
        rank = x.type.rank
        if (x.op is not None and x.op.name == "matmul" and x in self.single_use
                and tuple(perm) == tuple(range(rank - 2)) + (rank - 1, rank - 2)):
            # (a b)^T = b^T a^T: the transposes become BLAS flags instead of a strided read of the
            # product (the weight gradient of x @ W.T); the sum order may differ in the last bits
            a, b = x.op.inputs
            swap = tuple(range(rank - 2)) + (rank - 1, rank - 2)
            return self.emit("matmul", self.emit("permute", b, perm=swap), self.emit("permute", a, perm=swap))
        if x.op is not None and x.op.name == "permute":
            inner = x.op.attrs["perm"]
            return self.emit("permute", x.op.inputs[0], perm=tuple(inner[p] for p in perm))
        moved = [p for p in perm if x.shape[p] != 1]
        if moved == sorted(moved):  # only unit axes move: the data order is unchanged
            return self.emit("reshape", x, shape=tuple(x.shape[p] for p in perm))
        return None

    def permute_of_product(self, x: Value, perm: tuple[int, ...]) -> Value | None:
        """The rows of a GEMM product permuted (keeping the last axis) when the product's left operand is cheap
        to compute in any order (an elementwise nest, e.g. a one-hot embedding lookup): the operand's rows are
        permuted instead, written in that order by the nest that computes them, and the product needs no
        transposed copy (the converse of rule_matmul, which never applies to such an operand)."""
        if perm[-1] != x.type.rank - 1 or x.type.rank < 3 or x.op is None or x.op.name != "reshape":
            return None
        c = x.op.inputs[0]
        if c.op is None or c.op.name != "matmul" or c.type.rank != 2 or c not in self.single_use:
            return None
        a, w = c.op.inputs
        if a.type.rank != 2 or x.shape[-1] != c.shape[1] or not cheap_rows(a):
            return None
        k = a.shape[1]
        rows = self.emit("reshape", a, shape=x.shape[:-1] + (k,))
        moved = self.emit("reshape", self.emit("permute", rows, perm=perm), shape=a.shape)
        out_shape = tuple(x.shape[p] for p in perm)
        return self.emit("reshape", self.emit("matmul", moved, w), shape=out_shape)

    def rule_broadcast_to(self, x: Value, shape: tuple[int, ...]) -> Value | None:
        if x.shape == tuple(shape):
            return x
        if x.op is not None and x.op.name == "broadcast_to":  # broadcasting composes
            return self.emit("broadcast_to", x.op.inputs[0], shape=shape)
        if x.op is not None and x.op.name == "reshape":  # a reshape that only adds leading unit dims
            inner = x.op.inputs[0]
            lead = x.type.rank - inner.type.rank
            if lead >= 0 and x.shape == (1,) * lead + inner.shape or inner.type.size == 1 and \
                    inner.type.rank <= len(shape):
                return self.emit("broadcast_to", inner, shape=shape)
        return None

    def rule_reduce_sum(self, x: Value, axes: tuple[int, ...]) -> Value | None:
        # a sum over no axes is 0 + x in numpy: +0.0 for x = -0.0
        return x if not axes and not x.dtype.is_float else None

    def rule_reduce_max(self, x: Value, axes: tuple[int, ...]) -> Value | None:
        return x if not axes else None

    def rule_slice(self, x: Value, starts: tuple, stops: tuple, steps: tuple) -> Value | None:
        whole = all(a == 0 and z == d and s == 1 for a, z, s, d in zip(starts, stops, steps, x.shape))
        if whole:
            return x
        if x.op is not None and x.op.name == "pad" and not any(x.op.attrs["interior"]) and all(s == 1 for s in steps):
            return self.slice_of_pad(x, starts, stops)
        return None

    def slice_of_pad(self, x: Value, starts: tuple, stops: tuple) -> Value:
        """A slice of pad(y) is a slice of y padded less (zeros if it misses y): e.g. one part of a scan's
        flat cotangent (unpack's VJP pads each part's cotangent to the flat size) is that cotangent."""
        (y,), lo = x.op.inputs, x.op.attrs["lo"]
        inner_lo, inner_hi, pad_lo, pad_hi = [], [], [], []
        for a, z, p, d in zip(starts, stops, lo, y.shape):
            first, last = max(a, p), min(z, p + d)  # the part of [a, z) that y covers, in padded coordinates
            if first >= last:
                zero = np.zeros((), y.dtype.numpy).item()
                return self.b.emit("const", value=zero, shape=tuple(z - a for a, z in zip(starts, stops)),
                                   dtype=y.dtype)
            inner_lo.append(first - p)
            inner_hi.append(last - p)
            pad_lo.append(first - a)
            pad_hi.append(z - last)
        part = self.emit("slice", y, starts=tuple(inner_lo), stops=tuple(inner_hi), steps=(1,) * len(starts))
        return self.emit("pad", part, lo=tuple(pad_lo), hi=tuple(pad_hi), interior=(0,) * len(starts))

    def rule_pad(self, x: Value, lo: tuple, hi: tuple, interior: tuple) -> Value | None:
        return x if not any(lo) and not any(hi) and not any(interior) else None


def simplify(fn: Function) -> Function:
    """Apply NaN-safe algebraic identities and fold constants."""
    s = Simplifier()
    params = [Value(p.type, name=p.name) for p in fn.params]
    env: dict[Value, Value] = dict(zip(fn.params, params))
    uses: dict[Value, int] = {r: 1 for r in fn.results}
    for op in fn.ops:
        for v in op.inputs:
            uses[v] = uses.get(v, 0) + 1
    for op in fn.ops:
        env[op.result] = s.emit(op.name, *(env[v] for v in op.inputs), **op.attrs)
        if uses.get(op.result, 0) == 1:
            s.single_use.add(env[op.result])
    return Function(fn.name, params, s.b.ops, [env[r] for r in fn.results], dict(fn.meta))
