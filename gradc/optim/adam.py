"""torch.optim.Adam and AdamW (amsgrad, coupled or decoupled weight decay, maximize), PyTorch's formulas."""

from __future__ import annotations

from typing import Any, Iterable

from gradc import functional as F
from gradc.optim.optimizer import (
    Optimizer,
    addcdiv,
    addcmul,
    as_double,
    check_betas,
    check_nonnegative,
    lerp,
    one_minus,
    scalar,
    small_weight,
)

__all__ = ["Adam", "AdamW"]


def decay(group: dict[str, Any], p, grad, h):
    """(p, grad) after weight decay: decoupled p *= 1 - lr * wd, or coupled grad += wd * p."""
    g = F.neg(grad) if group["maximize"] else grad
    if group["weight_decay"] != 0:
        if group["decoupled_weight_decay"]:
            p = F.mul(p, scalar(one_minus(F.mul(h["lr"], h["weight_decay"])), p))
        else:
            g = F.add(g, F.mul(p, scalar(h["weight_decay"], p)))
    return p, g


def moments(group, state, g, h):
    """exp_avg.lerp_(g, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)."""
    m = lerp(state["exp_avg"], g, one_minus(h["betas0"]), small_weight(group["betas"]))
    v = addcmul(F.mul(state["exp_avg_sq"], scalar(h["betas1"], g)), g, g, one_minus(h["betas1"]))
    return m, v


class Adam(Optimizer):
    """Adam with PyTorch's bias correction: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)."""

    hyper = ("lr", "betas", "eps", "weight_decay")
    flags = ("amsgrad", "maximize", "decoupled_weight_decay")
    lerp_weights = ("betas",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        check_nonnegative(lr=lr, eps=eps)
        betas = check_betas(betas)
        check_nonnegative(weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        names = ("step", "exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if group["amsgrad"] else names

    def _update(self, group, p, grad, state, h):
        p, g = decay(group, p, grad, h)
        step = F.add(state["step"], 1.0)
        m, v = moments(group, state, g, h)
        new_state = {"step": step, "exp_avg": m, "exp_avg_sq": v}
        if group["amsgrad"]:
            v = new_state["max_exp_avg_sq"] = F.maximum(state["max_exp_avg_sq"], v)
        step64 = as_double(step)
        bias_correction1 = one_minus(F.pow(h["betas0"], step64))
        bias_correction2 = one_minus(F.pow(h["betas1"], step64))
        step_size = F.div(h["lr"], bias_correction1)
        denom = F.add(F.div(F.sqrt(v), scalar(F.sqrt(bias_correction2), p)), scalar(h["eps"], p))
        return addcdiv(p, m, denom, F.neg(step_size)), new_state


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr * weight_decay before the Adam step), as torch.optim.AdamW."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)
