"""gradc.mlir: every registry op prints in upstream MLIR dialects; xDSL parses and verifies the text."""

import re

import numpy as np
import pytest

import gradc
from gradc import api
from gradc.bench.workloads import WORKLOADS
from gradc.ir.builder import Builder
from gradc.ir.core import TensorType, Value, bool_, float32, float64, int64
from gradc.ir.ops import OPS
from gradc.mlir import float_literal, to_mlir

F = TensorType((2, 3), float32)

# one use of each registry op on x: f32[2,3], y: f32[2,3], i: i64[2]
USES = {
    "neg": lambda b, x, y, i: b.neg(x), "exp": lambda b, x, y, i: b.exp(x), "log": lambda b, x, y, i: b.log(x),
    "tanh": lambda b, x, y, i: b.tanh(x), "sqrt": lambda b, x, y, i: b.sqrt(x),
    "recip": lambda b, x, y, i: b.recip(x), "sigmoid": lambda b, x, y, i: b.sigmoid(x),
    "relu": lambda b, x, y, i: b.relu(x), "abs": lambda b, x, y, i: b.abs(x),
    "stop_gradient": lambda b, x, y, i: b.stop_gradient(x),
    "sin": lambda b, x, y, i: b.sin(x), "cos": lambda b, x, y, i: b.cos(x), "erfc": lambda b, x, y, i: b.erfc(x),
    "custom_vjp": lambda b, x, y, i: b.exp(b.emit("custom_vjp", x, y, b.mul(x, y), rule=None)),
    "add": lambda b, x, y, i: b.add(x, y), "sub": lambda b, x, y, i: b.sub(x, y),
    "mul": lambda b, x, y, i: b.mul(x, y), "div": lambda b, x, y, i: b.div(x, y),
    "pow": lambda b, x, y, i: b.pow(x, y), "maximum": lambda b, x, y, i: b.maximum(x, y),
    "compare": lambda b, x, y, i: b.emit("compare", x, y, pred="ne"),
    "where": lambda b, x, y, i: b.where(b.emit("compare", x, y, pred="lt"), x, y),
    "cast": lambda b, x, y, i: b.cast(b.cast(x, dtype=float64), dtype=float32),
    "reduce_sum": lambda b, x, y, i: b.reduce_sum(x, axes=(1,)),
    "reduce_max": lambda b, x, y, i: b.reduce_max(x, axes=(0, 1)),
    "reshape": lambda b, x, y, i: b.reshape(x, shape=(3, 2)),
    "permute": lambda b, x, y, i: b.permute(x, perm=(1, 0)),
    "broadcast_to": lambda b, x, y, i: b.broadcast_to(b.reshape(b.reduce_sum(x, axes=(1,)), shape=(2, 1)),
                                                       shape=(4, 2, 3)),
    "slice": lambda b, x, y, i: b.slice(x, starts=(0, 1), stops=(2, 3), steps=(1, 2)),
    "pad": lambda b, x, y, i: b.pad(x, lo=(1, 0), hi=(0, 2), interior=(0, 1)),
    "window": lambda b, x, y, i: b.emit("window", x, axis=1, size=2, stride=1, dilation=1),
    "unwindow": lambda b, x, y, i: b.emit("unwindow", x, axis=0, size=3, stride=2, dilation=1, length=5),
    "gather": lambda b, x, y, i: b.gather(x, i, axis=1),
    "iota": lambda b, x, y, i: b.cast(b.iota(shape=(2, 3), axis=1), dtype=float32),
    "const": lambda b, x, y, i: b.constant(np.array([[1.0, np.inf, -np.inf], [np.nan, 0.5, -2.0]]), F),
    "matmul": lambda b, x, y, i: b.matmul(x, b.permute(y, perm=(1, 0))),
    "scan": lambda b, x, y, i: scan_use(b, x, y),
    "attention": lambda b, x, y, i: attention_use(b, x, y)[0],
    "attention_grad": lambda b, x, y, i: attention_use(b, x, y)[1],
}


def scan_use(b, x, y):
    """Scan the rows of x with a carry of one row (emitted unrolled)."""
    row = TensorType((3,), float32)
    c, r = Value(row, name="c"), Value(row, name="r")
    inner = Builder()
    body = inner.function("rows", [c, r], [inner.tanh(inner.add(c, r))])
    return b.emit("scan", b.reshape(b.slice(y, starts=(0, 0), stops=(1, 3), steps=(1, 1)), shape=(3,)), x,
                  body=body, num_consts=0, num_carry=1, length=2, reverse=False)


def attention_use(b, x, y):
    """(x as out of attention(q = x, k = y, v = y) with its lse, x of the three flat gradients)."""
    q, k = b.reshape(x, shape=(1, 2, 3)), b.reshape(y, shape=(1, 2, 3))
    res = b.emit("attention", q, k, k, scale=0.5, causal=True)
    grads = b.emit("attention_grad", q, k, k, res, res, scale=0.5, causal=True)
    return (b.reshape(b.slice(res, starts=(0,), stops=(6,), steps=(1,)), shape=(2, 3)),
            b.reshape(b.slice(grads, starts=(0,), stops=(6,), steps=(1,)), shape=(2, 3)))


