"""Tensor factories with PyTorch names and defaults (float32, seeded by manual_seed)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc.device import check_device, get_default_dtype
from gradc.ir.core import DType, bool_, int64
from gradc.promotion import checked_number
from gradc.random import Generator, default_generator
from gradc.tensor import Tensor

_rng = default_generator


def manual_seed(seed: int) -> Generator:
    """Seed gradc's generator (rand, randn, randint, randperm, initializers): PyTorch's CPU streams follow."""
    return _rng.manual_seed(seed)


def generator(override: Generator | None = None) -> Generator:
    return override if override is not None else _rng


def _shape(size: tuple) -> tuple[int, ...]:
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def _make(array: np.ndarray, dtype: DType | None, requires_grad: bool, device: Any = None) -> Tensor:
    check_device(device)
    t = Tensor._from_array(np.asarray(array, dtype=(dtype or get_default_dtype()).numpy, order="C"))
    return t._set_requires_grad() if requires_grad else t


def tensor(data: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
           pin_memory: bool = False) -> Tensor:
    """A new tensor holding a copy of `data` (Python floats become float32, ints int64)."""
    check_device(device)
    if isinstance(data, Tensor):
        data = data._concrete("gradc.tensor()")
    t = Tensor(data, dtype=dtype)
    if isinstance(data, np.ndarray) and np.shares_memory(t._data, data):  # torch.tensor always copies
        t._data = t._data.copy()
    return t._set_requires_grad() if requires_grad else t


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor over the array (float32/float64/int64/bool), as torch.from_numpy."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    # shares memory with a C-contiguous native-endian array; other layouts are copied
    return Tensor._from_array(np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C"))


def zeros(*size: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
          **kwargs: Any) -> Tensor:
    return _make(np.zeros(_shape(size)), dtype, requires_grad, device)


def ones(*size: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
         **kwargs: Any) -> Tensor:
    return _make(np.ones(_shape(size)), dtype, requires_grad, device)


def full(size: Any, fill_value: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
         **kwargs: Any) -> Tensor:
    if dtype is None:  # PyTorch infers the dtype from the fill value
        dtype = bool_ if isinstance(fill_value, bool) else int64 if isinstance(fill_value, int) else None
    elif isinstance(fill_value, int):
        fill_value = checked_number(fill_value, dtype)  # PyTorch refuses a value the dtype cannot hold
    return _make(np.full(_shape((size,)), fill_value), dtype, requires_grad, device)


def eye(n: int, m: int | None = None, dtype: DType | None = None, requires_grad: bool = False,
        device: Any = None) -> Tensor:
    return _make(np.eye(n, m), dtype, requires_grad, device)


def arange(start: float, end: float | None = None, step: float = 1, dtype: DType | None = None,
           requires_grad: bool = False, device: Any = None, **kwargs: Any) -> Tensor:
    if end is None:
        start, end = 0, start
    start, end, step = (v.item() if isinstance(v, Tensor) else v for v in (start, end, step))
    if step == 0:
        raise RuntimeError("step must be nonzero")
    # PyTorch: size = ceil((end - start) / step), computed in double; values start + i * step
    count = max(0, int(np.ceil((end - start) / step)))
    values = start + np.arange(count, dtype=np.float64) * step
    if dtype is None and all(isinstance(v, int) for v in (start, end, step)):
        dtype = int64
    return _make(values, dtype, requires_grad, device)


def randn(*size: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
          **kwargs: Any) -> Tensor:
    dtype = dtype or get_default_dtype()
    return _make(generator(kwargs.get("generator")).standard_normal(_shape(size), dtype=dtype.numpy), dtype,
                 requires_grad, device)


def rand(*size: Any, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
         **kwargs: Any) -> Tensor:
    dtype = dtype or get_default_dtype()
    return _make(generator(kwargs.get("generator")).random(_shape(size), dtype=dtype.numpy), dtype,
                 requires_grad, device)


def _like(fn):
    def factory(t: Tensor, dtype: DType | None = None, requires_grad: bool = False, device: Any = None,
                **kwargs: Any) -> Tensor:
        return fn(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad, device=device)
    return factory


ones_like = _like(ones)
zeros_like = _like(zeros)
randn_like = _like(randn)
