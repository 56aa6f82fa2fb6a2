"""torch.nn.functional.embedding's signature over gradc.nn.ops.embedding."""

from __future__ import annotations

from typing import Any

from gradc.nn import ops
from gradc.tensor import Tensor


def embedding(input: Any, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """weight[input]; the padding_idx row gets no gradient. max_norm renormalization is not supported."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise NotImplementedError("gradc's embedding supports max_norm=None, scale_grad_by_freq=False, sparse=False")
    if padding_idx is not None:
        rows = weight.shape[0]
        if not -rows <= padding_idx < rows:
            raise AssertionError("Padding_idx must be within num_embeddings")
        padding_idx %= rows
    return ops.embedding(input, weight, padding_idx)
