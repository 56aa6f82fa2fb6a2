"""Tests generated from the op registry (`gradc.ir.ops.OPS`).

Every op must have a row in SAMPLES (a missing row FAILS), an eval rule, and a VJP rule unless it is
listed in NON_DIFFERENTIABLE. For every sample the shape rule must agree with the eval rule (in
float64, float32 and int64 where the rule accepts them), and for every differentiable op the full
Jacobian of its VJP (one basis cotangent per output element) must match float64 central differences.
Samples cover vector tails (1, 7, 8, 9, 17), a matrix (3, 4), broadcasting from (1, 4) and from
scalars (written with explicit broadcast_to, as the IR does), and stay away from kinks and ties,
which have dedicated tests at the end.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

from gradc.ir.builder import Builder
from gradc.ir.core import Function, ShapeError, TensorType, Value, dtype_of_numpy, float32, float64, int64
from gradc.ir.interp import run, run_values
from gradc.ir.ops import OPS
from gradc.ir.passes.ad import ad

# ops through which no gradient flows (vjp is None), each for a reason
NON_DIFFERENTIABLE = {
    "compare": "bool result",
    "iota": "no operands, int result",
    "const": "no operands",
    "stop_gradient": "blocks gradients by definition",
}

SHAPES = [(1,), (7,), (8,), (9,), (17,), (3, 4), ()]
# (shape of x, shape of y, broadcast x to, broadcast y to)
BINARY_LAYOUTS = [(s, s, None, None) for s in SHAPES] + [
    ((3, 4), (1, 4), None, (3, 4)), ((1, 4), (3, 4), (3, 4), None),
    ((7,), (), None, (7,)), ((), (3, 4), (3, 4), None), ((4,), (3, 4), (3, 4), None),
]


@dataclass
class Case:
    args: list[np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    bcast: tuple = ()  # per arg: a shape to broadcast_to before the op, or None
    eps: float = 1e-6

    def __str__(self) -> str:
        shapes = ",".join(str(list(a.shape)) for a in self.args)
        return f"({shapes}){self.attrs or ''}"


# ----------------------------------------------------------------------------- samplers

def normal(rng, shape):
    return rng.normal(size=shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, size=shape)


def away_from_zero(rng, shape):
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.2, 2.0, size=shape)


def distinct(rng, *shapes):
    """Arrays whose values are all different, at least 0.25 apart (no ties, even after broadcasting)."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    values = rng.permutation(sum(sizes)) * 0.25 - 0.125 * sum(sizes) + rng.uniform(-0.05, 0.05)
    parts = np.split(values, np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(parts, shapes)]


def unary(sample):
    return lambda rng: [Case([sample(rng, s)]) for s in SHAPES]


def binary(sample_x, sample_y):
    return lambda rng: [Case([sample_x(rng, sx), sample_y(rng, sy)], bcast=(bx, by))
                        for sx, sy, bx, by in BINARY_LAYOUTS]


def maximum_cases(rng):
    return [Case(distinct(rng, sx, sy), bcast=(bx, by)) for sx, sy, bx, by in BINARY_LAYOUTS]


def compare_cases(rng):
    preds = ["lt", "le", "gt", "ge", "eq", "ne"]
    cases = []
    for i, (sx, sy, bx, by) in enumerate(BINARY_LAYOUTS):
        x = rng.integers(-2, 3, size=sx).astype(np.float64)  # small integers: ties happen
        y = rng.integers(-2, 3, size=sy).astype(np.float64)
        cases.append(Case([x, y], {"pred": preds[i % len(preds)]}, (bx, by)))
    return cases


def where_cases(rng):
    cases = [Case([rng.random(s) < 0.5, normal(rng, s), normal(rng, s)]) for s in SHAPES]
    cases.append(Case([rng.random((1, 4)) < 0.5, normal(rng, (3, 4)), normal(rng, ())], bcast=((3, 4), None, (3, 4))))
    return cases


