"""Native code == reference interpreter for EVERY op of the registry, float32 and float64.

Each op has a sample builder below; an op without one FAILS test_every_op_has_a_sample. Every sample
is built for all vector-tail sizes (1, 7, 8, 9, 15, 17, 33) in one Function (one compile per op and
dtype, through gradc.codegen.compile_function), including a broadcasting variant for binary ops.
"""

from __future__ import annotations

import numpy as np
import pytest

from gradc.codegen import compile_function
from gradc.ir import interp
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, bool_, float32, float64, int64
from gradc.ir.ops import COMPARE_PREDICATES, OPS

SIZES = (1, 7, 8, 9, 15, 17, 33)
DTYPES = (float32, float64)
UNARY_FLOAT = ("neg", "exp", "log", "tanh", "sqrt", "recip", "sigmoid", "relu", "abs", "stop_gradient", "sin", "cos",
               "erfc")
BINARY = ("add", "sub", "mul", "div", "pow", "maximum")
TRANSCENDENTAL = {"exp", "log", "tanh", "sigmoid", "pow", "sin", "cos", "erfc"}


class Case:
    """Collects params (with their input arrays) and results for one sample Function."""

    def __init__(self, seed: int = 0):
        self.b = Builder()
        self.params: list[Value] = []
        self.args: list[np.ndarray] = []
        self.results: list[Value] = []
        self.rng = np.random.default_rng(seed)

    def param(self, shape, dtype, kind: str = "normal") -> Value:
        r = self.rng
        if dtype == bool_:
            a = r.random(shape) < 0.5
        elif dtype == int64:
            a = r.integers(-5, 6, size=shape)
        elif kind == "positive":
            a = np.abs(r.standard_normal(shape)) * 2 + 0.05
        elif kind == "nonzero":
            a = r.standard_normal(shape)
            a = np.where(np.abs(a) < 0.1, 0.5, a)
        else:
            a = r.standard_normal(shape) * 3
        v = Value(TensorType(tuple(shape), dtype), name=f"p{len(self.params)}")
        self.params.append(v)
        self.args.append(np.asarray(a, dtype=dtype.numpy))
        return v

    def function(self):
        return self.b.function("sample", self.params, self.results)


def sample_unary(c: Case, name: str, dt, n: int) -> None:
    kind = "positive" if name in ("log", "sqrt") else ("nonzero" if name == "recip" else "normal")
    c.results.append(c.b.emit(name, c.param((n,), dt, kind)))
    c.results.append(c.b.emit(name, c.param((3, n), dt, kind)))


def sample_binary(c: Case, name: str, dt, n: int) -> None:
    kx = "positive" if name == "pow" else "normal"
    ky = "nonzero" if name == "div" else "normal"
    x, y = c.param((3, n), dt, kx), c.param((3, n), dt, ky)
    c.results.append(c.b.emit(name, x, y))
    row = c.b.broadcast_to(c.param((n,), dt, ky), (3, n))  # broadcasting along the leading axis
    col = c.b.broadcast_to(c.param((3, 1), dt, kx), (3, n))  # and along the innermost axis
    c.results.append(c.b.emit(name, col, row))
    if name not in ("div", "pow"):
        i, j = c.param((n,), int64), c.param((n,), int64)
        c.results.append(c.b.emit(name, i, j))
    if name == "pow":  # constant exponents take the multiply path
        for e in (2.0, 1.0, 0.0, -1.0, 0.5, 3.0):
            c.results.append(c.b.pow(x, c.b.scalar(e, x)))


def sample_compare(c: Case, dt, n: int) -> None:
    x, y = c.param((3, n), dt), c.param((3, n), dt)
    y = c.b.where(c.param((3, n), bool_), x, y)  # ties
    for pred in COMPARE_PREDICATES:
        c.results.append(c.b.compare(x, y, pred=pred))
        c.results.append(c.b.compare(c.param((n,), int64), c.param((n,), int64), pred=pred))
        c.results.append(c.b.compare(c.param((n,), bool_), c.param((n,), bool_), pred=pred))


def sample_cast(c: Case, dt, n: int) -> None:
    other = float64 if dt == float32 else float32
    x = c.param((3, n), dt)
    for to in (other, int64, bool_):
        c.results.append(c.b.emit("cast", x, dtype=to))
    c.results.append(c.b.emit("cast", c.param((n,), int64), dtype=dt))
    c.results.append(c.b.emit("cast", c.param((n,), bool_), dtype=dt))
    c.results.append(c.b.emit("cast", c.param((n,), bool_), dtype=int64))
    c.results.append(c.b.emit("cast", c.param((n,), int64), dtype=bool_))


def sample_reduce(c: Case, name: str, dt, n: int) -> None:
    x = c.param((3, n, 2), dt)
    for axes in ((0,), (1,), (2,), (0, 1), (1, 2), (0, 2), (0, 1, 2), ()):
        c.results.append(c.b.emit(name, x, axes=axes))
    c.results.append(c.b.emit(name, c.b.exp(c.param((n, 3), dt)), axes=(1,)))  # fused prologue
    c.results.append(c.b.emit(name, c.param((n,), int64), axes=(0,)))


