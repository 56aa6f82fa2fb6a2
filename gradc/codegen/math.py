"""Vectorizable exp / log / tanh / sigmoid (and expm1 / log1p) emitted as plain LLVM IR.

Every emitter takes an `llvmlite.ir.IRBuilder` and a value of type `float`, `double` or a vector of either,
and returns a value of the same type. The code is branch-free and uses only arithmetic, bit casts, integer
ops, `select` and `fcmp` -- no calls, not even intrinsics (LLVM itself may turn the sign-bit masks into
llvm.fabs) -- so LLVM's loop and SLP vectorizers turn a scalar loop into SIMD code. Only the `contract`
fast-math flag is used (polynomial steps may become FMAs); never `nnan`/`ninf`/`fast`, so NaN and inf
propagate exactly as numpy's (checked in the tests).

Method (one generic algorithm per function, constants per precision):
  exp      Cody-Waite reduction x = k ln2 + r (|r| <= ln2/2, k rounded with the 1.5*2^p "magic number",
           read back as an integer from the bits), exp(r) = 1 + r + r^2 P(r), then a multiply by 2^k
           built in the exponent bits, split into 2^(k>>1) * 2^(k-(k>>1)) so that overflow to inf and
           gradual underflow to denormals / 0 round exactly once. x is clamped first (NaN passes through).
  log      fdlibm-style: denormals scaled by 2^S, x = 2^k m with m in [sqrt(.5), sqrt(2)) split off with
           integer ops on the bits, f = m - 1, s = f/(2+f), log(1+f) = f - (hfsq - s (hfsq + R(s^2))),
           k ln2 added in two parts. 0 -> -inf, x<0 -> NaN, inf -> inf, NaN -> NaN by selects.
  tanh     on a = |x|, then the sign of x copied in (so tanh(-0) = -0): a < T (0.625 f32, 0.55 f64):
           a + a s P(s), s = a^2 (no cancellation); otherwise 1 - 2/(exp(2a) + 1), which saturates to 1
           through exp's overflow to inf.
  sigmoid  e = exp(-|x|); (x >= 0 ? 1 : e) / (1 + e): no overflow on either tail, denormal results kept;
           the rounding error of 1 + e is corrected (Fast2Sum), so the error is exp's plus the division's.

  expm1    exp's reduction; expm1(r) = r + r^2 P(r) itself for k = 0, else 2^k expm1(r) + (2^k - 1) (exact
           2^k - 1), or exp's two-step scaling of 1 + expm1(r) when k is so large that the -1 vanishes.
  log1p    log(u) + (x - (u - 1))/u with u = 1 + x (the quotient restores what rounding 1 + x lost).

Polynomial coefficients are near-minimax fits (Lawson-iterated weighted least squares in mpmath, see
benchmarks/bench_math.py `fit`), rounded to the target precision.

Measured max error in ulp (`python benchmarks/bench_math.py accuracy` reproduces it; details at
MAX_ULP_ERROR):

    function   float32 (exhaustive vs numpy f64)   float64 (10^7 inputs vs long double)
    exp        1.50 (1.06 for normal results)        1.52 (1.02 for normal results)
    log        0.84                                  0.79
    tanh       1.33                                  1.42
    sigmoid    1.97                                  1.90
    expm1      1.65                                  2.00
    log1p      1.44                                  1.44

Throughput when LLVM auto-vectorizes a scalar loop (AVX-512 Zen 4, one core, 2^20 elements, ns/element;
numpy in brackets, sigmoid there being 1/(1+exp(-x))):
    float32  exp 0.27 (0.47)  log 0.47 (0.43)  tanh 0.56 (0.36)  sigmoid 0.45 (0.84)  expm1 0.35 (0.36)
             log1p 0.61 (0.45)
    float64  exp 0.69 (0.88)  log 1.13 (0.81)  tanh 1.43 (1.71)  sigmoid 1.14 (1.77)  expm1 0.90 (1.23)
             log1p 1.42 (1.04)
"""

from __future__ import annotations

import math
import struct
from typing import Callable

from llvmlite import ir

from gradc.ir.ops import ERFC_POLY

__all__ = ["emit_exp", "emit_log", "emit_tanh", "emit_sigmoid", "emit_expm1", "emit_log1p", "SCALAR_MATH",
           "MAX_ULP_ERROR"]