def grid(rng, shape, dtype=np.float64):
    """Multiples of 1/16: x +- 2**-8 is exact in float32, so differences of a cast are exact."""
    return (rng.integers(-32, 33, size=shape) / 16).astype(dtype)


def cast_cases(rng):
    return [Case([normal(rng, s)], {"dtype": float64}) for s in SHAPES] + [
        Case([grid(rng, (7,))], {"dtype": float32}, eps=2.0 ** -8),
        Case([grid(rng, (3, 4), np.float32)], {"dtype": float64}, eps=2.0 ** -8),
        Case([grid(rng, (9,))], {"dtype": int64}),
        Case([rng.integers(-5, 5, size=(8,))], {"dtype": float64}),
        Case([rng.random((17,)) < 0.5], {"dtype": float32}),
    ]


def reduce_cases(sample):
    layouts = [((7,), (0,)), ((1,), (0,)), ((17,), (0,)), ((3, 4), (0,)), ((3, 4), (1,)), ((3, 4), (0, 1)),
               ((3, 4), ()), ((), ()), ((2, 3, 4), (0, 2)), ((9, 8), (1,))]
    return lambda rng: [Case([sample(rng, s)], {"axes": a}) for s, a in layouts]


def reshape_cases(rng):
    layouts = [((3, 4), (4, 3)), ((3, 4), (12,)), ((17,), (17, 1)), ((1,), ()), ((), (1, 1)), ((8,), (2, 2, 2)),
               ((9,), (3, 3)), ((7,), (7,))]
    return [Case([normal(rng, s)], {"shape": t}) for s, t in layouts]


def permute_cases(rng):
    layouts = [((3, 4), (1, 0)), ((2, 3, 4), (2, 0, 1)), ((2, 3, 4), (1, 2, 0)), ((7,), (0,)), ((), ()),
               ((1, 4), (1, 0))]
    return [Case([normal(rng, s)], {"perm": p}) for s, p in layouts]


def broadcast_cases(rng):
    layouts = [((1, 4), (3, 4)), ((), (7,)), ((4,), (3, 4)), ((3, 1), (3, 4)), ((9,), (2, 9)), ((1,), (8,)),
               ((17,), (17,)), ((1, 1), (2, 3, 1))]
    return [Case([normal(rng, s)], {"shape": t}) for s, t in layouts]


def slice_cases(rng):
    layouts = [((17,), (1,), (15,), (3,)), ((3, 4), (0, 1), (3, 4), (2, 1)), ((8,), (0,), (8,), (1,)),
               ((1,), (0,), (1,), (1,)), ((9,), (2,), (9,), (2,)), ((7,), (3,), (3,), (1,)),
               ((2, 3, 4), (0, 1, 0), (2, 3, 4), (1, 1, 3))]
    return [Case([normal(rng, s)], {"starts": a, "stops": z, "steps": st}) for s, a, z, st in layouts]


def pad_cases(rng):
    layouts = [((7,), (1,), (2,), (1,)), ((3, 4), (0, 1), (1, 0), (1, 0)), ((1,), (0,), (0,), (0,)),
               ((8,), (2,), (0,), (0,)), ((9,), (0,), (3,), (2,)), ((), (), (), ()), ((17,), (1,), (1,), (0,))]
    return [Case([normal(rng, s)], {"lo": lo, "hi": hi, "interior": i}) for s, lo, hi, i in layouts]


def window_cases(rng):
    layouts = [((17,), 0, 3, 1, 1), ((9, 8), 1, 2, 3, 2), ((3, 9), 0, 1, 2, 1), ((2, 7, 3), 1, 3, 2, 3),
               ((8,), 0, 8, 1, 1), ((1,), 0, 1, 1, 1)]
    return [Case([normal(rng, s)], {"axis": a, "size": k, "stride": st, "dilation": d}) for s, a, k, st, d in layouts]


