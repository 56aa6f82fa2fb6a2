"""The AD pass as a whole: fan-out, pruning, stop_gradient, multiple outputs, second derivatives."""

from __future__ import annotations

import numpy as np
import pytest

from gradc.ir.builder import Builder, inline
from gradc.ir.core import Function, TensorType, Value, float64, int64
from gradc.ir.interp import run
from gradc.ir.passes import optimize
from gradc.ir.passes.ad import ad
from gradc.ir.verify import verify

rng = np.random.default_rng(0)


def param(shape, name, dtype=float64) -> Value:
    return Value(TensorType(shape, dtype), name=name)


def total(b: Builder, x: Value) -> Value:
    return b.reduce_sum(x, axes=tuple(range(x.type.rank)))


def depends_on(fn: Function, roots: set[Value]) -> set[Value]:
    reached = set(roots)
    for op in fn.ops:
        if any(v in reached for v in op.inputs):
            reached.add(op.result)
    return reached


# ----------------------------------------------------------------------------- first order

def test_fan_out_sums_adjoints(jacobians):
    b = Builder()
    x = param((9,), "x")
    y = b.add(b.mul(x, x), b.mul(x, b.exp(x)))  # x is used four times
    fn = Function("f", [x], b.ops, [total(b, y)])
    joint = ad(fn, seed="ones")
    verify(joint)
    xs = rng.normal(size=9)
    (g,) = run(joint, xs)[1:]
    np.testing.assert_allclose(g, 2 * xs + np.exp(xs) * (1 + xs), rtol=1e-14)
    np.testing.assert_allclose(jacobians.ad(fn, [xs], [0])[0], jacobians.fd(fn, [xs], [0], 1e-6)[0], rtol=1e-6)


def test_vector_output_gives_vector_jacobian_products():
    b = Builder()
    x, w = param((3, 4), "x"), param((4, 2), "w")
    out = b.tanh(b.matmul(x, w))
    fn = Function("f", [x, w], b.ops, [out])
    xs, ws, ct = rng.normal(size=(3, 4)), rng.normal(size=(4, 2)), rng.normal(size=(3, 2))
    value, gx, gw = run(ad(fn, seed="param"), xs, ws, ct)
    d = ct * (1 - np.tanh(xs @ ws) ** 2)
    np.testing.assert_allclose(value, np.tanh(xs @ ws), rtol=1e-15)
    np.testing.assert_allclose(gx, d @ ws.T, rtol=1e-12)
    np.testing.assert_allclose(gw, xs.T @ d, rtol=1e-12)


def test_several_outputs_sum_their_cotangents():
    b = Builder()
    x = param((7,), "x")
    fn = Function("f", [x], b.ops, [b.exp(x), total(b, b.mul(x, x))])
    xs, c0, c1 = rng.normal(size=7), rng.normal(size=7), np.array(1.5)
    _, _, g = run(ad(fn), xs, c0, c1)
    np.testing.assert_allclose(g, c0 * np.exp(xs) + c1 * 2 * xs, rtol=1e-14)


def test_pruning_emits_nothing_for_inputs_not_differentiated():
    b = Builder()
    x, y = param((8,), "x"), param((8,), "y")
    branch = b.tanh(b.exp(x))
    fn = Function("f", [x, y], b.ops, [b.add(total(b, branch), total(b, b.mul(y, y)))])
    only_y = ad(fn, wrt=[1])
    verify(only_y)
    ct = only_y.params[-1]
    adjoint = depends_on(only_y, {ct})
    x_branch = {op.result for op in only_y.ops if op.name in ("exp", "tanh")}
    for op in only_y.ops:
        if op.result in adjoint:
            assert not x_branch & set(op.inputs), f"adjoint op {op.name} uses the x branch"
    assert len(only_y.ops) < len(ad(fn, wrt=[0, 1]).ops)
    xs, ys = rng.normal(size=8), rng.normal(size=8)
    np.testing.assert_allclose(run(only_y, xs, ys, 1.0)[1], 2 * ys, rtol=1e-15)


def test_integer_inputs_and_ops_are_not_differentiated():
    b = Builder()
    x, idx = param((3, 4), "x"), param((3,), "idx", int64)
    picked = b.gather(x, idx, axis=1)
    fn = Function("f", [x, idx], b.ops, [total(b, b.mul(picked, picked))])
    with pytest.raises(TypeError, match="parameter 1"):
        ad(fn)
    xs, ids = rng.normal(size=(3, 4)), np.array([3, 0, 3])
    _, g = run(ad(fn, wrt=[0], seed="ones"), xs, ids)
    want = np.zeros((3, 4))
    want[np.arange(3), ids] = 2 * xs[np.arange(3), ids]
    np.testing.assert_allclose(g, want, rtol=1e-15)