# (function, "f32" | "f64") -> max error in ulp of the exact result, measured and rounded up to 0.05:
#   float32: all 2^32 inputs, against numpy float64;  float64: 10^7 inputs (random bit patterns over every
#   binade, both signs, and uniform on [-a, a] for a in 1, 20, 100, 800), against numpy long double.
# Measured on FMA hardware, where `contract` fuses the polynomial steps; on the SSE2 baseline (no FMA) a
# sampled grid gave at most 0.07 ulp more (expm1: 1.74 f32, 2.07 f64), every other entry stays within.
# exp's worst case is a denormal result (the 1-ulp relative error of the scaled value plus the final
# rounding); for normal results it is 1.06 (f32) and 1.02 (f64) ulp.
MAX_ULP_ERROR: dict[tuple[str, str], float] = {
    ("exp", "f32"): 1.55,      # measured 1.501 at x = -87.33736 (denormal result)
    ("exp", "f64"): 1.55,      # measured 1.522 at x = -708.7826 (denormal result)
    ("log", "f32"): 0.85,      # measured 0.840
    ("log", "f64"): 0.80,      # measured 0.794
    ("tanh", "f32"): 1.35,     # measured 1.333 at x = 0.632 (just above the polynomial range)
    ("tanh", "f64"): 1.45,     # measured 1.420
    ("sigmoid", "f32"): 2.0,   # measured 1.973
    ("sigmoid", "f64"): 1.95,  # measured 1.902
    ("expm1", "f32"): 1.70,    # measured 1.651 at x = 0.3745 (k = 1: 2 expm1(r) + 1 doubles r's error)
    ("expm1", "f64"): 2.05,    # measured 2.003 at x = 0.3487
    ("log1p", "f32"): 1.45,    # measured 1.437 at x = -8.9e-8 (1 + x rounded, then corrected)
    ("log1p", "f64"): 1.45,    # measured 1.437 at x = -1.67e-16
}

_CONTRACT = ("contract",)


class _Prec:
    """Per-precision constants (bit layout and polynomial coefficients)."""

    def __init__(self, name: str, bits: int, mant: int, **consts: object) -> None:
        self.name, self.bits, self.mant = name, bits, mant
        self.bias = (1 << (bits - mant - 2)) - 1  # 127 or 1023
        self.__dict__.update(consts)


_F32 = _Prec(
    "f32", 32, 23,
    # exp: clamp so that exp(lo) rounds to 0 and exp(hi) to inf, then k fits the two-step scaling
    exp_lo=-105.0, exp_hi=89.0,
    expm1_lo=-20.0, expm1_big_k=64,  # exp(-20) < 2^-25; above 2^64 the -1 of expm1 is negligible
    exp_poly=(0.5, 0.1666649430990219, 0.04166613146662712, 0.008371696807444096, 0.001395534840412438),
    ln2_hi=0.693115234375, ln2_lo=3.194618329871446e-05,  # ln2_hi has 12 bits: k*ln2_hi is exact
    log_poly=(0.6666666269302368, 0.40000346302986145, 0.285366028547287, 0.235963374376297),
    log_sub_shift=25, sqrt_half_bits=0x3F3504F3, min_normal=2.0 ** -126,
    tanh_small=0.625,
    tanh_poly=(-0.3333328366279602, 0.13331490755081177, -0.05374349281191826, 0.02065056934952736,
               -0.005717025604099035),
)

_F64 = _Prec(
    "f64", 64, 52,
    exp_lo=-746.0, exp_hi=710.0,
    expm1_lo=-40.0, expm1_big_k=512,
    exp_poly=(0.5000000000000019, 0.16666666666666707, 0.04166666666646114, 0.00833333333330162,
              0.0013888888962002366, 0.00019841269929976677, 2.4801473880110826e-05,
              2.7557204801378587e-06, 2.763714448292064e-07, 2.5121541196229606e-08),
    ln2_hi=0.6931471805601177, ln2_lo=-1.7239444525614835e-13,  # ln2_hi has 40 bits
    log_poly=(0.666666666666674, 0.39999999999377944, 0.2857142875130886, 0.2222219758686806,
              0.1818361900829081, 0.1531256945571395, 0.1481154373783322),
    log_sub_shift=54, sqrt_half_bits=0x3FE6A09E667F3BCD, min_normal=2.0 ** -1022,
    tanh_small=0.55,
    tanh_poly=(-0.3333333333333235, 0.13333333333173722, -0.05396825387836604, 0.021869486025942388,
               -0.00886319515103175, 0.003591724640109896, -0.001453240017958634, 0.0005792029730170854,
               -0.00021040573279717197, 5.109018366425888e-05),
)


