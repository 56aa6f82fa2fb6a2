"""More tensor factories with PyTorch's names: empty, *_like, randint, randperm, normal, linspace, logspace,
as_tensor. Random ones draw from gradc's generator (gradc.factories.generator)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc import factories
from gradc.device import check_device, get_default_dtype
from gradc.factories import _make, _shape
from gradc.ir.core import DType, int64
from gradc.tensor import Tensor

__all__ = ["empty", "empty_like", "full_like", "rand_like", "randint", "randint_like", "randperm", "normal",
           "linspace", "logspace", "as_tensor"]


def empty(*size: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
          **kwargs: Any) -> Tensor:
    """Uninitialized in PyTorch; zeros here (reading it is the caller's bug either way)."""
    return _make(np.zeros(_shape(size)), dtype, requires_grad, device)


def _like(make: Any) -> Any:
    def factory(t: Tensor, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
                **kwargs: Any) -> Tensor:
        return make(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)
    return factory


empty_like = _like(empty)
rand_like = _like(factories.rand)


def full_like(t: Tensor, fill_value: Any, dtype: DType | None = None, requires_grad: bool = False,
              device: Any = None, **kwargs: Any) -> Tensor:
    return _make(np.full(t.shape, fill_value), dtype or t.dtype, requires_grad, device)


def randint(low: int, high: Any = None, size: Any = None, dtype: DType | None = None, requires_grad: bool = False,
            device: Any = None, generator: Any = None, **kwargs: Any) -> Tensor:
    """torch.randint(high, size) or torch.randint(low, high, size): int64 in [low, high)."""
    if size is None:  # randint(high, size)
        low, high, size = 0, low, high
    elif high is None:  # randint(high, size=...)
        low, high = 0, low
    if size is None or high is None:
        raise TypeError("randint() missing 1 required positional arguments: \"size\"")
    if high <= low:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    values = factories.generator(generator).integers(low, high, size=_shape((size,)))
    return _make(values, dtype or int64, requires_grad, device)


def randint_like(t: Tensor, low: int, high: int | None = None, dtype: DType | None = None,
                 requires_grad: bool = False, device: Any = None, **kwargs: Any) -> Tensor:
    if high is None:
        low, high = 0, low
    return randint(low, high, t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)


def randperm(n: int, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
             generator: Any = None, **kwargs: Any) -> Tensor:
    return _make(factories.generator(generator).permutation(int(n)), dtype or int64, requires_grad, device)


def normal(mean: Any, std: Any = 1.0, size: Any = None, dtype: DType | None = None, requires_grad: bool = False,
           device: Any = None, generator: Any = None, **kwargs: Any) -> Tensor:
    """torch.normal(mean, std[, size]): tensors or numbers for mean and std (broadcast)."""
    m = mean._data if isinstance(mean, Tensor) else np.asarray(mean, dtype=np.float64)
    s = std._data if isinstance(std, Tensor) else np.asarray(std, dtype=np.float64)
    if np.any(s < 0):
        raise RuntimeError(f"normal expects std >= 0.0, but found std {float(np.min(s))}")
    shape = _shape((size,)) if size is not None else np.broadcast_shapes(m.shape, s.shape)
    like = mean if isinstance(mean, Tensor) else std if isinstance(std, Tensor) else None
    dtype = dtype or (like.dtype if like is not None else get_default_dtype())
    if m.ndim == 0 and s.ndim == 0:  # one normal_(mean, std) draw over the whole tensor, as PyTorch
        values = factories.generator(generator).normal(float(m), float(s), shape, dtype=dtype.numpy)
    else:  # PyTorch draws standard normals, then scales by std and adds mean
        values = m + s * factories.generator(generator).standard_normal(shape, dtype=dtype.numpy)
    return _make(values, dtype, requires_grad, device)


def linspace(start: Any, end: Any, steps: int, dtype: DType | None = None, requires_grad: bool = False,
             device: Any = None, **kwargs: Any) -> Tensor:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
        raise TypeError(f"linspace(): argument 'steps' must be int, not {type(steps).__name__}")
    if steps < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    start, end = (v.item() if isinstance(v, Tensor) else v for v in (start, end))
    # as PyTorch's kernel: in the result dtype, the first half from start, the second half from end
    t = (dtype or get_default_dtype()).numpy
    if not np.issubdtype(t, np.floating):
        t = np.float64
    s, e = np.float64(t(start)), np.float64(t(end))
    step = np.float64(t((e - s) / (steps - 1))) if steps > 1 else 0.0  # rounded to the dtype, then fused
    i = np.arange(steps)
    with np.errstate(all="ignore"):
        values = np.where(i < steps // 2, s + step * i, e - step * (steps - 1 - i)).astype(t)
    if steps == 1:
        values = np.full(1, s, dtype=t)
    return _make(values, dtype, requires_grad, device)


def logspace(start: Any, end: Any, steps: int, base: float = 10.0, dtype: DType | None = None,
             requires_grad: bool = False, device: Any = None, **kwargs: Any) -> Tensor:
    exponents = linspace(start, end, steps, dtype=None)._data.astype(np.float64)
    return _make(np.power(base, exponents), dtype, requires_grad, device)


def as_tensor(data: Any, dtype: DType | None = None, device: Any = None) -> Tensor:
    """torch.as_tensor: shares memory with a tensor or a matching numpy array, copies otherwise."""
    check_device(device)
    if isinstance(data, Tensor):
        return data if dtype is None or data.dtype == dtype else data.to(dtype)
    if isinstance(data, np.ndarray) and (dtype is None or np.dtype(dtype.numpy) == data.dtype) \
            and data.flags.c_contiguous and data.dtype.isnative:
        return factories.from_numpy(data)
    if dtype is None and isinstance(data, float):
        dtype = get_default_dtype()
    return factories.tensor(data, dtype=dtype)
