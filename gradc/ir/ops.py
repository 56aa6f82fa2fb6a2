"""The ONE registry of primitive ops.

Each `OpDef` is a row of rules, all small functions:
  shape   (input types, attrs) -> result TensorType; raises ShapeError naming the problem
  eval    numpy arrays, attrs -> numpy array (the reference semantics)
  vjp     (builder, cotangent, result, *inputs, **attrs) -> one gradient Value or None per input;
          it emits IR through the builder, so the adjoint is ordinary IR
  lower   (emitter, *scalar inputs, **attrs) -> scalar, for elementwise ops; the emitter is supplied
          by gradc.codegen, so this module never imports llvmlite

Composite functions (softmax, losses, ...) are written once in gradc.functional on top of these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradc.ir.core import DType, ShapeError, TensorType, bool_, int64

ELEMENTWISE, REDUCE, LAYOUT, MATMUL, SOURCE, INDEX, CALL = (
    "elementwise", "reduce", "layout", "matmul", "source", "index", "call")
VARIADIC = -1  # arity of ops that take any number of operands


@dataclass(frozen=True)
class OpDef:
    name: str
    arity: int
    kind: str
    shape: Callable[..., TensorType]
    eval: Callable[..., np.ndarray]
    vjp: Callable[..., tuple] | None  # None: not differentiable (no gradient flows through)
    lower: Callable[..., Any] | None = None  # scalar rule for elementwise ops
    attrs: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<OpDef {self.name}>"


OPS: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    assert opdef.name not in OPS, opdef.name
    OPS[opdef.name] = opdef
    return opdef


# ----------------------------------------------------------------------------- shape rules

def _require_float(name: str, t: TensorType) -> None:
    if not t.dtype.is_float:
        raise ShapeError(f"{name} needs a floating point operand, got {t}")


def unary_shape(name: str, float_only: bool) -> Callable[..., TensorType]:
    def rule(types: list[TensorType], attrs: dict) -> TensorType:
        (t,) = types
        if float_only:
            _require_float(name, t)
        elif t.dtype == bool_:
            raise ShapeError(f"{name} does not take a bool operand, got {t}")
        return t
    return rule


def binary_shape(name: str, float_only: bool = False) -> Callable[..., TensorType]:
    def rule(types: list[TensorType], attrs: dict) -> TensorType:
        a, b = types
        if a != b:
            raise ShapeError(f"{name} needs operands of one type (broadcast explicitly), got {a} and {b}")
        if float_only:
            _require_float(name, a)
        return a
    return rule


def compare_shape(types: list[TensorType], attrs: dict) -> TensorType:
    a, b = types
    if a != b:
        raise ShapeError(f"compare needs operands of one type, got {a} and {b}")
    if attrs["pred"] not in COMPARE_PREDICATES:
        raise ShapeError(f"compare: unknown predicate {attrs['pred']!r}")
    return TensorType(a.shape, bool_)


def where_shape(types: list[TensorType], attrs: dict) -> TensorType:
    c, a, b = types
    if c.dtype != bool_ or c.shape != a.shape or a != b:
        raise ShapeError(f"where needs a bool condition and two values of one shape, got {c}, {a}, {b}")
    return a


def cast_shape(types: list[TensorType], attrs: dict) -> TensorType:
    return TensorType(types[0].shape, attrs["dtype"])


def normalize_axes(axes: Any, rank: int) -> tuple[int, ...]:
    out = []
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeError(f"axis {a} is out of range for rank {rank}")
        out.append(a % rank)
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axis in {tuple(axes)}")
    return tuple(sorted(out))


def reduce_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    axes = attrs["axes"]
    if tuple(axes) != normalize_axes(axes, t.rank):
        raise ShapeError(f"reduce axes must be sorted, unique and in range, got {axes} for {t}")
    if t.dtype == bool_:
        raise ShapeError(f"cannot reduce a bool tensor {t}")
    return TensorType(tuple(d for i, d in enumerate(t.shape) if i not in axes), t.dtype)


def reduce_max_shape(types: list[TensorType], attrs: dict) -> TensorType:
    t = types[0]
    for a in attrs["axes"]:
        if 0 <= a < t.rank and t.shape[a] == 0:
            raise ShapeError(f"max of an empty dimension {a} of {t}")
    return reduce_shape(types, attrs)


def reshape_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    new = TensorType(attrs["shape"], t.dtype)
    if any(d < 0 for d in new.shape) or new.size != t.size:
        raise ShapeError(f"cannot reshape {t} to shape {list(new.shape)}")
    return new


def permute_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    perm = tuple(attrs["perm"])
    if sorted(perm) != list(range(t.rank)):
        raise ShapeError(f"permutation {list(perm)} does not fit rank {t.rank}")
    return TensorType(tuple(t.shape[p] for p in perm), t.dtype)


def broadcast_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    shape = tuple(attrs["shape"])
    lead = len(shape) - t.rank
    if lead < 0 or any(d not in (1, shape[lead + i]) for i, d in enumerate(t.shape)):
        raise ShapeError(f"cannot broadcast {t} to shape {list(shape)}")
    return TensorType(shape, t.dtype)


def slice_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    starts, stops, steps = attrs["starts"], attrs["stops"], attrs["steps"]
    if not len(starts) == len(stops) == len(steps) == t.rank:
        raise ShapeError(f"slice needs starts, stops and steps for each of the {t.rank} axes of {t}")
    shape = []
    for d, lo, hi, st in zip(t.shape, starts, stops, steps):
        if st < 1 or not 0 <= lo <= hi <= d:
            raise ShapeError(f"slice {lo}:{hi}:{st} does not fit dimension {d} of {t}")
        shape.append(len(range(lo, hi, st)))
    return TensorType(tuple(shape), t.dtype)


def pad_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    lo, hi, interior = attrs["lo"], attrs["hi"], attrs["interior"]
    if not len(lo) == len(hi) == len(interior) == t.rank or min((*lo, *hi, *interior), default=0) < 0:
        raise ShapeError(f"pad needs non-negative lo, hi and interior for each axis of {t}")
    shape = tuple(a + b + d + max(d - 1, 0) * i for d, a, b, i in zip(t.shape, lo, hi, interior))
    return TensorType(shape, t.dtype)


def window_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    axis, size, stride, dilation = attrs["axis"], attrs["size"], attrs["stride"], attrs["dilation"]
    if not 0 <= axis < t.rank or size < 1 or stride < 1 or dilation < 1:
        raise ShapeError(f"window needs an axis of {t}, size, stride and dilation >= 1, got axis={axis}, "
                         f"size={size}, stride={stride}, dilation={dilation}")
    span = (size - 1) * dilation + 1
    if span > t.shape[axis]:
        raise ShapeError(f"window of span {span} does not fit dimension {axis} of {t}")
    count = (t.shape[axis] - span) // stride + 1
    return TensorType(t.shape[:axis] + (count,) + t.shape[axis + 1:] + (size,), t.dtype)


def unwindow_shape(types: list[TensorType], attrs: dict) -> TensorType:
    (t,) = types
    axis, size, stride, dilation, length = (attrs["axis"], attrs["size"], attrs["stride"], attrs["dilation"],
                                            attrs["length"])
    if not 0 <= axis < t.rank - 1 or size < 1 or stride < 1 or dilation < 1 or t.shape[-1] != size:
        raise ShapeError(f"unwindow needs an axis of {t} before its last (tap) axis of length size, stride and "
                         f"dilation >= 1, got axis={axis}, size={size}, stride={stride}, dilation={dilation}")
    span = (size - 1) * dilation + 1
    if length < span or (length - span) // stride + 1 != t.shape[axis]:
        raise ShapeError(f"unwindow: {t.shape[axis]} windows of span {span} every {stride} do not tile length {length}")
    return TensorType(t.shape[:axis] + (length,) + t.shape[axis + 1:-1], t.dtype)


def gather_shape(types: list[TensorType], attrs: dict) -> TensorType:
    x, idx = types
    axis = attrs["axis"]
    if not 0 <= axis < x.rank:
        raise ShapeError(f"gather axis {axis} is out of range for {x}")
    expected = x.shape[:axis] + x.shape[axis + 1:]
    if idx.dtype != int64 or idx.shape != expected:
        raise ShapeError(f"gather from {x} along axis {axis} needs i64 indices of shape "
                         f"{list(expected)}, got {idx}")
    return TensorType(expected, x.dtype)


def iota_shape(types: list[TensorType], attrs: dict) -> TensorType:
    shape = tuple(attrs["shape"])
    if not 0 <= attrs["axis"] < len(shape):
        raise ShapeError(f"iota axis {attrs['axis']} is out of range for shape {list(shape)}")
    return TensorType(shape, int64)


def matmul_shape(types: list[TensorType], attrs: dict) -> TensorType:
    a, b = types
    if a.dtype != b.dtype or a.dtype.name == "bool":
        raise ShapeError(f"matmul needs two operands of one numeric dtype, got {a} and {b}")
    if a.rank < 2 or a.rank != b.rank or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul shapes do not fit: {a} @ {b}")
    return TensorType(a.shape[:-1] + b.shape[-1:], a.dtype)


def const_shape(types: list[TensorType], attrs: dict) -> TensorType:
    t = TensorType(attrs["shape"], attrs["dtype"])
    value = attrs["value"]
    if isinstance(value, np.ndarray) and value.shape != t.shape:
        raise ShapeError(f"const value of shape {value.shape} does not fit {t}")
    return t


def custom_vjp_shape(types: list[TensorType], attrs: dict) -> TensorType:
    if not types:
        raise ShapeError("custom_vjp needs at least its value operand")
    return types[-1]


def identity_shape(types: list[TensorType], attrs: dict) -> TensorType:
    return types[0]


# ----------------------------------------------------------------------------- eval helpers

def stable_sigmoid(x: np.ndarray) -> np.ndarray:
    # exp(-softplus(-x)) never overflows: logaddexp is stable on both tails
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)


def keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else d for i, d in enumerate(shape))


def eval_pad(x: np.ndarray, lo: tuple, hi: tuple, interior: tuple) -> np.ndarray:
    out = np.zeros(pad_shape([TensorType(x.shape, _dt(x))], dict(lo=lo, hi=hi, interior=interior)).shape,
                   dtype=x.dtype)
    index = tuple(slice(a, a + (d - 1) * (i + 1) + 1 if d else a, i + 1) for a, d, i in zip(lo, x.shape, interior))
    out[index] = x
    return out


def _dt(x: np.ndarray) -> DType:
    from gradc.ir.core import dtype_of_numpy
    return dtype_of_numpy(x.dtype)


def eval_gather(x: np.ndarray, idx: np.ndarray, axis: int) -> np.ndarray:
    n = x.shape[axis]
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)].flat[0]
        raise IndexError(f"index {bad} is out of bounds for dimension {axis} with size {n}")
    return np.take_along_axis(x, np.expand_dims(idx, axis), axis).squeeze(axis)


COMPARE_PREDICATES = {
    "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal, "eq": np.equal, "ne": np.not_equal,
}


# ----------------------------------------------------------------------------- vjp helpers

def unbroadcast(b: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum a cotangent of a broadcast result back to the operand's shape."""
    if g.shape == tuple(shape):
        return g
    lead = len(g.shape) - len(shape)
    axes = [i for i in range(len(g.shape))
            if i < lead or (shape[i - lead] == 1 and g.shape[i] != 1)]
    summed = b.emit("reduce_sum", g, axes=tuple(axes)) if axes else g
    return b.reshape_to(summed, shape)