def op_function(name):
    b = Builder()
    x, y, i = Value(F, name="x"), Value(F, name="y"), Value(TensorType((2,), int64), name="i")
    out = USES[name](b, x, y, i)
    return b.function(f"use_{name}", [x, y, i], [out])


def parse_with_xdsl(text):
    xdsl = pytest.importorskip("xdsl")  # noqa: F841
    from xdsl.context import Context
    from xdsl.dialects import arith, builtin, func, linalg, math, tensor
    from xdsl.parser import Parser

    ctx = Context()
    for dialect in (builtin.Builtin, func.Func, arith.Arith, math.Math, linalg.Linalg, tensor.Tensor):
        ctx.load_dialect(dialect)
    module = Parser(ctx, text).parse_module()
    module.verify()
    return module


def test_every_registry_op_has_a_use_here():
    assert set(OPS) <= set(USES), f"add a use of {sorted(set(OPS) - set(USES))} to USES"


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_prints_as_upstream_mlir(name):
    text = to_mlir(op_function(name))
    assert text.startswith(f"func.func @use_{name}(%x: tensor<2x3xf32>, %y: tensor<2x3xf32>, %i: tensor<2xi64>)")
    assert "func.return" in text and text.count("{") == text.count("}")
    dialects = set(re.findall(r"(?:^\s*|= )([a-z_]+)\.[a-z_]+", text, flags=re.M))
    assert "func" in dialects and dialects <= {"func", "arith", "math", "linalg", "tensor"}, dialects


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_parses_and_verifies_in_xdsl(name):
    parse_with_xdsl(to_mlir(op_function(name)))


def test_structured_ops_use_the_named_linalg_and_tensor_ops():
    expected = {"matmul": "linalg.matmul", "reduce_sum": "linalg.reduce", "broadcast_to": "linalg.broadcast",
                "permute": "linalg.transpose", "reshape": "tensor.reshape", "slice": "tensor.extract_slice",
                "pad": "tensor.insert_slice", "gather": "tensor.extract", "const": "arith.constant dense<",
                "tanh": "math.tanh", "add": "arith.addf", "compare": "arith.cmpf une"}
    for name, needle in expected.items():
        assert needle in to_mlir(op_function(name)), name
    assert "collapse_shape" in to_mlir(op_function("broadcast_to"))  # the size-1 dim is dropped first


def test_non_finite_constants_are_hexadecimal_bit_patterns():
    assert float_literal(np.inf, float32) == "0x7F800000"
    assert float_literal(-np.inf, float32) == "0xFF800000"
    assert float_literal(np.inf, float64) == "0x7FF0000000000000"
    assert float(float_literal(0.1, float32)) == pytest.approx(0.1, rel=1e-8)
    text = to_mlir(op_function("const"))
    assert "0x7F800000" in text and "inf" not in text.replace("0x7F800000", "")


def test_batched_matmul_is_a_generic_with_a_reduction_dimension():
    b = Builder()
    x, y = Value(TensorType((4, 2, 3), float32), name="x"), Value(TensorType((4, 3, 5), float32), name="y")
    fn = b.function("bmm", [x, y], [b.matmul(x, y)])
    text = to_mlir(fn)
    assert '"reduction"' in text and "arith.mulf" in text
    parse_with_xdsl(text)


@pytest.mark.parametrize("wid", ["W1", "W2", "W5"])
def test_workload_forward_and_joint_functions_parse_in_xdsl(wid):
    w = WORKLOADS[wid]
    previous = api.get_backend()
    api.set_backend("interp")
    try:
        spec = gradc.value_and_grad(w.bind(gradc), w.argnums()).lower(*w.arrays())
    finally:
        api.set_backend(previous)
    for fn in (spec.traced, spec.joint):
        module = parse_with_xdsl(to_mlir(fn))
        assert len(list(module.walk())) > len(fn.ops)


def test_bool_and_int_elementwise_ops_use_integer_arith():
    b = Builder()
    i = Value(TensorType((3,), int64), name="i")
    mask = b.emit("compare", i, b.constant(2, TensorType((3,), int64)), pred="lt")
    out = b.cast(b.add(b.maximum(i, b.neg(i)), b.cast(mask, dtype=int64)), dtype=float32)
    text = to_mlir(b.function("ints", [i], [out, mask]))
    for needle in ("arith.cmpi slt", "arith.maxsi", "arith.subi", "arith.addi", "arith.extui", "arith.sitofp"):
        assert needle in text
    assert "tensor<3xi1>" in text and bool_.short == "i1"
    parse_with_xdsl(text)
