"""Pointwise ops beyond the core arithmetic: rounding, logs and exps, sign, erf, float classes, closeness.

All are composites of registry primitives, so they trace, differentiate and compile like any other
front-end code. Rounding needs no primitive of its own: `cast` to int64 truncates (numpy's astype and
LLVM's fptosi agree), and values too large for that are already integers. Results that carry no gradient
(floor, sign, ...) still join the graph with zero gradients, as PyTorch's FloorBackward0 does.
"""

from __future__ import annotations

import math
from typing import Any

from gradc import functional as F
from gradc.ir.core import bool_, float32, float64, int64
from gradc.tensor import Tensor, apply, torch_op

# beyond these magnitudes every float is an integer (and a cast to int64 could overflow)
_INTEGRAL = {float32: 2.0 ** 23, float64: 2.0 ** 52}


def _float(x: Any) -> Tensor:
    x = F.to_tensor(x)
    return x if x.dtype.is_float else F.cast(x, float32)


def _false(like: Tensor) -> Tensor:
    return F.expand_to(F.to_tensor(False), like.shape)


def zero_gradient(x: Tensor, value: Tensor) -> Tensor:
    """`value` (computed without gradient) as a result that gives x a zero gradient, as PyTorch."""
    if not x.dtype.is_float:
        return value
    return apply("where", _false(x), x, value)


def logical_or(a: Any, b: Any) -> Tensor:
    a, b = _bool(a), _bool(b)
    shape = F.broadcast_shapes(a.shape, b.shape)
    a, b = F.expand_to(a, shape), F.expand_to(b, shape)
    return apply("where", a, F.expand_to(F.to_tensor(True), shape), b)


def logical_and(a: Any, b: Any) -> Tensor:
    a, b = _bool(a), _bool(b)
    shape = F.broadcast_shapes(a.shape, b.shape)
    a, b = F.expand_to(a, shape), F.expand_to(b, shape)
    return apply("where", a, b, F.expand_to(F.to_tensor(False), shape))


def logical_not(a: Any) -> Tensor:
    return F.compare("eq", _bool(a), False)


def logical_xor(a: Any, b: Any) -> Tensor:
    a, b = _bool(a), _bool(b)
    return F.compare("ne", a, b)


def _bool(x: Any) -> Tensor:
    x = F.to_tensor(x)
    return x if x.dtype == bool_ else F.compare("ne", x, 0)


# ----------------------------------------------------------------------------- rounding

def _signed_zero(x: Tensor, r: Tensor) -> Tensor:
    # a zero result keeps x's sign (floor(-0.0) = round(-0.3) = -0.0, as PyTorch)
    return F.where(F.compare("eq", r, 0), F.mul(x, 0), r)


def _trunc_values(x: Tensor) -> Tensor:
    t = F.cast(F.cast(x, int64), x.dtype)
    return F.where(F.compare("lt", F.abs(x), _INTEGRAL[x.dtype]), t, x)


def _floor_values(x: Tensor) -> Tensor:
    t = _trunc_values(x)
    return F.sub(t, F.cast(F.compare("gt", t, x), x.dtype))


def _rounding(node: str, values):
    @torch_op(node)
    def op(x: Any) -> Tensor:
        x = F.to_tensor(x)
        if not x.dtype.is_float:
            return apply("reshape", x, shape=x.shape)  # integers round to themselves (a copy, as PyTorch)
        held = apply("stop_gradient", x)
        return zero_gradient(x, _signed_zero(held, values(held)))
    return op


floor = _rounding("FloorBackward0", _floor_values)
ceil = _rounding("CeilBackward0", lambda x: F.neg(_floor_values(F.neg(x))))
trunc = _rounding("TruncBackward0", _trunc_values)
fix = trunc


def _round_half_even(x: Tensor) -> Tensor:
    f = _floor_values(x)
    d = F.sub(x, f)  # exact: x and floor(x) share the exponent range
    odd = F.compare("eq", F.sub(f, F.mul(_floor_values(F.mul(f, 0.5)), 2.0)), 1.0)
    up = logical_or(F.compare("gt", d, 0.5), logical_and(F.compare("eq", d, 0.5), odd))
    return F.add(f, F.cast(up, x.dtype))