def expand_reduced(b: Any, g: Any, shape: tuple[int, ...], axes: tuple[int, ...]) -> Any:
    """Broadcast a reduced value back over the reduced axes of `shape`."""
    return b.broadcast_to(b.reshape_to(g, keepdims_shape(shape, axes)), shape)


def swap_last2(b: Any, x: Any) -> Any:
    perm = tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2)
    return b.emit("permute", x, perm=perm)


def vjp_reduce_max(b, g, out, x, axes):
    # ties share the gradient equally, like torch.amax
    full = expand_reduced(b, out, x.shape, axes)
    mask = b.emit("cast", b.emit("compare", x, full, pred="eq"), dtype=x.dtype)
    count = b.emit("reduce_sum", mask, axes=axes)
    return (b.mul(expand_reduced(b, b.div(g, count), x.shape, axes), mask),)


def vjp_maximum(b, g, out, x, y):
    # ties split the gradient in half, like torch.maximum
    weight = b.where(b.gt(x, y), b.scalar(1.0, x), b.where(b.eq(x, y), b.scalar(0.5, x), b.scalar(0.0, x)))
    return b.mul(g, weight), b.mul(g, b.sub(b.scalar(1.0, x), weight))


def vjp_pow(b, g, out, x, y):
    zero = b.scalar(0.0, x)
    # d/dx x^y = y x^(y-1), defined as 0 where y == 0 (as PyTorch)
    gx = b.where(b.eq(y, zero), zero, b.mul(g, b.mul(y, b.pow(x, b.sub(y, b.scalar(1.0, y))))))
    # d/dy x^y = x^y log x, defined as 0 where x == 0 and y >= 0 (as PyTorch)
    gy = b.where(b.eq(x, zero), b.where(b.ge(y, zero), zero, b.mul(g, b.mul(out, b.log(x)))),
                 b.mul(g, b.mul(out, b.log(x))))
    return gx, gy


