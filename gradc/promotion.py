"""PyTorch's type promotion (torch.promote_types and torch.result_type) over gradc's dtypes.

Two dtypes promote to the smallest dtype that holds both (uint8 with int8 is int16; any integer with a
float is that float). An operation's operands promote in three priority levels, as PyTorch's
ResultTypeState: tensors with dimensions, then 0-d tensors, then Python numbers (a float number counts
as the default dtype, an int as int64). A lower level only matters when it is of a higher category
(bool < integer < float): int8 tensor + 1000 stays int8, int8 tensor + 2.5 is float32, float32 tensor +
0-d float64 tensor stays float32, but int8 tensor + 0-d float64 tensor is float64.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from gradc.ir.core import DType, bool_, float32, float64, int8, int16, int32, int64, uint8

# PyTorch's scalar type names, as its error messages spell them
SCALAR_NAMES = {bool_: "Bool", uint8: "Byte", int8: "Char", int16: "Short", int32: "Int", int64: "Long",
                float32: "Float", float64: "Double"}
_SIGNED = (int8, int16, int32, int64)  # by width
_FLOATS = (float32, float64)


def category(dtype: DType) -> int:
    """0 bool, 1 integer, 2 floating point."""
    return 2 if dtype.is_float else 0 if dtype == bool_ else 1


def _promote_pair(a: DType, b: DType) -> DType:
    if a == b:
        return a
    if a == bool_ or b == bool_:
        return b if a == bool_ else a
    if a.is_float or b.is_float:
        if a.is_float and b.is_float:
            return float64 if float64 in (a, b) else float32
        return a if a.is_float else b
    if uint8 in (a, b):  # uint8 with a signed type: the signed type that holds 0..255 too
        other = b if a == uint8 else a
        return int16 if other == int8 else other
    return _SIGNED[max(_SIGNED.index(a), _SIGNED.index(b))]


PROMOTE = {(a, b): _promote_pair(a, b) for a in SCALAR_NAMES for b in SCALAR_NAMES}


def promote_types(a: DType, b: DType) -> DType:
    """torch.promote_types."""
    return PROMOTE[(a, b)]


def _combine(higher: DType | None, lower: DType | None) -> DType | None:
    # PyTorch's combine_categories: a lower priority level wins only with a higher category
    if higher is None:
        return lower
    if lower is None or higher.is_float:
        return higher
    if higher == bool_ or lower.is_float:
        return PROMOTE[(higher, lower)]
    return higher


def number_dtype(value: Any) -> DType:
    """The dtype a Python (or numpy) number counts as in promotion."""
    from gradc.device import get_default_dtype
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return int64
    return get_default_dtype()


def result_type(args: Iterable[Any]) -> DType:
    """torch.result_type over tensors and numbers: see the module docstring."""
    from gradc.tensor import Tensor
    levels: list[DType | None] = [None, None, None]  # dimensioned tensors, 0-d tensors, numbers
    for a in args:
        if isinstance(a, Tensor):
            level, dtype = (0 if a.ndim else 1), a.dtype
        else:
            level, dtype = 2, number_dtype(a)
        levels[level] = dtype if levels[level] is None else PROMOTE[(levels[level], dtype)]
    out = _combine(_combine(levels[0], levels[1]), levels[2])
    if out is None:
        raise TypeError("result_type needs at least one tensor or number")
    return out


def wrap_number(value: Any, dtype: DType) -> np.ndarray:
    """A Python number as a 0-d array of dtype; integers wrap around (uint8 + 300 adds 44), as PyTorch."""
    if not dtype.is_float and dtype != bool_ and isinstance(value, (int, np.integer)) and not isinstance(
            value, (bool, np.bool_)):
        bits = dtype.bits
        value = int(value) & ((1 << bits) - 1)
        if not dtype.is_unsigned and value >= 1 << (bits - 1):
            value -= 1 << bits
    return np.asarray(value, dtype=dtype.numpy)


def torch_result_type(tensor: Any, other: Any) -> DType:
    """torch.result_type(tensor, other)."""
    return result_type((tensor, other))


_C_NAMES = {"int32": "int", "int16": "int16_t", "int8": "int8_t", "uint8": "uint8_t"}  # as PyTorch's errors


def checked_number(value: Any, dtype: DType) -> np.ndarray:
    """A Python number stored into a tensor of dtype (fill_, x[i] = v, masked_fill): PyTorch refuses an int
    the dtype cannot hold (uint8 takes -255..255, negatives wrapping), where arithmetic would wrap."""
    if dtype.name in _C_NAMES and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        info = np.iinfo(dtype.numpy)
        low = -int(info.max) if dtype.is_unsigned else int(info.min)
        if not low <= int(value) <= int(info.max):
            raise RuntimeError(f"value cannot be converted to type {_C_NAMES[dtype.name]} without overflow")
        return wrap_number(value, dtype)
    return np.asarray(value, dtype=dtype.numpy)
