"""torch.nn.functional: activations and losses, decomposed into primitives at trace time.

Each loss uses PyTorch's numerically stable formulation and its `reduction=` argument, and gets the
grad_fn PyTorch gives it (the reduction is part of the node, as in PyTorch's fused loss kernels).
"""

from __future__ import annotations

from typing import Any

from gradc import functional as F
from gradc.functional import log_softmax, relu, sigmoid, softmax, tanh  # noqa: F401
from gradc.ir.core import int64, uint8
from gradc.nn.attention import scaled_dot_product_attention  # noqa: F401
from gradc.nn.cnn_functional import *  # noqa: F401,F403  (conv, pooling, normalization, pad, interpolate)
from gradc.nn.embedding_fn import embedding  # noqa: F401
from gradc.nn.norms import normalize, rms_norm  # noqa: F401
from gradc.nn.ops import dropout, gelu, layer_norm, linear  # noqa: F401
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
    if not input.is_traced and ((input._data < 0) | (input._data > 1)).any():
        raise RuntimeError("all elements of input should be between 0 and 1")
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


def _check_labels(input: Tensor, target: Tensor, ignore_index: int) -> None:
    """PyTorch's checks of class-index targets, in PyTorch's order and words."""
    if input.ndim == 0:
        raise ValueError("Expected 1 or more dimensions (got 0)")
    if input.ndim <= 2 and target.ndim > 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if target.dtype not in (int64, uint8):
        raise RuntimeError(f"expected target dtype to be Long or Byte, but got {F.SCALAR_NAMES[target.dtype]}")
    expected = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if target.shape != expected:
        if input.ndim > 1 and target.shape[:1] != input.shape[:1]:
            raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                             f"({target.shape[0] if target.ndim else 0}).")
        raise RuntimeError(f"expected target of shape {list(expected)} for input of shape {list(input.shape)}, "
                           f"got {list(target.shape)}")
    if not target.is_traced:  # label values can only be checked eagerly
        classes = input.shape[1 if input.ndim > 1 else 0]
        labels = target._data
        bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= classes))]
        if bad.size:
            raise IndexError(f"Target {bad.flat[0]} is out of bounds.")


def _classes_last(input: Tensor) -> Tensor:
    # (N, C, d1, ...) -> (N, d1, ..., C): the class axis becomes the gathered one
    if input.ndim <= 2:
        return input
    return F.permute(input, (0, *range(2, input.ndim), 1))


