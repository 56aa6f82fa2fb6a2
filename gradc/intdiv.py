"""Floor division and remainder: `//`, `%`, torch.floor_divide and torch.remainder.

Composites of registry primitives, so they trace, compile and run natively like any front-end code (no
integer division instruction is emitted, so a zero divisor cannot trap in native code).

Floats: floor(a / b). Integers go through float64, which is exact for int32 and narrower: for |a|, |b| <
2**31 a quotient that is not an integer stays more than 1/|b| away from one, far beyond float64's rounding.
int64 refines the float64 quotient with the quotient of the (exact, small) remainder a - q*b, then corrects
by one so that the remainder lies between 0 and b: exact over the whole range (INT64_MIN // -1 wraps, as
in PyTorch). An integer zero divisor is PyTorch's RuntimeError("ZeroDivisionError") for eager tensors;
traced code cannot check values, and gives an unspecified result there.

`floor_divide` has no gradient (PyTorch's is not implemented); `remainder` has PyTorch's: 1 for a and
-floor(a / b) for b. A float remainder is a - b * floor(a / b), float32 evaluated in float64; PyTorch's
exact fmod can differ from it in the last bits for quotients beyond 2**24 (float32) or 2**53 (float64).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc import functional as F
from gradc.ir.core import bool_, float64, int64
from gradc.pointwise import floor
from gradc.tensor import Tensor, apply, torch_op


def _check_divisor(b: Tensor) -> None:
    if not b.dtype.is_float and not b.is_traced and np.any(b._data == 0):
        raise RuntimeError("ZeroDivisionError")


def _float_quotient(a: Tensor, b: Tensor, dtype: Any) -> Tensor:
    return F.cast(floor(F.div(F.cast(a, float64), F.cast(b, float64))), dtype)


def _integer_floor_div(a: Tensor, b: Tensor) -> Tensor:
    q = _float_quotient(a, b, a.dtype)
    if a.dtype != int64:
        return q
    # the remainder a - q*b is exact (it is small) even where q * b wraps; its own quotient refines q
    q = F.add(q, _float_quotient(F.sub(a, F.mul(q, b)), b, int64))
    r = F.sub(a, F.mul(q, b))
    positive = F.compare("gt", b, 0)
    up = F.where(positive, F.compare("ge", r, b), F.compare("le", r, b))
    down = F.where(positive, F.compare("lt", r, 0), F.compare("gt", r, 0))
    return F.sub(F.add(q, F.cast(up, int64)), F.cast(down, int64))


def _floor_div(a: Tensor, b: Tensor) -> Tensor:
    if a.dtype == bool_:
        raise RuntimeError("\"div_floor_cpu\" not implemented for 'Bool'")
    if a.dtype.is_float:
        return floor(F.div(a, b))
    _check_divisor(b)
    return _integer_floor_div(a, b)


def floor_divide(a: Any, b: Any) -> Tensor:
    """a // b rounded toward minus infinity, in the promoted dtype (PyTorch's torch.floor_divide)."""
    x, y = F.promote(a, b)
    held = [apply("stop_gradient", t) if t.dtype.is_float else t for t in (x, y)]
    return _floor_div(*held)


@torch_op("RemainderBackward0")
def remainder(a: Any, b: Any) -> Tensor:
    """a - b * floor(a / b): the sign of b, as Python's % and torch.remainder."""
    x, y = F.promote(a, b)
    if not x.dtype.is_float:
        return F.sub(x, F.mul(floor_divide(x, y), y))
    if x.dtype != float64:  # float32 in float64: (nearly always) exact, as PyTorch's fmod-based rule
        return F.cast(remainder(F.cast(x, float64), F.cast(y, float64)), x.dtype)
    quotient = _floor_div(apply("stop_gradient", x), apply("stop_gradient", y))
    return F.sub(x, F.mul(quotient, y))


FUNCTIONS = {"floor_divide": floor_divide, "remainder": remainder}
METHODS = {**FUNCTIONS, "__floordiv__": floor_divide, "__rfloordiv__": lambda a, b: floor_divide(b, a),
           "__mod__": remainder, "__rmod__": lambda a, b: remainder(b, a)}
INPLACE = ("floor_divide", "remainder")
