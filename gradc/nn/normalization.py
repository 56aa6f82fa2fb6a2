"""batch_norm, group_norm, instance_norm as composites of reductions (torch.nn.functional names).

Running statistics: eagerly they are updated in place, as PyTorch does. Traced (gradc.compile of a
module, compile_step), a running buffer is a function input; its new value becomes an extra result
(collected by `buffer_updates`, see gradc.train) that the compiled call writes back into the buffer.
The update is detached (stop_gradient), so it never feeds the gradient.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from gradc import functional as F
from gradc.ir.core import Value
from gradc.tensor import Tensor, apply, torch_op

_local = threading.local()


class buffer_updates:
    """Collects (buffer tensor, new traced Value) pairs that traced running-stat updates produce."""

    def __enter__(self) -> list[tuple[Tensor, Value]]:
        if not hasattr(_local, "stack"):
            _local.stack = []
        self.updates: list[tuple[Tensor, Value]] = []
        _local.stack.append(self.updates)
        return self.updates

    def __exit__(self, *exc: Any) -> None:
        _local.stack.pop()


def assign_buffer(buffer: Tensor, new: Tensor) -> None:
    """buffer <- new: in place when eager, a recorded update when the buffer is traced."""
    new = apply("stop_gradient", new) if new.dtype.is_float and new.is_traced else new
    if buffer.is_traced or new.is_traced:
        stack = getattr(_local, "stack", None)
        if not stack:
            raise RuntimeError("batch_norm in training mode inside a traced function updates its running "
                               "statistics: compile the model with gradc.compile(module) or gradc.compile_step, "
                               "or call model.eval()")
        for i, (t, _) in enumerate(stack[-1]):
            if t is buffer:  # a buffer updated twice in one step (a module called twice): the last wins
                stack[-1][i] = (buffer, new._value)
                return
        stack[-1].append((buffer, new._value))
        return
    buffer._data[...] = np.asarray(new._data, dtype=buffer._data.dtype)
    buffer._bump_version()


def _channel_shape(x: Tensor) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _affine(out: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    if weight is not None:
        out = F.mul(out, F.reshape(weight, shape))
    if bias is not None:
        out = F.add(out, F.reshape(bias, shape))
    return out


def _normalize(x: Tensor, dims: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    mean = F.mean(x, dim=dims, keepdim=True)
    centered = F.sub(x, mean)
    var = F.mean(F.mul(centered, centered), dim=dims, keepdim=True)
    return F.mul(centered, F.reciprocal(F.sqrt(F.add(var, eps)))), mean, var


def _check_stat(name: str, stat: Tensor | None, channels: int) -> None:
    if stat is not None and stat.numel() != channels:
        raise RuntimeError(f"{name} should contain {channels} elements not {stat.numel()}")


@torch_op("NativeBatchNormBackward0")
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: Any = 0.1,
               eps: float = 1e-5) -> Tensor:
    x = F.to_tensor(input)
    if x.ndim < 2:
        raise ValueError(f"expected 2D or more input (got {x.ndim}D input)")
    channels = x.shape[1]
    _check_stat("running_mean", running_mean, channels)
    _check_stat("running_var", running_var, channels)
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {t.numel()}")
    shape = _channel_shape(x)
    dims = (0,) + tuple(range(2, x.ndim))
    if training:
        count = x.numel() // channels
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"torch.Size({list(x.shape)})")
        out, mean, var = _normalize(x, dims, eps)
        m = 0.0 if momentum is None else momentum  # a traced scalar for momentum=None's 1/num_batches_tracked
        keep = F.rsub(m, 1.0) if isinstance(m, Tensor) else 1 - m
        if running_mean is not None:
            new = F.add(F.mul(running_mean, keep), F.mul(F.reshape(mean, (channels,)), m))
            assign_buffer(running_mean, F.cast(new, running_mean.dtype))
        if running_var is not None:
            unbiased = F.mul(F.reshape(var, (channels,)), count / (count - 1))
            new = F.add(F.mul(running_var, keep), F.mul(unbiased, m))
            assign_buffer(running_var, F.cast(new, running_var.dtype))
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
        mean = F.reshape(F.cast(running_mean, x.dtype), shape)
        inv = F.reciprocal(F.sqrt(F.add(F.reshape(F.cast(running_var, x.dtype), shape), eps)))
        out = F.mul(F.sub(x, mean), inv)
    return _affine(out, weight, bias, shape)


@torch_op("NativeGroupNormBackward0")
def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    x = F.to_tensor(input)
    if x.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {x.ndim}")
    n, c = x.shape[:2]
    if num_groups <= 0 or c % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input "
                           f"of shape {list(x.shape)} and num_groups={num_groups}")
    grouped = F.reshape(x, (n, num_groups, -1))
    out, _, _ = _normalize(grouped, (2,), eps)
    return _affine(F.reshape(out, x.shape), weight, bias, _channel_shape(x))


@torch_op("NativeBatchNormBackward0")
def instance_norm(input: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None,
                  weight: Tensor | None = None, bias: Tensor | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    x = F.to_tensor(input)
    if x.ndim < 3:
        raise ValueError(f"expected 3D or more input (got {x.ndim}D input)")
    n, c = x.shape[:2]
    shape = _channel_shape(x)
    dims = tuple(range(2, x.ndim))
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
        mean = F.reshape(running_mean, shape)
        inv = F.reciprocal(F.sqrt(F.add(F.reshape(running_var, shape), eps)))
        return _affine(F.mul(F.sub(x, mean), inv), weight, bias, shape)
    count = x.numel() // (n * c)
    if count <= 1:
        raise ValueError(f"Expected more than 1 spatial element when training, got input size "
                         f"torch.Size({list(x.shape)})")
    out, mean, var = _normalize(x, dims, eps)
    if running_mean is not None:
        batch_mean = F.mean(F.reshape(mean, (n, c)), dim=0)
        assign_buffer(running_mean, F.add(F.mul(running_mean, 1 - momentum), F.mul(batch_mean, momentum)))
    if running_var is not None:
        batch_var = F.mean(F.mul(F.reshape(var, (n, c)), count / (count - 1)), dim=0)
        assign_buffer(running_var, F.add(F.mul(running_var, 1 - momentum), F.mul(batch_var, momentum)))
    return _affine(out, weight, bias, shape)
