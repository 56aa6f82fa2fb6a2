"""Engine adapters: one value-and-grad step per (engine, workload), built from the shared workload definition.

An engine's `prepare(workload, arrays)` returns a `step()` that computes the loss AND the gradients wrt every
parameter and waits for the result (JAX is asynchronous); `to_numpy(result)` turns a step's result into
`(loss, grads)` numpy arrays for the cross-check (copied: an engine may reuse its output buffers).
Each engine is used only where installed: `unavailable()` says why not.
For W6 "train-step" an engine gives `train_step(x, labels, state)` -> `train_step.TrainStep` (gradc-native,
torch and jax do, from the shared definitions in train_step.py); `unsupported(workload)` says why not.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

import numpy as np

from gradc.bench import train_step
from gradc.bench.workloads import Workload, numpy_namespace

Step = Callable[[], Any]


class Engine:
    name = "engine"
    description = ""
    module = ""  # a top-level module that must be importable

    def unavailable(self) -> str | None:
        """None when the engine can run here, else a short note why not."""
        if self.module and importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed (pip install 'gradc[compare]')"
        return None

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version(self.module or "numpy")
        except PackageNotFoundError:
            return ""

    def setup(self, threads: int) -> None:
        """Once per process, before the first prepare: apply the thread limit."""

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        raise NotImplementedError

    def train_step(self, x: np.ndarray, labels: np.ndarray, state: train_step.State) -> train_step.TrainStep:
        """W6: one training step of this engine from these initial parameters (engines that train override it)."""
        raise NotImplementedError

    def trains(self) -> bool:
        return type(self).train_step is not Engine.train_step

    def unsupported(self, workload: Any) -> str | None:
        """None when the engine runs this kind of workload, else a short note why not."""
        runs = getattr(workload, "runs", None)  # a workload that names its engines (W7, W7G)
        if runs is not None:
            return None if self.name in runs else f"{workload.id} runs {', '.join(runs)}"
        if getattr(workload, "kind", "grad") == "train" and not self.trains():
            return (f"{self.name} has no training step: {workload.id} runs "
                    f"{', '.join(train_step.STEPS)} (or an engine with train_step)")
        return None

    def to_numpy(self, result: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        loss, grads = result
        return np.array(loss, dtype=np.float64), [np.array(g, dtype=np.float64) for g in grads]


class GradcEngine(Engine):
    """gradc.value_and_grad, compiled on the chosen backend ("native" or "interp")."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.name = "gradc-native" if backend == "native" else "gradc-interp"
        self.description = ("gradc.value_and_grad, native code" if backend == "native"
                            else "gradc.value_and_grad on the reference interpreter")

    def version(self) -> str:
        import gradc
        return gradc.__version__

    def unavailable(self) -> str | None:
        if self.backend == "native":
            from gradc import api
            if not api.native_available():
                return "not available (gradc.codegen.compile_function is missing)"
        return None

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        import gradc
        from gradc import api

        fn = gradc.value_and_grad(workload.bind(gradc), argnums=workload.argnums())
        previous = api.get_backend()
        api.set_backend(self.backend)
        try:
            fn.lower(*arrays)  # trace, AD and compile now, on this backend
        finally:
            api.set_backend(previous)
        return lambda: fn(*arrays)

    def train_step(self, x: np.ndarray, labels: np.ndarray, state: train_step.State) -> train_step.TrainStep:
        return getattr(state, "steps", train_step.STEPS)["gradc-native"](x, labels, state)

    def trains(self) -> bool:
        return self.backend == "native"


class GradcEagerEngine(GradcEngine):
    """The plain PyTorch-style loop (eager_loop.plain_step) run by gradc's eager engine, no compile_step:
    the same code as the torch row (W6-W9); for W1-W5 the same eager forward + autograd.grad as torch's."""

    def __init__(self) -> None:
        self.backend = "auto"
        self.name = "gradc-eager"
        self.description = "gradc eager (import gradc as torch): the torch row's code, run by gradc"

    def unavailable(self) -> str | None:
        return None

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        import gradc
        return eager_grad_step(gradc, workload, arrays)

    def train_step(self, x: np.ndarray, labels: np.ndarray, state: train_step.State) -> train_step.TrainStep:
        return getattr(state, "steps", train_step.STEPS)["gradc-eager"](x, labels, state)

    def trains(self) -> bool:
        return True