_round0 = _rounding("RoundBackward0", _round_half_even)


@torch_op(lambda x, decimals=0: "RoundBackward1" if decimals else "RoundBackward0")
def round(x: Any, decimals: int = 0) -> Tensor:
    """Half to even, as PyTorch; `decimals` scales by 10**decimals first."""
    x = F.to_tensor(x)
    if not decimals or not x.dtype.is_float:
        return _round0(x)
    scale = 10.0 ** decimals
    held = apply("stop_gradient", x)
    return zero_gradient(x, F.div(_round0(F.mul(held, scale)), scale))


@torch_op("FracBackward0")
def frac(x: Any) -> Tensor:
    x = F.to_tensor(x)
    if not x.dtype.is_float:
        raise NotImplementedError(f"\"frac_cpu\" not implemented for '{F.SCALAR_NAMES[x.dtype]}'")
    return F.sub(x, _signed_zero(x, _trunc_values(apply("stop_gradient", x))))


def _sign(x: Any) -> Tensor:
    x = F.to_tensor(x)
    if x.dtype == bool_:
        return apply("reshape", x, shape=x.shape)
    held = apply("stop_gradient", x) if x.dtype.is_float else x
    positive = F.cast(F.compare("gt", held, 0), x.dtype)
    negative = F.cast(F.compare("lt", held, 0), x.dtype)
    return zero_gradient(x, F.sub(positive, negative))  # sign(nan) = 0, as PyTorch


sign = torch_op("SignBackward0")(_sign)
sgn = torch_op("SgnBackward0")(_sign)


# ----------------------------------------------------------------------------- logs and exps

log2 = torch_op("Log2Backward0")(lambda x: F.mul(F.log(_float(x)), 1.0 / math.log(2.0)))
log10 = torch_op("Log10Backward0")(lambda x: F.mul(F.log(_float(x)), 1.0 / math.log(10.0)))
exp2 = torch_op("Exp2Backward0")(lambda x: F.exp(F.mul(_float(x), math.log(2.0))))


@torch_op("Log1PBackward0")
def log1p(x: Any) -> Tensor:
    """log(1 + x) accurate for small x: log(u) * x / (u - 1) with u = 1 + x (Goldberg)."""
    x = _float(x)
    u = F.add(x, 1.0)
    exact = logical_or(F.compare("eq", u, 1.0), F.compare("eq", u, math.inf))
    # the unused branch must stay finite, or its gradient (times a zero cotangent) would be NaN
    denominator = F.where(exact, F.scalar_like(1.0, u), F.sub(u, 1.0))
    ratio = F.div(F.mul(F.log(F.where(exact, F.scalar_like(2.0, u), u)), x), denominator)
    return F.where(F.compare("eq", u, 1.0), x, F.where(F.compare("eq", u, math.inf), u, ratio))


@torch_op("Expm1Backward0")
def expm1(x: Any) -> Tensor:
    """exp(x) - 1 accurate for small x: (u - 1) * x / log(u) with u = exp(x) (Kahan)."""
    x = _float(x)
    u = F.exp(x)
    um1 = F.sub(u, 1.0)
    small = F.compare("eq", u, 1.0)
    edge = logical_or(F.compare("eq", um1, -1.0), F.compare("eq", u, math.inf))
    exact = logical_or(small, edge)
    log_u = F.log(F.where(exact, F.scalar_like(2.0, u), u))  # finite in the unused branch (see log1p)
    ratio = F.div(F.mul(um1, x), F.where(exact, F.scalar_like(1.0, u), log_u))
    return F.where(small, x, F.where(edge, um1, ratio))


@torch_op("PowBackward0")
def square(x: Any) -> Tensor:
    x = F.to_tensor(x)
    if x.dtype == bool_:
        x = F.cast(x, int64)
    return F.mul(x, x)


rsqrt = torch_op("RsqrtBackward0")(lambda x: F.reciprocal(F.sqrt(_float(x))))


# erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)): 14 terms reach float64 precision for |x| < 0.5
_ERF_SERIES = [(-1) ** n / (math.factorial(n) * (2 * n + 1)) * 2 / math.sqrt(math.pi) for n in range(14)]


def _erf_float64(x: Tensor) -> Tensor:
    ax = F.abs(x)
    x2 = F.mul(x, x)
    series = F.mul(x2, _ERF_SERIES[-1])
    for c in reversed(_ERF_SERIES[1:-1]):
        series = F.mul(x2, F.add(series, c))
    series = F.mul(x, F.add(series, _ERF_SERIES[0]))
    # series near 0 (no cancellation), 1 - erfc(|x|) with x's sign elsewhere
    tail = F.rsub(apply("erfc", F.where(F.compare("lt", ax, 0.5), F.add(ax, 0.5), ax)), 1.0)
    signed = F.where(F.compare("lt", x, 0), F.neg(tail), tail)
    return F.where(F.compare("lt", ax, 0.5), series, signed)


@torch_op("ErfBackward0")
def erf(x: Any) -> Tensor:
    """erf to float32 accuracy (evaluated in float64; the erfc part has 1.2e-7 relative error)."""
    x = _float(x)
    return F.cast(_erf_float64(F.cast(x, float64)), x.dtype)


@torch_op("ErfcBackward0")
def erfc(x: Any) -> Tensor:
    x = _float(x)
    wide = F.cast(x, float64)
    # 1 - erf's series near 0 (more accurate there); erfc itself elsewhere (1 - erf cancels in the right tail)
    near = F.compare("lt", F.abs(wide), 0.5)
    return F.cast(F.where(near, F.rsub(_erf_float64(wide), 1.0), apply("erfc", wide)), x.dtype)


# ----------------------------------------------------------------------------- float classes

def isnan(x: Any) -> Tensor:
    x = F.to_tensor(x)
    return F.compare("ne", x, x)


def isinf(x: Any) -> Tensor:
    x = F.to_tensor(x)
    if not x.dtype.is_float:
        return F.compare("ne", x, x)
    return F.compare("eq", F.abs(x), math.inf)


def isposinf(x: Any) -> Tensor:
    x = F.to_tensor(x)
    return F.compare("eq", x, math.inf) if x.dtype.is_float else F.compare("ne", x, x)


def isneginf(x: Any) -> Tensor:
    x = F.to_tensor(x)
    return F.compare("eq", x, -math.inf) if x.dtype.is_float else F.compare("ne", x, x)


def isfinite(x: Any) -> Tensor:
    x = F.to_tensor(x)
    if not x.dtype.is_float:
        return F.compare("eq", x, x)
    return F.compare("lt", F.abs(x), math.inf)