def test_stop_gradient_stops():
    b = Builder()
    x = param((7,), "x")
    fn = Function("f", [x], b.ops, [total(b, b.mul(x, b.stop_gradient(b.exp(x))))])
    xs = rng.normal(size=7)
    (g,) = run(ad(fn, seed="ones"), xs)[1:]
    np.testing.assert_allclose(g, np.exp(xs), rtol=1e-15)  # not exp(x) * (1 + x)
    b2 = Builder()
    x2 = param((7,), "x")
    blocked = Function("g", [x2], b2.ops, [total(b2, b2.stop_gradient(b2.exp(x2)))])
    joint = ad(blocked, seed="ones")
    np.testing.assert_array_equal(run(joint, xs)[1], 0)
    assert "exp" not in [op.name for op in joint.ops[len(blocked.ops):]]


def test_bad_arguments():
    b = Builder()
    x = param((2,), "x")
    fn = Function("f", [x], b.ops, [b.exp(x)])
    with pytest.raises(ValueError, match="seed"):
        ad(fn, seed="zeros")


# ----------------------------------------------------------------------------- second order

def gradient_dot(fn: Function, wrt: list[int]) -> Function:
    """(params..., v...) -> <grad f(params), v>, written as IR from ad(fn): differentiating it gives H v."""
    joint = ad(fn, wrt=wrt, seed="ones")
    b = Builder()
    params = [Value(p.type, name=p.name) for p in fn.params]
    vs = [Value(fn.params[i].type, name=f"v{i}") for i in wrt]
    grads = inline(b, joint, params)[1:]
    dot = total(b, b.mul(grads[0], vs[0]))
    for g, v in zip(grads[1:], vs[1:]):
        dot = b.add(dot, total(b, b.mul(g, v)))
    return Function("gdot", params + vs, b.ops, [dot])


def check_hvp(fn: Function, args: list[np.ndarray], wrt: list[int], eps: float = 1e-5) -> None:
    grad = ad(fn, wrt=wrt, seed="ones")
    second = ad(gradient_dot(fn, wrt), wrt=wrt, seed="ones")
    verify(second)
    for trial in range(3):
        vs = [rng.normal(size=args[i].shape) for i in wrt]
        hv = run(second, *args, *vs)[1:]
        plus, minus = list(args), list(args)
        for i, v in zip(wrt, vs):
            plus[i], minus[i] = args[i] + eps * v, args[i] - eps * v
        fd = [(a - m) / (2 * eps) for a, m in zip(run(grad, *plus)[1:], run(grad, *minus)[1:])]
        for h, f in zip(hv, fd):
            np.testing.assert_allclose(h, f, rtol=1e-6, atol=1e-7)
        optimized = run(optimize(second), *args, *vs)[1:]  # passes keep second-order IR correct
        for h, o in zip(hv, optimized):
            np.testing.assert_allclose(o, h, rtol=1e-12, atol=1e-14)


def test_hessian_vector_product_of_tanh_times_cube():
    b = Builder()
    x = param((9,), "x")
    cube = b.pow(x, b.scalar(3.0, x))
    fn = Function("f", [x], b.ops, [total(b, b.mul(b.tanh(x), cube))])
    xs = rng.uniform(0.3, 1.5, size=9)
    check_hvp(fn, [xs], [0])
    # the full Hessian is diagonal here: d2/dx2 tanh(x) x^3
    second = ad(gradient_dot(fn, [0]), wrt=[0], seed="ones")
    t = np.tanh(xs)
    d1, d2 = 1 - t ** 2, -2 * t * (1 - t ** 2)
    want = d2 * xs ** 3 + 2 * d1 * 3 * xs ** 2 + t * 6 * xs
    for k in range(9):
        e = np.zeros(9)
        e[k] = 1
        np.testing.assert_allclose(run(second, xs, e)[1], want * e, rtol=1e-12, atol=1e-14)


def test_hessian_vector_product_of_a_small_mlp():
    b = Builder()
    w1, b1, w2, xin = param((3, 5), "w1"), param((5,), "b1"), param((5, 2), "w2"), param((4, 3), "x")
    h = b.tanh(b.add(b.matmul(xin, w1), b.broadcast_to(b1, (4, 5))))
    logits = b.matmul(h, w2)
    loss = total(b, b.mul(b.sigmoid(logits), logits))
    fn = Function("mlp", [w1, b1, w2, xin], b.ops, [loss])
    args = [rng.normal(size=(3, 5)), rng.normal(size=5), rng.normal(size=(5, 2)), rng.normal(size=(4, 3))]
    check_hvp(fn, args, [0, 1, 2])


def test_ad_output_verifies_and_prints_after_two_rounds():
    b = Builder()
    x = param((3, 4), "x")
    row_max = b.broadcast_to(b.reshape(b.reduce_max(x, axes=(1,)), shape=(3, 1)), (3, 4))
    fn = Function("f", [x], b.ops, [total(b, b.maximum(b.exp(x), b.mul(row_max, x)))])
    first = ad(fn)
    second = ad(first, wrt=[0])
    for g in (first, second):
        verify(g)
        assert str(g).startswith(f"func @{g.name}(")