def unwindow_cases(rng):
    # (shape, axis, stride, dilation, extra): length = span + (O - 1) * stride + extra (a tail no window covers)
    layouts = [((15, 3), 0, 1, 1, 0), ((9, 4, 2), 1, 3, 2, 2), ((3, 5, 1), 1, 2, 1, 1), ((2, 3, 3, 3), 1, 2, 3, 1),
               ((1, 8), 0, 1, 1, 0), ((1, 1), 0, 1, 1, 0), ((7, 17, 2), 0, 1, 1, 0)]
    cases = []
    for s, a, st, d, extra in layouts:
        k = s[-1]
        length = (k - 1) * d + 1 + (s[a] - 1) * st + extra
        cases.append(Case([normal(rng, s)], {"axis": a, "size": k, "stride": st, "dilation": d, "length": length}))
    return cases


def gather_cases(rng):
    return [Case([normal(rng, (3, 4)), rng.integers(0, 4, size=(3,))], {"axis": 1}),
            Case([normal(rng, (3, 4)), rng.integers(0, 3, size=(4,))], {"axis": 0}),
            Case([normal(rng, (17,)), np.array(16)], {"axis": 0}),
            Case([normal(rng, (2, 3, 4)), rng.integers(0, 3, size=(2, 4))], {"axis": 1}),
            Case([normal(rng, (9, 1)), np.zeros(9, dtype=np.int64)], {"axis": 1})]


def iota_cases(rng):
    return [Case([], {"shape": s, "axis": a}) for s, a in [((3, 4), 0), ((3, 4), 1), ((7,), 0), ((1,), 0)]]


def const_cases(rng):
    return [Case([], {"value": 1.5, "shape": (3, 4), "dtype": float32}),
            Case([], {"value": normal(rng, (7,)), "shape": (7,), "dtype": float64}),
            Case([], {"value": True, "shape": (9,), "dtype": dtype_of_numpy(np.bool_)}),
            Case([], {"value": -3, "shape": (), "dtype": int64})]


def matmul_cases(rng):
    layouts = [((3, 4), (4, 5)), ((1, 7), (7, 1)), ((2, 3, 4), (2, 4, 2)), ((8, 9), (9, 1)), ((1, 1), (1, 17))]
    return [Case([normal(rng, a), normal(rng, b)]) for a, b in layouts]


class PassThroughRule:
    """A custom VJP consistent with custom_vjp's value (its last operand): the cotangent goes there."""

    def vjp(self, b, g, out, *xs):
        return (None,) * (len(xs) - 1) + (g,)

    def __repr__(self) -> str:
        return "pass_through"


def custom_vjp_cases(rng):
    layouts = [[(7,)], [(3, 4), (3, 4)], [(9,), (), (9,)], [(1,), (17,)], [(2, 3), (8,), (1,), (2, 3)]]
    return [Case([normal(rng, s) for s in shapes], {"rule": PassThroughRule()}) for shapes in layouts]


def scan_body(consts, carry, xs, step) -> Function:
    """A scan body over params of the given types: step(builder, consts, carry, x_t) -> (carry', ys)."""
    b = Builder()
    params = [Value(TensorType(s, float64), name=f"p{i}") for i, s in enumerate(consts + carry + xs)]
    k, c, x = params[:len(consts)], params[len(consts):len(consts) + len(carry)], params[len(consts) + len(carry):]
    new_carry, ys = step(b, k, c, x)
    return Function("body", params, b.ops, list(new_carry) + list(ys))


