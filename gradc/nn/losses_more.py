"""Regression, ranking, distance and likelihood losses (torch.nn.functional.l1_loss, ...) and their modules.

Composites of front-end ops with PyTorch's formulas, `reduction=` ('mean', 'sum', 'none') and argument
checks; the distances (cosine_similarity, pairwise_distance) are here because the triplet loss uses them.
"""

from __future__ import annotations

import math
from typing import Any

from gradc import functional as F
from gradc.nn.functional import REDUCTIONS
from gradc.nn.functional import reduce as _reduce
from gradc.nn.loss import _Loss
from gradc.nn.module import Module
from gradc.pointwise import log1p
from gradc.tensor import Tensor, apply, torch_op


def _reduced(none: str | Any) -> Any:
    """grad_fn name by reduction, as PyTorch: the composite losses end in their reduction's node."""
    def name(*args: Any, **kwargs: Any) -> str:
        reduction = kwargs.get("reduction", "mean")
        if reduction == "none":
            return none(*args, **kwargs) if callable(none) else none
        return "SumBackward0" if reduction == "sum" else "MeanBackward0"
    return name


def _pair(input: Any, target: Any) -> tuple[Tensor, Tensor]:
    input = F.to_tensor(input)
    return input, F.to_tensor(target, input)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")


@torch_op(_reduced("AbsBackward0"))
def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    input, target = _pair(input, target)
    return _reduce(F.abs(F.sub(input, target)), reduction)


@torch_op("SmoothL1LossBackward0")
def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    _check_reduction(reduction)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    input, target = _pair(input, target)
    diff = F.abs(F.sub(input, target))
    if beta == 0:
        return _reduce(diff, reduction)
    quadratic = F.div(F.mul(F.mul(diff, diff), 0.5), beta)
    return _reduce(F.where(F.compare("lt", diff, beta), quadratic, F.sub(diff, 0.5 * beta)), reduction)


@torch_op("HuberLossBackward0")
def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    _check_reduction(reduction)
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    input, target = _pair(input, target)
    diff = F.abs(F.sub(input, target))
    quadratic = F.mul(F.mul(diff, diff), 0.5)
    return _reduce(F.where(F.compare("lt", diff, delta), quadratic, F.mul(F.sub(diff, 0.5 * delta), delta)),
                  reduction)


def _xlogy(x: Tensor, y: Tensor) -> Tensor:
    # x log y with 0 where x == 0 (PyTorch's xlogy), NaN kept where y is NaN
    return F.where(F.compare("eq", x, 0), F.scalar_like(0.0, x), F.mul(x, F.log(y)))


def _kl_div_node(input: Any, target: Any, reduction: str = "mean", log_target: bool = False) -> str:
    return {"mean": "MeanBackward0", "sum": "SumBackward0", "batchmean": "DivBackward0"}.get(
        reduction, "MulBackward0" if log_target else "SubBackward0")


