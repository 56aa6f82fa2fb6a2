"""sin and cos: the front-end functions and methods over the `sin`/`cos` primitives."""

from __future__ import annotations

from typing import Any

from gradc import functional as F
from gradc.device import get_default_dtype
from gradc.methods import _inplace
from gradc.tensor import Tensor, apply, torch_op


def _floating(x: Any) -> Tensor:
    x = F.to_tensor(x)
    return x if x.dtype.is_float else F.cast(x, get_default_dtype())  # integers promote, as in PyTorch


sin = torch_op("SinBackward0")(lambda x: apply("sin", _floating(x)))
cos = torch_op("CosBackward0")(lambda x: apply("cos", _floating(x)))

Tensor.sin = sin
Tensor.cos = cos
Tensor.sin_ = _inplace(sin)
Tensor.cos_ = _inplace(cos)
