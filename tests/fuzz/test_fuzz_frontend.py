"""Front-end differential fuzzing: one random program, written once against the PyTorch API, run by PyTorch
and by gradc (eager backward, and traced + natively compiled by value_and_grad).

The registry fuzzer (test_fuzz_graphs.py) builds IR directly; this one goes through what users call:
dtype promotion, implicit broadcasting, negative dims, keepdim, indexing, softmax/log_softmax, losses,
methods and operators. A program is generated on PyTorch (a step PyTorch refuses is dropped), so gradc
must accept every step PyTorch accepts and agree on values and float64 gradients.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradc
from fuzz.graphgen import Choices, HypothesisChoices
from fuzz.oracles import assert_close

torch = pytest.importorskip("torch")

PROGRAMS = max(1, int(os.environ.get("GRADC_FUZZ_EXAMPLES", "2000")) // 10)
SIZES = (1, 3, 7, 8, 9, 17)


def pos(m, x):
    return x * x + 0.5


def dim(ch: Choices, rank: int) -> int:
    return ch.integer(-rank, rank - 1)


# each step: name -> (arity, run(m, inputs, kwargs) -> tensor); kwargs come from step_kwargs
STEPS = {
    "exp": (1, lambda m, xs, kw: m.exp(m.tanh(xs[0]) * 3)),
    "tanh": (1, lambda m, xs, kw: m.tanh(xs[0])),
    "sigmoid": (1, lambda m, xs, kw: m.sigmoid(xs[0])),
    "relu": (1, lambda m, xs, kw: m.relu(xs[0])),
    "abs": (1, lambda m, xs, kw: m.abs(xs[0])),
    "neg": (1, lambda m, xs, kw: -xs[0]),
    "sqrt": (1, lambda m, xs, kw: m.sqrt(pos(m, xs[0]))),
    "log": (1, lambda m, xs, kw: m.log(pos(m, xs[0]))),
    "reciprocal": (1, lambda m, xs, kw: m.reciprocal(pos(m, xs[0]))),
    "scalar_ops": (1, lambda m, xs, kw: (2.5 - xs[0]) * 0.5 / 1.5 + 1),
    "clamp": (1, lambda m, xs, kw: m.clamp(xs[0], min=-0.5, max=0.75)),
    "add": (2, lambda m, xs, kw: xs[0] + xs[1]),
    "sub": (2, lambda m, xs, kw: xs[0] - xs[1]),
    "mul": (2, lambda m, xs, kw: xs[0] * xs[1]),
    "div": (2, lambda m, xs, kw: xs[0] / pos(m, xs[1])),
    "maximum": (2, lambda m, xs, kw: m.maximum(xs[0], xs[1])),
    "minimum": (2, lambda m, xs, kw: m.minimum(xs[0], xs[1])),
    "pow": (2, lambda m, xs, kw: m.pow(pos(m, xs[0]), m.tanh(xs[1]))),
    "where": (2, lambda m, xs, kw: m.where(xs[0] > xs[1], xs[0], xs[1] * 2)),
    "matmul": (2, lambda m, xs, kw: m.matmul(xs[0], xs[1])),
    "sum": (1, lambda m, xs, kw: xs[0].sum(dim=kw["dim"], keepdim=kw["keep"])),
    "mean": (1, lambda m, xs, kw: xs[0].mean(dim=kw["dim"], keepdim=kw["keep"])),
    "amax": (1, lambda m, xs, kw: m.amax(xs[0], dim=kw["dim"], keepdim=kw["keep"])),
    "max_dim": (1, lambda m, xs, kw: m.max(xs[0], kw["dim"]).values),
    "softmax": (1, lambda m, xs, kw: m.softmax(xs[0], dim=kw["dim"])),
    "log_softmax": (1, lambda m, xs, kw: m.log_softmax(xs[0], dim=kw["dim"])),
    "reshape": (1, lambda m, xs, kw: xs[0].reshape(-1)),
    "flatten": (1, lambda m, xs, kw: xs[0].flatten()),
    "permute": (1, lambda m, xs, kw: xs[0].permute(*kw["perm"])),
    "transpose": (1, lambda m, xs, kw: xs[0].transpose(kw["a"], kw["b"])),
    "unsqueeze": (1, lambda m, xs, kw: xs[0].unsqueeze(kw["dim"])),
    "squeeze": (1, lambda m, xs, kw: xs[0].squeeze()),
    "index": (1, lambda m, xs, kw: xs[0][kw["key"]]),
    "mse": (2, lambda m, xs, kw: m.nn.functional.mse_loss(xs[0], xs[1].detach())),
    "bce_logits": (2, lambda m, xs, kw: m.nn.functional.binary_cross_entropy_with_logits(
        xs[0], m.sigmoid(xs[1]).detach())),
    "cross_entropy": (1, lambda m, xs, kw: m.nn.functional.cross_entropy(xs[0], m.tensor(kw["labels"]))),
}


def step_kwargs(ch: Choices, name: str, shape: tuple[int, ...], rng: np.random.Generator) -> dict:
    r = len(shape)
    if name in ("sum", "mean", "amax", "max_dim", "softmax", "log_softmax", "unsqueeze"):
        if name == "unsqueeze":
            return {"dim": ch.integer(-r - 1, r)}
        if r == 0:
            return {"dim": 0, "keep": False} if name in ("softmax", "log_softmax") else None
        d = dim(ch, r)
        if name in ("sum", "mean", "amax") and ch.coin(0.3) and r >= 2:
            d = (d, (d + 1) % r - r) if (d % r) != ((d + 1) % r) else d
        return {"dim": d, "keep": ch.coin()}
    if name == "permute":
        perm = list(range(r))
        for i in range(r - 1, 0, -1):
            j = ch.integer(0, i)
            perm[i], perm[j] = perm[j], perm[i]
        return {"perm": perm}
    if name == "transpose":
        return {"a": dim(ch, r), "b": dim(ch, r)} if r else None
    if name == "index":
        if not r:
            return None
        key = []
        for d in shape[:ch.integer(1, r)]:
            way = ch.integer(0, 2)
            key.append(ch.integer(-d, d - 1) if way == 0 else slice(ch.integer(0, d - 1), None, ch.integer(1, 3))
                       if way == 1 else slice(None))
        return {"key": tuple(key)}
    if name == "cross_entropy":
        if r != 2:
            return None
        return {"labels": rng.integers(0, shape[1], size=shape[0])}
    return {}


def generate_program(ch: Choices):
    """Inputs (float64 arrays) and steps [(name, input indices, kwargs)], validated by running them on torch."""
    rng = np.random.default_rng(ch.integer(0, 2**31 - 1))
    inputs = []
    for _ in range(ch.integer(1, 3)):
        shape = tuple(ch.pick(SIZES) for _ in range(ch.integer(0, 3)))
        inputs.append(rng.standard_normal(shape))
    pool = [torch.tensor(a) for a in inputs]
    steps = []
    names = sorted(STEPS)
    for _ in range(ch.integer(1, 15)):
        name = ch.pick(names)
        arity, run = STEPS[name]
        idx = [ch.integer(0, len(pool) - 1) for _ in range(arity)]
        kw = step_kwargs(ch, name, tuple(pool[idx[0]].shape), rng)
        if kw is None or (name in ("mse", "bce_logits") and pool[idx[0]].shape != pool[idx[1]].shape):
            continue
        try:
            out = run(torch, [pool[i] for i in idx], kw)
        except (RuntimeError, IndexError, ValueError, TypeError):
            continue  # torch refuses: not a valid program step
        if out.numel() > 4096 or not torch.isfinite(out).all():
            continue
        pool.append(out)
        steps.append((name, idx, kw))
    weights = [rng.standard_normal(tuple(t.shape)) for t in pool]
    return inputs, steps, weights


def execute(m, xs, steps, weights):
    """Run the program with module m (torch or gradc) on tensors xs; returns (every value, the scalar loss)."""
    pool = list(xs)
    for name, idx, kw in steps:
        pool.append(STEPS[name][1](m, [pool[i] for i in idx], kw))
    loss = sum((t * m.tensor(w)).sum() for t, w in zip(pool, weights))
    return pool, loss


def torch_reference(inputs, steps, weights):
    xs = [torch.tensor(a, requires_grad=True) for a in inputs]
    pool, loss = execute(torch, xs, steps, weights)
    loss.backward()
    return [t.detach().numpy() for t in pool], loss.item(), [x.grad.numpy() for x in xs]


def gradc_eager(inputs, steps, weights):
    xs = [gradc.tensor(a, requires_grad=True) for a in inputs]
    pool, loss = execute(gradc, xs, steps, weights)
    loss.backward()
    grads = [x.grad.numpy() if x.grad is not None else np.zeros_like(a) for x, a in zip(xs, inputs)]
    return [t.detach().numpy() for t in pool], float(loss.item()), grads


def describe(steps) -> str:
    return "\n".join(f"  {name}{tuple(idx)} {kw}" for name, idx, kw in steps)


@settings(max_examples=PROGRAMS, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(st.data())
def test_gradc_eager_and_compiled_agree_with_torch_on_random_programs(data):
    inputs, steps, weights = generate_program(HypothesisChoices(data))
    values, loss, grads = torch_reference(inputs, steps, weights)
    where = f"program on inputs {[a.shape for a in inputs]}:\n{describe(steps)}"
    eager_values, eager_loss, eager_grads = gradc_eager(inputs, steps, weights)
    for i, (a, b) in enumerate(zip(eager_values, values)):
        assert_close(a, b, f"eager value {i}\n{where}")
    assert_close(eager_loss, loss, f"eager loss\n{where}")
    for i, (a, b) in enumerate(zip(eager_grads, grads)):
        assert_close(a, b, f"eager grad {i}\n{where}")
    compiled = gradc.value_and_grad(lambda *xs: execute(gradc, xs, steps, weights)[1],
                                    argnums=tuple(range(len(inputs))))
    value, native_grads = compiled(*inputs)
    assert_close(value, loss, f"native loss\n{where}")
    for i, (a, b) in enumerate(zip(native_grads, grads)):
        assert_close(a, b, f"native grad {i}\n{where}")