def eager_grad_step(lib: Any, workload: Workload, arrays: list[np.ndarray]) -> Step:
    """The workload's loss run eagerly on `lib` (torch or gradc) with lib.autograd.grad wrt the parameters."""
    tensors = [lib.from_numpy(a.copy()) for a in arrays]
    params = [tensors[i].requires_grad_(True) for i in workload.argnums()]
    fn = workload.bind(lib)

    def step() -> Any:
        loss = fn(*tensors)
        return loss.detach(), lib.autograd.grad(loss, params)
    return step


class NumpyEngine(Engine):
    name = "numpy"
    description = "hand-written numpy forward + backward"

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        return lambda: workload.reference(*arrays)


class TorchEngine(Engine):
    name = "torch"
    description = "PyTorch eager autograd"
    module = "torch"
    compiled = False

    def setup(self, threads: int) -> None:
        import torch
        torch.set_num_threads(threads)

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        import torch

        if not self.compiled:
            return eager_grad_step(torch, workload, arrays)
        tensors = [torch.from_numpy(a.copy()) for a in arrays]
        params = [tensors[i].requires_grad_(True) for i in workload.argnums()]
        fn = torch.compile(workload.bind(torch), dynamic=False)

        def step() -> Any:
            loss = fn(*tensors)
            return loss.detach(), torch.autograd.grad(loss, params)
        return step

    def to_numpy(self, result: Any) -> tuple[np.ndarray, list[np.ndarray]]:
        loss, grads = result
        return loss.double().numpy(), [g.double().numpy() for g in grads]

    def train_step(self, x: np.ndarray, labels: np.ndarray, state: train_step.State) -> train_step.TrainStep:
        return getattr(state, "steps", train_step.STEPS)[self.name](x, labels, state)  # torch or torch-compile

    def trains(self) -> bool:
        return True

    def unsupported(self, workload: Any) -> str | None:
        note = super().unsupported(workload)
        engines = getattr(workload, "step_engines", None)  # the training workloads' own step tables
        if note is None and engines is not None and self.name not in engines:
            note = f"{workload.id} has no {self.name} training step"
        return note


class TorchCompileEngine(TorchEngine):
    name = "torch-compile"
    description = "torch.compile (inductor) forward, AOTAutograd backward"
    compiled = True

    def unavailable(self) -> str | None:
        note = super().unavailable()
        if note is None and not any(os.access(os.path.join(d, c), os.X_OK) for d in os.environ.get(
                "PATH", "").split(os.pathsep) for c in ("cc", "gcc", "clang", "c++", "g++")):
            return "torch.compile needs a C++ compiler on PATH"
        return note


class JaxEngine(Engine):
    name = "jax"
    description = "jax.jit(jax.value_and_grad(...))"
    module = "jax"

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        import jax
        import jax.numpy as jnp

        T = numpy_namespace(jnp, sigmoid=jax.nn.sigmoid, scan=jax.lax.scan)
        fn = jax.jit(jax.value_and_grad(workload.bind(T), argnums=workload.argnums()))
        args = [jnp.asarray(a.astype(np.int32) if a.dtype == np.int64 else a) for a in arrays]
        return lambda: jax.block_until_ready(fn(*args))

    def train_step(self, x: np.ndarray, labels: np.ndarray, state: train_step.State) -> train_step.TrainStep:
        return getattr(state, "steps", train_step.STEPS)["jax"](x, labels, state)


class AutogradEngine(Engine):
    name = "autograd"
    description = "HIPS autograd"
    module = "autograd"

    def prepare(self, workload: Workload, arrays: list[np.ndarray]) -> Step:
        import autograd
        import autograd.numpy as anp

        fn = autograd.value_and_grad(workload.bind(numpy_namespace(anp)), argnum=workload.argnums())
        return lambda: fn(*arrays)


ENGINES: dict[str, Engine] = {e.name: e for e in (
    GradcEngine("native"), GradcEagerEngine(), GradcEngine("interp"), NumpyEngine(), TorchEngine(),
    TorchCompileEngine(), JaxEngine(), AutogradEngine())}


def load_custom(spec: str) -> Engine:
    """An engine from "FILE.py:NAME" (a class or an instance of Engine), to benchmark your own adapter."""
    from gradc.cli import load_function  # the same FILE.py:NAME rules as `gradc ir`

    obj = load_function(spec)
    engine = obj() if isinstance(obj, type) else obj
    if not isinstance(engine, Engine):
        raise TypeError(f"{spec} is not a gradc.bench.engines.Engine")
    return engine


def get(name: str) -> Engine:
    """An engine by name, or a custom one given as FILE.py:NAME; ValueError for an unknown name."""
    if name in ENGINES:
        return ENGINES[name]
    if ".py:" in name:
        return load_custom(name)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)} or FILE.py:CLASS")