def scan_cases(rng):
    rnn = scan_body([(3, 3)], [(2, 3)], [(2, 3)], lambda b, k, c, x: (
        [b.tanh(b.add(x[0], b.matmul(c[0], k[0])))], [b.mul(c[0], c[0])]))
    tail = scan_body([], [(7,)], [(7,)], lambda b, k, c, x: ([b.add(b.tanh(b.mul(c[0], x[0])), x[0])], [c[0]]))
    no_xs = scan_body([(1,)], [(1,)], [], lambda b, k, c, x: ([b.add(b.mul(c[0], k[0]), k[0])], []))
    two = scan_body([], [(8,), (8,)], [(8,)], lambda b, k, c, x: (
        [b.mul(b.sigmoid(c[1]), x[0]), b.add(c[0], c[1])], []))
    attrs = lambda body, nc, nk, n, rev=False: {"body": body, "num_consts": nc, "num_carry": nk,  # noqa: E731
                                                 "length": n, "reverse": rev}
    return [Case([0.5 * normal(rng, (3, 3)), normal(rng, (2, 3)), normal(rng, (4, 2, 3))], attrs(rnn, 1, 1, 4)),
            Case([normal(rng, (7,)), 0.5 * normal(rng, (5, 7))], attrs(tail, 0, 1, 5, True)),
            Case([0.5 * normal(rng, (1,)), normal(rng, (1,))], attrs(no_xs, 1, 1, 3)),
            Case([normal(rng, (8,)), normal(rng, (8,)), normal(rng, (2, 8))], attrs(two, 0, 2, 2))]


ATTENTION_LAYOUTS = [((1, 3, 3, 2, 2), True), ((2, 1, 1, 1, 1), False), ((1, 2, 3, 2, 1), False),
                     ((1, 3, 2, 2, 2), True)]


def attention_cases(rng):
    """(N, Tq, Tk, D, Dv), causal; Tq != Tk both ways (top-left aligned causal mask)."""
    return [Case([normal(rng, (n, tq, d)), normal(rng, (n, tk, d)), normal(rng, (n, tk, dv))],
                 {"scale": 0.6, "causal": causal}) for (n, tq, tk, d, dv), causal in ATTENTION_LAYOUTS]


def attention_grad_cases(rng):
    cases = []
    for (n, tq, tk, d, dv), causal in ATTENTION_LAYOUTS:
        from gradc.ir.attention import eval_attention
        q, k, v = normal(rng, (n, tq, d)), normal(rng, (n, tk, d)), normal(rng, (n, tk, dv))
        res = eval_attention(q, k, v, 0.6, causal)  # a consistent (out, lse); the Jacobian treats it as free
        cases.append(Case([q, k, v, res, normal(rng, res.shape)], {"scale": 0.6, "causal": causal}))
    return cases


SAMPLES: dict[str, Callable[[np.random.Generator], list[Case]]] = {
    "attention": attention_cases, "attention_grad": attention_grad_cases,
    "sin": unary(normal), "cos": unary(normal), "erfc": unary(normal), "custom_vjp": custom_vjp_cases,
    "neg": unary(normal), "exp": unary(normal), "log": unary(positive), "tanh": unary(normal),
    "sqrt": unary(positive), "recip": unary(away_from_zero), "sigmoid": unary(normal),
    "relu": unary(away_from_zero), "abs": unary(away_from_zero), "stop_gradient": unary(normal),
    "add": binary(normal, normal), "sub": binary(normal, normal), "mul": binary(normal, normal),
    "div": binary(normal, away_from_zero), "pow": binary(positive, normal), "maximum": maximum_cases,
    "compare": compare_cases, "where": where_cases, "cast": cast_cases,
    "reduce_sum": reduce_cases(normal), "reduce_max": reduce_cases(lambda rng, s: distinct(rng, s)[0]),
    "reshape": reshape_cases, "permute": permute_cases, "broadcast_to": broadcast_cases,
    "slice": slice_cases, "pad": pad_cases, "window": window_cases, "unwindow": unwindow_cases,
    "gather": gather_cases, "iota": iota_cases,
    "const": const_cases, "matmul": matmul_cases, "scan": scan_cases,
}


# ----------------------------------------------------------------------------- helpers

def cases_for(name: str) -> list[Case]:
    assert name in SAMPLES, f"op {name!r} has no row in tests/test_registry.py SAMPLES: add sample inputs"
    return SAMPLES[name](np.random.default_rng(zlib.crc32(name.encode())))