def _nll_terms(input: Tensor, target: Tensor, weight: Any, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Per-item -w[y] * input[y] and per-item weight w[y] (0 where the label is ignored)."""
    scores = _classes_last(input)
    classes = scores.shape[-1]
    target = F.cast(target, int64)  # a uint8 target (PyTorch takes Byte too) is compared as int64
    valid = F.compare("ne", target, ignore_index)
    safe_target = F.unsqueeze(F.where(valid, target, 0), -1)
    picked = F.squeeze(F.gather(scores, -1, safe_target), -1)
    per_item = F.cast(valid, input.dtype)
    if weight is not None:
        weight = F.to_tensor(weight, input)
        if weight.shape != (classes,):
            raise RuntimeError(f"weight tensor should be defined either for all {classes} classes or no "
                               f"classes but got weight tensor of shape: {list(weight.shape)}")
        per_item = F.mul(per_item, F.squeeze(F.gather(F.expand_to(weight, scores.shape), -1, safe_target), -1))
    return F.neg(F.mul(picked, per_item)), per_item


def _class_weights(weight: Any, like: Tensor) -> Tensor:
    """weight (C,) shaped to broadcast over the class axis of `like`."""
    classes = like.shape[1 if like.ndim > 1 else 0]
    shape = (1, classes) + (1,) * (like.ndim - 2) if like.ndim > 1 else (classes,)
    return F.reshape(F.to_tensor(weight, like), shape)


@torch_op(lambda input, target, *a, **k: "NllLoss2DBackward0" if input.ndim > 2 else "NllLossBackward0")
def nll_loss(input: Tensor, target: Tensor, weight: Any = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log likelihood of integer class labels; the class axis is dim 1 (dim 0 for 1-D input)."""
    target = F.to_tensor(target)
    _check_labels(input, target, ignore_index)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if weight is None and not target.is_traced and not input.is_traced and not (target._data == ignore_index).any():
        # eager, unweighted, no ignored label (the common case): every item weighs 1, so the mask ops of
        # _nll_terms are skipped; the same values bit for bit (x * 1 and a float32 count of N < 2**24)
        index = target if target.dtype == int64 else F.cast(target, int64)  # PyTorch takes a Byte target too
        picked = F.neg(F.squeeze(F.gather(_classes_last(input), -1, F.unsqueeze(index, -1)), -1))
        return F.div(F.sum(picked), float(picked.numel())) if reduction == "mean" else reduce(picked, reduction)
    loss, per_item = _nll_terms(input, target, weight, ignore_index)
    if reduction == "mean":
        return F.div(F.sum(loss), F.sum(per_item))
    return reduce(loss, reduction)


def _soft_cross_entropy(log_p: Tensor, target: Tensor, weight: Any, reduction: str, smoothing: float) -> Tensor:
    class_dim = 1 if log_p.ndim > 1 else 0
    classes = log_p.shape[class_dim]
    if smoothing:
        target = F.add(F.mul(target, 1 - smoothing), smoothing / classes)
    if weight is not None:
        target = F.mul(target, _class_weights(weight, log_p))
    loss = F.neg(F.sum(F.mul(log_p, target), dim=class_dim))
    if reduction == "mean" and log_p.ndim > 1:
        return F.div(F.sum(loss), log_p.numel() // classes)  # PyTorch divides by the number of items
    return reduce(loss, reduction)


def _cross_entropy_node(input: Tensor, target: Any, weight: Any = None, ignore_index: int = -100,
                        reduction: str = "mean", label_smoothing: float = 0.0) -> str:
    target = F.to_tensor(target)
    if target.dtype.is_float and target.shape == input.shape:
        return "DivBackward1" if reduction == "mean" and input.ndim > 1 else "NegBackward0"
    if label_smoothing:
        return "AddBackward0"
    return "NllLoss2DBackward0" if input.ndim > 2 else "NllLossBackward0"


@torch_op(_cross_entropy_node)
def cross_entropy(input: Tensor, target: Tensor, weight: Any = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """log_softmax over the class axis then nll_loss (integer labels), or soft targets of input's shape."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    class_dim = 1 if input.ndim > 1 else 0
    log_p = log_softmax(input, dim=class_dim)
    target = F.to_tensor(target)
    if target.dtype.is_float and target.shape == input.shape:
        return _soft_cross_entropy(log_p, target, weight, reduction, label_smoothing)
    loss = nll_loss(log_p, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
    if not label_smoothing:
        return loss
    # (1 - eps) nll + eps/C * (-sum_c w_c log p_c), with ignored labels masked, as PyTorch
    classes = input.shape[class_dim]
    terms = log_p if weight is None else F.mul(log_p, _class_weights(weight, log_p))
    valid = F.cast(F.compare("ne", target, ignore_index), input.dtype)
    smooth = F.mul(F.neg(F.sum(terms, dim=class_dim)), valid)
    if reduction == "mean":
        smooth = F.div(F.sum(smooth), F.sum(_nll_terms(log_p, target, weight, ignore_index)[1]))
    else:
        smooth = reduce(smooth, reduction)
    return F.add(F.mul(loss, 1 - label_smoothing), F.mul(smooth, label_smoothing / classes))


from gradc.movement import one_hot  # noqa: E402,F401
from gradc.nn.activation import FUNCTIONS as _ACTIVATIONS  # noqa: E402
from gradc.nn.losses_more import FUNCTIONS as _LOSSES  # noqa: E402

globals().update({**_ACTIVATIONS, **_LOSSES})  # F.elu, F.l1_loss, ...