def sample_layout(c: Case, name: str, dt, n: int) -> None:
    x = c.param((3, n), dt)
    b = c.b
    if name == "reshape":
        c.results.append(b.reshape(x, shape=(n, 3)))
        c.results.append(b.reshape(x, shape=(3 * n,)))
        c.results.append(b.reshape(x, shape=(3, 1, n)))
        c.results.append(b.exp(b.reshape(b.mul(x, x), shape=(n, 3))))  # fused on both sides
    elif name == "permute":
        c.results.append(b.permute(x, perm=(1, 0)))
        c.results.append(b.permute(c.param((2, 3, n), dt), perm=(2, 0, 1)))
    elif name == "broadcast_to":
        c.results.append(b.broadcast_to(c.param((n,), dt), (4, n)))
        c.results.append(b.broadcast_to(c.param((3, 1), dt), (2, 3, n)))
        c.results.append(b.broadcast_to(c.param((), dt), (n,)))
    elif name == "slice":
        c.results.append(b.slice(x, starts=(1, 0), stops=(3, n), steps=(1, 2)))
        c.results.append(b.slice(x, starts=(0, n // 2), stops=(3, n), steps=(2, 1)))
        c.results.append(b.slice(x, starts=(0, 0), stops=(3, 0), steps=(1, 1)))
    elif name == "pad":
        c.results.append(b.pad(x, lo=(1, 2), hi=(0, 3), interior=(0, 0)))
        c.results.append(b.pad(x, lo=(0, 1), hi=(2, 0), interior=(1, 2)))
        c.results.append(b.pad(b.tanh(x), lo=(0, 0), hi=(1, 1), interior=(0, 1)))
    elif name == "window":
        c.results.append(b.emit("window", x, axis=1, size=min(2, n), stride=1, dilation=1))
        c.results.append(b.emit("window", x, axis=0, size=2, stride=1, dilation=1))
        c.results.append(b.exp(b.emit("window", x, axis=1, size=1, stride=2, dilation=1)))
        if n >= 5:
            c.results.append(b.emit("window", x, axis=1, size=2, stride=2, dilation=3))
    elif name == "unwindow":  # x read as (3 windows, n taps) and as (n windows... of 3 rows) with strides
        c.results.append(b.emit("unwindow", x, axis=0, size=n, stride=1, dilation=1, length=n + 2))
        c.results.append(b.emit("unwindow", x, axis=0, size=n, stride=2, dilation=1, length=n + 5))
        c.results.append(b.tanh(b.emit("unwindow", x, axis=0, size=n, stride=3, dilation=2, length=2 * n + 7)))
        w = b.emit("window", c.param((2, n + 3), dt), axis=1, size=3, stride=2, dilation=1)
        c.results.append(b.emit("unwindow", w, axis=1, size=3, stride=2, dilation=1, length=n + 3))


def sample_gather(c: Case, dt, n: int) -> None:
    x = c.param((3, n), dt)
    idx = c.param((3,), int64)
    c.args[-1] = c.rng.integers(0, n, size=3).astype(np.int64)
    c.results.append(c.b.gather(x, idx, axis=1))
    idx0 = c.param((n,), int64)
    c.args[-1] = c.rng.integers(0, 3, size=n).astype(np.int64)
    c.results.append(c.b.gather(c.b.exp(x), idx0, axis=0))


def sample_source(c: Case, name: str, dt, n: int) -> None:
    b = c.b
    if name == "iota":
        c.results.append(b.iota(shape=(3, n), axis=1))
        c.results.append(b.add(c.param((3, n), dt), b.cast(b.iota(shape=(3, n), axis=0), dtype=dt)))
    else:
        c.results.append(b.emit("const", value=1.5, shape=(3, n), dtype=dt))
        dense = c.rng.standard_normal((3, n))
        x = c.param((3, n), dt)
        c.results.append(b.mul(x, b.emit("const", value=dense, shape=(3, n), dtype=dt)))
        c.results.append(b.emit("const", value=np.arange(n) % 2 == 0, shape=(n,), dtype=bool_))


def sample_matmul(c: Case, dt, n: int) -> None:
    b = c.b
    for m, k in ((1, 5), (n, 3), (4, n)):
        x, y = c.param((m, k), dt), c.param((k, n), dt)
        c.results.append(b.matmul(x, y))
        xt, yt = c.param((k, m), dt), c.param((n, k), dt)
        c.results.append(b.matmul(b.permute(xt, perm=(1, 0)), y))
        c.results.append(b.matmul(x, b.permute(yt, perm=(1, 0))))
        c.results.append(b.matmul(b.permute(xt, perm=(1, 0)), b.permute(yt, perm=(1, 0))))
    c.results.append(b.matmul(c.param((2, 3, 4), dt), c.param((2, 4, n), dt)))  # batched
    c.results.append(b.tanh(b.matmul(b.exp(c.param((3, 4), dt)), c.param((4, n), dt))))  # fused operands


def sample_attention(c: Case, dt, n: int, grad: bool) -> None:
    """Fused attention on n queries and keys (n + 2 keys for one), causal and not; operands computed by fused
    nests; the backward from a forward result and a random cotangent."""
    b = c.b
    for causal, (tq, tk, d, dv) in ((False, (n, n + 2, 5, 3)), (True, (n, n, 8, 8)), (True, (n + 2, n, 3, 4))):
        q = b.tanh(c.param((2, tq, d), dt))
        k, v = c.param((2, tk, d), dt), c.param((2, tk, dv), dt)
        res = b.emit("attention", q, k, v, scale=0.7, causal=causal)
        if grad:
            g = c.param(res.shape, dt)
            c.results.append(b.emit("attention_grad", q, k, v, res, g, scale=0.7, causal=causal))
        else:
            c.results.append(res)


def sample_scan(c: Case, dt, n: int) -> None:
    """An RNN-like scan (consts, carry, xs, ys; the result used whole and in parts) and a reverse one."""
    from gradc.ir.scan import emit_scan
    b = c.b
    w = Value(TensorType((n, n), dt), name="w")
    h, x = Value(TensorType((2, n), dt), name="h"), Value(TensorType((2, n), dt), name="x")
    inner = Builder()
    new_h = inner.tanh(inner.add(inner.matmul(h, w), x))
    body = Function("body", [w, h, x], inner.ops, [new_h, inner.mul(new_h, x)])
    scale = c.param((n, n), dt)
    weights = b.mul(scale, b.scalar(0.3 / n, scale))
    for reverse in (False, True):
        carry, ys = emit_scan(b, body, [weights], [c.param((2, n), dt)], [c.param((3, 2, n), dt)], 3, reverse)
        c.results += carry + ys
    c.results.append(b.emit("scan", weights, c.param((2, n), dt), c.param((2, 2, n), dt), body=body,
                            num_consts=1, num_carry=1, length=2, reverse=False))  # the flat result itself


def build_sample(name: str, dt, n: int, c: Case) -> None:
    if name in UNARY_FLOAT:
        sample_unary(c, name, dt, n)
        if name in ("neg", "abs", "relu"):
            c.results.append(c.b.emit(name, c.param((n,), int64)))
    elif name in BINARY:
        sample_binary(c, name, dt, n)
    elif name == "compare":
        sample_compare(c, dt, n)
    elif name == "where":
        c.results.append(c.b.where(c.param((3, n), bool_), c.param((3, n), dt), c.param((3, n), dt)))
        c.results.append(c.b.where(c.param((n,), bool_), c.param((n,), int64), c.param((n,), int64)))
    elif name == "cast":
        sample_cast(c, dt, n)
    elif name in ("reduce_sum", "reduce_max"):
        sample_reduce(c, name, dt, n)
    elif name in ("reshape", "permute", "broadcast_to", "slice", "pad", "window", "unwindow"):
        sample_layout(c, name, dt, n)
    elif name == "gather":
        sample_gather(c, dt, n)
    elif name in ("iota", "const"):
        sample_source(c, name, dt, n)
    elif name == "matmul":
        sample_matmul(c, dt, n)
    elif name == "custom_vjp":  # native code computes its value operand
        x = c.param((3, n), dt)
        c.results.append(c.b.emit("custom_vjp", x, c.b.exp(x), rule=None))
    elif name == "scan":
        sample_scan(c, dt, n)
    elif name in ("attention", "attention_grad"):
        sample_attention(c, dt, n, name == "attention_grad")
    else:
        raise KeyError(name)


def covered(name: str) -> bool:
    try:
        build_sample(name, float32, 2, Case())
    except KeyError:
        return False
    return True


def test_every_op_has_a_sample():
    missing = [name for name in OPS if not covered(name)]
    assert not missing, f"ops without a native sample in tests/test_native_ops.py: {missing}"


def tolerance(name: str, dt) -> float:
    if dt == float64:
        return 1e-12
    return 4e-6 if name in TRANSCENDENTAL or name in ("reduce_sum", "matmul") else 1e-6


def assert_matches(got: np.ndarray, ref: np.ndarray, rtol: float, what: str) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, what
    if ref.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    scale = max(float(np.max(np.abs(ref[np.isfinite(ref)]), initial=0.0)), 1.0)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("dt", DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("name", sorted(OPS))
def test_native_equals_interpreter(name, dt):
    c = Case(seed=sum(map(ord, name)))
    for n in SIZES:
        build_sample(name, dt, n, c)
    fn = c.function()
    got = compile_function(fn)(*c.args)  # the full native path: lower, runtime entry, O3, JIT
    got = got if isinstance(got, tuple) else (got,)
    ref = interp.run(fn, *c.args)
    assert len(got) == len(ref) == len(fn.results)
    for i, (g, r) in enumerate(zip(got, ref)):
        assert_matches(g, r, tolerance(name, dt), f"{name} {dt.name} result {i}: {fn.results[i].type}")