class _Emit:
    """Thin helper around an IRBuilder for one float type (scalar or vector) and its same-width int type."""

    def __init__(self, builder: ir.IRBuilder, ty: ir.Type) -> None:
        elem = ty.element if isinstance(ty, ir.VectorType) else ty
        if isinstance(elem, ir.FloatType):
            self.p = _F32
        elif isinstance(elem, ir.DoubleType):
            self.p = _F64
        else:
            raise TypeError(f"gradc math emitters need float, double or a vector of them, got {ty}")
        self.b = builder
        self.fty = ty
        ielem = ir.IntType(self.p.bits)
        self.ity = ir.VectorType(ielem, ty.count) if isinstance(ty, ir.VectorType) else ielem

    # constants (splatted for vectors)
    def f(self, v: float) -> ir.Constant:
        return self._const(self.fty, float(v))

    def i(self, v: int) -> ir.Constant:
        return self._const(self.ity, int(v))

    @staticmethod
    def _const(ty: ir.Type, v: float | int) -> ir.Constant:
        if isinstance(ty, ir.VectorType):
            return ir.Constant(ty, [v] * ty.count)
        return ir.Constant(ty, v)

    # arithmetic; `c=True` allows contraction into FMA (only used where a fused op is as good or better)
    def add(self, a, b, c=False):
        return self.b.fadd(a, b, flags=_CONTRACT if c else ())

    def sub(self, a, b, c=False):
        return self.b.fsub(a, b, flags=_CONTRACT if c else ())

    def mul(self, a, b, c=False):
        return self.b.fmul(a, b, flags=_CONTRACT if c else ())

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def poly(self, x, coeffs):
        """Horner: coeffs[0] + coeffs[1] x + ... (contractible)."""
        acc = self.f(coeffs[-1])
        for c in reversed(coeffs[:-1]):
            acc = self.add(self.mul(acc, x, True), self.f(c), True)
        return acc

    def sel(self, op: str, a, b, t, f):
        """Ordered compare `a op b` ? t : f (false when either side is NaN)."""
        return self.b.select(self.b.fcmp_ordered(op, a, b), t, f)

    def to_int(self, x):
        return self.b.bitcast(x, self.ity)

    def to_float(self, n):
        return self.b.bitcast(n, self.fty)

    def abs(self, x):
        mask = (1 << (self.p.bits - 1)) - 1
        return self.to_float(self.b.and_(self.to_int(x), self.i(mask)))

    def copysign(self, mag, sign):
        """|mag| with the sign bit of `sign` (mag must be non-negative)."""
        sbit = self.b.and_(self.to_int(sign), self.i(1 << (self.p.bits - 1)))
        return self.to_float(self.b.or_(self.to_int(mag), sbit))

    def magic(self) -> float:
        """1.5 * 2^mant: adding it rounds to an integer that sits in the low mantissa bits."""
        return 1.5 * 2.0 ** self.p.mant

    def magic_bits(self) -> int:
        fmt = ("<f", "<I") if self.p.bits == 32 else ("<d", "<Q")
        return struct.unpack(fmt[1], struct.pack(fmt[0], self.magic()))[0]

    def int_to_float(self, n):
        """Exact conversion of a small integer without sitofp (i64->f64 lacks a vector op before AVX-512)."""
        t = self.to_float(self.b.add(n, self.i(self.magic_bits())))
        return self.sub(t, self.f(self.magic()))

    def pow2(self, k):
        """2^k for k within the normal exponent range, built in the exponent field."""
        return self.to_float(self.b.shl(self.b.add(k, self.i(self.p.bias)), self.i(self.p.mant)))


def _exp_reduced(e: _Emit, xc):
    """x = k ln2 + r: returns (integer k, expm1(r) = r + r^2 P(r)); xc must already be clamped."""
    p = e.p
    t = e.add(e.mul(xc, e.f(1.0 / math.log(2.0)), True), e.f(e.magic()), True)
    kf = e.sub(t, e.f(e.magic()))
    k = e.b.sub(e.to_int(t), e.i(e.magic_bits()))                # integer k (garbage for NaN: harmless)
    r = e.sub(xc, e.mul(kf, e.f(p.ln2_hi)))                      # exact: k*ln2_hi has few bits
    r = e.sub(r, e.mul(kf, e.f(p.ln2_lo)))
    return k, e.add(e.mul(e.mul(r, r), e.poly(r, p.exp_poly), True), r, True)


