"""In-place random fills as Tensor methods: uniform_, normal_, random_, on PyTorch's CPU streams.

`nn.init` and the factories draw from the same gradc.random.Generator, so `w.uniform_(-a, a)` after
`manual_seed(s)` gives PyTorch's numbers (tests/test_random_streams.py). On a tensor that is part of a
graph the fill is recorded as PyTorch's UniformBackward0 / NormalBackward0 / RandomBackward0: no gradient
reaches the old value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc.factories import generator as _generator
from gradc.ir.core import bool_
from gradc.random import WIDE_RANGE
from gradc.tensor import Tensor

# random_()'s default upper bound: the dtype's max + 1, or 2^digits + 1 for floats (every integer exact)
_FULL_RANGE_TO = {"float32": (1 << 24) + 1, "float64": (1 << 53) + 1, "bool": 2}


def _fill(self: Tensor, values: np.ndarray, node: str) -> Tensor:
    from gradc.methods import _recorded_overwrite, _records, check_inplace
    if _records(self):
        return _recorded_overwrite(self, Tensor._from_array(values.astype(self._data.dtype)), node)
    check_inplace(self)
    self._data[...] = values
    self._bump_version()
    return self


# PyTorch's C++ type names, as its "not implemented for" errors spell them
_C_TYPE_NAMES = {"int64": "long", "int32": "int", "int16": "short", "int8": "signed char", "uint8": "unsigned char",
                 "bool": "bool"}
_TORCH_TYPE_NAMES = {"int64": "Long", "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}


def _float_dtype(self: Tensor, kernel: str) -> np.dtype:
    if not self.dtype.is_float:
        raise NotImplementedError(f'"{kernel}" not implemented for '
                                  f"'{_TORCH_TYPE_NAMES.get(self.dtype.name, self.dtype.name)}'")
    return np.dtype(self.dtype.numpy)


def uniform_(self: Tensor, from_: float = 0.0, to: float = 1.0, *, generator: Any = None, **kwargs: Any) -> Tensor:
    """Tensor.uniform_(from=0, to=1): U[from, to) on PyTorch's stream."""
    from_ = kwargs.pop("from", from_)
    if kwargs:
        raise TypeError(f"uniform_() got an unexpected keyword argument '{next(iter(kwargs))}'")
    dtype = _float_dtype(self, "check_uniform_bounds")
    if not from_ <= to:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={from_} > to={to}")
    return _fill(self, _generator(generator).uniform(from_, to, self.shape, dtype=dtype), "UniformBackward0")


def normal_(self: Tensor, mean: float = 0.0, std: float = 1.0, *, generator: Any = None) -> Tensor:
    """Tensor.normal_(mean=0, std=1) on PyTorch's stream."""
    dtype = _float_dtype(self, "normal_kernel_cpu")
    if std < 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    return _fill(self, _generator(generator).normal(mean, std, self.shape, dtype=dtype), "NormalBackward0")


_UNSET = object()


def random_(self: Tensor, *args: Any, generator: Any = None, **kwargs: Any) -> Tensor:
    """Tensor.random_(), random_(to), random_(from, to): integers in [from, to) drawn as PyTorch draws them
    (to=None: up to the dtype's largest value)."""
    if "from" in kwargs or "to" in kwargs:
        args = (kwargs.pop("from", 0), kwargs.pop("to", None)) if "from" in kwargs else (kwargs.pop("to"),)
    if kwargs:
        raise TypeError(f"random_() got an unexpected keyword argument '{next(iter(kwargs))}'")
    if len(args) > 2:
        raise TypeError(f"random_() takes at most 2 positional arguments ({len(args)} given)")
    low, to = (0, _UNSET) if not args else (0, args[0]) if len(args) == 1 else args
    full = self.dtype.name in _FULL_RANGE_TO or self.dtype.is_float
    high = (_FULL_RANGE_TO.get(self.dtype.name) if full else int(np.iinfo(self.dtype.numpy).max) + 1) \
        if to is _UNSET or to is None else int(to)
    low = int(low)
    if self.dtype.name in _C_TYPE_NAMES:  # integer dtypes: both ends must be values of the dtype
        info = (0, 1) if self.dtype is bool_ else np.iinfo(self.dtype.numpy)
        lo, hi = (info if self.dtype is bool_ else (int(info.min), int(info.max)))
        if not lo <= low <= hi:
            raise RuntimeError(f"from is out of bounds for {_C_TYPE_NAMES[self.dtype.name]}")
        if to is not _UNSET and to is not None and not lo <= high - 1 <= hi:
            raise RuntimeError(f"to - 1 is out of bounds for {_C_TYPE_NAMES[self.dtype.name]}")
    if low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    gen, n, span = _generator(generator), self.numel(), high - low
    if to is _UNSET and self.dtype is bool_:
        values = (gen.words(n) & np.uint64(1)).astype(bool)
    else:  # 64-bit draws for int64/float64's full range and for spans of 2^28 or more, as PyTorch
        wide = self.dtype.name in ("int64", "float64") if to is _UNSET else span >= WIDE_RANGE
        raw = gen.words64(n) if wide else gen.words(n)
        values = np.array([int(w) % span + low for w in raw.tolist()], dtype=np.float64 if self.dtype.is_float
                          else np.int64) if span >= (1 << 63) else (raw % np.uint64(span)).astype(np.int64) + low
    return _fill(self, np.asarray(values).astype(self._data.dtype).reshape(self.shape), "RandomBackward0")


METHODS = {"uniform_": uniform_, "normal_": normal_, "random_": random_}
INPLACE: tuple[str, ...] = ()
