"""W7 "cnn-step", defined ONCE: PyTorch's classic MNIST CNN, one whole Adam step; plus W7G, its value_and_grad.

Model (PyTorch's examples/mnist without dropout): conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, max_pool2d 2,
flatten, fc 9216->128, ReLU, fc 128->10, log_softmax, nll_loss; batch 64 of 1x28x28 float32; Adam(1e-3).
Parameters use PyTorch's state_dict names and layouts (`conv1.weight` is (32, 1, 3, 3)), so the same
arrays load into gradc, PyTorch and JAX. Engines: gradc.compile_step, torch eager, torch.compile (the
loss compiled, backward through AOTAutograd, torch.optim's Adam eager), jax.jit of a whole
step with a hand-written Adam; each checked first against a float64 numpy reference (im2col convolutions,
hand-written backward and Adam), like W6.

The GEMM limit counts the convolutions as their im2col GEMMs and the linears as theirs (forward, weight
gradients, input gradients but for the first conv), at the BLAS rate measured in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gradc.bench import train_step
from gradc.bench.train_step import BETAS, EPS, LR, TrainStep, TrainWorkload
from gradc.bench.workloads import Gemm, Workload, _softmax_ce

BATCH, SIDE = 64, 28
NAMES = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias", "fc2.weight",
         "fc2.bias")
SHAPES = {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,), "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
          "fc1.weight": (128, 9216), "fc1.bias": (128,), "fc2.weight": (10, 128), "fc2.bias": (10,)}
FAN_IN = {"conv1": 9, "conv2": 288, "fc1": 9216, "fc2": 128}

State = dict[str, np.ndarray]


def initial(seed: int = 7) -> tuple[np.ndarray, np.ndarray, State]:
    """The batch and PyTorch-default-distributed initial parameters (U(-1/sqrt(fan_in), +)), float32, fresh."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 1, SIDE, SIDE)).astype(np.float32)
    labels = rng.integers(0, 10, BATCH).astype(np.int64)
    state = {}
    for name in NAMES:
        bound = 1 / np.sqrt(FAN_IN[name.split(".")[0]])
        state[name] = rng.uniform(-bound, bound, SHAPES[name]).astype(np.float32)
    return x, labels, state


def _conv_gemms(n: int, side: int, cin: int, cout: int, k: int, first: bool) -> list[Gemm]:
    rows, depth = n * (side - k + 1) ** 2, cin * k * k
    out = [Gemm(rows, depth, cout, "nt"), Gemm(cout, rows, depth, "tn")]
    if not first:
        out.append(Gemm(rows, cout, depth, "nn"))
    return out


GEMMS = tuple(_conv_gemms(BATCH, 28, 1, 32, 3, True) + _conv_gemms(BATCH, 26, 32, 64, 3, False) + [
    Gemm(BATCH, 9216, 128, "nt"), Gemm(128, BATCH, 9216, "tn"), Gemm(BATCH, 128, 9216, "nn"),
    Gemm(BATCH, 128, 10, "nt"), Gemm(10, BATCH, 128, "tn"), Gemm(BATCH, 10, 128, "nn")])


# ----------------------------------------------------------------------------- numpy reference

def _im2col(x: np.ndarray, k: int) -> np.ndarray:
    """(N, C, H, W) -> (N, OH, OW, C*k*k) for a stride-1 valid convolution."""
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # (N, C, OH, OW, k, k)
    n, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n, oh, ow, c * k * k)


def _col2im(cols: np.ndarray, shape: tuple[int, ...], k: int) -> np.ndarray:
    n, c, h, w = shape
    oh, ow = h - k + 1, w - k + 1
    g = cols.reshape(n, oh, ow, c, k, k)
    out = np.zeros(shape, dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + oh, j:j + ow] += g[..., i, j].transpose(0, 3, 1, 2)
    return out


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cols = _im2col(x, w.shape[-1])
    n, oh, ow, depth = cols.shape
    y = cols.reshape(-1, depth) @ w.reshape(w.shape[0], -1).T + b  # one 2-D GEMM (numpy batches N-d matmuls)
    return y.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2), cols


