"""W6 "train-step", defined ONCE: one Adam step of the W2 MLP, its numpy reference, and each engine's step.

The model is W2's (batch 64, 784 -> 256 ReLU -> 10, mean cross-entropy) on W2's data and initial weights,
laid out as PyTorch's `Sequential(Linear, ReLU, Linear)` state_dict (`0.weight` is (256, 784), ...), so the
same arrays load into gradc, PyTorch and JAX. The optimizer is Adam(lr=1e-3) with PyTorch's formulas.

* `initial()` -> (x, labels, state): the data and the initial parameters (float32, a fresh copy each call);
* `reference(x, labels, state, steps)` -> (losses, state): hand-written numpy forward, backward and Adam in
  float64, the cross-check for every engine;
* `gradc_step`, `torch_step`, `gradc_eager_step`, `jax_step`: a `TrainStep` (call it for one step;
  `.parameters()` reads the current parameters back as numpy arrays) for gradc.compile_step, the plain eager
  loop (zero_grad, forward, backward, step; eager_loop.py) on PyTorch and on gradc, and jax.jit of the whole
  step (parameters and Adam state donated).

`gradc bench` (engines.py), benchmarks/test_train_step.py and examples/bench_train_step.py all use these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradc.bench.workloads import W2_SIZES, WORKLOADS, Gemm, _softmax_ce

LR, BETAS, EPS = 1e-3, (0.9, 0.999), 1e-8
NAMES = ("0.weight", "0.bias", "2.weight", "2.bias")
CHECK_STEPS = 5  # steps from the initial state before the cross-check (each engine's first call is step 1)

State = dict[str, np.ndarray]


class TrainStep:
    """One engine's training step: `step()` runs one step (returning the loss); `parameters()` reads them."""

    def __init__(self, step: Callable[[], Any], parameters: Callable[[], State]) -> None:
        self._step, self._parameters = step, parameters

    def __call__(self) -> Any:
        return self._step()

    def parameters(self) -> State:
        """The current parameters as float64 numpy copies, by state_dict name."""
        return {k: np.array(v, dtype=np.float64) for k, v in self._parameters().items()}


def initial() -> tuple[np.ndarray, np.ndarray, State]:
    """W2's batch and initial weights as a PyTorch-layout state_dict (float32; fresh arrays each call)."""
    (x, labels), (w1, b1, w2, b2) = WORKLOADS["W2"].make()
    state = {"0.weight": w1.T.copy(), "0.bias": b1, "2.weight": w2.T.copy(), "2.bias": b2}
    return x, labels, state


