"""Random computation graphs over the whole op registry, built with the Builder on concrete values.

Every op is emitted on concrete arrays (its numpy eval rule runs at once), so the generator can refuse
an op whose result would be unhealthy (non-finite, huge) or whose inputs sit NEAR a discontinuity
(relu/abs/maximum/compare/reduce_max/cast-to-int within a relative 1e-3 of the kink, but not exactly on
it): there a few-ulp difference between two correct engines would flip a branch. Exact ties (relu of
an exact 0, maximum(x, x), broadcast copies) are kept: every engine must get those bitwise right.

Structure comes from a `Choices` object: `HypothesisChoices` draws through hypothesis (so a failing
graph shrinks), `RandomChoices` from a seed (long runs, coverage counts, regression replays).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gradc.ir.builder import Builder
from gradc.ir.core import (
    DType,
    Function,
    ShapeError,
    TensorType,
    Value,
    float32,
    float64,
    int8,
    int16,
    int32,
    int64,
    uint8,
)
from gradc.ir.ops import OPS

SIZES = (1, 7, 8, 9, 17, 33)
MAX_ELEMENTS = 2048  # per value: keeps interpreter, torch and finite differences cheap
MAX_ABS = 1e4  # a float value beyond this is "unhealthy" (refused)
MARGIN = 1e-3  # relative distance kept from a kink (unless exactly on it)


SMALL_INTS = [int32, int16, int8, uint8]  # reached through casts of int64 and float values


class Choices:
    """Where structural decisions come from; `integer` is the only primitive."""

    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def pick(self, seq: list) -> Any:
        return seq[self.integer(0, len(seq) - 1)]

    def coin(self, p: float = 0.5) -> bool:
        # shrinks (towards 0) to False: simpler graphs take fewer optional branches
        return self.integer(0, 999) >= int(1000 * (1 - p))


class RandomChoices(Choices):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisChoices(Choices):
    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


@dataclass
class Graph:
    """One generated graph: its Function, concrete arguments, the float params and random cotangents."""

    fn: Function
    args: list[np.ndarray]
    wrt: list[int]
    cotangents: list[np.ndarray]
    values: dict = field(repr=False, default_factory=dict)  # Value -> reference array (generation time)

    @property
    def has_float32(self) -> bool:
        """Some value is float32: the whole graph is compared at float32 tolerance."""
        return any(v.dtype == float32 for v in self.fn.params + [op.result for op in self.fn.ops])

    @property
    def approximate(self) -> bool:
        """Some op is an approximation looser than float64 rounding (APPROXIMATE)."""
        return any(op.name in APPROXIMATE for op in self.fn.ops)


class Reject(Exception):
    """The op does not fit here (bad shapes, near a kink, unhealthy result): try another."""


def near_kink(d: np.ndarray, scale: np.ndarray | float) -> bool:
    """Some distance to a kink is nonzero but within MARGIN (relative): engines may disagree there."""
    d = np.abs(np.asarray(d, np.float64))
    return bool(np.any((d > 0) & (d < MARGIN * np.maximum(1.0, np.abs(scale)))))


class GraphGen:
    """Builds one graph of `n_ops` ops (guards and wrappers count as ops too)."""

    def __init__(self, ch: Choices, prefix: str = "g") -> None:
        self.ch = ch
        self.prefix = prefix
        self.b = Builder()
        self.rng = np.random.default_rng(ch.integer(0, 2**31 - 1))
        self.dtype: DType = float64 if ch.coin() else float32
        self.dims = sorted({ch.pick(list(SIZES)) for _ in range(3)})
        self.params: list[Value] = []
        self.args: list[np.ndarray] = []
        self.vals: dict[Value, np.ndarray] = {}
        self.floats: list[Value] = []
        self.ints: list[Value] = []
        self.bools: list[Value] = []
        self.used: dict[str, int] = {}

    # ---------------------------------------------------------------------------------------- emission
    def emit(self, name: str, *inputs: Value, **attrs: Any) -> Value:
        """Emit one op and evaluate it; Reject (and undo) if it does not type-check or is unhealthy."""
        try:
            v = self.b.emit(name, *inputs, **attrs)
        except ShapeError as e:
            raise Reject(str(e)) from None
        with np.errstate(all="ignore"):
            try:
                out = np.asarray(OPS[name].eval(*(self.vals[x] for x in inputs), **v.op.attrs), dtype=v.dtype.numpy)
            except (IndexError, ValueError) as e:
                self.b.ops.pop()
                raise Reject(str(e)) from None
        if out.size > MAX_ELEMENTS or (v.dtype.is_float and not (np.all(np.isfinite(out))
                                                                  and np.all(np.abs(out) <= MAX_ABS))):
            self.b.ops.pop()
            raise Reject(f"{name}: unhealthy result")
        if v.dtype == int64 and out.size and np.max(np.abs(out)) > 10**6:
            self.b.ops.pop()
            raise Reject(f"{name}: int too large")
        self.vals[v] = out
        self.used[name] = self.used.get(name, 0) + 1
        (self.floats if v.dtype.is_float else self.ints if v.dtype == int64 else self.bools).append(v)
        return v

    def param(self, shape: tuple[int, ...], dtype: DType | None = None, values: np.ndarray | None = None) -> Value:
        dtype = dtype or self.dtype
        if int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS:
            raise Reject("param too large")
        v = Value(TensorType(shape, dtype), name=f"{self.prefix}p{len(self.params)}")
        if values is None:
            values = self.rng.normal(size=shape) * self.rng.choice([0.5, 1.0, 3.0])
        arr = np.asarray(values, dtype=dtype.numpy)
        self.params.append(v)
        self.args.append(arr)
        self.vals[v] = arr
        (self.floats if dtype.is_float else self.ints if dtype == int64 else self.bools).append(v)
        return v

    def random_shape(self, max_rank: int = 3) -> tuple[int, ...]:
        rank = self.ch.integer(0, max_rank)
        shape = [self.ch.pick(self.dims + [1]) for _ in range(rank)]
        while int(np.prod(shape, dtype=np.int64)) > MAX_ELEMENTS // 4:
            shape.pop(0)
        return tuple(shape)

    def scalar(self, value: float, like: Value) -> Value:
        return self.emit("const", value=value, shape=like.shape, dtype=like.dtype)

    # ---------------------------------------------------------------------------------------- helpers
    def pick_float(self) -> Value:
        if not self.floats:
            return self.param(self.random_shape())
        return self.ch.pick(self.floats[-6:] if self.ch.coin(0.7) else self.floats)

    def positive(self, x: Value, floor: float = 0.05) -> Value:
        """x itself if it is safely positive, else x*x + 0.5 (smooth, >= 0.5)."""
        if np.min(self.vals[x], initial=np.inf) >= floor:
            return x
        return self.emit("add", self.emit("mul", x, x), self.scalar(0.5, x))

    def bounded(self, x: Value, bound: float) -> Value:
        """x itself if |x| <= bound, else tanh(x) * bound."""
        if np.max(np.abs(self.vals[x]), initial=0) <= bound:
            return x
        return self.emit("mul", self.emit("tanh", x), self.scalar(bound, x))

    def as_dtype(self, x: Value, dtype: DType) -> Value:
        return x if x.dtype == dtype else self.emit("cast", x, dtype=dtype)

    def broadcast(self, x: Value, shape: tuple[int, ...]) -> Value:
        """Explicit numpy broadcasting: reshape to the target rank, then broadcast_to."""
        if x.shape == shape:
            return x
        lead = (1,) * (len(shape) - x.type.rank) + x.shape
        if lead != x.shape:
            x = self.emit("reshape", x, shape=lead)
        return x if x.shape == shape else self.emit("broadcast_to", x, shape=shape)

    def partner(self, x: Value, dtype: DType | None = None) -> Value:
        """A second operand that broadcasts with x: x itself, a pool value, a new param or a const."""
        dtype = dtype or x.dtype
        pool = self.floats if dtype.is_float else self.ints
        way = self.ch.integer(0, 4)
        if way == 0:
            y = x
        elif way == 1:
            fits = [v for v in pool if _broadcastable(v.shape, x.shape)]
            if not fits:
                raise Reject("no broadcastable partner")
            y = self.ch.pick(fits)
        elif way == 2 and dtype.is_float:
            y = self.emit("const", value=float(np.round(self.rng.normal(), 2)), shape=(), dtype=dtype)
        else:
            shape = list(x.shape)
            drop = self.ch.integer(0, len(shape))
            shape = [1 if self.ch.coin(0.3) else d for d in shape[drop:]]
            if dtype == int64:
                y = self.param(tuple(shape), int64, self.rng.integers(-5, 6, size=tuple(shape)))
            else:
                y = self.param(tuple(shape), dtype)
        return self.as_dtype(y, dtype)

    def together(self, *xs: Value) -> list[Value]:
        try:
            shape = np.broadcast_shapes(*(x.shape for x in xs))
        except ValueError:
            raise Reject("shapes do not broadcast") from None
        return [self.broadcast(x, tuple(shape)) for x in xs]

    # ---------------------------------------------------------------------------------------- op rules
    def op_unary(self, name: str) -> Value:
        if name in ("neg", "abs", "relu") and self.ints and self.ch.coin(0.2):
            x = self.ch.pick(self.ints)
        else:
            x = self.pick_float()
        if name in ("log", "sqrt"):
            x = self.positive(x)
        elif name == "recip":
            if np.min(np.abs(self.vals[x]), initial=np.inf) < 0.05:
                x = self.positive(x)
        elif name == "exp":
            x = self.bounded(x, 8.0)
        elif name in ("abs", "relu") and near_kink(self.vals[x], 1.0):
            raise Reject("near the kink at 0")
        return self.emit(name, x)

    def op_binary(self, name: str) -> Value:
        if name in ("add", "sub", "mul", "maximum") and self.ints and self.ch.coin(0.15):
            x = self.ch.pick(self.ints)
            y = self.partner(x)
        else:
            x = self.pick_float()
            if name == "pow":
                x = self.positive(x, 0.2)
                if self.ch.coin(0.3):  # an integral exponent of a base of any sign
                    x = self.ch.pick(self.floats[-3:])
                    e = float(self.ch.pick([2, 3, -1, 0, 1]))
                    if e < 0 and np.min(np.abs(self.vals[x]), initial=np.inf) < 0.2:
                        raise Reject("negative power near 0")
                    return self.emit("pow", x, self.scalar(e, x))
                y = self.bounded(self.partner(x), 3.0)
            else:
                y = self.partner(x)
            if name == "div" and np.min(np.abs(self.vals[y]), initial=np.inf) < 0.05:
                y = self.positive(y)
        x, y = self.together(x, y)
        if name == "maximum" and near_kink(self.vals[x] - self.vals[y], self.vals[x]):
            raise Reject("maximum near a tie")
        return self.emit(name, x, y)

    def op_compare(self) -> Value:
        if self.ints and self.ch.coin(0.25):
            x = self.ch.pick(self.ints)
        else:
            x = self.pick_float()
        x, y = self.together(x, self.partner(x))
        if x.dtype.is_float and near_kink(self.vals[x] - self.vals[y], self.vals[x]):
            raise Reject("compare near equality")
        return self.emit("compare", x, y, pred=self.ch.pick(["lt", "le", "gt", "ge", "eq", "ne"]))

    def op_where(self) -> Value:
        c = self.ch.pick(self.bools) if self.bools else self.op_compare()
        a = self.pick_float()
        b = self.partner(a)
        c, a, b = self.together(c, a, b)
        return self.emit("where", c, a, b)

    def op_cast(self) -> Value:
        way = self.ch.integer(0, 5)
        if way == 0 and self.ints:
            return self.emit("cast", self.ch.pick(self.ints), dtype=self.ch.pick([float32, float64]))
        if way == 1 and self.bools:
            return self.emit("cast", self.ch.pick(self.bools), dtype=self.ch.pick([float32, float64, int64]))
        if way == 4 and self.ints:  # through a small integer dtype and back: wraps (int8 200 is -56)
            small = self.emit("cast", self.ch.pick(self.ints), dtype=self.ch.pick(SMALL_INTS))
            return self.emit("cast", small, dtype=int64)
        x = self.pick_float()
        if way in (2, 5):  # float -> int truncates: keep away from integers
            xs = self.vals[x]
            if near_kink(xs - np.trunc(xs), 1.0) or near_kink(xs - np.trunc(xs) - np.sign(xs), 1.0):
                raise Reject("cast to int near an integer")
            if way == 5:
                return self.emit("cast", self.emit("cast", x, dtype=self.ch.pick(SMALL_INTS)), dtype=int64)
            return self.emit("cast", x, dtype=int64)
        return self.emit("cast", x, dtype=float64 if x.dtype == float32 else float32)

    def op_reduce(self, name: str) -> Value:
        x = self.ch.pick(self.ints) if self.ints and self.ch.coin(0.1) else self.pick_float()
        axes = tuple(a for a in range(x.type.rank) if self.ch.coin(0.6))
        if name == "reduce_max" and axes and x.dtype.is_float:
            xs = np.moveaxis(self.vals[x], axes, tuple(range(-len(axes), 0)))
            flat = np.sort(xs.reshape(xs.shape[:xs.ndim - len(axes)] + (-1,)), axis=-1)
            if flat.shape[-1] >= 2 and near_kink(flat[..., -1] - flat[..., -2], flat[..., -1]):
                raise Reject("max near a tie")
        return self.emit(name, x, axes=axes)

    def op_reshape(self) -> Value:
        x = self.pick_float()
        shape = list(x.shape)
        way = self.ch.integer(0, 3)
        if way == 0:
            shape = [x.type.size]
        elif way == 1 and len(shape) >= 2:
            i = self.ch.integer(0, len(shape) - 2)
            shape[i:i + 2] = [shape[i] * shape[i + 1]]
        elif way == 2:
            shape.insert(self.ch.integer(0, len(shape)), 1)
        else:
            shape = [d for d in shape if d != 1] if 1 in shape else _split(shape, self.ch)
        return self.emit("reshape", x, shape=tuple(shape))

    def op_permute(self) -> Value:
        x = self.pick_float()
        perm = list(range(x.type.rank))
        for i in range(len(perm) - 1, 0, -1):
            j = self.ch.integer(0, i)
            perm[i], perm[j] = perm[j], perm[i]
        return self.emit("permute", x, perm=tuple(perm))

    def op_broadcast_to(self) -> Value:
        x = self.pick_float()
        shape = [self.ch.pick(self.dims) if d == 1 and self.ch.coin() else d for d in x.shape]
        if self.ch.coin() or shape == list(x.shape):
            shape.insert(0, self.ch.pick(self.dims))
        return self.emit("broadcast_to", x, shape=tuple(shape))

    def op_slice(self) -> Value:
        x = self.pick_float()
        starts, stops, steps = [], [], []
        for d in x.shape:
            lo = self.ch.integer(0, d // 2)
            hi = self.ch.integer(lo + 1, d) if d > lo else lo
            starts.append(lo), stops.append(hi), steps.append(self.ch.pick([1, 1, 2, 3]))
        return self.emit("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))

    def op_pad(self) -> Value:
        x = self.pick_float()
        r = x.type.rank
        pick = lambda: tuple(self.ch.integer(0, 2) for _ in range(r))  # noqa: E731
        return self.emit("pad", x, lo=pick(), hi=pick(), interior=pick())

    def op_window(self) -> Value:
        x = self.pick_float()
        if x.type.rank == 0:
            raise Reject("window needs an axis")
        axis = self.ch.integer(0, x.type.rank - 1)
        size, stride, dilation = self.ch.integer(1, 3), self.ch.pick([1, 1, 2, 3]), self.ch.pick([1, 1, 2])
        return self.emit("window", x, axis=axis, size=size, stride=stride, dilation=dilation)

    def op_unwindow(self) -> Value:
        x = self.pick_float()
        if x.type.rank < 2:
            raise Reject("unwindow needs a window axis and a tap axis")
        axis = self.ch.integer(0, x.type.rank - 2)
        size, stride, dilation = x.shape[-1], self.ch.pick([1, 1, 2, 3]), self.ch.pick([1, 1, 2])
        if size < 1 or x.shape[axis] < 1:
            raise Reject("unwindow of an empty axis")
        span = (size - 1) * dilation + 1
        length = span + (x.shape[axis] - 1) * stride + self.ch.integer(0, stride - 1)
        return self.emit("unwindow", x, axis=axis, size=size, stride=stride, dilation=dilation, length=length)

    def op_gather(self) -> Value:
        x = self.pick_float()
        if x.type.rank == 0:
            raise Reject("gather needs rank >= 1")
        axis = self.ch.integer(0, x.type.rank - 1)
        shape = x.shape[:axis] + x.shape[axis + 1:]
        if self.ch.coin(0.2) and shape and all(d <= x.shape[axis] for d in shape[-1:]):
            idx = self.emit("iota", shape=shape, axis=len(shape) - 1)  # values < shape[-1] <= n
        else:
            idx = self.param(shape, int64, self.rng.integers(0, x.shape[axis], size=shape))
        return self.emit("gather", x, idx, axis=axis)

    def op_iota(self) -> Value:
        shape = self.random_shape(max_rank=3) or (self.ch.pick(self.dims),)
        i = self.emit("iota", shape=shape, axis=self.ch.integer(0, len(shape) - 1))
        return self.emit("cast", i, dtype=self.dtype)

    def op_const(self) -> Value:
        shape = self.random_shape(max_rank=2)
        value = np.round(self.rng.normal(size=shape), 3) if shape and self.ch.coin() else float(
            np.round(self.rng.normal(), 3))
        c = self.emit("const", value=value, shape=shape, dtype=self.dtype)
        x = self.pick_float()
        x, c = self.together(x, self.as_dtype(c, x.dtype))
        return self.emit("add" if self.ch.coin() else "mul", x, c)

    def op_matmul(self) -> Value:
        x = self.pick_float()
        if x.type.rank < 2:
            x = self.emit("reshape", x, shape=(1, x.type.size) if self.ch.coin() else (x.type.size, 1))
        k = x.shape[-1]
        n = self.ch.pick(self.dims)
        want = x.shape[:-2] + (k, n)
        fits = [v for v in self.floats if v.shape == want and v.dtype == x.dtype]
        y = self.ch.pick(fits) if fits and self.ch.coin() else self.param(want, x.dtype)
        return self.emit("matmul", x, y)

    def op_custom_vjp(self) -> Value:
        """x * y computed from stopped-gradient operands, with its VJP supplied by a rule."""
        x = self.pick_float()
        x, y = self.together(x, self.partner(x))
        body = self.emit("mul", self.emit("stop_gradient", x), self.emit("stop_gradient", y))
        return self.emit("custom_vjp", x, y, body, rule=ProductRule())

    def op_attention(self) -> Value:
        """Fused attention with q from the pool (reshaped to (1, T, D)), random k and v, causal or not; the
        flat result is used whole (its out and lse parts)."""
        x = self.pick_float()
        if x.type.rank < 2 or x.type.size > 256:
            raise Reject("attention: q needs rank >= 2 and few elements")
        t, d = int(np.prod(x.shape[:-1], dtype=np.int64)), x.shape[-1]
        q = self.emit("reshape", x, shape=(1, t, d))
        tk = self.ch.pick(self.dims)
        k = self.param((1, tk, d), x.dtype)
        v = self.param((1, tk, self.ch.pick(self.dims)), x.dtype)
        return self.emit("attention", q, k, v, scale=float(self.ch.pick([0.25, 0.5, 1.0])), causal=self.ch.coin())

    def op_attention_grad(self) -> Value:
        """The backward of attention(q, k, v) for a pool value as q, with a random cotangent."""
        x = self.pick_float()
        if x.type.rank < 2 or x.type.size > 256:
            raise Reject("attention_grad: q needs rank >= 2 and few elements")
        t, d = int(np.prod(x.shape[:-1], dtype=np.int64)), x.shape[-1]
        q = self.emit("reshape", x, shape=(1, t, d))
        tk = self.ch.pick(self.dims)
        k, v = self.param((1, tk, d), x.dtype), self.param((1, tk, self.ch.pick(self.dims)), x.dtype)
        scale, causal = float(self.ch.pick([0.25, 0.5])), self.ch.coin()
        res = self.emit("attention", q, k, v, scale=scale, causal=causal)
        g = self.param(res.shape, x.dtype)
        return self.emit("attention_grad", q, k, v, res, g, scale=scale, causal=causal)

    def op_scan(self) -> Value:
        """A scan with a random small body: carry c (a pool value's shape), xs of that shape stacked L times,
        c' = f(c * k + x_t) for a random bounded f and a loop-invariant k, y = c' or c' * x_t."""
        c0 = self.pick_float()
        if c0.type.rank > 2 or c0.type.size > 64:
            raise Reject("scan: carry too large")
        length = self.ch.integer(1, 4)
        dtype, shape = c0.dtype, c0.shape
        xs = self.param((length,) + shape, dtype)
        k = self.param(shape, dtype, values=self.rng.uniform(-0.9, 0.9, size=shape))
        b = Builder()
        pk, pc, px = (Value(TensorType(shape, dtype), name=n) for n in ("k", "c", "x"))
        pre = b.add(b.mul(pc, pk), px)
        new_c = b.emit(self.ch.pick(["tanh", "sigmoid"]), pre)
        ys = [] if self.ch.coin(0.3) else [new_c if self.ch.coin() else b.mul(new_c, px)]
        body = Function("body", [pk, pc, px], b.ops, [new_c] + ys)
        return self.emit("scan", k, c0, xs, body=body, num_consts=1, num_carry=1, length=length,
                         reverse=self.ch.coin())

    def rule(self, name: str) -> Callable[[], Value]:
        if name in UNARY:
            return lambda: self.op_unary(name)
        if name in BINARY:
            return lambda: self.op_binary(name)
        if name in ("reduce_sum", "reduce_max"):
            return lambda: self.op_reduce(name)
        try:
            return getattr(self, f"op_{name}")
        except AttributeError:
            raise NotImplementedError(f"the fuzzer has no rule for op {name!r}: add one to tests/fuzz/graphgen.py")

    # ---------------------------------------------------------------------------------------- a graph
    def build(self, n_ops: int) -> Graph:
        self.param(self.random_shape())
        names = sorted(OPS)
        attempts = 0
        while len(self.b.ops) < n_ops and attempts < 20 * n_ops:
            attempts += 1
            mark = len(self.b.ops), len(self.params)
            try:
                self.rule(self.ch.pick(names))()
            except Reject:
                self._undo(*mark)
        return self.finish()

    def _undo(self, n_ops: int, n_params: int) -> None:
        """Drop the ops and params of a rejected step (guards it emitted too)."""
        dropped = {op.result for op in self.b.ops[n_ops:]} | set(self.params[n_params:])
        del self.b.ops[n_ops:]
        del self.params[n_params:], self.args[n_params:]
        for pool in (self.floats, self.ints, self.bools):
            pool[:] = [v for v in pool if v not in dropped]

    def finish(self) -> Graph:
        results = [self.floats[-1]]
        for v in self.ch.pick([[], self.floats[:-1], self.ints, self.bools]) or []:
            if self.ch.coin(0.3) and v not in results:
                results.append(v)
        fn = Function(f"{self.prefix}fn", list(self.params), list(self.b.ops), results)
        wrt = [i for i, p in enumerate(self.params) if p.dtype.is_float]
        cts = [self.rng.normal(size=r.shape).astype(r.dtype.numpy) for r in results]
        return Graph(fn, self.args, wrt, cts, self.vals)


UNARY = ("neg", "exp", "log", "tanh", "sqrt", "recip", "sigmoid", "relu", "abs", "stop_gradient", "sin", "cos",
         "erfc")
# erfc is a 1.2e-7 relative approximation (Numerical Recipes) whose VJP is the exact derivative: a graph using it
# is compared with PyTorch at APPROXIMATE_RTOL and has no finite-difference check
APPROXIMATE = {"erfc"}
APPROXIMATE_RTOL = 2e-6
BINARY = ("add", "sub", "mul", "div", "pow", "maximum")


class ProductRule:
    """The VJP of x * y, supplied from outside the registry as a custom Function's backward would be."""

    def vjp(self, b: Builder, g: Value, out: Value, x: Value, y: Value, body: Value) -> tuple:
        return b.mul(g, y), b.mul(g, x), None

    def torch(self, torch: Any, x: Any, y: Any, body: Any) -> Any:
        return x * y

    def __repr__(self) -> str:
        return "product"


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(a, b) == tuple(b)
    except ValueError:
        return False


def _split(shape: list[int], ch: Choices) -> list[int]:
    """Split one composite dimension (8 = 2*4, 9 = 3*3, 33 = 3*11) into two."""
    for i, d in enumerate(shape):
        for f in (2, 3):
            if d % f == 0 and d > f:
                return shape[:i] + [f, d // f] + shape[i + 1:]
    return shape + [1]


def generate(ch: Choices, prefix: str = "g", max_ops: int = 30) -> Graph:
    """One random graph of 1..max_ops ops."""
    return GraphGen(ch, prefix).build(ch.integer(1, max_ops))


def combine(graphs: list[Graph], name: str = "batch") -> tuple[Function, list[np.ndarray], list[int], list]:
    """Several graphs as one Function (one compile): params, ops and results concatenated."""
    params, ops, results, args, wrt, cts = [], [], [], [], [], []
    for g in graphs:
        wrt += [len(params) + i for i in g.wrt]
        params += g.fn.params
        ops += g.fn.ops
        results += g.fn.results
        args += g.args
        cts += g.cotangents
    return Function(name, params, ops, results), args, wrt, cts
