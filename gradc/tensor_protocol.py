"""The rest of the Python and PyTorch protocol of Tensor: index conversion, strides, .data, devices and
dtype conversion (.to/.cpu/.type), item assignment recorded for autograd, clone, new_* factories,
in-place updates (add_ with alpha, addcmul_, addcdiv_, lerp_, clamp_); hooks and retain_grad are in
gradc.autograd.hooks."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc import functional as F
from gradc.device import CPU, check_device, device
from gradc.dtypes import float16, refuse
from gradc.grad_mode import is_grad_enabled
from gradc.ir.core import DType, bool_, float32, float64, int8, int16, int32, int64, uint8
from gradc.methods import _inplace, check_inplace
from gradc.promotion import checked_number
from gradc.tensor import Tensor, apply, torch_op

TYPE_NAMES = {float32: "torch.FloatTensor", float64: "torch.DoubleTensor", int64: "torch.LongTensor",
              int32: "torch.IntTensor", int16: "torch.ShortTensor", int8: "torch.CharTensor",
              uint8: "torch.ByteTensor", bool_: "torch.BoolTensor"}
DTYPE_BY_TYPE_NAME = {v: k for k, v in TYPE_NAMES.items()}


class Size(tuple):
    """torch.Size: the tuple `Tensor.size()` returns, printed as PyTorch prints it."""

    def __repr__(self) -> str:
        return f"torch.Size({list(self)})"

    __str__ = __repr__

    def numel(self) -> int:
        return int(np.prod(self, dtype=np.int64))


def _size(self: Tensor, dim: int | None = None) -> Any:
    return Size(self.shape) if dim is None else self.shape[dim]


def _index(self: Tensor) -> int:
    if self.dtype.is_float or self.dtype == bool_ or self.numel() != 1:
        raise TypeError("only integer tensors of a single element can be converted to an index")
    return int(self.item())


def _stride(self: Tensor, dim: int | None = None) -> Any:
    data = self._concrete("stride()")
    strides = tuple(s // data.itemsize for s in data.strides) if data.size else \
        tuple(int(np.prod(self.shape[i + 1:])) for i in range(self.ndim))
    return strides if dim is None else strides[dim]


def _get_data(self: Tensor) -> Tensor:
    return self.detach()


def _set_data(self: Tensor, value: Tensor) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"data must be a Tensor, got {type(value).__name__}")
    self._data = value._data


def _parse_to(args: tuple, kwargs: dict) -> tuple[Any, DType | None]:
    where, dtype = kwargs.get("device"), kwargs.get("dtype")
    for a in args:
        refuse(a)
        if isinstance(a, DType):
            dtype = a
        elif isinstance(a, Tensor):
            where, dtype = CPU, a.dtype
        elif isinstance(a, (str, device, int)):
            where = a
        elif a is not None and not isinstance(a, bool):
            raise TypeError(f"to() received an invalid combination of arguments - got ({type(a).__name__})")
    return where, dtype


def _to(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """Tensor.to(device), .to(dtype), .to(other), .to(device, dtype): self when nothing changes."""
    where, dtype = _parse_to(args, kwargs)
    check_device(where)
    if dtype is None or dtype == self.dtype:
        return F.cast_op(self, self.dtype) if kwargs.get("copy") else self
    return F.cast_op(self, dtype)


def _type(self: Tensor, dtype: Any = None, non_blocking: bool = False, **kwargs: Any) -> Any:
    if dtype is None:
        return TYPE_NAMES.get(self.dtype, f"torch.{self.dtype.name}")
    refuse(dtype)
    if isinstance(dtype, str):
        if dtype not in DTYPE_BY_TYPE_NAME:
            raise ValueError(f"invalid type: '{dtype}'")
        dtype = DTYPE_BY_TYPE_NAME[dtype]
    return self if dtype == self.dtype else F.cast_op(self, dtype)


def _key(key: Any) -> Any:
    """An index with Tensors in it, as numpy understands it."""
    if isinstance(key, Tensor):
        return key._concrete("indexing")
    if isinstance(key, tuple):
        return tuple(_key(k) for k in key)
    if isinstance(key, list):
        return [_key(k) for k in key]
    return key


def _scatter(x: Tensor, key: Any, value: Any) -> Tensor:
    """x with x[key] = value, as a graph: where(selected, value gathered per element, x)."""
    n = x.numel()
    positions = np.arange(n, dtype=np.int64).reshape(x.shape)[key]
    source = F.cast(F.to_tensor(value, x), x.dtype)
    target = np.broadcast_shapes(source.shape, positions.shape) if positions.ndim or source.ndim else ()
    if tuple(target) != positions.shape:
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(source.shape)} cannot be broadcast to "
                           f"indexing result of shape {list(positions.shape)}")
    flat_source = F.reshape(F.expand_to(source, positions.shape), (-1,)) if positions.size else None
    if flat_source is None:
        return F.cast_op(x, x.dtype)
    owner = np.full(n, -1, dtype=np.int64)
    owner[positions.reshape(-1)] = np.arange(positions.size)  # numpy order: the last write wins
    selected = owner >= 0
    gathered = apply("gather", F.expand_to(F.reshape(flat_source, (1, positions.size)), (n, positions.size)),
                     Tensor._from_array(np.where(selected, owner, 0)), axis=1)
    flat = F.where(Tensor._from_array(selected), gathered, F.reshape(x, (-1,)))
    return F.reshape(flat, x.shape)


def _traced_setitem(self: Tensor, key: Any, value: Any) -> None:
    """x[key] = value on a traced tensor (e.g. inside a custom Function's traced backward): x is rebound to
    the new value. Masks may be traced; other indices must be static."""
    if isinstance(key, Tensor) and key.dtype == bool_ and key.is_traced:
        if key.shape != self.shape:
            raise TypeError(f"a traced boolean mask must have the tensor's shape {list(self.shape)}, got "
                            f"{list(key.shape)}")
        source = F.expand_to(F.cast(F.to_tensor(value, self), self.dtype), self.shape)
        result = F.where(key, source, self)
    else:
        result = _scatter(self, _key(key), value)
    self._value = result._value if result.is_traced else \
        current_trace_lift(result)


def current_trace_lift(t: Tensor) -> Any:
    from gradc.tensor import current_trace
    return current_trace().lift(t)


def _setitem(self: Tensor, key: Any, value: Any) -> None:
    if self.is_traced:
        _traced_setitem(self, key, value)
        return
    key = _key(key)
    value_grad = isinstance(value, Tensor) and value.requires_grad
    if is_grad_enabled() and (self.requires_grad or value_grad):
        parts = key if isinstance(key, tuple) else (key,)
        advanced = any(isinstance(k, (np.ndarray, list)) for k in parts)
        whole = all(k is Ellipsis or (isinstance(k, slice) and k == slice(None)) for k in parts)
        # PyTorch: index_put_ for advanced indices, a copy into a view for basic ones, copy_ for x[:]
        node = "IndexPutBackward0" if advanced else "CopyBackwards" if whole else "CopySlices"
        _inplace(torch_op(node)(lambda x, v: _scatter(x, key, v)))(self, value)
        return
    check_inplace(self)
    self._data[key] = value._concrete("assignment") if isinstance(value, Tensor) else \
        checked_number(value, self.dtype) if isinstance(value, (int, np.integer)) else value
    self._bump_version()


def _clone(self: Tensor, memory_format: Any = None) -> Tensor:
    return torch_op("CloneBackward0")(lambda x: apply("cast", x, dtype=x.dtype))(self)


def _new(fill: Any) -> Any:
    def method(self: Tensor, *size: Any, dtype: DType | None = None, device: Any = None,
               requires_grad: bool = False, **kwargs: Any) -> Tensor:
        from gradc.factories import _make, _shape
        return _make(fill(_shape(size)), dtype or self.dtype, requires_grad, device)
    return method


def _new_full(self: Tensor, size: Any, fill_value: Any, dtype: DType | None = None, device: Any = None,
              requires_grad: bool = False, **kwargs: Any) -> Tensor:
    from gradc.factories import _make, _shape
    return _make(np.full(_shape((size,)), fill_value), dtype or self.dtype, requires_grad, device)


def _new_tensor(self: Tensor, data: Any, dtype: DType | None = None, device: Any = None,
                requires_grad: bool = False, **kwargs: Any) -> Tensor:
    from gradc.factories import tensor
    return tensor(data, dtype=dtype or self.dtype, requires_grad=requires_grad, device=device)


def _addcmul(x: Tensor, t1: Any, t2: Any, value: Any = 1) -> Tensor:
    return F.add(x, F.mul(F.mul(t1, t2), value))


def _addcdiv(x: Tensor, t1: Any, t2: Any, value: Any = 1) -> Tensor:
    return F.add(x, F.mul(F.div(t1, t2), value))


def _lerp(x: Tensor, end: Any, weight: Any) -> Tensor:
    return F.add(x, F.mul(weight, F.sub(end, x)))


BINDINGS = {
    "__index__": _index, "stride": _stride, "size": _size, "to": _to, "type": _type, "__setitem__": _setitem,
    "clone": _clone, "cpu": lambda self, *a, **k: self, "contiguous": lambda self, *a, **k: self,
    "new_zeros": _new(np.zeros), "new_ones": _new(np.ones), "new_empty": _new(np.zeros),
    "new_full": _new_full, "new_tensor": _new_tensor,
    "is_floating_point": lambda self: self.dtype.is_float,
    "add_": _inplace(F.add), "addcmul_": _inplace(_addcmul), "addcdiv_": _inplace(_addcdiv),
    "lerp_": _inplace(_lerp), "clamp_": _inplace(F.clamp), "clip_": _inplace(F.clamp),
    "addcmul": _addcmul, "addcdiv": _addcdiv, "lerp": _lerp,
    "bool": lambda self: F.cast_op(self, bool_), "int": lambda self: _to(self, int32),
    "short": lambda self: _to(self, int16), "half": lambda self: _to(self, float16),
    "byte": lambda self: _to(self, uint8), "char": lambda self: _to(self, int8),
}

for _name, _fn in BINDINGS.items():
    setattr(Tensor, _name, _fn)
Tensor.data = property(_get_data, _set_data)


def _format(self: Tensor, spec: str) -> str:
    # PyTorch: a 0-d tensor formats as its number (f"{loss:>7f}"); others as object does
    if self._value is None and self._data.ndim == 0:
        return format(self.item(), spec)
    return object.__format__(self, spec)


Tensor.__format__ = _format
Tensor.device = property(lambda self: CPU)
Tensor.is_cuda = property(lambda self: False)
Tensor.itemsize = property(lambda self: np.dtype(self.dtype.numpy).itemsize)
Tensor.element_size = lambda self: np.dtype(self.dtype.numpy).itemsize