def loss_and_grads(x: np.ndarray, labels: np.ndarray, p: State) -> tuple[float, State]:
    """Forward and hand-written backward of the CNN (max-pool gradient to each window's first maximum)."""
    z1, cols1 = _conv(x, p["conv1.weight"], p["conv1.bias"])
    a1 = np.maximum(z1, 0)
    z2, cols2 = _conv(a1, p["conv2.weight"], p["conv2.bias"])
    a2 = np.maximum(z2, 0)
    n, c, h, w = a2.shape
    win = a2.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // 2, w // 2, 4)
    first = win.argmax(-1)
    pooled = np.take_along_axis(win, first[..., None], -1)[..., 0]
    flat = pooled.reshape(n, -1)
    z3 = flat @ p["fc1.weight"].T + p["fc1.bias"]
    a3 = np.maximum(z3, 0)
    loss, dz4 = _softmax_ce(a3 @ p["fc2.weight"].T + p["fc2.bias"], labels)
    grads = {"fc2.weight": dz4.T @ a3, "fc2.bias": dz4.sum(0)}
    dz3 = (dz4 @ p["fc2.weight"]) * (z3 > 0)
    grads["fc1.weight"], grads["fc1.bias"] = dz3.T @ flat, dz3.sum(0)
    dpooled = (dz3 @ p["fc1.weight"]).reshape(pooled.shape)
    dwin = np.zeros_like(win)
    np.put_along_axis(dwin, first[..., None], dpooled[..., None], -1)
    da2 = dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(a2.shape)
    dz2 = (da2 * (z2 > 0)).transpose(0, 2, 3, 1)  # (N, OH, OW, Cout)
    grads["conv2.weight"] = (dz2.reshape(-1, 64).T @ cols2.reshape(-1, 288)).reshape(SHAPES["conv2.weight"])
    grads["conv2.bias"] = dz2.sum((0, 1, 2))
    da1 = _col2im((dz2.reshape(-1, 64) @ p["conv2.weight"].reshape(64, -1)).reshape(dz2.shape[:3] + (288,)),
                  a1.shape, 3)
    dz1 = (da1 * (z1 > 0)).transpose(0, 2, 3, 1)
    grads["conv1.weight"] = (dz1.reshape(-1, 32).T @ cols1.reshape(-1, 9)).reshape(SHAPES["conv1.weight"])
    grads["conv1.bias"] = dz1.sum((0, 1, 2))
    return float(loss), grads


def reference(x: np.ndarray, labels: np.ndarray, state: State, steps: int) -> tuple[list[float], State]:
    """W7's Adam steps in float64."""
    x64 = x.astype(np.float64)
    return train_step.adam_reference(lambda p: loss_and_grads(x64, labels, p), state, steps, LR, BETAS, EPS)


# ----------------------------------------------------------------------------- the model, once for gradc and torch

def net(lib: Any) -> Any:
    """PyTorch's MNIST example network against a torch-like module (gradc or torch)."""
    nn, F = lib.nn, lib.nn.functional

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, 1)
            self.conv2 = nn.Conv2d(32, 64, 3, 1)
            self.fc1 = nn.Linear(9216, 128)
            self.fc2 = nn.Linear(128, 10)

        def forward(self, x: Any) -> Any:
            x = F.relu(self.conv1(x))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = F.relu(self.fc1(lib.flatten(x, 1)))
            return F.log_softmax(self.fc2(x), dim=1)
    return Net()


def gradc_step(x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
    """gradc.compile_step: forward, adjoint and Adam in one native call (compiled on the first step)."""
    import gradc

    model = net(gradc)
    model.load_state_dict(state)
    step = gradc.compile_step(model, gradc.nn.functional.nll_loss,
                              gradc.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS))
    return TrainStep(lambda: step(x, labels), model.state_dict)


