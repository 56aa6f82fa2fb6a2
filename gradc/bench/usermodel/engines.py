"""One training step of the user's model per engine, all from the same initial weights and batch.

Every engine offers:
* `step()`: one whole training step (forward, loss, backward, optimizer update), returning the loss as a float;
* `gradients()`: (loss, {parameter name: gradient}) of a fresh copy of the model at the initial weights, for
  the cross-check. The eager engines read `.grad` after `loss.backward()`; compile_step's engines compile the
  same traced forward and AD joint that `compile_step` fuses with its update, without the update.

Dropout is switched off (p = 0) for the cross-check only, since two frameworks draw different masks.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np

from gradc.bench.eager_loop import plain_step
from gradc.bench.usermodel import spec as specs
from gradc.bench.usermodel.loader import build_model

ENGINES = ("torch-eager", "torch-compile", "gradc-eager", "gradc-step", "gradc-interp")
FRAMEWORK = {"torch-eager": "torch", "torch-compile": "torch", "gradc-eager": "gradc", "gradc-step": "gradc",
             "gradc-interp": "gradc"}
DESCRIPTIONS = {
    "torch-eager": "PyTorch eager: zero_grad, forward, backward, step",
    "torch-compile": "torch.compile(model) (inductor forward, AOTAutograd backward), eager optimizer step",
    "gradc-eager": "the same plain loop run by gradc (import gradc as torch)",
    "gradc-step": "gradc.compile_step: forward, backward and update in one native call",
    "gradc-interp": "gradc.compile_step on gradc's reference interpreter",
}


def unavailable(engine: str) -> str | None:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if FRAMEWORK[engine] == "torch" and importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install -e \".[compare]\")"
    if engine == "torch-compile":
        import shutil
        if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("g++")):
            return "torch.compile needs a C++ compiler on PATH"
    return None


def _dropout_off(model: Any) -> None:
    for m in model.modules():
        if type(m).__name__.startswith("Dropout") and hasattr(m, "p"):
            m.p = 0.0


def load_weights(model: Any, state: dict[str, np.ndarray], framework: str) -> None:
    if framework == "torch":
        import torch
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()})
    else:
        model.load_state_dict({k: v.copy() for k, v in state.items()})


class EngineStep:
    """A built engine: `step()` and `parameters()`; see the module docstring."""

    def __init__(self, step: Callable[[], float], model: Any) -> None:
        self.step, self.model = step, model

    def parameters(self) -> dict[str, np.ndarray]:
        return {k: np.array(v.detach().numpy() if hasattr(v, "detach") else v, dtype=np.float64)
                for k, v in self.model.state_dict().items()}


def _tensors(framework: str, inputs: list[np.ndarray], target: np.ndarray) -> tuple[list[Any], Any]:
    fw = importlib.import_module(framework)
    return [fw.from_numpy(x.copy()) for x in inputs], fw.from_numpy(target.copy())


def build(engine: str, spec: specs.BenchSpec, state: dict[str, np.ndarray], inputs: list[np.ndarray],
          target: np.ndarray) -> EngineStep:
    """The engine's training step from the initial weights `state` on this batch (not run yet)."""
    framework = FRAMEWORK[engine]
    path, name = spec.model.rpartition(":")[::2]
    if engine == "gradc-interp":
        from gradc import api
        api.set_backend("interp")
    model, _ = build_model(path, name, framework, spec.seed)
    load_weights(model, state, framework)
    model.train()
    loss_fn = specs.loss_function(spec, framework)
    opt = specs.optimizer(spec, framework, model.parameters())
    xs, y = _tensors(framework, inputs, target)
    if engine in ("gradc-step", "gradc-interp"):
        import gradc
        if len(inputs) != 1:
            raise ValueError("gradc.compile_step takes one input tensor; this model takes "
                             f"{len(inputs)}")
        compiled = gradc.compile_step(model, loss_fn, opt)
        x0, t0 = inputs[0].copy(), target.copy()
        return EngineStep(lambda: float(compiled(x0, t0)), model)
    forward = model
    if engine == "torch-compile":
        import torch
        forward = torch.compile(model, dynamic=False)

    return EngineStep(plain_step(forward, loss_fn, opt, xs, y), model)  # the loop `gradc bench` W6-W9 times


def gradients(engine: str, spec: specs.BenchSpec, state: dict[str, np.ndarray], inputs: list[np.ndarray],
              target: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """(loss, gradients by parameter name) at the initial weights, dropout off."""
    framework = FRAMEWORK[engine]
    path, name = spec.model.rpartition(":")[::2]
    model, _ = build_model(path, name, framework, spec.seed)
    load_weights(model, state, framework)
    model.train()
    _dropout_off(model)
    loss_fn = specs.loss_function(spec, framework)
    if engine in ("gradc-step", "gradc-interp"):
        return _compiled_gradients(model, loss_fn, inputs, target)
    forward = model
    if engine == "torch-compile":
        import torch
        forward = torch.compile(model, dynamic=False)
    xs, y = _tensors(framework, inputs, target)
    loss = loss_fn(forward(*xs), y)
    loss.backward()
    grads = {n: np.array(p.grad.numpy(), np.float64) for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.item()), grads


def _compiled_gradients(model: Any, loss_fn: Any, inputs: list[np.ndarray],
                        target: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """compile_step's own forward trace and AD joint, compiled on the current backend, without the update."""
    import gradc
    from gradc.api import compile_function_or_interp, optimize
    from gradc.ir.core import TensorType, dtype_of_numpy
    from gradc.ir.passes.ad import ad
    from gradc.nn.ops import noise_arrays

    if len(inputs) != 1:
        raise ValueError(f"gradc.compile_step takes one input tensor; this model takes {len(inputs)}")
    x, y = inputs[0].copy(), target.copy()
    step = gradc.compile_step(model, loss_fn, gradc.optim.SGD(model.parameters(), lr=0.0))
    forward = optimize(step._forward(TensorType(x.shape, dtype_of_numpy(x.dtype)),
                                     TensorType(y.shape, dtype_of_numpy(y.dtype))))
    wrt = [i for i, _ in step.trainable]
    joint = optimize(ad(forward, wrt, seed="ones"))
    fn = compile_function_or_interp(joint)
    n_noise = forward.meta.get("num_noise", 0)
    noise = noise_arrays(forward.params[len(forward.params) - n_noise:]) if n_noise else []
    out = fn(*[t._data for t in step.tensors], x, y, *noise)
    out = out if isinstance(out, (list, tuple)) else [out]
    first = 1 + len(forward.meta.get("updated_buffers", []))  # loss, running stats (batch norm), gradients
    grads = {step.names[i]: np.array(g, np.float64) for i, g in zip(wrt, out[first:])}
    return float(np.asarray(out[0])), grads