def vjp_gather(b, g, out, x, idx, axis):
    keep = keepdims_shape(x.shape, (axis,))
    hit = b.emit("compare", b.emit("iota", shape=x.shape, axis=axis),
                 b.broadcast_to(b.reshape_to(idx, keep), x.shape), pred="eq")
    spread = b.broadcast_to(b.reshape_to(g, keep), x.shape)
    return b.where(hit, spread, b.scalar(0.0, x)), None


def vjp_slice(b, g, out, x, starts, stops, steps):
    lo = tuple(starts)
    interior = tuple(s - 1 for s in steps)
    hi = tuple(d - (a + max(n - 1, 0) * s + 1) if n else d - a
               for d, a, s, n in zip(x.shape, starts, steps, out.shape))
    return (b.emit("pad", g, lo=lo, hi=hi, interior=interior),)


def vjp_pad(b, g, out, x, lo, hi, interior):
    stops = tuple(a + max(d - 1, 0) * (i + 1) + 1 if d else a for a, d, i in zip(lo, x.shape, interior))
    return (b.emit("slice", g, starts=tuple(lo), stops=stops, steps=tuple(i + 1 for i in interior)),)


def eval_window(x: np.ndarray, axis: int, size: int, stride: int, dilation: int) -> np.ndarray:
    count = (x.shape[axis] - (size - 1) * dilation - 1) // stride + 1
    index = np.arange(count)[:, None] * stride + np.arange(size)[None, :] * dilation
    return np.moveaxis(np.take(x, index, axis=axis), axis + 1, -1)


