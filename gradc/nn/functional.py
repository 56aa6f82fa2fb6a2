"""torch.nn.functional: activations and losses, decomposed into primitives at trace time.

Each loss uses PyTorch's numerically stable formulation and its `reduction=` argument, and gets the
grad_fn PyTorch gives it (the reduction is part of the node, as in PyTorch's fused loss kernels).
"""

from __future__ import annotations

from typing import Any

from gradc import functional as F
from gradc.functional import log_softmax, relu, sigmoid, softmax, tanh  # noqa: F401
from gradc.ir.core import int64
from gradc.tensor import Tensor, torch_op

REDUCTIONS = ("mean", "sum", "none")


def reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return F.mean(loss)
    if reduction == "sum":
        return F.sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{reduction} is not a valid value for reduction (use one of {', '.join(REDUCTIONS)})")


def _same_shape(input: Tensor, target: Tensor, name: str) -> None:
    if input.shape != target.shape:
        raise ValueError(f"Target size (torch.Size({list(target.shape)})) must be the same as input size "
                         f"(torch.Size({list(input.shape)})) in {name}")


@torch_op("BinaryCrossEntropyWithLogitsBackward0")
def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Any = None,
                                     reduction: str = "mean", pos_weight: Any = None) -> Tensor:
    target = F.to_tensor(target, input)
    _same_shape(input, target, "binary_cross_entropy_with_logits")
    # (1 - y) x + m + log(e^-m + e^(-x-m)) with m = max(-x, 0): no overflow for any x
    m = F.clamp(F.neg(input), min=0)
    log_term = F.add(m, F.log(F.add(F.exp(F.neg(m)), F.exp(F.sub(F.neg(input), m)))))
    if pos_weight is None:
        loss = F.add(F.mul(F.rsub(target, 1), input), log_term)
    else:
        log_weight = F.add(F.mul(F.sub(pos_weight, 1), target), 1)
        loss = F.add(F.mul(F.rsub(target, 1), input), F.mul(log_weight, log_term))
    if weight is not None:
        loss = F.mul(loss, weight)
    return reduce(loss, reduction)


@torch_op("BinaryCrossEntropyBackward0")
def binary_cross_entropy(input: Tensor, target: Tensor, weight: Any = None, reduction: str = "mean") -> Tensor:
    target = F.to_tensor(target, input)
    _same_shape(input, target, "binary_cross_entropy")
    # PyTorch clamps each log at -100 so that p = 0 or 1 gives a finite loss
    log_p = F.clamp(F.log(input), min=-100.0)
    log_q = F.clamp(F.log(F.rsub(input, 1)), min=-100.0)
    loss = F.neg(F.add(F.mul(target, log_p), F.mul(F.rsub(target, 1), log_q)))
    if weight is not None:
        loss = F.mul(loss, weight)
    return reduce(loss, reduction)


@torch_op("MseLossBackward0")
def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    diff = F.sub(input, target)
    return reduce(F.mul(diff, diff), reduction)


@torch_op("NllLossBackward0")
def nll_loss(input: Tensor, target: Tensor, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    target = F.to_tensor(target)
    if target.dtype != int64:
        raise RuntimeError(f"expected scalar type Long but found {target.dtype.name.capitalize()}")
    if input.ndim not in (1, 2) or target.shape != input.shape[:-1]:
        raise ValueError(f"nll_loss expects input (N, C) with target (N,) or input (C,) with a 0-d target; "
                         f"got input {list(input.shape)} and target {list(target.shape)}")
    classes = input.shape[-1]
    valid = F.compare("ne", target, ignore_index)
    safe_target = F.where(valid, target, 0)
    picked = F.squeeze(F.gather(input, -1, F.unsqueeze(safe_target, -1)), -1)
    per_item = F.cast(valid, input.dtype)
    if weight is not None:
        weight = F.to_tensor(weight, input)
        if weight.shape != (classes,):
            raise RuntimeError(f"weight tensor should be defined either for all {classes} classes or no "
                               f"classes but got weight tensor of shape: {list(weight.shape)}")
        expanded = F.expand_to(weight, input.shape)
        per_item = F.mul(per_item, F.squeeze(F.gather(expanded, -1, F.unsqueeze(safe_target, -1)), -1))
    loss = F.neg(F.mul(picked, per_item))
    if reduction == "mean":
        return F.div(F.sum(loss), F.sum(per_item))
    return reduce(loss, reduction)


def cross_entropy(input: Tensor, target: Tensor, weight: Any = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax then nll_loss (integer labels), or soft targets of the input's shape."""
    log_p = log_softmax(input, dim=-1)
    target = F.to_tensor(target)
    if target.dtype.is_float:
        _same_shape(input, target, "cross_entropy")
        if label_smoothing:
            target = F.add(F.mul(target, 1 - label_smoothing), label_smoothing / input.shape[-1])
        return reduce(F.neg(F.sum(F.mul(log_p, target), dim=-1)), reduction)
    if label_smoothing:
        raise NotImplementedError("label_smoothing with integer targets is not supported yet")
    return nll_loss(log_p, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
