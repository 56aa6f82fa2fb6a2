"""Tensor methods and operators, bound to the front-end functions (one definition per op)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc import functional as F
from gradc.grad_mode import is_grad_enabled
from gradc.tensor import Tensor


def _swap(fn):
    return lambda a, b: fn(b, a)


def _inplace(fn):
    """x.op_(y): compute out of place, then write into x's buffer (refused on leaves needing grad)."""
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        check_inplace(self)
        result = fn(self, *args, **kwargs)
        if result.shape != self.shape:
            raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                               f"{list(result.shape)}")
        self._data[...] = result._data.astype(self._data.dtype)
        self._bump_version()
        if result._record is not None:
            self._record, self.grad_fn, self.requires_grad = result._record, result.grad_fn, True
        return self
    return method


def check_inplace(t: Tensor) -> None:
    if t._value is not None:
        raise TypeError("in-place operations are not supported on traced tensors")
    if t.requires_grad and t._record is None and is_grad_enabled():
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")


def zero_(self: Tensor) -> Tensor:
    check_inplace(self)
    self._data[...] = 0
    self._bump_version()
    return self


def fill_(self: Tensor, value: Any) -> Tensor:
    check_inplace(self)
    self._data[...] = value
    self._bump_version()
    return self


def copy_(self: Tensor, src: Any) -> Tensor:
    check_inplace(self)
    self._data[...] = np.asarray(src._data if isinstance(src, Tensor) else src)
    self._bump_version()
    return self


BINDINGS = {
    "__add__": F.add, "__radd__": _swap(F.add), "__sub__": F.sub, "__rsub__": F.rsub,
    "__mul__": F.mul, "__rmul__": _swap(F.mul), "__truediv__": F.div, "__rtruediv__": F.rdiv,
    "__pow__": F.pow, "__rpow__": _swap(F.pow), "__matmul__": F.matmul, "__rmatmul__": _swap(F.matmul),
    "__neg__": F.neg, "__abs__": F.abs, "__getitem__": F.getitem,
    "__lt__": lambda a, b: F.compare("lt", a, b), "__le__": lambda a, b: F.compare("le", a, b),
    "__gt__": lambda a, b: F.compare("gt", a, b), "__ge__": lambda a, b: F.compare("ge", a, b),
    "__eq__": lambda a, b: F.compare("eq", a, b), "__ne__": lambda a, b: F.compare("ne", a, b),
    "add": F.add, "sub": F.sub, "mul": F.mul, "div": F.div, "pow": F.pow, "matmul": F.matmul, "mm": F.matmul,
    "neg": F.neg, "exp": F.exp, "log": F.log, "sqrt": F.sqrt, "tanh": F.tanh, "sigmoid": F.sigmoid,
    "relu": F.relu, "abs": F.abs, "reciprocal": F.reciprocal, "clamp": F.clamp, "clip": F.clamp,
    "maximum": F.maximum, "minimum": F.minimum,
    "sum": F.sum, "mean": F.mean, "max": F.max, "min": F.min, "amax": F.amax, "argmax": F.argmax,
    "reshape": F.reshape, "view": F.reshape, "permute": F.permute, "transpose": F.transpose, "t": F.t,
    "expand": F.expand, "unsqueeze": F.unsqueeze, "squeeze": F.squeeze, "flatten": F.flatten,
    "gather": F.gather, "softmax": F.softmax, "log_softmax": F.log_softmax,
    "add_": _inplace(F.add), "sub_": _inplace(F.sub), "mul_": _inplace(F.mul), "div_": _inplace(F.div),
    "zero_": zero_, "fill_": fill_, "copy_": copy_,
    "float": lambda x: F.cast_op(x, F.float32), "double": lambda x: F.cast_op(x, F.float64),
    "long": lambda x: F.cast_op(x, F.int64), "to": lambda x, dtype: F.cast_op(x, dtype),
    "type_as": lambda x, other: F.cast_op(x, other.dtype),
    "expand_as": lambda x, other: F.expand(x, other.shape), "view_as": lambda x, other: F.reshape(x, other.shape),
}

for _name, _fn in BINDINGS.items():
    setattr(Tensor, _name, _fn)
Tensor.__hash__ = lambda self: id(self)  # __eq__ is elementwise, tensors stay hashable by identity
Tensor.T = property(lambda x: F.permute(x, tuple(reversed(range(x.ndim)))))
