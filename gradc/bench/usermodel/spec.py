"""The command line's model inputs, loss and optimizer, and how each is built for torch or gradc.

* `--input f32[64,1,28,28]` (repeatable) and `--target i64[64]:10` (`:10` = class count) describe random
  data drawn with a seed; `--batch` replaces every leading dimension; a `make_batch(batch_size)` function in
  the model file (returning (inputs, target), numpy arrays or tensors of either framework) replaces both;
* `--loss cross_entropy|nll|mse|FILE.py:fn` (a function written against torch, loaded for each framework);
* `--optimizer sgd|adam|adamw` with `--lr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from gradc.bench.usermodel.loader import ModelSpecError, load_file, split_spec

DTYPES = {"f32": np.float32, "f64": np.float64, "i64": np.int64}
LOSSES = {"cross_entropy": "cross_entropy", "nll": "nll_loss", "mse": "mse_loss"}
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
_ARRAY = re.compile(r"^(f32|f64|i64)\[([0-9, ]*)\](?::([0-9]+))?$")


@dataclass(frozen=True)
class ArraySpec:
    dtype: str
    shape: tuple[int, ...]
    classes: int | None = None  # integer targets: values in [0, classes)

    def with_batch(self, batch: int | None) -> ArraySpec:
        if batch is None or not self.shape:
            return self
        return ArraySpec(self.dtype, (batch, *self.shape[1:]), self.classes)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        if self.dtype == "i64":
            return rng.integers(0, self.classes or 2, size=self.shape, dtype=np.int64)
        return rng.standard_normal(self.shape).astype(DTYPES[self.dtype])


def parse_array(text: str, what: str) -> ArraySpec:
    """'f32[64,1,28,28]' or 'i64[64]:10' -> ArraySpec; a one-line error naming the option otherwise."""
    m = _ARRAY.match(text.strip())
    if not m:
        raise ModelSpecError(f"{what} {text!r}: expected DTYPE[DIMS] with DTYPE f32, f64 or i64, e.g. f32[64,784] "
                             "or i64[64]:10 (:10 = class count of integer targets)")
    dtype, dims, classes = m.group(1), m.group(2), m.group(3)
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        raise ModelSpecError(f"{what} {text!r}: dimensions must be whole numbers") from None
    if any(d < 1 for d in shape):
        raise ModelSpecError(f"{what} {text!r}: dimensions must be at least 1")
    if classes is not None and dtype != "i64":
        raise ModelSpecError(f"{what} {text!r}: a class count (:N) needs i64 targets")
    if classes is not None and int(classes) < 1:
        raise ModelSpecError(f"{what} {text!r}: the class count must be at least 1")
    return ArraySpec(dtype, shape, int(classes) if classes else None)


@dataclass
class BenchSpec:
    """Everything a child process needs to rebuild the same model, batch, loss and optimizer."""
    model: str  # FILE.py:NAME
    inputs: list[str] = field(default_factory=list)
    target: str | None = None
    batch: int | None = None
    loss: str = "cross_entropy"
    optimizer: str = "adam"
    lr: float = 1e-3
    seed: int = 0

    def validate(self) -> None:
        split_spec(self.model)
        for text in self.inputs:
            parse_array(text, "--input")
        if self.target is not None:
            parse_array(self.target, "--target")
        if bool(self.inputs) != (self.target is not None):
            raise ModelSpecError("give both --input and --target (or a make_batch(batch_size) function in the file)")
        if self.batch is not None and self.batch < 1:
            raise ModelSpecError(f"--batch must be at least 1, got {self.batch}")
        if self.loss not in LOSSES:
            if ":" not in self.loss:
                raise ModelSpecError(f"--loss {self.loss!r}: expected one of {', '.join(LOSSES)} or FILE.py:FUNCTION")
            split_spec(self.loss)
        if self.optimizer not in OPTIMIZERS:
            raise ModelSpecError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if not self.lr > 0:
            raise ModelSpecError(f"--lr must be positive, got {self.lr}")

    def to_args(self) -> list[str]:
        out = ["--model", self.model, "--loss", self.loss, "--optimizer", self.optimizer, "--lr", repr(self.lr),
               "--seed", str(self.seed)]
        for text in self.inputs:
            out += ["--input", text]
        if self.target is not None:
            out += ["--target", self.target]
        if self.batch is not None:
            out += ["--batch", str(self.batch)]
        return out


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "numpy"):
        return np.asarray(x.numpy())
    return np.asarray(x)


def make_batch(spec: BenchSpec, module: Any) -> tuple[list[np.ndarray], np.ndarray]:
    """(inputs, target) as numpy arrays: from the file's make_batch(batch_size), or drawn from the specs."""
    if spec.inputs or spec.target:
        if not spec.inputs or spec.target is None:
            raise ModelSpecError("give both --input and --target (or a make_batch(batch_size) function in the file)")
        rng = np.random.default_rng(spec.seed)
        inputs = [parse_array(t, "--input").with_batch(spec.batch).draw(rng) for t in spec.inputs]
        return inputs, parse_array(spec.target, "--target").with_batch(spec.batch).draw(rng)
    maker = getattr(module, "make_batch", None)
    if not callable(maker):
        raise ModelSpecError(f"{spec.model}: give --input and --target, or define make_batch(batch_size) in the file")
    got = maker(spec.batch) if spec.batch is not None else maker()
    if not (isinstance(got, tuple) and len(got) == 2):
        raise ModelSpecError("make_batch must return (inputs, target)")
    inputs, target = got
    inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    return [np.ascontiguousarray(_to_numpy(x)) for x in inputs], np.ascontiguousarray(_to_numpy(target))


def loss_function(spec: BenchSpec, framework: str) -> Callable[[Any, Any], Any]:
    """The loss as a function of (output, target) in the given framework."""
    import importlib
    if spec.loss in LOSSES:
        functional = importlib.import_module(f"{framework}.nn.functional")
        return getattr(functional, LOSSES[spec.loss])
    path, name = split_spec(spec.loss)
    module = load_file(path, framework)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ModelSpecError(f"--loss {spec.loss}: {path} has no function {name!r}")
    return fn


def optimizer(spec: BenchSpec, framework: str, parameters: Any, lr: float | None = None) -> Any:
    import importlib
    optim = importlib.import_module(f"{framework}.optim")
    return getattr(optim, OPTIMIZERS[spec.optimizer])(parameters, lr=spec.lr if lr is None else lr)
