"""Graphs as long as an unrolled loop (10^4 ops): every pass, the printer/parser, the interpreter, native
lowering and the eager backward walk them without recursion (issue 13). The tests run under a low
recursion limit, so any walk that recurses along the dependency chain fails here."""

import sys

import numpy as np
import pytest

import gradc
from gradc.bench.workloads import rnn_reference
from gradc.ir.interp import run
from gradc.ir.parser import parse_function
from gradc.ir.passes import optimize
from gradc.ir.passes.ad import ad
from gradc.ir.printer import print_function
from gradc.ir.verify import verify

LIMIT = 400  # far below the chain lengths below; pytest, numpy and llvmlite need ~100 frames


@pytest.fixture
def low_recursion_limit():
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


def rnn_loss(xs, h0, wx, wh, b):
    h = h0
    for t in range(xs.shape[0]):
        h = gradc.tanh(xs[t] @ wx + h @ wh + b)
    return (h ** 2).mean()


def rnn_arrays(T, B=2, I=3, H=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((T, B, I)).astype(np.float32), np.zeros((B, H), np.float32),
            (rng.standard_normal((I, H)) * I ** -0.5).astype(np.float32),
            (rng.standard_normal((H, H)) * 0.9 * H ** -0.5).astype(np.float32),
            (rng.standard_normal(H) * 0.1).astype(np.float32)]


def test_unrolled_rnn_560_steps_compiles_natively(low_recursion_limit):
    args = rnn_arrays(560)
    f = gradc.value_and_grad(rnn_loss, argnums=(2, 3, 4))
    spec = f.lower(*args)
    assert len(spec.joint.ops) > 10_000
    value, grads = f(*args)
    ref_value, ref_grads = rnn_reference(*args)
    np.testing.assert_allclose(value, ref_value, rtol=1e-4)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-6)


def test_long_graph_passes_print_parse_interp(low_recursion_limit):
    args = rnn_arrays(560, seed=1)
    traced = gradc.trace(rnn_loss, *args)
    joint = optimize(ad(optimize(traced), [2, 3, 4], seed="ones"))
    assert len(joint.ops) > 10_000
    verify(joint)
    text = print_function(joint)
    parsed = parse_function(text)
    assert print_function(parsed) == text
    got = run(parsed, *args)
    ref_value, ref_grads = rnn_reference(*args)
    np.testing.assert_allclose(got[0], ref_value, rtol=1e-4)
    for g, r in zip(got[1:], ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-6)


def test_fused_chain_of_3000_elementwise_ops(low_recursion_limit):
    x = np.linspace(-1, 1, 17).astype(np.float64)

    def chain(x):
        y = x
        for i in range(1500):
            y = y * 0.999 + x * 1e-3
        return y.sum()
    value, g = gradc.value_and_grad(chain)(x)
    a, c = 0.999, 1e-3
    slope = a ** 1500 + c * (1 - a ** 1500) / (1 - a)  # y = slope * x
    np.testing.assert_allclose(value, slope * x.sum(), rtol=1e-10)
    np.testing.assert_allclose(g, np.full_like(x, slope), rtol=1e-10)


def test_eager_backward_through_a_long_chain(low_recursion_limit):
    w = gradc.tensor(np.full(7, 0.5), requires_grad=True)
    y = w
    for _ in range(3000):
        y = y * 1.0001 + w * 1e-4
    y.sum().backward()
    a, c = 1.0001, 1e-4
    slope = a ** 3000 + c * (a ** 3000 - 1) / (a - 1)
    np.testing.assert_allclose(w.grad.numpy(), np.full(7, slope), rtol=1e-9)