@torch_op(_kl_div_node)
def kl_div(input: Tensor, target: Tensor, reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Pointwise target * (log target - input) (input holds log-probabilities); 'batchmean' divides the
    sum by the batch size."""
    if reduction not in REDUCTIONS + ("batchmean",):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    input, target = _pair(input, target)
    if log_target:
        loss = F.mul(F.exp(target), F.sub(target, input))
    else:
        loss = F.sub(_xlogy(target, target), F.mul(target, input))
    if reduction == "batchmean":
        total = F.sum(loss)
        return F.div(total, input.shape[0]) if input.ndim else total
    return _reduce(loss, reduction)


@torch_op("SoftMarginLossBackward0")
def soft_margin_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    input, target = _pair(input, target)
    z = F.neg(F.mul(target, input))
    # log(1 + e^z) without overflow: max(z, 0) + log1p(e^-|z|)
    return _reduce(F.add(F.maximum(z, F.scalar_like(0.0, z)), log1p(F.exp(F.neg(F.abs(z))))), reduction)


def _norm(x: Tensor, dim: int, p: float, keepdim: bool = False) -> Tensor:
    a = F.abs(x)
    if p == 2:
        return F.sqrt(F.sum(F.mul(x, x), dim=dim, keepdim=keepdim))
    if p == 1:
        return F.sum(a, dim=dim, keepdim=keepdim)
    if p == math.inf:
        return F.amax(a, dim=dim, keepdim=keepdim)
    if p <= 0:
        raise RuntimeError("gradc: pairwise_distance supports p > 0")
    return F.pow(F.sum(F.pow(a, p), dim=dim, keepdim=keepdim), 1.0 / p)


@torch_op("SumBackward1")
def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x1 . x2 / (max(|x1|, eps) max(|x2|, eps)) along dim, broadcasting x1 and x2."""
    a, b = F.promote(F.to_tensor(x1), F.to_tensor(x2), float_result=True)
    d = F.normalize_dim(dim, a.ndim)
    na = F.clamp(F.sqrt(F.sum(F.mul(a, a), dim=d)), min=eps)
    nb = F.clamp(F.sqrt(F.sum(F.mul(b, b), dim=d)), min=eps)
    return F.div(F.sum(F.mul(a, b), dim=d), F.mul(na, nb))


@torch_op("NormBackward1")
def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> Tensor:
    """||x1 - x2 + eps||_p over the last dim."""
    a, b = F.promote(F.to_tensor(x1), F.to_tensor(x2), float_result=True)
    diff = F.add(F.sub(a, b), eps)
    if diff.ndim == 0:
        return F.abs(diff)
    return _norm(diff, -1, p, keepdim)


@torch_op(_reduced("ClampMinBackward0"))
def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0, p: float = 2.0,
                        eps: float = 1e-6, swap: bool = False, reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    dims = {F.to_tensor(t).ndim for t in (anchor, positive, negative)}
    if len(dims) != 1:
        a, pos, neg = (F.to_tensor(t).ndim for t in (anchor, positive, negative))
        raise RuntimeError(f"The anchor, positive, and negative tensors are expected to have the same number of "
                           f"dimensions, but got: anchor {a}D, positive {pos}D, and negative {neg}D inputs")
    d_pos = pairwise_distance(anchor, positive, p, eps)
    d_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        d_neg = F.minimum(d_neg, pairwise_distance(positive, negative, p, eps))
    return _reduce(F.clamp(F.add(F.sub(d_pos, d_neg), margin), min=0.0), reduction)


@torch_op(_reduced("ClampMinBackward0"))
def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0,
                        reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    x1, x2, y = (F.to_tensor(t) for t in (input1, input2, target))
    if not (x1.ndim == x2.ndim == y.ndim):
        raise RuntimeError(f"margin_ranking_loss : All input tensors should have same dimension but got sizes: "
                           f"input1: {list(x1.shape)}, input2: {list(x2.shape)}, target: {list(y.shape)} ")
    return _reduce(F.clamp(F.add(F.mul(F.neg(y), F.sub(x1, x2)), margin), min=0.0), reduction)


@torch_op(_reduced(lambda *a, full=False, **k: "AddBackward0" if full else "SubBackward0"))
def poisson_nll_loss(input: Tensor, target: Tensor, log_input: bool = True, full: bool = False,
                     size_average: Any = None, eps: float = 1e-8, reduce: Any = None,
                     reduction: str = "mean") -> Tensor:
    _check_reduction(reduction)
    input, target = _pair(input, target)
    if log_input:
        loss = F.sub(F.exp(input), F.mul(target, input))
    else:
        loss = F.sub(input, F.mul(target, F.log(F.add(input, eps))))
    if full:
        # Stirling's term target log target - target + log(2 pi target) / 2, where target > 1
        t = target
        stirling = F.add(F.sub(F.mul(t, F.log(t)), t), F.mul(F.log(F.mul(t, 2 * math.pi)), 0.5))
        loss = F.add(loss, F.where(F.compare("gt", t, 1.0), stirling, F.scalar_like(0.0, stirling)))
    return _reduce(loss, reduction)


@torch_op(_reduced(lambda *a, full=False, **k: "AddBackward0" if full else "MulBackward0"))
def gaussian_nll_loss(input: Tensor, target: Tensor, var: Any, full: bool = False, eps: float = 1e-6,
                      reduction: str = "mean") -> Tensor:
    """(log max(var, eps) + (input - target)^2 / max(var, eps)) / 2 (+ log(2 pi) / 2 when full); the clamp
    passes the gradient through unchanged, as PyTorch's in-place clamp under no_grad does."""
    _check_reduction(reduction)
    input, target = _pair(input, target)
    var = F.to_tensor(var, input)
    if var.shape != input.shape:
        if input.shape[:-1] == var.shape:
            var = F.unsqueeze(var, -1)
        elif not (input.shape[:-1] == var.shape[:-1] and var.shape[-1:] == (1,)) and var.numel() != 1:
            raise ValueError("var is of incorrect size")
    if not var.is_traced and (var._data < 0).any():
        raise ValueError("var has negative entry/entries")
    clamped = F.add(var, apply("stop_gradient", F.sub(F.clamp(var, min=eps), var)))
    diff = F.sub(input, target)
    loss = F.mul(F.add(F.log(clamped), F.div(F.mul(diff, diff), clamped)), 0.5)
    if full:
        loss = F.add(loss, 0.5 * math.log(2 * math.pi))
    return _reduce(loss, reduction)


# ----------------------------------------------------------------------------- modules

class L1Loss(_Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, size_average: Any = None, reduce: Any = None, reduction: str = "mean",
                 beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = beta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = delta

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class KLDivLoss(Module):
    def __init__(self, size_average: Any = None, reduce: Any = None, reduction: str = "mean",
                 log_target: bool = False) -> None:
        super().__init__()
        if reduction not in REDUCTIONS + ("batchmean",):
            raise ValueError(f"{reduction} is not a valid value for reduction")
        self.reduction, self.log_target = reduction, log_target

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class SoftMarginLoss(_Loss):
    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return soft_margin_loss(input, target, reduction=self.reduction)


class CosineSimilarity(Module):
    def __init__(self, dim: int = 1, eps: float = 1e-8) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    def __init__(self, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False) -> None:
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class TripletMarginLoss(_Loss):
    def __init__(self, margin: float = 1.0, p: float = 2.0, eps: float = 1e-6, swap: bool = False,
                 size_average: Any = None, reduce: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return triplet_margin_loss(anchor, positive, negative, self.margin, self.p, self.eps, self.swap,
                                   reduction=self.reduction)


class MarginRankingLoss(_Loss):
    def __init__(self, margin: float = 0.0, size_average: Any = None, reduce: Any = None,
                 reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = margin

    def forward(self, input1: Tensor, input2: Tensor, target: Tensor) -> Tensor:
        return margin_ranking_loss(input1, input2, target, self.margin, reduction=self.reduction)


class PoissonNLLLoss(_Loss):
    def __init__(self, log_input: bool = True, full: bool = False, size_average: Any = None, eps: float = 1e-8,
                 reduce: Any = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def forward(self, log_input: Tensor, target: Tensor) -> Tensor:
        return poisson_nll_loss(log_input, target, self.log_input, self.full, eps=self.eps,
                                reduction=self.reduction)


class GaussianNLLLoss(_Loss):
    def __init__(self, *, full: bool = False, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.full, self.eps = full, eps

    def forward(self, input: Tensor, target: Tensor, var: Any) -> Tensor:
        return gaussian_nll_loss(input, target, var, self.full, self.eps, self.reduction)


FUNCTIONS = {
    "l1_loss": l1_loss, "smooth_l1_loss": smooth_l1_loss, "huber_loss": huber_loss, "kl_div": kl_div,
    "soft_margin_loss": soft_margin_loss, "cosine_similarity": cosine_similarity,
    "pairwise_distance": pairwise_distance, "triplet_margin_loss": triplet_margin_loss,
    "margin_ranking_loss": margin_ranking_loss, "poisson_nll_loss": poisson_nll_loss,
    "gaussian_nll_loss": gaussian_nll_loss,
}
MODULES = {cls.__name__: cls for cls in (L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss, SoftMarginLoss,
                                         CosineSimilarity, PairwiseDistance, TripletMarginLoss, MarginRankingLoss,
                                         PoissonNLLLoss, GaussianNLLLoss)}
