"""W9 "lstm-lm", defined ONCE: embedding 65 x 64, nn.LSTM(64, 128, num_layers=2, batch_first=True), Linear
128 -> 65, cross entropy over all positions, batch 32, T = 128 (first-call rows also at T = 32 and 512),
one whole Adam(lr 1e-3) step; engines gradc compile_step, torch eager (its native LSTM), torch.compile and
jax.jit (lax.scan). All engines start from one PyTorch-layout state_dict and are cross-checked against
torch eager in float64 (losses of the first steps) before anything is timed.

`W9` is the `gradc bench` row (a training workload whose engines are this file's ENGINES, checked like W7:
the step losses and each parameter's movement against torch eager in float64, as no hand-written numpy
LSTM backward exists); `python -m gradc.bench.lstm_lm [--T 128] [--first-call 32,512]` prints a table with
the first calls at other sequence lengths.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import numpy as np

from gradc.bench.train_step import BETAS, EPS, LR, TrainStep

VOCAB, EMBED, HIDDEN, LAYERS, BATCH, STEPS_T = 65, 64, 128, 2, 32, 128
CHECK_STEPS = 3
State = dict[str, np.ndarray]


def initial(T: int = STEPS_T, seed: int = 0) -> tuple[np.ndarray, np.ndarray, State]:
    """Token ids (B, T), next-token labels (B*T,), and PyTorch's default-initialized weights (float32)."""
    import torch

    torch.manual_seed(seed)
    model = _torch_model(torch)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, VOCAB, (BATCH, T))
    y = rng.integers(0, VOCAB, (BATCH * T,))
    return x, y, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _torch_model(torch: Any) -> Any:
    class LM(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, EMBED)
            self.lstm = torch.nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, VOCAB)

        def forward(self, idx: Any) -> Any:
            out, _ = self.lstm(self.emb(idx))
            return self.head(out).reshape(-1, VOCAB)
    return LM()


def gradc_step(x: np.ndarray, y: np.ndarray, state: State) -> TrainStep:
    """gradc.compile_step of the same module written with gradc.nn (compiled on the first call)."""
    import gradc
    import gradc.nn as nn

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(VOCAB, EMBED)
            self.lstm = nn.LSTM(EMBED, HIDDEN, num_layers=LAYERS, batch_first=True)
            self.head = nn.Linear(HIDDEN, VOCAB)

        def forward(self, idx: Any) -> Any:
            out, _ = self.lstm(self.emb(idx))
            return self.head(out).reshape(-1, VOCAB)
    model = LM()
    model.load_state_dict(state)
    step = gradc.compile_step(model, nn.CrossEntropyLoss(), gradc.optim.Adam(model.parameters(), lr=LR,
                                                                           betas=BETAS, eps=EPS))
    return TrainStep(lambda: step(x, y), model.state_dict)


def torch_step(x: np.ndarray, y: np.ndarray, state: State, compiled: bool = False,
               dtype: str = "float32") -> TrainStep:
    """PyTorch eager (its native LSTM kernels) or torch.compile of the model; the plain loop (eager_loop.py)."""
    import torch

    from gradc.bench.eager_loop import plain_step

    model = _torch_model(torch).to(getattr(torch, dtype))
    model.load_state_dict({k: torch.from_numpy(v.astype(dtype)) for k, v in state.items()})
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    loss_fn = torch.nn.CrossEntropyLoss()
    forward = torch.compile(model) if compiled else model
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    return TrainStep(plain_step(forward, loss_fn, opt, [tx], ty),
                     lambda: {k: v.detach().numpy() for k, v in model.state_dict().items()})


def gradc_eager_step(x: np.ndarray, y: np.ndarray, state: State) -> TrainStep:
    """gradc eager: the plain loop (eager_loop.plain_step) on the same model class built from gradc.nn."""
    import gradc
    from gradc.bench.eager_loop import load_state, numpy_state, plain_step, tensors

    model = _torch_model(gradc)
    load_state(gradc, model, state)
    opt = gradc.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    tx, ty = tensors(gradc, x, y)
    step = plain_step(model, gradc.nn.CrossEntropyLoss(), opt, [tx], ty)
    return TrainStep(step, lambda: numpy_state(model))


