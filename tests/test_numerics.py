"""Numerics through the whole native pipeline: special values, fast-math flags, FTZ/DAZ, determinism.

test_math_approx.py checks the math emitters on their own; here every unary op of the registry goes through
compile_function (fusion, lowering, O3, the runtime), forward and gradient, on the special-value grid
(+-0, the smallest denormal, +-1, +-20, +-88, +-89, +-710, +-1000, +-inf, nan) in float32 and float64:
  - NaN/inf class and sign as numpy (the op's eval rule) and PyTorch; finite values within the op's
    MAX_ULP_ERROR (gradc/codegen/math.py) and exact for the correctly rounded ops;
  - gradients: the same class (NaN, +-inf, zero) and sign as the interpreter's;
  - no `nnan`, `ninf` or `fast` flag (nor nsz/arcp/afn: only reassoc and contract are allowed) in the
    optimized LLVM IR of compiled functions or the unoptimized module, and native calls leave the FPU's
    denormal handling (no FTZ/DAZ) as it was;
  - the same graph on the same inputs gives bitwise-identical outputs 10 times over (also threaded kernels).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import gradc
from gradc.codegen import compile_function
from gradc.codegen.lower import lower
from gradc.codegen.math import MAX_ULP_ERROR
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, dtype_of_numpy
from gradc.ir.interp import run
from gradc.ir.ops import ELEMENTWISE, OPS
from gradc.ir.passes.ad import ad

try:
    import torch
except ImportError:
    torch = None

UNARY = sorted(n for n, o in OPS.items() if o.arity == 1 and o.kind == ELEMENTWISE and not o.attrs)
DTYPES = [np.float32, np.float64]
TORCH_NAMES = {"recip": "reciprocal", "stop_gradient": "clone"}


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    monkeypatch.setenv("GRADC_CACHE", "0")


def grid(dtype) -> np.ndarray:
    tiny = np.finfo(dtype).smallest_subnormal  # 5e-324 in float64
    values = [0.0, tiny, 1.0, 20.0, 88.0, 89.0, 710.0, 1000.0, np.inf]
    return np.array(values + [-v for v in values] + [np.nan], dtype=dtype)


def unary_function(name: str, dtype) -> Function:
    b = Builder()
    x = Value(TensorType((len(grid(dtype)),), dtype_of_numpy(dtype)), name="x")
    return Function(f"num_{name}", [x], b.ops, [b.emit(name, x)])


def ulp(x: np.ndarray) -> np.ndarray:
    return np.spacing(np.abs(x).astype(x.dtype))


LD = np.longdouble
EXACT = {  # long double references (numpy's float64 sigmoid is itself ~20 ulp off at x = -20)
    "exp": lambda x: np.exp(x.astype(LD)), "log": lambda x: np.log(x.astype(LD)),
    "tanh": lambda x: np.tanh(x.astype(LD)), "sigmoid": lambda x: 1 / (1 + np.exp(-x.astype(LD))),
    "sqrt": lambda x: np.sqrt(x.astype(LD)), "recip": lambda x: 1 / x.astype(LD),
    "sin": lambda x: np.sin(x.astype(LD)), "cos": lambda x: np.cos(x.astype(LD)),
}
# sin/cos are libm's (through LLVM's intrinsics), not gradc polynomials: glibc states < 1 ulp
LIBM_ULP_ERROR = {("sin", "f32"): 1.0, ("sin", "f64"): 1.0, ("cos", "f32"): 1.0, ("cos", "f64"): 1.0}


def assert_same_class(got: np.ndarray, want: np.ndarray, x: np.ndarray, what: str, zero_sign: bool = True) -> None:
    """NaN where NaN; otherwise the same infinity, zero-ness and sign bit (of zeros too unless zero_sign=False)."""
    for xi, g, w in zip(x, got, want):
        if np.isnan(w):
            assert np.isnan(g), f"{what}({xi!r}) = {g!r}, expected NaN"
            continue
        assert not np.isnan(g), f"{what}({xi!r}) = NaN, expected {w!r}"
        assert np.isinf(g) == np.isinf(w) and (g == 0) == (w == 0), f"{what}({xi!r}) = {g!r}, expected {w!r}"
        if w != 0 or zero_sign:
            assert np.signbit(g) == np.signbit(w), f"{what}({xi!r}) = {g!r}, expected {w!r} (sign)"


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", UNARY)
def test_unary_op_on_special_values_matches_numpy_and_torch(name, dtype):
    fn = unary_function(name, dtype)
    x = grid(dtype)
    (got,) = compile_function(fn)(x)
    (want,) = run(fn, x)
    assert got.dtype == want.dtype == dtype
    assert_same_class(got, want, x, name)
    finite = np.isfinite(want) & (want != 0)
    with np.errstate(all="ignore"):
        exact = EXACT[name](x[finite]) if name in EXACT else want[finite].astype(LD)
    # MAX_ULP_ERROR is stated against the exact result; other ops are correctly rounded (<= 0.5 ulp)
    key = (name, "f32" if dtype == np.float32 else "f64")
    bound = MAX_ULP_ERROR.get(key, LIBM_ULP_ERROR.get(key, 0.5))
    err = np.abs(got[finite].astype(LD) - exact) / ulp(exact.astype(dtype)).astype(LD)
    assert np.all(err <= bound), {float(a): float(e) for a, e in zip(x[finite], err)}
    if torch is not None:
        t = getattr(torch, TORCH_NAMES.get(name, name))(torch.from_numpy(x.copy())).numpy()
        # torch.relu(-0.0) is -0.0 where numpy's (and gradc's) relu gives +0.0: zero signs are numpy's
        # and torch's float32 sigmoid(-89) underflows to 0 where the exact result is a denormal (gradc keeps it)
        flush = lambda v: np.where(np.abs(v) < np.finfo(dtype).smallest_normal, 0, v).astype(dtype)  # noqa: E731
        assert_same_class(flush(got), flush(t), x, f"{name} vs torch", zero_sign=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(n for n in UNARY if OPS[n].vjp is not None))
def test_unary_gradient_on_special_values_matches_the_interpreter(name, dtype):
    joint = ad(unary_function(name, dtype), seed="param")
    x = grid(dtype)
    ct = np.ones_like(x)
    got = compile_function(joint)(x, ct)
    want = run(joint, x, ct)
    assert_same_class(got[1], want[1], x, f"d{name}")


def test_float32_grid_has_its_own_denormal():
    assert grid(np.float32)[1] == np.float32(1e-45) and grid(np.float64)[1] == 5e-324


def test_native_calls_keep_denormals_on():
    """No FTZ/DAZ: denormal inputs are not read as zero and denormal results are not flushed, in native
    code and afterwards in numpy (the calling thread's FPU state is untouched)."""
    b = Builder()
    x = Value(TensorType((4,), dtype_of_numpy(np.float64)), name="x")
    fn = Function("denormals", [x], b.ops, [b.mul(x, b.scalar(0.5, x))])
    tiny = np.finfo(np.float64).smallest_normal
    inp = np.array([tiny, tiny / 4, 5e-324 * 2, -tiny], np.float64)
    (out,) = compile_function(fn)(inp)
    np.testing.assert_array_equal(out, inp * 0.5)
    assert out[1] > 0 and out[2] == 5e-324
    assert np.array([tiny]) / 4 > 0  # numpy after the native call: still gradual underflow


# ----------------------------------------------------------------------------- fast-math flags

FORBIDDEN = re.compile(r"\b(nnan|ninf|fast|nsz|arcp|afn)\b")  # the design allows only reassoc and contract


def mlp_loss(w1, w2, x, y):
    h = gradc.tanh(x @ w1)
    logits = h @ w2
    return gradc.nn.functional.cross_entropy(logits, y) + gradc.sigmoid(w1).sum() * 1e-3


def compiled_samples():
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w1, w2, x, y = f32(8, 16), f32(16, 3), f32(33, 8), rng.integers(0, 3, 33)
    yield "mlp value_and_grad", gradc.value_and_grad(mlp_loss, argnums=(0, 1)).lower(w1, w2, x, y)
    yield "softmax", gradc.compile(lambda a: gradc.softmax(a, dim=1)).lower(f32(9, 17))
    yield "transcendentals", gradc.compile(
        lambda a: (gradc.exp(a) + gradc.log(gradc.abs(a) + 1) + gradc.sqrt(a * a)).max()).lower(f32(7, 33))


@pytest.mark.parametrize("stage", ["llvm", "unoptimized"])
def test_no_nnan_ninf_or_fast_flags_in_emitted_ir(stage):
    for label, spec in compiled_samples():
        if stage == "llvm":
            text = spec.as_text("llvm")
        else:
            text = str(lower(spec.joint, "unoptimized").module)
        found = sorted(set(FORBIDDEN.findall(text)))
        assert not found, f"{label}: {found} in the {stage} IR"
        assert "reassoc" in text or "fadd" in text  # the IR really is the function's code


# ----------------------------------------------------------------------------- determinism

def repeated_outputs(fn, args, times: int = 10) -> list:
    return [fn(*args) for _ in range(times)]


def assert_bitwise_identical(runs: list) -> None:
    first = runs[0] if isinstance(runs[0], (tuple, list)) else (runs[0],)
    for r in runs[1:]:
        r = r if isinstance(r, (tuple, list)) else (r,)
        for a, b in zip(first, r):
            if isinstance(a, tuple):
                assert_bitwise_identical([a, b])
                continue
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_same_graph_same_inputs_bitwise_identical_ten_times(threads, monkeypatch):
    monkeypatch.setenv("GRADC_NUM_THREADS", threads)
    rng = np.random.default_rng(1)
    big = rng.standard_normal((600, 400)).astype(np.float32)  # > 200k elements: threaded when threads = 2
    w = rng.standard_normal((400, 64)).astype(np.float32)

    def model(a, w):
        h = gradc.tanh(a @ w)
        return (gradc.softmax(h, dim=1) * h).sum() + gradc.exp(a * 0.1).sum(0).sum() + a.max(1).values.sum()

    value_and_grad = gradc.value_and_grad(model, argnums=(0, 1))
    assert_bitwise_identical(repeated_outputs(value_and_grad, (big, w)))
    forward = gradc.compile(lambda a: (a.sum(1), a.sum(0), a.sum(), gradc.exp(a).mean()))
    assert_bitwise_identical(repeated_outputs(forward, (big,)))
