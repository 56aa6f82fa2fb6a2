"""torch.nn.utils.clip_grad_norm_ / clip_grad_value_: in-place gradient clipping, PyTorch's formulas."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from gradc.tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]


def _tensors(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def _vector_norm(x: np.ndarray, norm_type: float) -> np.ndarray:
    """torch.linalg.vector_norm of x (accumulated in float64, rounded to x's dtype)."""
    a = np.abs(x.astype(np.float64).ravel())
    if norm_type == math.inf:
        out = a.max(initial=0.0)
    elif norm_type == -math.inf:
        out = a.min(initial=math.inf)
    elif norm_type == 0:
        out = float(np.count_nonzero(a))
    elif norm_type == 1:
        out = a.sum()
    elif norm_type == 2:
        out = math.sqrt(float(np.dot(a, a)))
    else:
        out = float(np.sum(a ** norm_type)) ** (1.0 / norm_type)
    return np.asarray(out, dtype=x.dtype)


def get_total_norm(tensors: Tensor | Iterable[Tensor], norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach: bool | None = None) -> Tensor:
    """The norm of the per-tensor norms (the norm of all entries as one vector)."""
    arrays = [t._concrete("a gradient") for t in _tensors(tensors) if t is not None]
    norm_type = float(norm_type)
    if not arrays:
        return Tensor._from_array(np.zeros((), dtype=np.float32))
    norms = [_vector_norm(a, norm_type) for a in arrays]
    dtype = np.result_type(*norms)
    total = _vector_norm(np.stack([n.astype(dtype) for n in norms]), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    return Tensor._from_array(total)


def clip_grads_with_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, total_norm: Tensor,
                          foreach: bool | None = None) -> None:
    """Scale the gradients by min(1, max_norm / (total_norm + 1e-6)), in place."""
    params = [p for p in _tensors(parameters) if p.grad is not None]
    if not params:
        return
    total = total_norm._concrete("the total norm")
    coef = np.minimum(np.asarray(max_norm, total.dtype) / (total + np.asarray(1e-6, total.dtype)),
                      np.asarray(1.0, total.dtype))
    for p in params:
        g = p.grad
        g._data[...] = g._data * coef.astype(g._data.dtype)
        g._bump_version()


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> Tensor:
    """Clip the gradients' total norm to max_norm in place; returns the total norm before clipping."""
    params = _tensors(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(params, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float, foreach: bool | None = None) -> None:
    """Clamp every gradient entry to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    for p in _tensors(parameters):
        if p.grad is not None:
            g = p.grad
            np.clip(g._data, -clip_value, clip_value, out=g._data)
            g._bump_version()


