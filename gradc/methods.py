"""Tensor methods and operators, bound to the front-end functions (one definition per op)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc import functional as F
from gradc.grad_mode import is_grad_enabled
from gradc.promotion import SCALAR_NAMES, category, checked_number
from gradc.tensor import Node, Tensor, next_function


def _swap(fn):
    return lambda a, b: fn(b, a)


# Primitives whose PyTorch node saves its result: overwriting that result in place makes backward
# refuse, as PyTorch refuses when a node's saved result changed. Not div (DivBackward0 saves the operands;
# the version history keeps gradc's quotient readable), but relu (ReluBackward0 saves its result).
SAVES_RESULT = frozenset({"exp", "tanh", "sqrt", "sigmoid", "recip", "pow", "reduce_max", "relu"})


def _inplace(fn):
    """x.op_(y): compute out of place, then write into x's buffer (refused on leaves needing grad).

    When the result joins a graph, the op reads a copy of x's old value, which takes over x's old
    history; ops that saved x itself see its version change and refuse to backpropagate.
    """
    def method(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        check_inplace(self)
        source = self
        if self._record is not None and self._record.opdef.name in SAVES_RESULT:
            self._record.overwritten = self._version + 1  # the backward of its op reads this very tensor
        if is_grad_enabled() and (self.requires_grad or any(isinstance(a, Tensor) and a.requires_grad
                                                            for a in (*args, *kwargs.values()))):
            source = Tensor._from_array(self._data.copy())
            source._record, source._grad_fn, source.requires_grad = self._record, self._grad_fn, self.requires_grad
            # ops recorded before now read `self` at this version: they now find its old value here
            self._history = {**getattr(self, "_history", {}), self._version: source}
        result = fn(source, *args, **kwargs)
        if category(result.dtype) > category(self.dtype):  # PyTorch casts an in-place result only downwards
            raise RuntimeError(f"result type {SCALAR_NAMES[result.dtype]} can't be cast to the desired output "
                               f"type {SCALAR_NAMES[self.dtype]}")
        if result.shape != self.shape:
            raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the broadcast shape "
                               f"{list(result.shape)}")
        self._data[...] = result._data.astype(self._data.dtype)
        self._bump_version()
        if result._record is not None:
            self._record, self._grad_fn, self.requires_grad = result._record, result.grad_fn, True
        return self
    return method


def check_inplace(t: Tensor) -> None:
    if t._value is not None:
        raise TypeError("in-place operations are not supported on traced tensors")
    if t.requires_grad and t._record is None and is_grad_enabled():
        raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")


def _overwrite(x: Tensor, src: Any) -> Tensor:
    # the result is src everywhere: no gradient reaches x, all of it reaches src
    src = F.expand_to(F.cast(F.to_tensor(src, x), x.dtype), x.shape)
    return F.where(F.expand_to(F.to_tensor(True), x.shape), src, x)


def _recorded_overwrite(self: Tensor, src: Any, node: str) -> Tensor:
    old = next_function(self)
    _inplace(_overwrite)(self, src)
    self.grad_fn = Node(node, (old,) + ((next_function(src),) if node == "CopyBackwards" else ()))
    return self


def _records(self: Tensor, src: Any = None) -> bool:
    """Does overwriting self (with src) have to be recorded in the graph?"""
    return is_grad_enabled() and (self.requires_grad or (isinstance(src, Tensor) and src.requires_grad))


def zero_(self: Tensor) -> Tensor:
    if _records(self):
        return _recorded_overwrite(self, 0, "ZeroBackward0")
    return fill_(self, 0)


def fill_(self: Tensor, value: Any) -> Tensor:
    if _records(self, value):
        return _recorded_overwrite(self, value, "FillBackward2")
    check_inplace(self)
    if self._record is not None and self._record.opdef.name in SAVES_RESULT:
        self._record.overwritten = self._version + 1
    self._data[...] = value._data if isinstance(value, Tensor) else checked_number(value, self.dtype) \
        if isinstance(value, (int, np.integer)) else value
    self._bump_version()
    return self


def copy_(self: Tensor, src: Any) -> Tensor:
    if _records(self, src):
        return _recorded_overwrite(self, src, "CopyBackwards")
    return fill_(self, np.asarray(src._data if isinstance(src, Tensor) else src))


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
    "amin": F.amin, "aminmax": F.aminmax,
    "sum": F.sum, "mean": F.mean, "max": F.max, "min": F.min, "amax": F.amax, "argmax": F.argmax,
    "reshape": F.reshape, "view": F.reshape, "permute": F.permute, "transpose": F.transpose, "t": F.t,
    "expand": F.expand, "unsqueeze": F.unsqueeze, "squeeze": F.squeeze, "flatten": F.flatten,
    "gather": F.gather, "softmax": F.softmax, "log_softmax": F.log_softmax,
    "add_": _inplace(F.add), "sub_": _inplace(F.sub), "mul_": _inplace(F.mul), "div_": _inplace(F.div),
    "zero_": zero_, "fill_": fill_, "copy_": copy_,
    "__iadd__": _inplace(F.add), "__isub__": _inplace(F.sub), "__imul__": _inplace(F.mul),
    "__itruediv__": _inplace(F.div),
    "float": lambda x: F.cast_op(x, F.float32), "double": lambda x: F.cast_op(x, F.float64),
    "long": lambda x: F.cast_op(x, F.int64), "to": lambda x, dtype: F.cast_op(x, dtype),
    "type_as": lambda x, other: F.cast_op(x, other.dtype),
    "expand_as": lambda x, other: F.expand(x, other.shape), "view_as": lambda x, other: F.reshape(x, other.shape),
}

from gradc import indexing as _ix  # noqa: E402
from gradc import shape_ops as _so  # noqa: E402

BINDINGS.update({
    "__getitem__": _ix.getitem, "index_select": _ix.index_select, "topk": _ix.topk,
    "multinomial": _ix.multinomial,
    "split": _so.split, "chunk": _so.chunk, "unbind": _so.unbind, "narrow": _so.narrow,
    "masked_fill": _so.masked_fill, "masked_fill_": _inplace(_so.masked_fill), "tril": _so.tril, "triu": _so.triu,
    "repeat": _so.repeat, "repeat_interleave": _so.repeat_interleave, "contiguous": _so.contiguous,
    "var": _so.var, "std": _so.std, "norm": _so.norm, "logsumexp": _so.logsumexp,
})

for _name, _fn in BINDINGS.items():
    setattr(Tensor, _name, _fn)
Tensor.__hash__ = lambda self: id(self)  # __eq__ is elementwise, tensors stay hashable by identity
Tensor.T = property(lambda x: F.permute(x, tuple(reversed(range(x.ndim)))))

from gradc import intdiv, movement, pointwise, random_fill, scans  # noqa: E402  (their functions are Tensor methods too)

for _module in (pointwise, scans, movement, intdiv, random_fill):
    for _name, _fn in _module.METHODS.items():
        setattr(Tensor, _name, _fn)
    for _name in _module.INPLACE:
        setattr(Tensor, _name + "_", _inplace(_module.METHODS[_name]))
Tensor.__ifloordiv__, Tensor.__imod__ = Tensor.floor_divide_, Tensor.remainder_
