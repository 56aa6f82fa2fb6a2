"""PyTorch's dtype names that gradc does not compute in.

gradc tensors are float32, float64, int64, int32, int16, int8, uint8 or bool, end to end (eager, IR,
the interpreter and native code); those dtypes live in gradc.ir.core. float16, bfloat16 and the complex
dtypes exist here so that scripts can mention them: using one for a tensor raises a TypeError that says
what to use instead. `iinfo` and `finfo` describe the supported dtypes, as torch.iinfo/torch.finfo.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


class iinfo:  # noqa: N801  (PyTorch's name)
    """torch.iinfo: bits, min and max of an integer dtype."""

    def __init__(self, dtype: Any) -> None:
        refuse(dtype)
        if dtype.is_float or dtype.name == "bool":
            raise TypeError(f"torch.{dtype.name} is not supported by torch.iinfo")
        info = np.iinfo(dtype.numpy)
        self.bits, self.min, self.max, self.dtype = int(info.bits), int(info.min), int(info.max), dtype.name

    def __repr__(self) -> str:
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"


class finfo:  # noqa: N801  (PyTorch's name)
    """torch.finfo: bits, eps, max, min, tiny (smallest_normal) and resolution of a float dtype."""

    def __init__(self, dtype: Any = None) -> None:
        from gradc.device import get_default_dtype
        dtype = get_default_dtype() if dtype is None else dtype
        refuse(dtype)
        if not dtype.is_float:
            raise TypeError(f"torch.{dtype.name} is not supported by torch.finfo")
        info = np.finfo(dtype.numpy)
        self.bits, self.eps, self.max, self.min = int(info.bits), float(info.eps), float(info.max), float(info.min)
        self.tiny = self.smallest_normal = float(info.tiny)
        self.resolution, self.dtype = 10.0 ** -int(info.precision), dtype.name

    def __repr__(self) -> str:
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, eps={self.eps:g}, "
                f"smallest_normal={self.tiny:g}, tiny={self.tiny:g}, dtype={self.dtype})")