def _scale(e: _Emit, y, k):
    """y * 2^k in two exact-range steps: the first product is exact, the second rounds once."""
    k1 = e.b.ashr(k, e.i(1))
    return e.mul(e.mul(y, e.pow2(k1)), e.pow2(e.b.sub(k, k1)))


def _exp(e: _Emit, x):
    p = e.p
    xc = e.sel("olt", x, e.f(p.exp_lo), e.f(p.exp_lo), x)      # NaN stays NaN
    xc = e.sel("ogt", xc, e.f(p.exp_hi), e.f(p.exp_hi), xc)
    k, em1 = _exp_reduced(e, xc)
    return _scale(e, e.add(em1, e.f(1.0)), k)


def _expm1(e: _Emit, x):
    p = e.p
    xc = e.sel("olt", x, e.f(p.expm1_lo), e.f(p.expm1_lo), x)  # below: -1 after rounding
    xc = e.sel("ogt", xc, e.f(p.exp_hi), e.f(p.exp_hi), xc)
    k, em1 = _exp_reduced(e, xc)
    big_k = e.i(p.expm1_big_k)
    # 2^k (1 + em1) - 1 = 2^k em1 + (2^k - 1): exact 2^k - 1 for small k, no cancellation at k = 0
    kk = e.b.select(e.b.icmp_signed(">", k, big_k), big_k, k)
    t = e.pow2(kk)
    small = e.add(e.mul(t, em1, True), e.sub(t, e.f(1.0)), True)
    big = _scale(e, e.add(em1, e.f(1.0)), k)                     # the -1 is far below an ulp
    y = e.b.select(e.b.icmp_signed(">", k, big_k), big, small)
    return e.sel("oeq", x, e.f(0.0), x, y)                       # expm1(-0) = -0


def _log(e: _Emit, x):
    p = e.p
    sub = e.b.fcmp_ordered("olt", x, e.f(p.min_normal))          # denormals (and 0/negatives, fixed below)
    xs = e.b.select(sub, e.mul(x, e.f(2.0 ** p.log_sub_shift)), x)
    kadj = e.b.select(sub, e.i(-p.log_sub_shift), e.i(0))
    ix = e.to_int(xs)
    kraw = e.b.ashr(e.b.sub(ix, e.i(p.sqrt_half_bits)), e.i(p.mant))
    m = e.to_float(e.b.sub(ix, e.b.shl(kraw, e.i(p.mant))))      # m in [sqrt(.5), sqrt(2))
    kf = e.int_to_float(e.b.add(kraw, kadj))
    f = e.sub(m, e.f(1.0))                                       # exact (Sterbenz)
    s = e.div(f, e.add(f, e.f(2.0)))
    z = e.mul(s, s)
    rz = e.mul(z, e.poly(z, p.log_poly), True)
    hfsq = e.mul(e.mul(f, f), e.f(0.5))
    inner = e.add(e.mul(s, e.add(hfsq, rz), True), e.mul(kf, e.f(p.ln2_lo)), True)
    y = e.add(e.mul(kf, e.f(p.ln2_hi)), e.sub(f, e.sub(hfsq, inner)))
    y = e.sel("oeq", x, e.f(math.inf), x, y)
    y = e.sel("oeq", x, e.f(0.0), e.f(-math.inf), y)            # +0 and -0
    y = e.sel("olt", x, e.f(0.0), e.f(math.nan), y)
    return e.b.select(e.b.fcmp_unordered("uno", x, x), x, y)     # NaN in -> the same NaN out


def _log1p(e: _Emit, x):
    u = e.add(x, e.f(1.0))
    # log(u) + (x - (u - 1)) / u: the second term restores what rounding 1 + x lost (Goldberg)
    c = e.div(e.sub(x, e.sub(u, e.f(1.0))), u)
    y = e.add(_log(e, u), c)
    y = e.sel("oeq", x, e.f(0.0), x, y)                          # log1p(-0) = -0
    y = e.sel("oeq", x, e.f(-1.0), e.f(-math.inf), y)           # c would be 0/0
    return e.sel("oeq", x, e.f(math.inf), x, y)                 # c would be inf/inf


def _tanh(e: _Emit, x):
    p = e.p
    ax = e.abs(x)                                                # odd function: work on |x|, copy the sign
    s = e.mul(ax, ax)
    small = e.add(e.mul(e.mul(ax, s), e.poly(s, p.tanh_poly), True), ax, True)
    big = e.sub(e.f(1.0), e.div(e.f(2.0), e.add(_exp(e, e.add(ax, ax)), e.f(1.0))))
    return e.copysign(e.sel("olt", ax, e.f(p.tanh_small), small, big), x)   # keeps tanh(-0) = -0


