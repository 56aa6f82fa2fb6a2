"""IR text: golden files, print/parse round trips, parser errors, and the verifier.

Golden files live in tests/golden/*.ir. When a change of the output is intended, regenerate them with
`python -m pytest tests/test_ir_text.py --update-golden` (or GRADC_UPDATE_GOLDEN=1) and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import gradc
import gradc.nn.functional as F
from gradc.ir.builder import Builder
from gradc.ir.core import Function, IRError, TensorType, Value, bool_, float32, float64, int64
from gradc.ir.interp import run
from gradc.ir.ops import OPS
from gradc.ir.parser import parse_function, parse_module
from gradc.ir.passes import PASSES, optimize
from gradc.ir.passes.ad import ad
from gradc.ir.printer import print_function
from gradc.ir.verify import verify

GOLDEN = Path(__file__).parent / "golden"
rng = np.random.default_rng(1)


@pytest.fixture
def golden(request):
    update = request.config.getoption("--update-golden") or os.environ.get("GRADC_UPDATE_GOLDEN") == "1"

    def check(name: str, fn: Function) -> None:
        text = print_function(fn)
        path = GOLDEN / f"{name}.ir"
        if update:
            path.write_text(text)
            return
        assert path.exists(), f"no golden file {path}: run pytest with --update-golden to create it"
        assert text == path.read_text(), (f"IR of {name} differs from {path}; if intended, regenerate with "
                                          f"--update-golden (or GRADC_UPDATE_GOLDEN=1) and review the diff")
    return check


def tutorial(x, w, b, y):
    z = gradc.matmul(x, w) + b
    return F.binary_cross_entropy_with_logits(z, y)


def tutorial_args() -> list[np.ndarray]:
    return [rng.normal(size=5).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32),
            rng.normal(size=3).astype(np.float32), (rng.random(3) < 0.5).astype(np.float32)]


def traced() -> Function:
    return gradc.trace(tutorial, *tutorial_args())


def identities() -> Function:
    """One instance of each simplify rule (the golden output shows what each became)."""
    b = Builder()
    x, m = Value(TensorType((3, 4), float64), name="x"), Value(TensorType((4, 3), float64), name="m")
    zero, negzero, one = b.scalar(0.0, x), b.scalar(-0.0, x), b.scalar(1.0, x)
    a = b.add(b.mul(one, b.add(x, negzero)), b.div(b.sub(x, zero), one))
    a = b.add(a, b.add(x, zero))  # kept: -0.0 + 0.0 is +0.0
    a = b.add(a, b.neg(b.neg(b.pow(x, one))))
    a = b.add(a, b.mul(x, zero))  # kept: inf * 0 is nan
    a = b.add(a, b.cast(b.reshape(b.reshape(x, shape=(12,)), shape=(3, 4)), dtype=float64))
    a = b.add(a, b.permute(b.permute(x, perm=(1, 0)), perm=(1, 0)))
    a = b.add(a, b.permute(m, perm=(1, 0)))  # a real transpose: kept
    a = b.add(a, b.reshape(b.permute(b.reshape(x, shape=(3, 1, 4)), perm=(1, 0, 2)), shape=(3, 4)))
    a = b.add(a, b.stop_gradient(b.broadcast_to(b.reshape(b.reduce_sum(x, axes=(0, 1)), shape=(1, 1)), (3, 4))))
    folded = b.exp(b.add(b.scalar(1.0, x), b.scalar(2.0, x)))
    small = b.reduce_sum(b.constant(np.arange(12.0).reshape(3, 4), x.type), axes=(0,))
    a = b.add(b.add(a, folded), b.broadcast_to(small, (3, 4)))
    return Function("identities", [x, m], b.ops, [a])


def golden_functions() -> dict[str, Function]:
    fn = traced()
    grad = ad(fn, wrt=[1, 2])
    fns = {"tutorial_forward": fn, "tutorial_grad": grad}
    for name, p in sorted(PASSES.items()):
        fns[f"tutorial_grad_{name}"] = p(grad)
    fns["tutorial_grad_optimize"] = optimize(grad)
    fns["identities"] = identities()
    fns["identities_simplify"] = PASSES["simplify"](fns["identities"])
    fns["identities_optimize"] = optimize(fns["identities"])
    return fns


# ----------------------------------------------------------------------------- golden text

@pytest.mark.parametrize("name", list(golden_functions()))
def test_golden(name, golden):
    fn = golden_functions()[name]
    verify(fn)
    golden(name, fn)


def test_golden_functions_compute_the_same():
    fns = golden_functions()
    args = tutorial_args()
    assert len(fns["tutorial_grad_optimize"].ops) < len(fns["tutorial_grad_dce"].ops)
    forward = run(fns["tutorial_forward"], *args)[0]
    grad_results = run(fns["tutorial_grad"], *args, np.float32(1.0))
    np.testing.assert_array_equal(grad_results[0], forward)
    for name in fns:
        if name.startswith("tutorial_grad_"):
            for got, want in zip(run(fns[name], *args, np.float32(1.0)), grad_results):
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=name)
    x, m = rng.normal(size=(3, 4)), rng.normal(size=(4, 3))
    x[0, 0], x[1, 1] = np.inf, np.nan
    want = run(fns["identities"], x, m)[0]
    for name in ("identities_simplify", "identities_optimize"):
        np.testing.assert_allclose(run(fns[name], x, m)[0], want, rtol=1e-14, equal_nan=True, err_msg=name)


# ----------------------------------------------------------------------------- round trips

def golden_texts() -> list[Path]:
    return sorted(GOLDEN.glob("*.ir"))


@pytest.mark.parametrize("path", golden_texts(), ids=lambda p: p.stem)
def test_parse_print_round_trip_of_golden_files(path):
    text = path.read_text()
    fn = parse_function(text)
    verify(fn)
    assert print_function(fn) == text


@pytest.mark.parametrize("name", list(golden_functions()))
def test_print_parse_round_trip_keeps_semantics(name):
    fn = golden_functions()[name]
    parsed = parse_function(print_function(fn))
    assert print_function(parsed) == print_function(fn)
    args = [rng.normal(size=p.shape).astype(p.dtype.numpy) for p in fn.params]
    for got, want in zip(run(parsed, *args), run(fn, *args)):
        np.testing.assert_array_equal(got, want)


def test_handwritten_ir_uses_every_op_and_runs():
    fn = parse_function((GOLDEN / "handwritten.ir").read_text())
    opaque = {name for name, opdef in OPS.items() if opdef.kind == "call"}  # their rule attribute has no text
    assert {op.name for op in fn.ops} == set(OPS) - opaque, "add new ops to tests/golden/handwritten.ir"
    x = rng.uniform(0.5, 2, size=(3, 4))
    results = run(fn, x, rng.uniform(0.5, 2, size=4), np.array([0, 3, 1]), np.array([-1, 0, 5]))
    assert results[3].dtype == np.float32 and results[4].tolist() == [0, 1, 2]
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(results[5], results[1].T @ x @ results[1].T)


def test_free_form_names_comments_and_special_values():
    text = """
    // results may be named freely; printing renumbers them
    func @hand(%a: f64[2,3], %n: i64[2]) -> (f64[2], f64[2,3], i1[]) {
      %s = reduce_sum %a {axes = [1]} : f64[2]   // row sums
      %k = const {value = dense<[[1.5, -inf, nan], [0.0, -0.0, 1e-300]]>} : f64[2,3]
      %m = maximum %a, %k : f64[2,3]
      %t = const {value = true} : i1[]
      %c = cast %n {dtype = f64} : f64[2]
      %r = add %s, %c : f64[2]
      return %r, %m, %t
    }
    """
    fn = parse_function(text)
    verify(fn)
    a = rng.normal(size=(2, 3))
    r, m, t = run(fn, a, np.array([4, -2]))
    np.testing.assert_allclose(r, a.sum(1) + [4, -2])
    np.testing.assert_array_equal(m, np.maximum(a, [[1.5, -np.inf, np.nan], [0.0, -0.0, 1e-300]]))
    assert t.dtype == np.bool_ and t.item() is True
    printed = print_function(fn)
    assert "%0 = reduce_sum %a {axes = [1]} : f64[2]" in printed and "-inf, nan" in printed
    assert print_function(parse_function(printed)) == printed


def test_scalar_kinds_survive_the_round_trip():
    b = Builder()
    consts = [b.constant(v, TensorType((2,), d)) for v, d in
              [(1, int64), (1.0, float64), (-0.0, float64), (float("inf"), float32), (float("-inf"), float64),
               (float("nan"), float32), (1e-7, float64), (True, bool_), (1, float32)]]
    fn = Function("k", [], b.ops, consts)
    text = print_function(fn)
    for piece in ["{value = 1} : i64[2]", "{value = 1.0} : f64[2]", "{value = true} : i1[2]",
                  "{value = 1.0} : f32[2]", "{value = -0.0}", "{value = inf}",
                  "{value = -inf}", "{value = nan}", "{value = 1e-07}"]:
        assert piece in text
    parsed = parse_function(text)
    assert print_function(parsed) == text
    assert [type(op.attrs["value"]) for op in parsed.ops] == [type(op.attrs["value"]) for op in fn.ops]
    assert np.signbit(run(parsed)[2]).all()


def test_empty_function_round_trips():
    text = print_function(Function("nothing", [], [], []))
    assert text == "func @nothing() -> () {\n  return \n}\n"
    assert print_function(parse_function(text)) == text


def test_parse_module_reads_several_functions():
    texts = [(GOLDEN / "handwritten.ir").read_text(), print_function(identities())]
    fns = parse_module("\n".join(texts))
    assert [print_function(f) for f in fns] == texts


# ----------------------------------------------------------------------------- malformed text

HEADER = "func @f(%x: f32[3], %i: i64[3]) -> f32[3] {\n"
MALFORMED = [
    ("  %0 = frobnicate %x : f32[3]\n  return %0\n}", 2, "unknown op 'frobnicate'"),
    ("  %0 = exp %y : f32[3]\n  return %0\n}", 2, "undefined value %y"),
    ("  %0 = exp %x : f32[4]\n  return %0\n}", 2, r"declared as f32\[4\] but its shape rule gives f32\[3\]"),
    ("  %0 = exp %x : f64[3]\n  return %0\n}", 2, "shape rule gives f32"),
    ("  %0 = add %x, %i : f32[3]\n  return %0\n}", 2, r"operands of one type.*f32\[3\] and i64\[3\]"),
    ("  %0 = exp %x : f32[3]\n  %0 = neg %x : f32[3]\n  return %0\n}", 3, "defined twice"),
    ("  %x = exp %x : f32[3]\n  return %x\n}", 2, "defined twice"),
    ("  %0 = exp %x : f32[3]\n", 3, "expected 'return'"),
    ("  %0 = reduce_sum %x {axes = [1]} : f32[]\n  return %0\n}", 2, "axis 1 is out of range"),
    ("  %0 = reduce_sum %x : f32[]\n  return %0\n}", 2, "takes attributes"),
    ("  %0 = exp %x, %x : f32[3]\n  return %0\n}", 2, "takes 1 operands"),
    ("  %0 = exp %x : q8[3]\n  return %0\n}", 2, "unknown dtype 'q8'"),
    ("  %0 = const {value = dense<[1.0, [2.0]]>} : f32[2]\n  return %x\n}", 2, "rectangular"),
    ("  %0 = neg %x : f32[3]\n  return %i\n}", 3, "return types"),
    ("  return %x\n}\ngarbage", 4, "unexpected 'garbage'"),
    ("  %0 = exp %x : f32[3] ?\n  return %0\n}", 2, "unexpected character '\\?'"),
]


@pytest.mark.parametrize("body, line, message", MALFORMED, ids=[m[2][:30] for m in MALFORMED])
def test_malformed_ir_raises_with_line_number(body, line, message):
    with pytest.raises(IRError, match=rf"^line {line}: .*{message}"):
        parse_function(HEADER + body)


# ----------------------------------------------------------------------------- verifier

def small() -> Function:
    return parse_function("func @g(%x: f64[3,4]) -> f64[3] {\n  %0 = exp %x : f64[3,4]\n  %1 = neg %0 : f64[3,4]\n"
                          "  %2 = reduce_sum %1 {axes = [1]} : f64[3]\n  return %2\n}\n")


def broken_functions() -> list[tuple[str, Function, str]]:
    cases = []
    fn = small()
    fn.ops[0], fn.ops[1] = fn.ops[1], fn.ops[0]
    cases.append(("use before def", fn, r"op 0 \(neg\): operand 0 .* used before it is defined"))
    fn = small()
    fn.ops[1].result.type = TensorType((4, 3), float64)
    cases.append(("wrong type", fn, r"op 1 \(neg\): result type is f64\[4,3\] but the shape rule gives f64\[3,4\]"))
    fn = small()
    fn.ops[2].inputs = (fn.params[0],)
    fn.ops[2].attrs = {"axes": (2,)}
    cases.append(("rejected operands", fn, r"op 2 \(reduce_sum\): shape rule rejects the operands: axis 2"))
    fn = small()
    fn.ops[2].result.type = TensorType((3,), float32)
    cases.append(("wrong result type", fn, r"op 2 \(reduce_sum\): result type is f32\[3\] but the shape rule"))
    fn = small()
    fn.ops[0].result = fn.params[0]
    cases.append(("param redefined", fn, r"op 0 \(exp\): redefines a parameter"))
    fn = small()
    fn.ops.append(fn.ops[1])
    cases.append(("defined twice", fn, r"op 3 \(neg\): redefines a value"))
    fn = small()
    fn.results.append(Value(TensorType((3,), float64)))
    cases.append(("undefined result", fn, "result 1 .* not defined"))
    fn = small()
    fn.ops[2].attrs = {}
    cases.append(("missing attrs", fn, r"op 2 \(reduce_sum\): has attributes \[\], expected \['axes'\]"))
    fn = small()
    fn.ops[1].inputs = (fn.ops[0].result, fn.ops[0].result)
    cases.append(("arity", fn, r"op 1 \(neg\): takes 1 operands, has 2"))
    fn = small()
    fn.params.append(fn.params[0])
    cases.append(("duplicate param", fn, "parameter 1 appears twice"))
    return cases


@pytest.mark.parametrize("label", [c[0] for c in broken_functions()])
def test_verify_catches_broken_functions(label):
    _, fn, message = next(c for c in broken_functions() if c[0] == label)
    with pytest.raises(IRError, match=message):
        verify(fn)


def test_verify_accepts_valid_functions():
    for fn in [small(), *golden_functions().values()]:
        assert verify(fn) is None