def vjp_window(b, g, out, x, axis, size, stride, dilation):
    # col2im: tap k of every window came from x[o*stride + k*dilation]; unwindow sums them back (gather form)
    return (b.emit("unwindow", g, axis=axis, size=size, stride=stride, dilation=dilation, length=x.shape[axis]),)


def unwindow_taps(b, g, axis, size, stride, dilation, length):
    """unwindow as slice/pad/add IR (its definition; the MLIR printer emits it so): tap k of every window is
    padded back to x[o*stride + k*dilation] and the taps are summed in order k = 0, 1, ..."""
    rank = g.type.rank - 1
    count = g.shape[axis]
    shape = tuple(g.shape[:-1])
    total = None
    for k in range(size):
        starts = (0,) * rank + (k,)
        stops = shape + (k + 1,)
        tap = b.reshape_to(b.emit("slice", g, starts=starts, stops=stops, steps=(1,) * (rank + 1)), shape)
        lo, hi, interior = [0] * rank, [0] * rank, [0] * rank
        lo[axis] = k * dilation
        interior[axis] = stride - 1
        hi[axis] = length - (k * dilation + (count - 1) * stride + 1)
        placed = b.emit("pad", tap, lo=tuple(lo), hi=tuple(hi), interior=tuple(interior))
        total = placed if total is None else b.add(total, placed)
    return total


