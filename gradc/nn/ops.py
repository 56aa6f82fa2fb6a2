"""Functional layers the modules need beyond gradc.nn.functional: linear, gelu, layer_norm, embedding, dropout.

All are composites of front-end ops (so they trace, differentiate and compile like any other code).
Dropout needs random numbers inside compiled code; there is no random primitive in the IR, so a traced
dropout adds an extra input to the function being traced (a uniform noise array, see `noise_inputs`),
which the compiled caller (gradc.train) fills from gradc's seeded generator on every call.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Sequence

import numpy as np

from gradc import functional as F
from gradc.factories import generator
from gradc.ir.core import TensorType, Value, float64
from gradc.tensor import Tensor, apply, torch_op

_local = threading.local()


# ----------------------------------------------------------------------------- linear

def _linear_node(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> str:
    if x.ndim == 2:
        return "AddmmBackward0" if bias is not None else "MmBackward0"
    return "ViewBackward0" if bias is not None else "UnsafeViewBackward0"


@torch_op(_linear_node)
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias with weight of shape (out_features, in_features), as torch.nn.functional.linear."""
    x = F.to_tensor(x)
    if x.ndim == 0 or x.shape[-1] != weight.shape[-1]:
        rows = int(np.prod(x.shape[:-1], dtype=np.int64)) if x.ndim else 1
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({rows}x{x.shape[-1] if x.ndim else 1} and "
                           f"{weight.shape[-1]}x{weight.shape[0]})")
    flat = x if x.ndim == 2 else F.reshape(x, (-1, x.shape[-1]))
    out = F.matmul(flat, F.t(weight))
    if bias is not None:
        out = F.add(out, bias)
    return out if x.ndim == 2 else F.reshape(out, x.shape[:-1] + (weight.shape[0],))


# ----------------------------------------------------------------------------- gelu

@torch_op("GeluBackward0")
def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """x * Phi(x); approximate='none' (PyTorch's default) uses erf, here a 1.2e-7 relative erfc
    decomposition; approximate='tanh' is PyTorch's tanh formula."""
    x = F.to_tensor(x)
    if approximate == "tanh":
        inner = F.mul(F.add(x, F.mul(F.mul(F.mul(x, x), x), 0.044715)), math.sqrt(2.0 / math.pi))
        return F.mul(F.mul(x, 0.5), F.add(F.tanh(inner), 1.0))
    if approximate != "none":
        raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    # Phi(x) = erfc(-x / sqrt 2) / 2 keeps both tails (1 + erf cancels for x << 0); in float64 so the float32
    # result is correctly rounded but for rare double roundings. The value is computed from x with its
    # gradient stopped; the derivative comes from GeluRule in x's own dtype (see there)
    wide = F.cast(apply("stop_gradient", x), float64)
    phi = F.mul(apply("erfc", F.mul(wide, -math.sqrt(0.5))), 0.5)
    value = F.cast(F.mul(wide, phi), x.dtype)
    return apply("custom_vjp", x, value, rule=GELU_RULE) if x.dtype.is_float else value


class GeluRule:
    """The VJP of the erf GELU: g (Phi(x) + x phi(x)) with Phi(x) = gelu(x) / x read back from the forward
    value (x Phi(0) + ... near 0) and phi(x) = exp(-x^2 / 2) / sqrt(2 pi), in x's dtype. Differentiating the
    float64 composite instead recomputed erfc and a float64 exp per element in the backward (W8: 16% of the
    step's CPU time in the two GELU kernels, 10% in the backward one). Phi from the value has the forward's
    accuracy (1.2e-7 relative, plus one rounding); the rule is itself differentiable (d/dx gelu(x)/x = phi(x)
    through this rule again), so second derivatives are Phi' terms of the same formula."""

    SMALL = 1e-4  # below this |x|, Phi(x) = 1/2 + x phi(0) (the next term, x^3 phi(0) / 6, is < 1e-13)

    def __repr__(self) -> str:  # part of the IR text (cache keys): no object id
        return "gelu_erf_vjp"

    def vjp(self, b: Any, g: Value, out: Value, x: Value, value: Value) -> tuple:
        inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)
        small = b.lt(b.emit("abs", x), b.scalar(self.SMALL, x))
        safe = b.where(small, b.scalar(1.0, x), x)  # (no 0 / 0 in the branch where() drops: its VJP is NaN)
        cdf = b.where(small, b.add(b.scalar(0.5, x), b.mul(x, b.scalar(inv_sqrt_2pi, x))), b.div(out, safe))
        pdf = b.mul(b.exp(b.mul(b.mul(x, x), b.scalar(-0.5, x))), b.scalar(inv_sqrt_2pi, x))
        return b.mul(g, b.add(cdf, b.mul(x, pdf))), None


