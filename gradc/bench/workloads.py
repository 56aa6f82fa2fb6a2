"""The benchmark workloads W1..W5 (and W5S, W5 as a scan) of BENCHMARKS.md, each defined ONCE and shared by
every engine.

(W6 "train-step", a whole training step rather than a value-and-grad call, lives in train_step.py;
`select` and `by_id` cover all six.)

Each workload has
  * `loss(T, *data, *params)`: the model written PyTorch-style against a namespace `T` that provides
    `tanh`, `sigmoid`, `relu` and `nn.functional.{cross_entropy, binary_cross_entropy_with_logits}`;
    `T` is the `gradc` or `torch` module itself, or `numpy_namespace(jax.numpy)` / `numpy_namespace(
    autograd.numpy)` for the numpy-like engines. Arrays use `@`, `*`, `**`, `.sum()`, `.mean()`, `[t]`.
  * `reference(*data, *params) -> (loss, grads)`: a hand-written numpy forward + backward, exact in the
    dtype of its inputs (float32 for the "numpy" engine, float64 for the cross-check reference).
  * `make(seed) -> (data, params)`: float32 inputs (int64 labels) from a fixed seed.
  * `gemms`: the GEMMs of one forward + backward pass, for the BLAS limit.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

Arrays = list[np.ndarray]


@dataclass(frozen=True)
class Gemm:
    """One GEMM of the workload: C[m,n] = op(A) @ op(B); `trans` tells which operand is used transposed."""
    m: int
    k: int
    n: int
    trans: str = "nn"  # "nn", "tn" (A^T @ B) or "nt" (A @ B^T)
    count: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n * self.count


@dataclass(frozen=True)
class Workload:
    id: str
    name: str
    stresses: str
    loss: Callable[..., Any]  # loss(T, *data, *params)
    reference: Callable[..., tuple[Any, tuple]]  # hand-written forward + backward
    make_arrays: Callable[[np.random.Generator], tuple[Arrays, Arrays]]
    gemms: tuple[Gemm, ...] = ()
    seed: int = 0
    kind = "grad"  # a value-and-grad call; train_step.TrainWorkload is "train"

    def make(self) -> tuple[Arrays, Arrays]:
        """(data, params) as float32 arrays (int64 labels), always the same for a workload."""
        return self.make_arrays(np.random.default_rng(self.seed))

    def arrays(self) -> Arrays:
        data, params = self.make()
        return data + params

    def argnums(self) -> tuple[int, ...]:
        """Positions of the differentiated parameters (the trailing arguments of `loss`)."""
        n_args = len(inspect.signature(self.loss).parameters) - 1  # without the namespace T
        return tuple(range(n_args - len(self.param_names), n_args))

    @property
    def param_names(self) -> list[str]:
        return list(getattr(self.loss, "params"))

    def bind(self, T: Any) -> Callable[..., Any]:
        """loss with the namespace bound: a function of the arrays, keeping the parameter names."""
        loss = self.loss

        def bound(*args: Any) -> Any:
            return loss(T, *args)
        signature = inspect.signature(loss)
        bound.__name__ = loss.__name__
        bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        return bound

    def min_bytes(self) -> int:
        """Bytes any engine must move at least: read every input once, write the loss and each gradient."""
        data, params = self.make()
        return sum(a.nbytes for a in data + params) + 4 + sum(p.nbytes for p in params)

    def ctypes_pointers(self) -> int:
        """Pointer arguments of one native call: the inputs, the loss and each gradient."""
        data, params = self.make()
        return len(data) + 1 + 2 * len(params)


def params(*names: str) -> Callable:
    """Mark which trailing arguments of a loss are the differentiated parameters."""
    def mark(fn: Callable) -> Callable:
        fn.params = names
        return fn
    return mark


# ----------------------------------------------------------------------------- numpy-like namespaces

def numpy_namespace(np_module: Any, sigmoid: Callable | None = None, scan: Callable | None = None) -> Any:
    """A torch-like namespace over a numpy-like module (jax.numpy, autograd.numpy) for `loss(T, ...)`."""
    xp = np_module

    def log_softmax(z: Any) -> Any:
        shifted = z - xp.max(z, axis=-1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))

    def cross_entropy(z: Any, labels: Any) -> Any:
        return -xp.mean(log_softmax(z)[np.arange(z.shape[0]), labels])

    def bce_with_logits(z: Any, y: Any) -> Any:
        return xp.mean(xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z))))

    functional = types.SimpleNamespace(cross_entropy=cross_entropy, binary_cross_entropy_with_logits=bce_with_logits)
    return types.SimpleNamespace(
        tanh=xp.tanh,
        sigmoid=sigmoid or (lambda x: 0.5 * (xp.tanh(0.5 * x) + 1.0)),
        relu=lambda x: xp.maximum(x, 0.0),
        nn=types.SimpleNamespace(functional=functional),
        **({"scan": scan} if scan is not None else {}),
    )


# ----------------------------------------------------------------------------- numpy helpers

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _softmax_ce(z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy of logits z against integer labels, and its gradient wrt z."""
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    loss = np.mean(np.log(total[:, 0]) - shifted[rows, labels])
    dz = e / total
    dz[rows, labels] -= 1
    dz /= z.shape[0]
    return loss, dz


