"""Eager in-place fuzzing: random programs mixing out-of-place ops with add_/sub_/mul_/div_/zero_/fill_/copy_
on non-leaf (and non-grad) tensors, run by PyTorch and by gradc eager, then backward.

Guarantee tested: gradc never returns a wrong value or gradient. Where both run, values and float64
gradients agree; where gradc refuses, it raises PyTorch's RuntimeError ("... modified by an inplace
operation"). The two may differ in WHEN they refuse (known, see docs/RELIABILITY.md): gradc's division
VJP reads its result, so an in-place change of a quotient is refused where PyTorch (which saves the
operands) goes on; PyTorch's relu saves its result, gradc's reads its input and goes on.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradc
from fuzz.graphgen import Choices, HypothesisChoices

torch = pytest.importorskip("torch")

PROGRAMS = max(1, int(os.environ.get("GRADC_FUZZ_EXAMPLES", "2000")) // 5)
OPS = ["add", "mul", "sub", "div", "exp", "tanh", "sigmoid", "sqrt", "relu", "sum", "amax"]
INPLACE = ["add_", "mul_", "sub_", "div_", "zero_", "fill_", "copy_", "add_scalar", "mul_scalar"]
REFUSAL = "one of the variables needed for gradient computation has been modified by an inplace operation"


def generate(ch: Choices) -> tuple[list, list[int]]:
    """Steps ("op" | "inplace", name, i, j) over a pool that starts as a, b (requiring grad) and c."""
    steps, kinds = [], ["leaf", "leaf", "const"]
    for _ in range(ch.integer(1, 9)):
        i, j = ch.integer(0, len(kinds) - 1), ch.integer(0, len(kinds) - 1)
        if ch.coin(0.5):
            steps.append(("op", ch.pick(OPS), i, j))
            kinds.append("op")
        elif kinds[i] != "leaf":  # in place on a leaf requiring grad is refused by both (test_bad_input)
            steps.append(("inplace", ch.pick(INPLACE), i, j))
    outputs = sorted({ch.integer(0, len(kinds) - 1) for _ in range(ch.integer(1, 3))})
    return steps, outputs


def run(m, steps, outputs, seed: int):
    rng = np.random.default_rng(seed)
    a = m.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = m.tensor(rng.standard_normal(3), requires_grad=True)
    pool = [a, b, m.tensor(rng.standard_normal((2, 3)))]

    def pos(x):
        return x * x + 0.5

    for kind, name, i, j in steps:
        x, y = pool[i], pool[j]
        if kind == "op":
            pool.append({"add": lambda: x + y, "mul": lambda: x * y, "sub": lambda: x - y, "div": lambda: x / pos(y),
                         "exp": lambda: m.exp(m.tanh(x)), "tanh": lambda: m.tanh(x), "sigmoid": lambda: m.sigmoid(x),
                         "sqrt": lambda: m.sqrt(pos(x)), "relu": lambda: m.relu(x),
                         "sum": lambda: x.sum(0, keepdim=True), "amax": lambda: m.amax(x, -1, keepdim=True)}[name]())
            continue
        fits = np.broadcast_shapes(tuple(x.shape), tuple(y.shape)) == tuple(x.shape)
        {"add_": lambda: x.add_(y if fits else 1.5), "mul_": lambda: x.mul_(y if fits else 0.5),
         "sub_": lambda: x.sub_(y if fits else 2.0), "div_": lambda: x.div_(pos(y) if fits else 3.0),
         "zero_": lambda: x.zero_(), "fill_": lambda: x.fill_(0.25), "copy_": lambda: x.copy_(y if fits else x * 2),
         "add_scalar": lambda: x.add_(1.0), "mul_scalar": lambda: x.mul_(-2.0)}[name]()
    weights = np.random.default_rng(seed + 1)
    loss = sum((pool[o] * m.tensor(weights.standard_normal(tuple(pool[o].shape)))).sum() for o in outputs)
    values = [p.detach().numpy().copy() for p in pool]
    if not loss.requires_grad:
        return values, None
    loss.backward()
    return values, [None if t.grad is None else t.grad.numpy().copy() for t in (a, b)]


def outcome(m, steps, outputs, seed):
    try:
        return run(m, steps, outputs, seed)
    except RuntimeError as e:
        return str(e)


@settings(max_examples=PROGRAMS, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(st.data())
def test_inplace_programs_never_give_wrong_values_or_gradients(data):
    ch = HypothesisChoices(data)
    steps, outputs = generate(ch)
    seed = ch.integer(0, 2**31 - 1)
    want = outcome(torch, steps, outputs, seed)
    got = outcome(gradc, steps, outputs, seed)  # anything but RuntimeError propagates and fails
    where = f"steps {steps}, outputs {outputs}"
    if isinstance(got, str):
        assert got.startswith(REFUSAL), f"gradc raised {got!r}\n{where}"
        return
    if isinstance(want, str):
        return  # PyTorch refuses (e.g. relu's saved result changed); gradc's rule reads only what it has
    for i, (g, w) in enumerate(zip(got[0], want[0])):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=f"value {i}\n{where}")
    assert (got[1] is None) == (want[1] is None), where
    for i, (g, w) in enumerate(zip(got[1] or [], want[1] or [])):
        assert (g is None) == (w is None), f"grad {i} is None in one engine only\n{where}"
        if g is not None:
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=f"grad {i}\n{where}")
