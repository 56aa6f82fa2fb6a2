"""PyTorch's keywords on binary functions: `input=`/`other=` (or `mat2=`) for the operands, and `out=`
(compute, then write into `out`, resized as PyTorch does)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np

from gradc.tensor import Tensor


def with_out(fn: Callable) -> Callable:
    """fn(*args, out=t) writes the result into t and returns t (out must not require grad, as in PyTorch)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, out: Tensor | None = None, **kwargs: Any) -> Any:
        if "input" in kwargs:
            args = (kwargs.pop("input"),) + args
        for name in ("other", "mat2"):
            if name in kwargs:
                args = args + (kwargs.pop(name),)
        result = fn(*args, **kwargs)
        if out is None:
            return result
        if not isinstance(out, Tensor):
            raise TypeError(f"{fn.__name__}(): argument 'out' must be Tensor, not {type(out).__name__}")
        from gradc.grad_mode import is_grad_enabled
        if is_grad_enabled() and (out.requires_grad or result.requires_grad):
            raise RuntimeError(f"{fn.__name__}(): functions with out=... arguments don't support automatic "
                               "differentiation, but one of the arguments requires grad.")
        data = result._concrete("out=")
        if out.shape != data.shape:  # PyTorch resizes out
            out._data = np.empty(data.shape, dtype=out.dtype.numpy)
        out._data[...] = data
        out._bump_version()
        return out
    return wrapper