def eval_unwindow(g: np.ndarray, axis: int, size: int, stride: int, dilation: int, length: int) -> np.ndarray:
    # each tap padded to full size, then summed in tap order: the same additions (and signs of zero) as native
    count = g.shape[axis]
    total = None
    for k in range(size):
        placed = np.zeros(g.shape[:axis] + (length,) + g.shape[axis + 1:-1], dtype=g.dtype)
        index = (slice(None),) * axis + (slice(k * dilation, k * dilation + (count - 1) * stride + 1, stride),)
        placed[index] = g[..., k]
        total = placed if total is None else total + placed
    return total


def vjp_unwindow(b, g, out, x, axis, size, stride, dilation, length):
    # the adjoint of a sum of placed taps is each tap read back: the windows of the cotangent
    return (b.emit("window", g, axis=axis, size=size, stride=stride, dilation=dilation),)


def vjp_cast(b, g, out, x, dtype):
    if not (x.dtype.is_float and dtype.is_float):
        return (None,)
    return (b.emit("cast", g, dtype=x.dtype),)


def inverse_permutation(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


# ----------------------------------------------------------------------------- the table

def _unary(name, eval_fn, vjp, lower, float_only=True):
    register(OpDef(name, 1, ELEMENTWISE, unary_shape(name, float_only), eval_fn, vjp, lower))


def _binary(name, eval_fn, vjp, lower, float_only=False):
    register(OpDef(name, 2, ELEMENTWISE, binary_shape(name, float_only), eval_fn, vjp, lower))


_unary("neg", np.negative, lambda b, g, out, x: (b.neg(g),), lambda em, x: em.neg(x), float_only=False)
# d/dx e^x = e^x
_unary("exp", np.exp, lambda b, g, out, x: (b.mul(g, out),), lambda em, x: em.exp(x))
_unary("log", np.log, lambda b, g, out, x: (b.div(g, x),), lambda em, x: em.log(x))
# d/dx tanh = 1 - tanh^2
_unary("tanh", np.tanh, lambda b, g, out, x: (b.mul(g, b.sub(b.scalar(1.0, x), b.mul(out, out))),),
       lambda em, x: em.tanh(x))
# d/dx sqrt = 1 / (2 sqrt)
_unary("sqrt", np.sqrt, lambda b, g, out, x: (b.div(g, b.mul(b.scalar(2.0, x), out)),),
       lambda em, x: em.sqrt(x))
# d/dx 1/x = -1/x^2
_unary("recip", np.reciprocal, lambda b, g, out, x: (b.neg(b.mul(g, b.mul(out, out))),),
       lambda em, x: em.div(em.const(1.0, x), x))
# d/dx sigmoid = s (1 - s)
_unary("sigmoid", stable_sigmoid,
       lambda b, g, out, x: (b.mul(g, b.mul(out, b.sub(b.scalar(1.0, x), out))),),
       lambda em, x: em.sigmoid(x))
def eval_relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0) (np.maximum passes NaN through); += 0 turns -0.0 into +0.0, as the native select does."""
    out = np.maximum(x, 0)
    out += 0
    return out


# relu'(0) = 0, as PyTorch; NaN passes through
_unary("relu", eval_relu,
       lambda b, g, out, x: (b.where(b.gt(x, b.scalar(0, x)), g, b.scalar(0, g)),),
       lambda em, x: em.select(em.compare("le", x, em.const(0, x)), em.const(0, x), x), float_only=False)
# abs'(0) = 0, as PyTorch's sign(x)
_unary("abs", np.abs,
       lambda b, g, out, x: (b.where(b.gt(x, b.scalar(0, x)), g,
                                     b.where(b.lt(x, b.scalar(0, x)), b.neg(g), b.scalar(0, g))),),
       lambda em, x: em.abs(x), float_only=False)
# d/dx sin = cos, d/dx cos = -sin (libm through LLVM's intrinsics: glibc is within 1 ulp)
_unary("sin", np.sin, lambda b, g, out, x: (b.mul(g, b.cos(x)),), lambda em, x: em.sin(x))
_unary("cos", np.cos, lambda b, g, out, x: (b.neg(b.mul(g, b.sin(x))),), lambda em, x: em.cos(x))
# Numerical Recipes' erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z = |x| (coefficients of P in increasing
# powers of t): relative error below 1.2e-7 for all z >= 0; erfc(-z) = 2 - erfc(z) has no cancellation
ERFC_POLY = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
             1.48851587, -0.82215223, 0.17087277)


def eval_erfc(x: np.ndarray) -> np.ndarray:
    """erfc in float64 with the native lowering's formula (gradc.codegen.math.emit_erfc)."""
    w = np.asarray(x, np.float64)
    z = np.abs(w)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, ERFC_POLY[-1])
    for c in reversed(ERFC_POLY[:-1]):
        poly = poly * t + c
    r = t * np.exp(poly - z * z)
    return np.where(w >= 0, r, 2.0 - r).astype(x.dtype)


