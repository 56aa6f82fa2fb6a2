"""torch.nn.utils.parameters_to_vector / vector_to_parameters."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from gradc.grad_mode import is_grad_enabled
from gradc.tensor import Tensor

__all__ = ["parameters_to_vector", "vector_to_parameters"]


def _check(t: object) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(t).__name__}")


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
    """All parameters flattened and concatenated into one 1-d tensor (differentiable where gradc has cat)."""
    params = list(parameters)
    for p in params:
        _check(p)
    if is_grad_enabled() and any(p.requires_grad for p in params):
        import gradc
        if hasattr(gradc, "cat"):
            return gradc.cat([p.reshape(-1) for p in params])
    return Tensor._from_array(np.concatenate([p._concrete("a parameter").ravel() for p in params]))


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
    """Copy consecutive slices of vec into the parameters (in place: views and compiled steps see them)."""
    _check(vec)
    if vec.ndim != 1:
        raise RuntimeError(f"vector_to_parameters expects a 1-d vector, got shape {list(vec.shape)}")
    data = vec._concrete("the vector")
    params = list(parameters)
    total = sum(p.numel() for p in params)
    if total > data.shape[0]:
        raise RuntimeError(f"the vector has {data.shape[0]} elements but the parameters need {total}")
    pointer = 0
    for p in params:
        _check(p)
        n = p.numel()
        p._data[...] = data[pointer:pointer + n].reshape(p.shape)
        p._bump_version()
        pointer += n