def torch_compile_step(x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
    """torch.compile of the loss (inductor; backward by AOTAutograd), torch.optim's Adam eager."""
    import torch

    model = net(torch)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    tx, ty = torch.from_numpy(x), torch.from_numpy(labels)
    # torch.compile (torch 2.13 CPU, inductor) returned all-zero conv gradients here when the inputs are
    # nn.Parameters (torch.compile(model), or the loss as a function of the parameters); plain leaf
    # tensors sharing the parameters' storage give the right ones, handed to torch.optim as .grad
    params = [dict(model.named_parameters())[k] for k in NAMES]
    leaves = [p.detach().requires_grad_(True) for p in params]
    compiled_loss = torch.compile(lambda x, y, *p: cnn_loss(torch, x, y, *p), dynamic=False)

    def step() -> Any:
        opt.zero_grad()
        loss = compiled_loss(tx, ty, *leaves)
        for p, g in zip(params, torch.autograd.grad(loss, leaves)):
            p.grad = g
        opt.step()
        return loss.detach()
    return TrainStep(step, lambda: {k: v.numpy() for k, v in model.state_dict().items()})


def eager_step(lib_name: str, x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
    """The plain eager loop (eager_loop.plain_step) with nll_loss and Adam on `lib_name` ("torch", "gradc")."""
    from gradc.bench.eager_loop import library, load_state, numpy_state, plain_step, tensors

    lib = library(lib_name)
    model = net(lib)
    load_state(lib, model, state)
    opt = lib.optim.Adam(model.parameters(), lr=LR, betas=BETAS, eps=EPS)
    tx, ty = tensors(lib, x, labels)
    step = plain_step(model, lib.nn.functional.nll_loss, opt, [tx], ty)
    return TrainStep(step, lambda: numpy_state(model))


def torch_step(x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
    """PyTorch eager (oneDNN convolutions): the plain loop on torch."""
    return eager_step("torch", x, labels, state)


def gradc_eager_step(x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
    """gradc eager: the identical plain loop on gradc (no compile_step)."""
    return eager_step("gradc", x, labels, state)


def jax_forward(params: dict, x: Any) -> Any:
    import jax
    from jax import lax

    def conv(x: Any, w: Any, b: Any) -> Any:
        y = lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]
    h = jax.nn.relu(conv(x, params["conv1.weight"], params["conv1.bias"]))
    h = jax.nn.relu(conv(h, params["conv2.weight"], params["conv2.bias"]))
    h = lax.reduce_window(h, -np.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
    h = jax.nn.relu(h.reshape(h.shape[0], -1) @ params["fc1.weight"].T + params["fc1.bias"])
    return jax.nn.log_softmax(h @ params["fc2.weight"].T + params["fc2.bias"], axis=1)


def jax_step(x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
    """jax.jit of a whole Adam step (W6's hand-written Adam on this CNN's loss), parameters and state donated."""
    import jax.numpy as jnp

    def loss(params: dict, x: Any, y: Any) -> Any:
        return -jnp.mean(jnp.take_along_axis(jax_forward(params, x), y[:, None], axis=1))
    return train_step.jax_step(x, labels, state, LR, loss)


STEPS: dict[str, Callable[..., TrainStep]] = {"gradc-native": gradc_step, "gradc-eager": gradc_eager_step,
                                              "torch": torch_step,
                                              "torch-compile": torch_compile_step, "jax": jax_step}


@dataclass(frozen=True)
class CnnTrainWorkload(TrainWorkload):
    """W7: a training step whose engines are this file's STEPS (not the engines' W6 train_step)."""
    builders: dict = field(default_factory=lambda: STEPS, compare=False, hash=False)

    @property
    def runs(self) -> tuple[str, ...]:
        return tuple(self.builders)

    def initial(self) -> tuple[np.ndarray, np.ndarray, State]:
        return initial()

    def reference(self) -> tuple[list[float], State]:
        return reference(*initial(), self.steps)

    def make(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        x, labels, state = initial()
        return [x, labels], list(state.values())

    def ctypes_pointers(self) -> int:
        return 2 + 1 + 4 * len(NAMES) + 1 + 4 * len(NAMES)

    def build(self, engine: Any, x: np.ndarray, labels: np.ndarray, state: State) -> TrainStep:
        return self.builders[engine.name](x, labels, state)

    def check(self, losses: list[float], parameters: State, reference: tuple[list[float], State],
              rtol: float = 1e-3) -> tuple[bool, float, str]:
        """Losses and each parameter's movement from the initial weights (runner.check_movement)."""
        from gradc.bench.runner import check_movement

        _, _, start = self.initial()  # (W9 reuses this check with its own initial weights)
        return check_movement(losses, parameters, reference, start, rtol)


W7 = CnnTrainWorkload("W7", "cnn-step", "convolution at the GEMM limit (whole Adam step)", GEMMS, 3)


# ----------------------------------------------------------------------------- W7G: value_and_grad only

def cnn_loss(T: Any, x: Any, labels: Any, w1: Any, b1: Any, w2: Any, b2: Any, w3: Any, b3: Any, w4: Any,
             b4: Any) -> Any:
    F = T.nn.functional
    h = T.relu(F.conv2d(x, w1, b1))
    h = F.max_pool2d(T.relu(F.conv2d(h, w2, b2)), 2)
    h = T.relu(T.flatten(h, 1) @ w3.t() + b3)
    return F.nll_loss(F.log_softmax(h @ w4.t() + b4, dim=1), labels)


cnn_loss.params = list(NAMES)  # type: ignore[attr-defined]


def cnn_reference(x: np.ndarray, labels: np.ndarray, *params: np.ndarray) -> tuple[Any, tuple]:
    loss, grads = loss_and_grads(x, labels, dict(zip(NAMES, params)))
    return np.asarray(loss, dtype=x.dtype), tuple(grads[k].astype(x.dtype) for k in NAMES)


def cnn_arrays(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    x, labels, state = initial()
    return [x, labels], [state[k] for k in NAMES]


@dataclass(frozen=True)
class CnnGradWorkload(Workload):
    """W7G: W7's loss and gradients of all parameters (gradc.value_and_grad, torch autograd, torch.compile)."""

    @property
    def runs(self) -> tuple[str, ...]:
        return ("gradc-native", "gradc-interp", "numpy", "torch", "torch-compile")


W7G = CnnGradWorkload("W7G", "cnn-grad", "W7's forward + backward only (value_and_grad)", cnn_loss, cnn_reference,
                      cnn_arrays, GEMMS)