# d/dx erfc = -2/sqrt(pi) exp(-x^2)
_unary("erfc", eval_erfc,
       lambda b, g, out, x: (b.mul(g, b.mul(b.scalar(-2.0 / math.sqrt(math.pi), x), b.exp(b.neg(b.mul(x, x))))),),
       lambda em, x: em.erfc(x))
register(OpDef("stop_gradient", 1, ELEMENTWISE, identity_shape, lambda x: x.copy(), None, lambda em, x: x))

_binary("add", np.add, lambda b, g, out, x, y: (g, g), lambda em, x, y: em.add(x, y))
_binary("sub", np.subtract, lambda b, g, out, x, y: (g, b.neg(g)), lambda em, x, y: em.sub(x, y))
_binary("mul", np.multiply, lambda b, g, out, x, y: (b.mul(g, y), b.mul(g, x)), lambda em, x, y: em.mul(x, y))
# d(x/y) = dx/y - x dy/y^2 = dx/y - out dy/y
_binary("div", np.divide, lambda b, g, out, x, y: (b.div(g, y), b.neg(b.div(b.mul(g, out), y))),
        lambda em, x, y: em.div(x, y), float_only=True)
_binary("pow", np.power, vjp_pow, lambda em, x, y: em.pow(x, y), float_only=True)
_binary("maximum", np.maximum, vjp_maximum, lambda em, x, y: em.maximum(x, y))

register(OpDef("compare", 2, ELEMENTWISE, compare_shape,
               lambda x, y, pred: COMPARE_PREDICATES[pred](x, y), None,
               lambda em, x, y, pred: em.compare(pred, x, y), attrs=("pred",)))
register(OpDef("where", 3, ELEMENTWISE, where_shape, np.where,
               lambda b, g, out, c, x, y: (None, b.where(c, g, b.scalar(0, g)), b.where(c, b.scalar(0, g), g)),
               lambda em, c, x, y: em.select(c, x, y)))
register(OpDef("cast", 1, ELEMENTWISE, cast_shape, lambda x, dtype: x.astype(dtype.numpy), vjp_cast,
               lambda em, x, dtype: em.cast(x, dtype), attrs=("dtype",)))

