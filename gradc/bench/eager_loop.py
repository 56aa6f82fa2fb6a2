"""The plain PyTorch-style training loop, written ONCE and run by torch eager and by gradc eager alike.

`plain_step(model, loss_fn, opt, inputs, target)` is the loop body every PyTorch tutorial writes
(`opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step()`, the loss read back with
`.item()`); the model, loss and optimizer come from whichever library was passed in, so the `torch` and
`gradc-eager` rows of `gradc bench` (W6-W9) and the `torch-eager`/`gradc-eager` engines of
`gradc bench --model` time identical code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Sequence

import numpy as np


def plain_step(model: Any, loss_fn: Callable[..., Any], opt: Any, inputs: Sequence[Any],
               target: Any) -> Callable[[], float]:
    """One eager training step per call: zero_grad, forward, loss, backward, optimizer step; the loss."""
    def step() -> float:
        opt.zero_grad()
        loss = loss_fn(model(*inputs), target)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def library(name: str) -> Any:
    """The torch-like module by name: "torch" or "gradc" (the same code runs on either)."""
    return importlib.import_module(name)


def tensors(lib: Any, *arrays: np.ndarray) -> list[Any]:
    """numpy arrays as the library's tensors (sharing memory, as torch.from_numpy does)."""
    return [lib.from_numpy(a) for a in arrays]


def load_state(lib: Any, model: Any, state: dict[str, np.ndarray], strict: bool = True) -> None:
    """Load a numpy state_dict into either library's module (copies, so engines never share weights)."""
    model.load_state_dict({k: lib.from_numpy(np.array(v, copy=True)) for k, v in state.items()}, strict=strict)


def numpy_state(model: Any, named_parameters: bool = False) -> dict[str, np.ndarray]:
    """The model's state_dict (or named parameters) as numpy arrays, from either library's module."""
    items = model.named_parameters() if named_parameters else model.state_dict().items()
    return {k: v.detach().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in items}
