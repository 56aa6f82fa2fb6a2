"""PyTorch-style tensor printing (placeholder: numpy formatting with PyTorch's suffixes)."""

from __future__ import annotations

import numpy as np


def tensor_repr(t) -> str:
    if t._value is not None:
        return f"Tensor(traced {t._value.type})"
    body = np.array2string(t._data, precision=4, separator=", ", prefix="tensor(")
    suffix = ""
    if t.grad_fn is not None:
        suffix = f", grad_fn=<{t.grad_fn.name()}>"
    elif t.requires_grad:
        suffix = ", requires_grad=True"
    return f"tensor({body}{suffix})"
