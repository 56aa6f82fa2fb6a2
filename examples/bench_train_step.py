"""W6 "train-step": one Adam training step of the W2 MLP (batch 64, 784 -> 256 ReLU -> 10, cross-entropy).

Steps per second of gradc.compile_step (forward, adjoint and Adam in one compiled call) against
PyTorch eager (zero_grad, forward, backward, step) and JAX jit of the whole step (Adam written with
jax.numpy, parameters and state donated). Engines that are not installed are skipped.

    python examples/bench_train_step.py [--repeats 7] [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import gradc
import gradc.nn as nn

BATCH, IN, HIDDEN, OUT, LR = 64, 784, 256, 10, 1e-3


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, IN)).astype(np.float32), rng.integers(0, OUT, BATCH)


def gradc_step(initial: dict) -> Callable[[], object]:
    model = nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT))
    model.load_state_dict(initial)
    step = gradc.compile_step(model, nn.CrossEntropyLoss(), gradc.optim.Adam(model.parameters(), lr=LR))
    x, y = data()
    return lambda: step(x, y)


def torch_step(initial: dict) -> Callable[[], object]:
    import torch
    model = torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, OUT))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in initial.items()})
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = (torch.from_numpy(a) for a in data())

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def jax_step(initial: dict) -> Callable[[], object]:
    import jax
    import jax.numpy as jnp
    b1, b2, eps = 0.9, 0.999, 1e-8

    def loss(params, x, y):
        h = jax.nn.relu(x @ params["0.weight"].T + params["0.bias"])
        logits = h @ params["2.weight"].T + params["2.bias"]
        logp = jax.nn.log_softmax(logits, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(params, m, v, t, x, y):
        value, grads = jax.value_and_grad(loss)(params, x, y)
        t = t + 1
        m = {k: m[k] + (1 - b1) * (grads[k] - m[k]) for k in params}
        v = {k: v[k] * b2 + (1 - b2) * grads[k] * grads[k] for k in params}
        step_size = LR / (1 - b1 ** t)
        bc2_sqrt = jnp.sqrt(1 - b2 ** t)
        params = {k: params[k] - step_size * m[k] / (jnp.sqrt(v[k]) / bc2_sqrt + eps) for k in params}
        return params, m, v, t, value

    jitted = jax.jit(step, donate_argnums=(0, 1, 2, 3))
    state = [{k: jnp.asarray(a) for k, a in initial.items()},
             {k: jnp.zeros_like(a) for k, a in initial.items()},
             {k: jnp.zeros_like(a) for k, a in initial.items()}, jnp.asarray(0.0, dtype=jnp.float32)]
    x, y = (jnp.asarray(a) for a in data())

    def run():
        *new, value = jitted(*state, x, y)
        state[:] = new
        return value.block_until_ready()
    return run


def measure(step: Callable[[], object], steps: int, repeats: int) -> float:
    for _ in range(20):  # warm up: compilation, caches, allocator
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    gradc.manual_seed(0)
    initial = nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)).state_dict()
    results = {}
    for name, make in (("gradc compile_step", gradc_step), ("torch eager", torch_step), ("jax jit", jax_step)):
        try:
            step = make(initial)
        except ImportError as e:
            print(f"{name:20s} skipped ({e})")
            continue
        results[name] = measure(step, args.steps, args.repeats)
        print(f"{name:20s} {results[name]:9.0f} steps/s  ({1e6 / results[name]:7.1f} us/step)")
    peers = {k: v for k, v in results.items() if not k.startswith("gradc")}
    if "gradc compile_step" in results and peers:
        best = max(peers, key=peers.get)
        print(f"gradc / fastest peer ({best}): {results['gradc compile_step'] / peers[best]:.2f}x")


if __name__ == "__main__":
    main()