@dataclass(frozen=True)
class TrainWorkload:
    """A training-step workload: what `gradc bench` and its limits need, like a value-and-grad Workload."""
    id: str
    name: str
    stresses: str
    gemms: tuple[Gemm, ...]
    steps: int = CHECK_STEPS
    kind = "train"

    @property
    def step_engines(self) -> tuple[str, ...]:
        """The engines with a training step for this workload."""
        return tuple(STEPS)

    def initial(self) -> tuple[np.ndarray, np.ndarray, State]:
        return initial()

    def reference(self) -> tuple[list[float], State]:
        """Losses of the first `steps` steps and the parameters after them (float64)."""
        return reference(*initial(), self.steps)

    def make(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        x, labels, state = initial()
        return [x, labels], list(state.values())

    def min_bytes(self) -> int:
        """Read the batch, parameters and both Adam moments; write parameters, moments and the loss."""
        data, params = self.make()
        return sum(a.nbytes for a in data) + 6 * sum(p.nbytes for p in params) + 4

    def ctypes_pointers(self) -> int:
        """One compiled step: batch, lr, parameters and 3 Adam states each in; loss, parameters, states out."""
        return 2 + 1 + 4 * len(NAMES) + 1 + 4 * len(NAMES)

    def build(self, engine: Any, x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
        """This workload's step on `engine` (W6: the engine's own train_step; W7 overrides it)."""
        return engine.train_step(x, labels, state)


def _gemms(batch: int, sizes: tuple[int, ...]) -> tuple[Gemm, ...]:
    """PyTorch layout (W is out x in): x @ W^T per layer, dW = g^T @ x per layer, dx = g @ W but for the first."""
    out = []
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        out += [Gemm(batch, k, n, "nt"), Gemm(n, batch, k, "tn")]
        if i:
            out.append(Gemm(batch, n, k, "nn"))
    return tuple(out)


W6 = TrainWorkload("W6", "train-step", "forward, backward and Adam in one step", _gemms(64, W2_SIZES))


# ----------------------------------------------------------------------------- numpy reference

def loss_and_grads(x: np.ndarray, labels: np.ndarray, p: State) -> tuple[float, State]:
    """Forward and hand-written backward of the MLP with PyTorch-layout weights."""
    a = x @ p["0.weight"].T + p["0.bias"]
    h = np.maximum(a, 0)
    loss, dz = _softmax_ce(h @ p["2.weight"].T + p["2.bias"], labels)
    dh = (dz @ p["2.weight"]) * (a > 0)
    return float(loss), {"0.weight": dh.T @ x, "0.bias": dh.sum(0), "2.weight": dz.T @ h, "2.bias": dz.sum(0)}


def adam_reference(loss_and_grads: Callable[[State], tuple[float, State]], state: State, steps: int,
                   lr: float = 0.0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                   matrix_weight_decay: float = 0.0) -> tuple[list[float], State]:
    """Losses of `steps` Adam steps (PyTorch's bias correction; AdamW's decoupled decay of the >= 2-d
    parameters when matrix_weight_decay is set) and the final parameters, in float64."""
    p = {k: v.astype(np.float64) for k, v in state.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(a) for k, a in p.items()}
    (beta1, beta2), losses = betas, []
    for t in range(1, steps + 1):
        loss, grads = loss_and_grads(p)
        losses.append(loss)
        for k, g in grads.items():
            if matrix_weight_decay and p[k].ndim >= 2:
                p[k] = p[k] * (1 - lr * matrix_weight_decay)
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            p[k] = p[k] - (lr / (1 - beta1 ** t)) * m[k] / (np.sqrt(v[k]) / np.sqrt(1 - beta2 ** t) + eps)
    return losses, p


def reference(x: np.ndarray, labels: np.ndarray, state: State, steps: int) -> tuple[list[float], State]:
    """W2's Adam steps in float64."""
    x64 = x.astype(np.float64)
    return adam_reference(lambda p: loss_and_grads(x64, labels, p), state, steps, LR, BETAS, EPS)


# ----------------------------------------------------------------------------- engines

def gradc_step(x: np.ndarray, labels: np.ndarray, state: State, lr: float = LR) -> TrainStep:
    """gradc.compile_step: forward, adjoint and Adam fused into one native call (compiled on the first step)."""
    import gradc
    import gradc.nn as nn

    model = nn.Sequential(nn.Linear(x.shape[1], state["0.weight"].shape[0]), nn.ReLU(),
                          nn.Linear(state["2.weight"].shape[1], state["2.weight"].shape[0]))
    model.load_state_dict(state)
    step = gradc.compile_step(model, nn.CrossEntropyLoss(), gradc.optim.Adam(model.parameters(), lr=lr,
                                                                           betas=BETAS, eps=EPS))
    return TrainStep(lambda: step(x, labels), model.state_dict)


def eager_step(lib_name: str, x: np.ndarray, labels: np.ndarray, state: State, lr: float = LR) -> TrainStep:
    """The plain eager loop (eager_loop.plain_step: zero_grad, forward, backward, Adam step) on `lib_name`'s
    nn and optim ("torch": torch.optim's default Adam; "gradc": the same code under `import gradc as torch`)."""
    from gradc.bench.eager_loop import library, load_state, numpy_state, plain_step, tensors

    lib = library(lib_name)
    nn = lib.nn
    model = nn.Sequential(nn.Linear(x.shape[1], state["0.weight"].shape[0]), nn.ReLU(),
                          nn.Linear(state["2.weight"].shape[1], state["2.weight"].shape[0]))
    load_state(lib, model, state)
    opt = lib.optim.Adam(model.parameters(), lr=lr, betas=BETAS, eps=EPS)
    tx, ty = tensors(lib, x, labels)
    step = plain_step(model, nn.CrossEntropyLoss(), opt, [tx], ty)
    return TrainStep(step, lambda: numpy_state(model))


def torch_step(x: np.ndarray, labels: np.ndarray, state: State, lr: float = LR) -> TrainStep:
    """PyTorch eager: the plain loop on torch."""
    return eager_step("torch", x, labels, state, lr)


def torch_compile_step(x: np.ndarray, labels: np.ndarray, state: State, lr: float = LR) -> TrainStep:
    """torch.compile of the MLP's loss (inductor; backward by AOTAutograd), torch.optim's Adam eager: the
    usual way to compile a PyTorch training step (W7's torch-compile row does the same)."""
    import torch
    import torch.nn.functional as F

    names = ["0.weight", "0.bias", "2.weight", "2.bias"]
    params = [torch.from_numpy(state[k].copy()).requires_grad_(True) for k in names]
    opt = torch.optim.Adam(params, lr=lr, betas=BETAS, eps=EPS)
    tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
    compiled_loss = torch.compile(
        lambda x, y, w0, b0, w2, b2: F.cross_entropy(F.linear(F.relu(F.linear(x, w0, b0)), w2, b2), y),
        dynamic=False)

    def step() -> Any:
        opt.zero_grad()
        loss = compiled_loss(tx, ty, *params)
        loss.backward()
        opt.step()
        return loss.detach()
    return TrainStep(step, lambda: {k: p.detach().numpy() for k, p in zip(names, params)})


def gradc_eager_step(x: np.ndarray, labels: np.ndarray, state: State, lr: float = LR) -> TrainStep:
    """gradc eager: the identical plain loop on gradc (no compile_step)."""
    return eager_step("gradc", x, labels, state, lr)


def _mlp_loss(params: dict, x: Any, y: Any) -> Any:
    import jax
    import jax.numpy as jnp
    h = jax.nn.relu(x @ params["0.weight"].T + params["0.bias"])
    logp = jax.nn.log_softmax(h @ params["2.weight"].T + params["2.bias"], axis=1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def jax_step(x: np.ndarray, labels: np.ndarray, state: State, lr: float = LR,
             loss: Callable[[dict, Any, Any], Any] = _mlp_loss) -> TrainStep:
    """jax.jit of a whole Adam step of `loss(params, x, y)` (hand-written Adam in jax.numpy), parameters and
    state donated; waits for the result. W6's MLP by default; W7 passes its CNN's loss."""
    import jax
    import jax.numpy as jnp

    beta1, beta2 = BETAS

    def step(params: dict, m: dict, v: dict, t: Any, x: Any, y: Any) -> tuple:
        value, grads = jax.value_and_grad(loss)(params, x, y)
        t = t + 1
        m = {k: m[k] + (1 - beta1) * (grads[k] - m[k]) for k in params}
        v = {k: v[k] * beta2 + (1 - beta2) * grads[k] * grads[k] for k in params}
        step_size = lr / (1 - beta1 ** t)
        bc2_sqrt = jnp.sqrt(1 - beta2 ** t)
        params = {k: params[k] - step_size * m[k] / (jnp.sqrt(v[k]) / bc2_sqrt + EPS) for k in params}
        return params, m, v, t, value

    jitted = jax.jit(step, donate_argnums=(0, 1, 2, 3))
    current = [{k: jnp.asarray(a) for k, a in state.items()},
               {k: jnp.zeros_like(a) for k, a in state.items()},
               {k: jnp.zeros_like(a) for k, a in state.items()}, jnp.asarray(0.0, dtype=jnp.float32)]
    jx, jy = jnp.asarray(x), jnp.asarray(labels.astype(np.int32))

    def run() -> Any:
        *new, value = jitted(*current, jx, jy)
        current[:] = new
        return value.block_until_ready()
    return TrainStep(run, lambda: {k: np.asarray(a) for k, a in current[0].items()})


STEPS: dict[str, Callable[..., TrainStep]] = {"gradc-native": gradc_step, "gradc-eager": gradc_eager_step,
                                              "torch": torch_step, "torch-compile": torch_compile_step,
                                              "jax": jax_step}
