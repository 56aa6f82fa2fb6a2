"""The scalar emitter `em` that OpDef `lower` rules in gradc.ir.ops call, and constant folding.

Float ops carry no fast-math flags at all (NaN and inf propagate as in numpy); maximum is
`llvm.maximum` (NaN-propagating, like np.maximum); exp/log/tanh/sigmoid come from
gradc.codegen.math (branch-free, vectorizable) with LLVM intrinsics as a fallback; pow with a
constant small integer exponent becomes multiplies, otherwise `llvm.pow`.

LLVM integers have no signedness, so uint8 and int8 are both i8: the emitter's `unsigned` flag (set by
the lowering from the operand's dtype before each rule) picks udiv/icmp_unsigned/umax/zext/uitofp.
Integer constants are kept in their signed two's complement form (i8 200 is stored as -56).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir

from gradc.ir.core import DType

F32, F64, I64, I1, I8 = ir.FloatType(), ir.DoubleType(), ir.IntType(64), ir.IntType(1), ir.IntType(8)
I32, I16 = ir.IntType(32), ir.IntType(16)
LL_TYPES = {"float32": F32, "float64": F64, "int64": I64, "int32": I32, "int16": I16, "int8": I8, "uint8": I8,
            "bool": I1}


def ll_type(dtype: DType) -> ir.Type:
    return LL_TYPES[dtype.name]


def mem_type(dtype: DType) -> ir.Type:
    """In-memory element type: bool is one byte."""
    return I8 if dtype.name == "bool" else LL_TYPES[dtype.name]


def scalar_math(name: str):
    """The emitter f(builder, x) for exp/log/tanh/sigmoid (one switch point), or None for the fallback."""
    try:
        from gradc.codegen.math import SCALAR_MATH
    except ImportError:  # pragma: no cover - math.py is part of the package
        return None
    return SCALAR_MATH.get(name)


def constant(ty: ir.Type, value: Any) -> ir.Constant:
    """An LLVM constant of type ty holding value (integers wrap to ty's width, stored signed)."""
    if ty == I1:
        return ir.Constant(I1, int(bool(value)))
    if isinstance(ty, ir.IntType):
        bits = ty.width
        v = int(value) & ((1 << bits) - 1)
        return ir.Constant(ty, v - (1 << bits) if v >> (bits - 1) else v)
    return ir.Constant(ty, float((np.float32 if ty == F32 else np.float64)(value)))


def constant_array(c: ir.Constant, dtype: DType) -> np.ndarray:
    """The numpy value of an LLVM constant of dtype (a signed i8 -56 is uint8 200)."""
    if dtype.is_float or dtype.name == "bool":
        return np.asarray(c.constant, dtype=dtype.numpy)
    return np.asarray(int(c.constant), dtype=np.int64).astype(dtype.numpy)


def fold_constant(op, args: list) -> ir.Constant:
    """Evaluate an op on constant operands with its numpy rule (exact numpy semantics)."""
    arrays = [constant_array(a, v.dtype) for a, v in zip(args, op.inputs)]
    with np.errstate(all="ignore"):
        if op.name == "const":
            value = np.asarray(op.attrs["value"], dtype=op.result.dtype.numpy)
        else:
            value = np.asarray(op.opdef.eval(*arrays, **op.attrs), dtype=op.result.dtype.numpy)
    return constant(ll_type(op.result.dtype), value.reshape(-1)[0] if value.size else 0)


def is_float(x: ir.Value) -> bool:
    return isinstance(x.type, (ir.FloatType, ir.DoubleType))


class ScalarEmitter:
    """Scalar operations on LLVM values; the dtype is read off the LLVM type (f32/f64/iN/i1), and
    `unsigned` says whether integer operands are uint8/bool (the caller sets it per op)."""

    def __init__(self, low, builder: ir.IRBuilder):
        self.low, self.b = low, builder
        self.unsigned = False

    def _intrinsic(self, base: str, x: ir.Value, nargs: int = 1, extra: tuple = ()) -> ir.Function:
        ty = x.type
        suffix = "f32" if ty == F32 else "f64" if ty == F64 else f"i{ty.width}"
        return self.low.intrinsic(f"{base}.{suffix}", ty, [ty] * nargs + list(extra))

    def _math(self, name: str, x: ir.Value) -> ir.Value:
        f = scalar_math(name)
        if f is not None:
            return f(self.b, x)
        if name == "sigmoid":
            one = constant(x.type, 1.0)
            return self.b.fdiv(one, self.b.fadd(one, self.exp(self.b.fneg(x))))
        return self.b.call(self._intrinsic(f"llvm.{name}", x), [x])

    # unary
    def neg(self, x):
        return self.b.fneg(x) if is_float(x) else self.b.sub(constant(x.type, 0), x)

    def exp(self, x):
        return self._math("exp", x)

    def log(self, x):
        return self._math("log", x)

    def tanh(self, x):
        return self._math("tanh", x)

    def sigmoid(self, x):
        return self._math("sigmoid", x)

    def sqrt(self, x):
        return self.b.call(self._intrinsic("llvm.sqrt", x), [x])

    def erfc(self, x):
        from gradc.codegen.math import emit_erfc
        return emit_erfc(self.b, x)

    def sin(self, x):
        return self.b.call(self._intrinsic("llvm.sin", x), [x])

    def cos(self, x):
        return self.b.call(self._intrinsic("llvm.cos", x), [x])

    def abs(self, x):
        if is_float(x):
            return self.b.call(self._intrinsic("llvm.fabs", x), [x])
        if self.unsigned:  # bool and uint8
            return x
        return self.b.call(self._intrinsic("llvm.abs", x, 1, (I1,)), [x, ir.Constant(I1, 0)])

    # binary
    def add(self, x, y):
        if is_float(x):
            return self.b.fadd(x, y)
        return self.b.or_(x, y) if x.type == I1 else self.b.add(x, y)

    def sub(self, x, y):
        if is_float(x):
            return self.b.fsub(x, y)
        return self.b.xor(x, y) if x.type == I1 else self.b.sub(x, y)

    def mul(self, x, y):
        if is_float(x):
            return self.b.fmul(x, y)
        return self.b.and_(x, y) if x.type == I1 else self.b.mul(x, y)

    def div(self, x, y):
        return self.b.fdiv(x, y)

    def pow(self, x, y):
        if isinstance(y, ir.Constant):
            e = float(y.constant)
            if e == 0.0:
                return constant(x.type, 1.0)  # numpy: x**0 == 1 even for NaN
            if e == 1.0:
                return x
            if e == 2.0:
                return self.b.fmul(x, x)
            if e == -1.0:
                return self.b.fdiv(constant(x.type, 1.0), x)
        return self.b.call(self._intrinsic("llvm.pow", x, 2), [x, y])

    def maximum(self, x, y):
        if is_float(x):
            return self.b.call(self._intrinsic("llvm.maximum", x, 2), [x, y])
        if x.type == I1:
            return self.b.or_(x, y)
        return self.b.call(self._intrinsic("llvm.umax" if self.unsigned else "llvm.smax", x, 2), [x, y])

    def select(self, c, x, y):
        return self.b.select(c, x, y)

    def compare(self, pred: str, x, y):
        op = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}[pred]
        if is_float(x):
            # numpy: every comparison with NaN is False except !=, which is True
            return self.b.fcmp_unordered(op, x, y) if pred == "ne" else self.b.fcmp_ordered(op, x, y)
        if self.unsigned:  # bool and uint8
            return self.b.icmp_unsigned(op, x, y)
        return self.b.icmp_signed(op, x, y)

    def const(self, value, like):
        return constant(like.type, value)

    def cast(self, x, dtype: DType):
        b, to = self.b, ll_type(dtype)
        src = x.type
        if src == to:
            return x
        if is_float(x):
            if to in (F32, F64):
                return b.fpext(x, to) if to == F64 else b.fptrunc(x, to)
            if to == I1:
                return b.fcmp_unordered("!=", x, constant(src, 0.0))  # NaN -> True, as numpy
            if to == I64:  # numpy's and PyTorch's x86 cast: NaN and out-of-range values give INT64_MIN
                fits = b.and_(b.fcmp_ordered(">=", x, constant(src, -2.0 ** 63)),
                              b.fcmp_ordered("<", x, constant(src, 2.0 ** 63)))
                exact = b.call(self.low.intrinsic(f"llvm.fptosi.sat.i64.{'f32' if src == F32 else 'f64'}",
                                                  I64, [src]), [x])  # never poison, whatever x is
                return b.select(fits, exact, constant(I64, -2 ** 63))
            # numpy's (and PyTorch's) C cast on x86: truncate to int32, where NaN and values out of its range
            # give INT32_MIN, then keep the low bits (300.0 -> uint8 44, -1.0 -> uint8 255)
            fits = b.and_(b.fcmp_ordered(">=", x, constant(src, -2.0 ** 31)),
                          b.fcmp_ordered("<", x, constant(src, 2.0 ** 31)))
            wide = b.select(fits, b.fptosi(b.select(fits, x, constant(src, 0.0)), I32), constant(I32, -2 ** 31))
            return wide if to == I32 else b.trunc(wide, to)
        if to == I1:
            return b.icmp_unsigned("!=", x, constant(src, 0))
        if to in (F32, F64):
            return b.uitofp(x, to) if self.unsigned else b.sitofp(x, to)
        if to.width > src.width:
            return b.zext(x, to) if self.unsigned else b.sext(x, to)
        return b.trunc(x, to)  # narrower: the low bits (wraps, as numpy's astype)