@torch_op("NanToNumBackward0")
def nan_to_num(x: Any, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Tensor:
    import numpy as np
    x = F.to_tensor(x)
    if not x.dtype.is_float:
        return apply("reshape", x, shape=x.shape)
    big = float(np.finfo(x.dtype.numpy).max)
    out = F.where(isnan(x), float(nan), x)
    out = F.where(F.compare("eq", x, math.inf), big if posinf is None else float(posinf), out)
    return F.where(F.compare("eq", x, -math.inf), -big if neginf is None else float(neginf), out)


def isclose(a: Any, b: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Tensor:
    """|a - b| <= atol + rtol |b|, or a == b (infinities), or both NaN when equal_nan (as PyTorch)."""
    a, b = F.to_tensor(a), F.to_tensor(b)
    if a.dtype != b.dtype:
        raise RuntimeError(f"{F.SCALAR_NAMES[a.dtype]} did not match {F.SCALAR_NAMES[b.dtype]}")
    if rtol < 0 or atol < 0:
        raise RuntimeError(f"{'rtol' if rtol < 0 else 'atol'} must be greater than or equal to zero, but got "
                           f"{rtol if rtol < 0 else atol}")
    a, b = F.promote(a, b)
    a, b = apply("stop_gradient", a) if a.dtype.is_float else a, apply("stop_gradient", b) if b.dtype.is_float else b
    same = F.compare("eq", a, b)
    if a.dtype == bool_:
        return same
    wa, wb = (a, b) if a.dtype.is_float else (F.cast(a, float64), F.cast(b, float64))
    close = F.compare("le", F.abs(F.sub(wa, wb)), F.add(F.mul(F.abs(wb), rtol), atol))
    out = logical_or(same, logical_and(close, logical_and(isfinite(wa), isfinite(wb))))
    if equal_nan:
        out = logical_or(out, logical_and(isnan(a), isnan(b)))
    return out


def allclose(a: Any, b: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> bool:
    return _all_true(isclose(a, b, rtol, atol, equal_nan))


def _all_true(t: Tensor) -> bool:
    return bool(t._concrete("allclose()").all())


def equal(a: Tensor, b: Tensor) -> bool:
    """Same shape and all elements equal (a Python bool, as PyTorch)."""
    if a.shape != b.shape:
        return False
    return _all_true(F.compare("eq", *F.promote(a, b)))


# ----------------------------------------------------------------------------- comparisons by name

def _comparison(pred: str):
    def op(a: Any, b: Any) -> Tensor:
        return F.compare(pred, a, b)
    op.__name__ = pred
    return op


eq, ne, lt, le, gt, ge = (_comparison(p) for p in ("eq", "ne", "lt", "le", "gt", "ge"))
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


# ----------------------------------------------------------------------------- integer powers

def _pow_node(a: Any, b: Any) -> str:
    if not isinstance(a, Tensor):
        return "PowBackward2"
    return "PowBackward1" if isinstance(b, Tensor) else "PowBackward0"


@torch_op(_pow_node)
def pow(a: Any, b: Any) -> Tensor:
    """torch.pow; integer ** integer stays integer (through float64: exact below 2**53)."""
    ta = F.to_tensor(a) if isinstance(a, Tensor) or not isinstance(b, Tensor) else F.to_tensor(a, b)
    tb = F.to_tensor(b, ta)
    if ta.dtype.is_float or tb.dtype.is_float or (isinstance(b, float)):
        return F.pow(a, b)
    if isinstance(b, int) and not isinstance(b, bool) and b < 0:
        raise RuntimeError("Integers to negative integer powers are not allowed.")
    x, y = F.promote(ta, tb)
    dtype = x.dtype if x.dtype != bool_ else int64
    return F.cast(_trunc_values(apply("pow", F.cast(x, float64), F.cast(y, float64))), dtype)


FUNCTIONS = {
    "floor": floor, "ceil": ceil, "trunc": trunc, "fix": fix, "round": round, "frac": frac, "sign": sign,
    "sgn": sgn, "log2": log2, "log10": log10, "exp2": exp2, "log1p": log1p, "expm1": expm1, "square": square,
    "rsqrt": rsqrt, "erf": erf, "erfc": erfc, "isnan": isnan, "isinf": isinf, "isposinf": isposinf,
    "isneginf": isneginf, "isfinite": isfinite, "nan_to_num": nan_to_num, "isclose": isclose,
    "allclose": allclose, "equal": equal, "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge,
    "greater": greater, "greater_equal": greater_equal, "less": less, "less_equal": less_equal,
    "not_equal": not_equal, "logical_and": logical_and, "logical_or": logical_or, "logical_not": logical_not,
    "logical_xor": logical_xor, "pow": pow,
    # PyTorch's aliases of core ops
    "clip": F.clamp, "absolute": F.abs, "negative": F.neg, "multiply": F.mul, "divide": F.div,
    "subtract": F.sub, "true_divide": F.div,
}
# Tensor methods of the same names (Tensor.pow and ** take the integer-aware pow)
METHODS = {name: fn for name, fn in FUNCTIONS.items() if name != "clip"}  # Tensor.clip: the core binding
METHODS.update({"__pow__": pow, "__rpow__": lambda a, b: pow(b, a)})
INPLACE = ("floor", "ceil", "trunc", "round", "frac", "sign", "log2", "log10", "exp2", "log1p", "expm1",
           "square", "rsqrt", "erf", "erfc", "nan_to_num", "pow")