def build(name: str, case: Case, args: list[np.ndarray]) -> Function:
    """A one-op Function (plus the broadcast_to ops that make its operands)."""
    b = Builder()
    params = [Value(TensorType(a.shape, dtype_of_numpy(a.dtype)), name=f"a{i}") for i, a in enumerate(args)]
    bcast = case.bcast or (None,) * len(args)
    operands = [b.broadcast_to(p, s) if s is not None else p for p, s in zip(params, bcast)]
    out = b.emit(name, *operands, **case.attrs)
    return Function(name, params, b.ops, [out])


def variants(args: list[np.ndarray]) -> dict[str, list[np.ndarray]]:
    """The sample as given, and with its float64 arrays as float32 and as int64."""
    def to(dtype):
        return [a.astype(dtype) if a.dtype == np.float64 else a for a in args]
    return {"given": args, "float32": to(np.float32), "int64": to(np.int64)}


def float_params(args: list[np.ndarray]) -> list[int]:
    return [i for i, a in enumerate(args) if a.dtype.kind == "f"]


ALL_OPS = sorted(OPS)


# ----------------------------------------------------------------------------- generated tests

@pytest.mark.parametrize("name", ALL_OPS)
def test_op_has_samples(name):
    assert name in SAMPLES, f"op {name!r} has no row in SAMPLES: add sample inputs for it"
    assert len(cases_for(name)) >= 4


@pytest.mark.parametrize("name", ALL_OPS)
def test_op_has_eval_and_vjp(name):
    opdef = OPS[name]
    assert callable(opdef.eval)
    assert callable(opdef.shape)
    if name in NON_DIFFERENTIABLE:
        assert opdef.vjp is None, f"{name} has a VJP rule but is listed as non-differentiable"
    else:
        assert callable(opdef.vjp), f"{name} has no VJP rule: write one or list it in NON_DIFFERENTIABLE"


def test_non_differentiable_list_names_real_ops():
    assert set(NON_DIFFERENTIABLE) <= set(OPS)


@pytest.mark.parametrize("name", ALL_OPS)
def test_shape_rule_agrees_with_eval(name):
    opdef = OPS[name]
    for case in cases_for(name):
        for label, args in variants(case.args).items():
            try:
                fn = build(name, case, args)
            except ShapeError:
                assert label != "given", f"{name}{case}: the shape rule rejects the sample itself"
                continue
            env = run_values(fn, args)
            op = fn.ops[-1]
            got = np.asarray(opdef.eval(*(env[v] for v in op.inputs), **op.attrs))
            expected = op.result.type
            assert got.shape == expected.shape, f"{name}{case} {label}: eval gives {got.shape}, rule {expected}"
            assert got.dtype == np.dtype(expected.dtype.numpy), \
                f"{name}{case} {label}: eval gives {got.dtype}, rule {expected}"