register(OpDef("reduce_sum", 1, REDUCE, reduce_shape,
               lambda x, axes: np.asarray(np.sum(x, axis=tuple(axes), dtype=x.dtype)),
               lambda b, g, out, x, axes: (expand_reduced(b, g, x.shape, axes),), attrs=("axes",)))
register(OpDef("reduce_max", 1, REDUCE, reduce_max_shape,
               lambda x, axes: np.asarray(np.max(x, axis=tuple(axes))), vjp_reduce_max, attrs=("axes",)))

register(OpDef("reshape", 1, LAYOUT, reshape_shape, lambda x, shape: x.reshape(shape),
               lambda b, g, out, x, shape: (b.reshape_to(g, x.shape),), attrs=("shape",)))
register(OpDef("permute", 1, LAYOUT, permute_shape, lambda x, perm: np.transpose(x, perm),
               lambda b, g, out, x, perm: (b.emit("permute", g, perm=inverse_permutation(perm)),),
               attrs=("perm",)))
register(OpDef("broadcast_to", 1, LAYOUT, broadcast_shape, lambda x, shape: np.broadcast_to(x, shape),
               lambda b, g, out, x, shape: (unbroadcast(b, g, x.shape),), attrs=("shape",)))
register(OpDef("slice", 1, LAYOUT, slice_shape,
               lambda x, starts, stops, steps: x[tuple(slice(a, z, s) for a, z, s in zip(starts, stops, steps))],
               vjp_slice, attrs=("starts", "stops", "steps")))
register(OpDef("pad", 1, LAYOUT, pad_shape, eval_pad, vjp_pad, attrs=("lo", "hi", "interior")))
register(OpDef("window", 1, LAYOUT, window_shape, eval_window, vjp_window,
               attrs=("axis", "size", "stride", "dilation")))
# window's adjoint (col2im along one axis): out[..., l, ...] = sum over taps k with l = o*stride + k*dilation of
# g[..., o, ..., k]. A primitive so native code evaluates it in gather form, each output element summing the
# taps it receives inside its consumer's loop (no tap arrays; unwindow_taps is the same sum as slice/pad/add)
register(OpDef("unwindow", 1, LAYOUT, unwindow_shape, eval_unwindow, vjp_unwindow,
               attrs=("axis", "size", "stride", "dilation", "length")))

register(OpDef("gather", 2, INDEX, gather_shape, eval_gather, vjp_gather, attrs=("axis",)))
register(OpDef("iota", 0, SOURCE, iota_shape,
               lambda shape, axis: np.broadcast_to(
                   np.arange(shape[axis], dtype=np.int64).reshape(keepdims_shape(
                       tuple(shape), tuple(i for i in range(len(shape)) if i != axis))), shape),
               None, attrs=("shape", "axis")))
register(OpDef("const", 0, SOURCE, const_shape,
               lambda value, shape, dtype: np.broadcast_to(np.asarray(value, dtype=dtype.numpy), shape),
               None, attrs=("value", "shape", "dtype")))

register(OpDef("matmul", 2, MATMUL, matmul_shape, np.matmul,
               lambda b, g, out, x, y: (b.emit("matmul", g, swap_last2(b, y)),
                                        b.emit("matmul", swap_last2(b, x), g))))

# A call site whose VJP the caller supplies (torch.autograd.Function, jax.custom_vjp). Operands: the
# differentiable inputs, then whatever the rule reads (saved tensors), then the value itself, computed
# from stopped-gradient inputs. The value is the last operand; `rule.vjp(b, g, out, *operands)` emits one
# cotangent per operand. Native code has no calls: passes.calls.strip_custom_vjp replaces them by their
# value once AD is done.
register(OpDef("custom_vjp", VARIADIC, CALL, custom_vjp_shape, lambda *xs, rule: xs[-1],
               lambda b, g, out, *xs, rule: tuple(rule.vjp(b, g, out, *xs)), attrs=("rule",)))

import gradc.ir.attention  # noqa: E402,F401  (registers "attention" and "attention_grad")
import gradc.ir.scan  # noqa: E402,F401  (registers "scan": its rules live in their own file)
