"""RMSNorm and F.normalize / F.rms_norm, as composites."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gradc import functional as F
from gradc import shape_ops as S
from gradc.ir.core import DType, float32
from gradc.nn.module import Module, Parameter
from gradc.tensor import Tensor, torch_op


def _norm_dims(x: Tensor, normalized_shape: Sequence[int]) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or x.shape[x.ndim - len(shape):] != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape [*, "
                           f"{', '.join(map(str, shape))}], but got input of size{list(x.shape)}")
    return tuple(range(x.ndim - len(shape), x.ndim))


def rms_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
             eps: float | None = None) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight; eps defaults to the dtype's machine epsilon, as PyTorch."""
    dims = _norm_dims(x, normalized_shape)
    if eps is None:
        eps = float(np.finfo(x.dtype.numpy).eps)
    ms = F.mean(F.mul(x, x), dim=dims, keepdim=True)
    out = F.mul(x, F.reciprocal(F.sqrt(F.add(ms, eps))))  # rsqrt as 1/sqrt (rsqrt belongs to the ops issue)
    return F.mul(out, weight) if weight is not None else out


@torch_op("DivBackward0")
def normalize(x: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Tensor:
    """x / max(||x||_p, eps) along dim."""
    n = S.norm(x, p, dim, keepdim=True)
    return F.div(x, F.expand_to(F.clamp(n, min=eps), x.shape))


class RMSNorm(Module):
    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True, dtype: DType | None = None) -> None:
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype=(dtype or float32).numpy))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