def jax_step(x: np.ndarray, y: np.ndarray, state: State) -> TrainStep:
    """jax.jit of the whole step, the LSTM layers as lax.scan over time (PyTorch's gate order i, f, g, o)."""
    import jax
    import jax.numpy as jnp

    beta1, beta2 = BETAS

    def lstm_layer(p: dict, layer: int, inputs: Any) -> Any:  # inputs (T, B, I)
        w_ih, w_hh = p[f"lstm.weight_ih_l{layer}"], p[f"lstm.weight_hh_l{layer}"]
        b = p[f"lstm.bias_ih_l{layer}"] + p[f"lstm.bias_hh_l{layer}"]
        xw = inputs @ w_ih.T + b  # hoisted input GEMM

        def cell(carry: tuple, g_x: Any) -> tuple:
            h, c = carry
            i, f, g, o = jnp.split(g_x + h @ w_hh.T, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h
        zeros = jnp.zeros((inputs.shape[1], HIDDEN), inputs.dtype)
        _, hs = jax.lax.scan(cell, (zeros, zeros), xw)
        return hs

    def loss(p: dict, idx: Any, labels: Any) -> Any:
        h = jnp.swapaxes(p["emb.weight"][idx], 0, 1)
        for layer in range(LAYERS):
            h = lstm_layer(p, layer, h)
        logits = (jnp.swapaxes(h, 0, 1) @ p["head.weight"].T + p["head.bias"]).reshape(-1, VOCAB)
        logp = jax.nn.log_softmax(logits, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def step(params: dict, m: dict, v: dict, t: Any, idx: Any, labels: Any) -> tuple:
        value, grads = jax.value_and_grad(loss)(params, idx, labels)
        t = t + 1
        m = {k: m[k] + (1 - beta1) * (grads[k] - m[k]) for k in params}
        v = {k: v[k] * beta2 + (1 - beta2) * grads[k] * grads[k] for k in params}
        step_size = LR / (1 - beta1 ** t)
        bc2 = jnp.sqrt(1 - beta2 ** t)
        params = {k: params[k] - step_size * m[k] / (jnp.sqrt(v[k]) / bc2 + EPS) for k in params}
        return params, m, v, t, value

    jitted = jax.jit(step, donate_argnums=(0, 1, 2, 3))
    current = [{k: jnp.asarray(a) for k, a in state.items()}, {k: jnp.zeros_like(a) for k, a in state.items()},
               {k: jnp.zeros_like(a) for k, a in state.items()}, jnp.asarray(0.0, dtype=jnp.float32)]
    jx, jy = jnp.asarray(x.astype(np.int32)), jnp.asarray(y.astype(np.int32))

    def run() -> Any:
        *new, value = jitted(*current, jx, jy)
        current[:] = new
        return value.block_until_ready()
    return TrainStep(run, lambda: {k: np.asarray(a) for k, a in current[0].items()})


ENGINES: dict[str, Callable[..., TrainStep]] = {
    "gradc-eager": gradc_eager_step,
    "gradc-native": gradc_step, "torch": torch_step,
    "torch-compile": lambda x, y, s: torch_step(x, y, s, compiled=True), "jax": jax_step}


def reference(T: int = STEPS_T, steps: int = CHECK_STEPS) -> tuple[list[float], State]:
    """Losses of the first `steps` steps and the parameters after them: torch eager in float64."""
    x, y, state = initial(T)
    step = torch_step(x, y, state, dtype="float64")
    losses = [float(step()) for _ in range(steps)]
    return losses, step.parameters()


def _gemms(T: int = STEPS_T) -> tuple:
    """Forward, input and weight gradients of every layer's GEMMs (PyTorch layout, W is out x in)."""
    from gradc.bench.workloads import Gemm
    rows, out, g = T * BATCH, [], 4 * HIDDEN
    for k in (EMBED,) + (HIDDEN,) * (LAYERS - 1):  # the hoisted input projections
        out += [Gemm(rows, k, g, "nt"), Gemm(g, rows, k, "tn"), Gemm(rows, g, k, "nn")]
    for _ in range(LAYERS):  # per step h @ W_hh^T and its input gradient; the weight gradient is hoisted
        out += [Gemm(BATCH, HIDDEN, g, "nt", T), Gemm(BATCH, g, HIDDEN, "nn", T), Gemm(g, rows, HIDDEN, "tn")]
    out += [Gemm(rows, HIDDEN, VOCAB, "nt"), Gemm(VOCAB, rows, HIDDEN, "tn"), Gemm(rows, VOCAB, HIDDEN, "nn")]
    return tuple(out)


def _workload() -> Any:
    from dataclasses import dataclass, field

    from gradc.bench.cnn_step import CnnTrainWorkload

    @dataclass(frozen=True)
    class LstmTrainWorkload(CnnTrainWorkload):
        """W9 for `gradc bench`: this file's engines, W7's movement check, torch float64 as the reference."""
        builders: dict = field(default_factory=lambda: ENGINES, compare=False, hash=False)

        def initial(self) -> tuple[np.ndarray, np.ndarray, State]:
            return initial()

        def reference(self) -> tuple[list[float], State]:
            return reference(steps=self.steps)

        def make(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
            x, y, state = initial()
            return [x, y], list(state.values())

        def ctypes_pointers(self) -> int:
            return 2 + 1 + 4 * len(initial(8)[2]) + 1 + 4 * len(initial(8)[2])
    return LstmTrainWorkload("W9", "lstm-lm", "loops (scan), recurrent GEMMs (whole Adam step)", _gemms(), CHECK_STEPS)


W9 = _workload()


def measure(T: int, engines: list[str], repeats: int = 10) -> dict[str, dict]:
    """Per engine: first-call seconds, the cross-check against torch float64, median/min step seconds."""
    x, y, state = initial(T)
    ref = torch_step(x, y, state, dtype="float64")
    ref_losses = [float(ref()) for _ in range(CHECK_STEPS)]
    rows = {}
    for name in engines:
        try:
            t0 = time.perf_counter()
            step = ENGINES[name](x, y, state)
            losses = [float(step())]
            first = time.perf_counter() - t0
            losses += [float(step()) for _ in range(CHECK_STEPS - 1)]
        except Exception as e:  # an engine that is not installed or fails: reported, not timed
            rows[name] = {"error": f"{type(e).__name__}: {e}"[:200]}
            continue
        ok = np.allclose(losses, ref_losses, rtol=1e-3)
        times = []
        for _ in range(repeats if ok else 0):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        rows[name] = {"first": first, "ok": ok, "losses": losses, "ref": ref_losses,
                      "median": statistics.median(times) if times else None, "min": min(times) if times else None}
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--T", type=int, default=STEPS_T)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--first-call", default="", help="comma list of T: gradc's first step at each T, each "
                        "in a new process with the disk cache off (compile time against sequence length)")
    parser.add_argument("--first-call-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_call_child:
        x, y, state = initial(args.first_call_child)
        t0 = time.perf_counter()
        step = gradc_step(x, y, state)
        step()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        step()
        print(f"FIRST {first:.4f} {time.perf_counter() - t0:.4f}")
        return
    if args.first_call:
        first_calls([int(t) for t in args.first_call.split(",")])
        return
    rows = measure(args.T, args.engines.split(","), args.repeats)
    fastest_peer = min((r["median"] for n, r in rows.items() if n != "gradc-native" and r.get("median")),
                       default=None)
    print(f"W9 lstm-lm T={args.T} batch {BATCH} (noisy: shared machine)")
    for name, r in rows.items():
        if "error" in r:
            print(f"  {name:14s} error: {r['error']}")
            continue
        ratio = f"{fastest_peer / r['median']:.2f}x fastest peer" if r["median"] and fastest_peer else ""
        med = f"{r['median'] * 1e3:9.1f} ms" if r["median"] else "  (check failed)"
        print(f"  {name:14s} first {r['first']:8.2f} s  median {med}  ok={r['ok']}  {ratio}")


def first_calls(lengths: list[int]) -> None:
    """Print gradc's first W9 step (trace + AD + compile + one step) per T, each in a fresh process."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, GRADC_CACHE="0")
    times = {}
    for T in lengths:
        out = subprocess.run([sys.executable, "-m", "gradc.bench.lstm_lm", "--first-call-child", str(T)], env=env,
                             capture_output=True, text=True, check=True).stdout
        times[T] = [float(t) for t in next(ln for ln in out.splitlines() if ln.startswith("FIRST")).split()[1:]]
    base, base_setup = times[lengths[0]][0], times[lengths[0]][0] - times[lengths[0]][1]
    for T, (first, again) in times.items():
        print(f"W9 gradc-native T={T:4d}: first step {first * 1e3:6.0f} ms ({first / base:.2f}x T={lengths[0]}), "
              f"second step {again * 1e3:5.0f} ms, first - second (trace + AD + compile) "
              f"{(first - again) * 1e3:6.0f} ms ({(first - again) / base_setup:.2f}x)")


if __name__ == "__main__":
    main()