def _sigmoid(e: _Emit, x):
    ex = _exp(e, e.b.fneg(e.abs(x)))
    pos = e.b.fcmp_ordered("oge", x, e.f(0.0))                  # NaN -> false -> ex (NaN) on top
    d = e.add(ex, e.f(1.0))
    q = e.div(e.b.select(pos, e.f(1.0), ex), d)
    # Divide by the exact 1 + ex instead of its rounding d: q/(d + err) ~ q - q err / d, where
    # err = (1 - d) + ex is exact (Fast2Sum) and 1/d = q (x >= 0) or 1 - q (x < 0). Saves ~1 ulp.
    err = e.add(e.sub(e.f(1.0), d), ex)
    inv_d = e.b.select(pos, q, e.sub(e.f(1.0), q))
    return e.sub(q, e.mul(e.mul(q, err), inv_d, True), True)


def _erfc(e: _Emit, x):
    z = e.abs(x)
    t = e.div(e.f(1.0), e.add(e.mul(z, e.f(0.5)), e.f(1.0)))
    r = e.mul(t, _exp(e, e.sub(e.poly(t, ERFC_POLY), e.mul(z, z))))
    return e.sel("oge", x, e.f(0.0), r, e.sub(e.f(2.0), r))   # NaN: 2 - NaN


def emit_erfc(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """erfc(x) to 1.2e-7 relative error, evaluated in double (float32 rounds once at the end):
    z^2 in the exponent would lose float32's relative accuracy in the tail. erfc(inf) = 0, erfc(-inf) = 2."""
    elem = x.type.element if isinstance(x.type, ir.VectorType) else x.type
    if isinstance(elem, ir.FloatType):
        wide = ir.VectorType(ir.DoubleType(), x.type.count) if isinstance(x.type, ir.VectorType) else ir.DoubleType()
        return builder.fptrunc(_erfc(_Emit(builder, wide), builder.fpext(x, wide)), x.type)
    return _erfc(_Emit(builder, x.type), x)


def _wrap(impl: Callable, name: str) -> Callable[[ir.IRBuilder, ir.Value], ir.Value]:
    def emit(builder: ir.IRBuilder, x: ir.Value) -> ir.Value:
        return impl(_Emit(builder, x.type), x)

    emit.__name__ = f"emit_{name}"
    emit.__qualname__ = emit.__name__
    return emit


emit_exp = _wrap(_exp, "exp")
emit_exp.__doc__ = """exp(x); max error <= {} ulp (f32), {} ulp (f64). exp(-inf)=0, exp(inf)=inf, NaN->NaN."""
emit_log = _wrap(_log, "log")
emit_log.__doc__ = """log(x); max error <= {} ulp (f32), {} ulp (f64). log(+-0)=-inf, log(x<0)=NaN, log(inf)=inf."""
emit_tanh = _wrap(_tanh, "tanh")
emit_tanh.__doc__ = """tanh(x); max error <= {} ulp (f32), {} ulp (f64). tanh(-0)=-0, saturates to +-1."""
emit_sigmoid = _wrap(_sigmoid, "sigmoid")
emit_sigmoid.__doc__ = """1/(1+exp(-x)); max error <= {} ulp (f32), {} ulp (f64); 0 and 1 on the tails, no overflow."""
emit_expm1 = _wrap(_expm1, "expm1")
emit_expm1.__doc__ = """exp(x) - 1 without cancellation; max error <= {} ulp (f32), {} ulp (f64); expm1(-0) = -0."""
emit_log1p = _wrap(_log1p, "log1p")
emit_log1p.__doc__ = """log(1 + x) without cancellation; max error <= {} ulp (f32), {} ulp (f64); log1p(-1) = -inf."""
for _fn in (emit_exp, emit_log, emit_tanh, emit_sigmoid, emit_expm1, emit_log1p):
    _n = _fn.__name__[5:]
    _fn.__doc__ = _fn.__doc__.format(MAX_ULP_ERROR[(_n, "f32")], MAX_ULP_ERROR[(_n, "f64")])

SCALAR_MATH: dict[str, Callable[[ir.IRBuilder, ir.Value], ir.Value]] = {
    "exp": emit_exp, "log": emit_log, "tanh": emit_tanh, "sigmoid": emit_sigmoid,
    "expm1": emit_expm1, "log1p": emit_log1p,
}