def _randn(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------------- W1 seed

@params("w", "b")
def seed(T, x, y, w, b):
    z = x @ w + b
    return T.nn.functional.binary_cross_entropy_with_logits(z, y)


def seed_reference(x, y, w, b):
    z = x @ w + b
    loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
    dz = (_sigmoid(z) - y) / z.size
    return loss, (np.outer(x, dz), dz)


def seed_arrays(rng):
    return [np.ones(5, np.float32), np.zeros(3, np.float32)], [_randn(rng, 5, 3), _randn(rng, 3)]


# ----------------------------------------------------------------------------- W2 mlp-small

@params("w1", "b1", "w2", "b2")
def mlp_small(T, x, labels, w1, b1, w2, b2):
    h = T.relu(x @ w1 + b1)
    return T.nn.functional.cross_entropy(h @ w2 + b2, labels)


def mlp_small_reference(x, labels, w1, b1, w2, b2):
    a = x @ w1 + b1
    h = np.maximum(a, 0)
    loss, dz = _softmax_ce(h @ w2 + b2, labels)
    dh = (dz @ w2.T) * (a > 0)
    return loss, (x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0))


def mlp_arrays(rng, batch, sizes):
    x = _randn(rng, batch, sizes[0])
    labels = rng.integers(0, sizes[-1], batch).astype(np.int64)
    weights = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        weights += [_randn(rng, fan_in, fan_out, scale=fan_in ** -0.5), _randn(rng, fan_out, scale=0.1)]
    return [x, labels], weights


def mlp_gemms(batch, sizes):
    """Forward x@W per layer, backward dW = x^T @ g per layer, dx = g @ W^T for every layer but the first."""
    out = []
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        out += [Gemm(batch, k, n, "nn"), Gemm(k, batch, n, "tn")]
        if i:
            out.append(Gemm(batch, n, k, "nt"))
    return tuple(out)


# ----------------------------------------------------------------------------- W3 pointwise-1M

N_POINTWISE = 1_000_000


@params("w", "b")
def pointwise(T, x, w, b):
    u = x * w
    return (T.tanh(u + b) * T.sigmoid(x) + 0.5 * u ** 2).sum() / x.shape[0]


def pointwise_reference(x, w, b):
    n = x.shape[0]
    u = x * w
    t = np.tanh(u + b)
    s = _sigmoid(x)
    loss = np.sum(t * s + 0.5 * u * u) / n
    gb = (1 - t * t) * s / n
    return loss, (gb * x + u * x / n, gb)


def pointwise_arrays(rng):
    return [_randn(rng, N_POINTWISE)], [_randn(rng, N_POINTWISE), _randn(rng, N_POINTWISE)]


# ----------------------------------------------------------------------------- W4 mlp-large

@params("w1", "b1", "w2", "b2", "w3", "b3")
def mlp_large(T, x, labels, w1, b1, w2, b2, w3, b3):
    h1 = T.tanh(x @ w1 + b1)
    h2 = T.tanh(h1 @ w2 + b2)
    return T.nn.functional.cross_entropy(h2 @ w3 + b3, labels)


def mlp_large_reference(x, labels, w1, b1, w2, b2, w3, b3):
    h1 = np.tanh(x @ w1 + b1)
    h2 = np.tanh(h1 @ w2 + b2)
    loss, dz = _softmax_ce(h2 @ w3 + b3, labels)
    d2 = (dz @ w3.T) * (1 - h2 * h2)
    d1 = (d2 @ w2.T) * (1 - h1 * h1)
    return loss, (x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ dz, dz.sum(0))


# ----------------------------------------------------------------------------- W5 rnn

RNN_STEPS, RNN_BATCH, RNN_IN, RNN_HIDDEN = 32, 16, 32, 64


@params("wx", "wh", "b")
def rnn(T, xs, h0, wx, wh, b):
    h = h0
    for t in range(xs.shape[0]):
        h = T.tanh(xs[t] @ wx + h @ wh + b)
    return (h ** 2).mean()


def _scan(T: Any) -> Callable:
    """T's scan (gradc.scan, jax.lax.scan), or for engines without one (torch, autograd) the Python loop
    that scan stands for, with the same contract: (carry, ys) from carry, y = f(carry, x)."""
    native = getattr(T, "scan", None)
    if native is not None:
        return native

    def loop(f: Callable, init: Any, xs: Any) -> tuple[Any, list]:
        carry, ys = init, []
        for t in range(xs.shape[0]):
            carry, y = f(carry, xs[t])
            ys.append(y)
        return carry, ys
    return loop


