"""Core IR data structures: dtypes, tensor types, SSA values, ops and functions.

A `Function` is a flat list of single-result `Op`s over `Value`s with static-shape `TensorType`s.
Nothing here knows about numpy evaluation, AD or code generation: those live in the op registry
(`gradc.ir.ops`) and in passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class IRError(Exception):
    """Malformed IR: a broken invariant found by the verifier, parser or builder."""


class ShapeError(ValueError):
    """An op was applied to operands whose shapes or dtypes do not fit its rule."""


@dataclass(frozen=True)
class DType:
    name: str  # PyTorch-style name, e.g. "float32"
    short: str  # IR text name, e.g. "f32"
    numpy: Any  # numpy scalar type
    is_float: bool

    def __repr__(self) -> str:
        return f"gradc.{self.name}"

    __str__ = __repr__

    @property
    def is_unsigned(self) -> bool:
        """uint8 (and bool): native code compares, divides, widens and converts these as unsigned."""
        return np.dtype(self.numpy).kind in "ub"

    @property
    def bits(self) -> int:
        return 1 if self.numpy is np.bool_ else 8 * np.dtype(self.numpy).itemsize


float32 = DType("float32", "f32", np.float32, True)
float64 = DType("float64", "f64", np.float64, True)
int64 = DType("int64", "i64", np.int64, False)
int32 = DType("int32", "i32", np.int32, False)
int16 = DType("int16", "i16", np.int16, False)
int8 = DType("int8", "i8", np.int8, False)
uint8 = DType("uint8", "u8", np.uint8, False)
bool_ = DType("bool", "i1", np.bool_, False)

DTYPES = (float32, float64, int64, int32, int16, int8, uint8, bool_)
INTEGER_DTYPES = (int64, int32, int16, int8, uint8)
DTYPE_BY_SHORT = {d.short: d for d in DTYPES}
DTYPE_BY_NUMPY = {np.dtype(d.numpy): d for d in DTYPES}


def dtype_of_numpy(dtype: Any) -> DType:
    """The gradc dtype for a numpy dtype; TypeError for ones gradc does not support."""
    key = np.dtype(dtype)
    if key.byteorder == ">" or (key.byteorder == "=" and not key.isnative):
        key = key.newbyteorder("=")
    try:
        return DTYPE_BY_NUMPY[key]
    except KeyError:
        names = ", ".join(d.name for d in DTYPES)
        raise TypeError(f"unsupported dtype {np.dtype(dtype)}; gradc supports {names}") from None


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)  # exact Python ints; np.prod costs ~3 us per eager op

    def __str__(self) -> str:
        return f"{self.dtype.short}[{','.join(str(d) for d in self.shape)}]"

    __repr__ = __str__


class Value:
    """An SSA value: a function parameter (op is None) or the result of one op."""

    __slots__ = ("type", "op", "name")

    def __init__(self, type: TensorType, op: Op | None = None, name: str | None = None):
        self.type = type
        self.op = op
        self.name = name  # a hint for params; op results are numbered at print time

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        producer = self.op.opdef.name if self.op is not None else "param"
        return f"<Value {self.name or ''}:{self.type} from {producer}>"


@dataclass(eq=False)
class Op:
    opdef: Any  # gradc.ir.ops.OpDef
    inputs: tuple[Value, ...]
    attrs: dict[str, Any]
    result: Value

    @property
    def name(self) -> str:
        return self.opdef.name


@dataclass(eq=False)
class Function:
    name: str
    params: list[Value]
    ops: list[Op]
    results: list[Value]
    meta: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        from gradc.ir.printer import print_function

        return print_function(self)

    @property
    def param_types(self) -> list[TensorType]:
        return [p.type for p in self.params]

    @property
    def result_types(self) -> list[TensorType]:
        return [r.type for r in self.results]