GELU_RULE = GeluRule()


# ----------------------------------------------------------------------------- layer_norm

@torch_op("NativeLayerNormBackward0")
def layer_norm(x: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last len(normalized_shape) dims (biased var)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or x.shape[x.ndim - len(shape):] != shape:
        raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape [*, "
                           f"{', '.join(map(str, shape))}], but got input of size{list(x.shape)}")
    dims = tuple(range(x.ndim - len(shape), x.ndim))
    centered = F.sub(x, F.mean(x, dim=dims, keepdim=True))
    var = F.mean(F.mul(centered, centered), dim=dims, keepdim=True)
    out = F.mul(centered, F.reciprocal(F.sqrt(F.add(var, eps))))
    if weight is not None:
        out = F.mul(out, weight)
    if bias is not None:
        out = F.add(out, bias)
    return out


# ----------------------------------------------------------------------------- embedding

@torch_op(lambda indices, weight, padding_idx=None: "EmbeddingBackward0")
def embedding(indices: Any, weight: Tensor, padding_idx: int | None = None) -> Tensor:
    """weight[indices] as a one-hot matmul (exact: each output is 1.0 * one row plus zeros);
    the padding_idx row receives no gradient."""
    idx = F.to_tensor(indices)
    idx = F.long_index(idx, f"Expected tensor for argument #1 'indices' to have one of the following scalar "
                            f"types: Long, Int; but got {F.SCALAR_NAMES[idx.dtype]} instead")
    rows, dim = weight.shape
    if not idx.is_traced and idx._data.size and (idx._data.min() < -rows or idx._data.max() >= rows):
        raise IndexError("index out of range in self")
    flat = F.reshape(idx, (-1,))
    n = flat.shape[0]
    iota = apply("iota", shape=(n, rows), axis=1)
    hit = F.compare("eq", iota, F.expand_to(F.reshape(flat, (n, 1)), (n, rows)))
    table = weight
    if padding_idx is not None:
        pad = padding_idx % rows
        frozen = F.compare("eq", apply("iota", shape=(rows, dim), axis=0), pad)
        table = F.where(frozen, weight.detach(), weight)
    out = F.matmul(F.cast(hit, weight.dtype), table)
    return F.reshape(out, idx.shape + (dim,))


# ----------------------------------------------------------------------------- dropout

class noise_inputs:
    """Collects the uniform-noise params that traced dropouts create (`with noise_inputs() as values:`)."""

    def __enter__(self) -> list[Value]:
        if not hasattr(_local, "stack"):
            _local.stack = []
        self.values: list[Value] = []
        _local.stack.append(self.values)
        return self.values

    def __exit__(self, *exc: Any) -> None:
        _local.stack.pop()


def _uniform(x: Tensor) -> Tensor:
    if not x.is_traced:
        return Tensor._from_array(generator().random(x.shape, dtype=x.dtype.numpy))
    stack = getattr(_local, "stack", None)
    if not stack:
        raise RuntimeError("dropout in training mode inside a traced function needs random numbers: compile the "
                           "model with gradc.compile(module) or gradc.compile_step, or call model.eval()")
    value = Value(TensorType(x.shape, x.dtype), name=f"noise{len(stack[-1])}")
    stack[-1].append(value)
    return Tensor._from_value(value)


@torch_op("NativeDropoutBackward0")
def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    x = F.to_tensor(x)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return F.mul(x, 0.0)
    keep = F.compare("ge", _uniform(x), p)  # P(u >= p) = 1 - p
    return F.mul(x, F.where(keep, F.to_tensor(1.0 / (1.0 - p), x), F.to_tensor(0.0, x)))


def noise_arrays(values: Sequence[Value]) -> list[np.ndarray]:
    """Fresh uniform [0, 1) arrays for the noise params of a compiled function, from gradc's generator."""
    rng = generator()
    return [rng.random(v.type.shape, dtype=v.dtype.numpy) for v in values]