@params("wx", "wh", "b")
def rnn_scan(T, xs, h0, wx, wh, b):
    """W5 with the recurrence as a scan: one loop in the IR whatever the trip count."""
    def cell(h, x):
        return T.tanh(x @ wx + h @ wh + b), None
    h, _ = _scan(T)(cell, h0, xs)
    return (h ** 2).mean()


def rnn_reference(xs, h0, wx, wh, b):
    hs = [h0]
    for t in range(xs.shape[0]):
        hs.append(np.tanh(xs[t] @ wx + hs[-1] @ wh + b))
    h = hs[-1]
    loss = np.mean(h * h)
    dh = 2 * h / h.size
    gwx, gwh, gb = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
    for t in reversed(range(xs.shape[0])):
        da = dh * (1 - hs[t + 1] * hs[t + 1])
        gwx += xs[t].T @ da
        gwh += hs[t].T @ da
        gb += da.sum(0)
        dh = da @ wh.T
    return loss, (gwx, gwh, gb)


def rnn_arrays(rng):
    xs = _randn(rng, RNN_STEPS, RNN_BATCH, RNN_IN)
    h0 = np.zeros((RNN_BATCH, RNN_HIDDEN), np.float32)
    return [xs, h0], [_randn(rng, RNN_IN, RNN_HIDDEN, scale=RNN_IN ** -0.5),
                      _randn(rng, RNN_HIDDEN, RNN_HIDDEN, scale=0.9 * RNN_HIDDEN ** -0.5),
                      _randn(rng, RNN_HIDDEN, scale=0.1)]


RNN_GEMMS = (Gemm(RNN_BATCH, RNN_IN, RNN_HIDDEN, "nn", RNN_STEPS),  # x_t @ Wx
             Gemm(RNN_BATCH, RNN_HIDDEN, RNN_HIDDEN, "nn", RNN_STEPS),  # h @ Wh
             Gemm(RNN_IN, RNN_BATCH, RNN_HIDDEN, "tn", RNN_STEPS),  # dWx += x_t^T @ da
             Gemm(RNN_HIDDEN, RNN_BATCH, RNN_HIDDEN, "tn", RNN_STEPS),  # dWh += h^T @ da
             Gemm(RNN_BATCH, RNN_HIDDEN, RNN_HIDDEN, "nt", RNN_STEPS))  # dh = da @ Wh^T

# ----------------------------------------------------------------------------- the table

W2_SIZES, W4_SIZES = (784, 256, 10), (1024, 1024, 1024, 10)

WORKLOADS: dict[str, Workload] = {w.id: w for w in (
    Workload("W1", "seed", "per-call overhead", seed, seed_reference, seed_arrays, (Gemm(1, 5, 3),)),
    Workload("W2", "mlp-small", "small GEMMs + fusion", mlp_small, mlp_small_reference,
             lambda rng: mlp_arrays(rng, 64, W2_SIZES), mlp_gemms(64, W2_SIZES)),
    Workload("W3", "pointwise-1M", "memory bandwidth, one fused pass", pointwise, pointwise_reference,
             pointwise_arrays),
    Workload("W4", "mlp-large", "GEMM throughput", mlp_large, mlp_large_reference,
             lambda rng: mlp_arrays(rng, 256, W4_SIZES), mlp_gemms(256, W4_SIZES)),
    Workload("W5", "rnn", "many small ops", rnn, rnn_reference, rnn_arrays, RNN_GEMMS),
    Workload("W5S", "rnn-scan", "a loop in the IR: first call independent of T", rnn_scan, rnn_reference,
             rnn_arrays, RNN_GEMMS),
)}


def all_workloads() -> dict[str, Any]:
    """W1..W5 (value-and-grad Workloads) and W6 (train_step.TrainWorkload), by id."""
    from gradc.bench.cnn_step import W7, W7G  # W7 cnn-step (issue 11) and its value_and_grad row
    from gradc.bench.gpt_step import W8
    from gradc.bench.lstm_lm import W9
    from gradc.bench.train_step import W6  # imported here: train_step builds on this module

    return {**WORKLOADS, W6.id: W6, W7.id: W7, W7G.id: W7G, W8.id: W8, W9.id: W9}


def by_id(wid: str) -> Any:
    """A workload of either kind by id, or None."""
    return all_workloads().get(wid)


def select(spec: str | None) -> list[Any]:
    """Workloads from a comma list such as "W1,W6" (all six when empty); ValueError names an unknown id."""
    table = all_workloads()
    if not spec:
        return list(table.values())
    chosen = []
    for item in spec.split(","):
        key = item.strip().upper()
        if key not in table:
            raise ValueError(f"unknown workload {item.strip()!r}; choose from {', '.join(table)}")
        chosen.append(table[key])
    return chosen