@pytest.mark.parametrize("name", sorted(set(OPS) - set(NON_DIFFERENTIABLE)))
def test_vjp_full_jacobian(name, jacobians):
    checked = 0
    for case in cases_for(name):
        fn = build(name, case, case.args)
        wrt = float_params(case.args)
        if not wrt:
            continue
        if not fn.results[0].dtype.is_float:  # e.g. cast to int: no gradient may flow
            joint = ad(fn, wrt=wrt)
            ct = np.zeros(fn.results[0].shape, fn.results[0].dtype.numpy)
            for g in run(joint, *case.args, ct)[1:]:
                assert not np.any(g), f"{name}{case}: gradient through an integer result"
            continue
        got = jacobians.ad(fn, case.args, wrt)
        want = jacobians.fd(fn, case.args, wrt, case.eps)
        for i, g, w in zip(wrt, got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{name}{case}: d/d input {i}")
        checked += 1
    assert checked >= 3, f"{name}: too few differentiable samples"


@pytest.mark.parametrize("name", sorted(n for n in NON_DIFFERENTIABLE if OPS[n].arity))
def test_non_differentiable_ops_give_zero_gradient(name):
    for case in cases_for(name):
        wrt = float_params(case.args)
        fn = build(name, case, case.args)
        if not wrt or not fn.results[0].dtype.is_float:
            continue
        joint = ad(fn, wrt=wrt)
        ct = np.ones(fn.results[0].shape, fn.results[0].dtype.numpy)
        for g in run(joint, *case.args, ct)[1:]:
            np.testing.assert_array_equal(g, 0)


@pytest.mark.parametrize("name", [n for n in ALL_OPS if OPS[n].arity == 2 and OPS[n].kind == "elementwise"])
def test_binary_shape_rule_rejects_mismatched_operands(name):
    b = Builder()
    x, y = Value(TensorType((3, 4), float64)), Value(TensorType((4,), float64))
    with pytest.raises(ShapeError, match=r"f64\[3,4\].*f64\[4\]"):
        b.emit(name, x, y, **({"pred": "lt"} if name == "compare" else {}))


# ----------------------------------------------------------------------------- PyTorch tie semantics

def grad_of(name: str, args: list[np.ndarray], ct: np.ndarray | None = None, **attrs) -> list[np.ndarray]:
    fn = build(name, Case(args, attrs), args)
    ct = np.ones(fn.results[0].shape) if ct is None else ct
    return run(ad(fn, wrt=float_params(args)), *args, ct)[1:]


def test_relu_derivative_at_zero_is_zero():
    (g,) = grad_of("relu", [np.array([-1.0, 0.0, -0.0, 2.0])])
    np.testing.assert_array_equal(g, [0, 0, 0, 1])


def test_abs_derivative_at_zero_is_zero():
    (g,) = grad_of("abs", [np.array([-1.5, 0.0, 3.0])])
    np.testing.assert_array_equal(g, [-1, 0, 1])


def test_maximum_ties_split_the_gradient():
    gx, gy = grad_of("maximum", [np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, -1.0])], np.array([2.0, 1, 1]))
    np.testing.assert_array_equal(gx, [1.0, 0, 1])
    np.testing.assert_array_equal(gy, [1.0, 1, 0])


def test_reduce_max_ties_share_equally():
    x = np.array([[1.0, 3.0, 3.0, 2.0], [5.0, 5.0, 5.0, 0.0]])
    (g,) = grad_of("reduce_max", [x], np.array([1.0, 3.0]), axes=(1,))
    np.testing.assert_array_equal(g, [[0, 0.5, 0.5, 0], [1, 1, 1, 0]])
    (g,) = grad_of("reduce_max", [x], np.array(6.0), axes=(0, 1))
    np.testing.assert_array_equal(g, [[0, 0, 0, 0], [2, 2, 2, 0]])


def test_tie_semantics_match_pytorch():
    torch = pytest.importorskip("torch")
    x = np.array([-1.0, 0.0, 0.0, 2.0, 2.0])
    y = np.array([0.0, 0.0, 1.0, 2.0, -3.0])
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.tensor(y, requires_grad=True)
    (torch.relu(tx).sum() + torch.abs(tx).sum() * 2 + torch.maximum(tx, ty).sum() * 3 + tx.amax() * 5).backward()
    b = Builder()
    px, py = Value(TensorType((5,), float64)), Value(TensorType((5,), float64))
    three, two, five = (b.constant(c, TensorType((), float64)) for c in (3.0, 2.0, 5.0))
    total = b.add(b.add(b.reduce_sum(b.relu(px), axes=(0,)), b.mul(b.reduce_sum(b.abs(px), axes=(0,)), two)),
                  b.add(b.mul(b.reduce_sum(b.maximum(px, py), axes=(0,)), three),
                        b.mul(b.reduce_max(px, axes=(0,)), five)))
    gx, gy = run(ad(Function("f", [px, py], b.ops, [total]), seed="ones"), x, y)[1:]
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(gy, ty.grad.numpy(), rtol=0, atol=1e-15)
