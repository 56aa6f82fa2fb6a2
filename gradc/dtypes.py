"""PyTorch's dtype names that gradc does not compute in.

gradc tensors are float32, float64, int64, int32, int16, int8, uint8 or bool, end to end (eager, IR,
the interpreter and native code); those dtypes live in gradc.ir.core. float16, bfloat16 and the complex
dtypes exist here so that scripts can mention them: using one for a tensor raises a TypeError that says
what to use instead.
"""

from __future__ import annotations

from typing import Any

SUPPORTED = "float32, float64, int64, int32, int16, int8, uint8 and bool"
INSTEAD = {"float16": "float32 (.float())", "bfloat16": "float32 (.float())",
           "complex64": "two float32 tensors", "complex128": "two float64 tensors"}


class UnsupportedDType:
    """A dtype name gradc knows but does not compute in: every use for a tensor is a TypeError."""

    is_float = False

    def __init__(self, name: str, short: str) -> None:
        self.name, self.short = name, short

    @property
    def numpy(self) -> Any:
        raise TypeError(f"gradc does not support {self.name} tensors (gradc computes in {SUPPORTED}); "
                        f"use {INSTEAD[self.name]}")

    @property
    def is_floating_point(self) -> bool:
        return self.name in ("float16", "bfloat16")

    def __repr__(self) -> str:
        return f"gradc.{self.name}"

    __str__ = __repr__


float16 = UnsupportedDType("float16", "f16")
bfloat16 = UnsupportedDType("bfloat16", "bf16")
complex64 = UnsupportedDType("complex64", "c64")
complex128 = UnsupportedDType("complex128", "c128")


def refuse(dtype: Any) -> None:
    """Raise the TypeError for an unsupported dtype name; anything else passes."""
    if isinstance(dtype, UnsupportedDType):
        dtype.numpy  # noqa: B018  (raises the TypeError)
