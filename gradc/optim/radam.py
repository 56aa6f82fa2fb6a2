"""torch.optim.RAdam (rectified Adam; coupled or decoupled weight decay), PyTorch's single-tensor path."""

from __future__ import annotations

from typing import Any, Iterable

from gradc import functional as F
from gradc.optim.adam import decay, moments
from gradc.optim.optimizer import Optimizer, as_double, check_betas, check_nonnegative, one_minus, scalar

__all__ = ["RAdam"]


class RAdam(Optimizer):
    """Adam whose adaptive term is switched on (and rectified) once the variance estimate is tractable, rho_t > 5."""

    hyper = ("lr", "betas", "eps", "weight_decay")
    flags = ("maximize", "decoupled_weight_decay")
    lerp_weights = ("betas",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False) -> None:
        check_nonnegative(lr=lr, eps=eps)
        betas = check_betas(betas)
        check_nonnegative(weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      foreach=foreach, capturable=capturable,
                                      decoupled_weight_decay=decoupled_weight_decay, differentiable=differentiable))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_avg_sq")

    def _update(self, group, p, grad, state, h):
        step = F.add(state["step"], 1.0)
        t = as_double(step)
        beta1, beta2 = h["betas0"], h["betas1"]
        p, g = decay(group, p, grad, h)
        exp_avg, exp_avg_sq = moments(group, state, g, h)
        bias_correction1 = one_minus(F.pow(beta1, t))
        bias_correction2 = one_minus(F.pow(beta2, t))
        corrected = F.mul(F.div(exp_avg, scalar(bias_correction1, p)), scalar(h["lr"], p))  # exp_avg / bc1 * lr
        rho_inf = F.sub(F.div(2.0, one_minus(beta2)), 1.0)
        rho_t = F.sub(rho_inf, F.div(F.mul(F.mul(t, 2.0), F.pow(beta2, t)), bias_correction2))
        rect = F.sqrt(F.div(F.mul(F.mul(F.sub(rho_t, 4.0), F.sub(rho_t, 2.0)), rho_inf),
                            F.mul(F.mul(F.sub(rho_inf, 4.0), F.sub(rho_inf, 2.0)), rho_t)))
        adaptive = F.div(scalar(F.sqrt(bias_correction2), p), F.add(F.sqrt(exp_avg_sq), scalar(h["eps"], p)))
        rectified = F.mul(F.mul(corrected, adaptive), scalar(rect, p))
        # a runtime select: early steps (rho_t <= 5, where rect is NaN) take the un-adapted step
        update = F.where(F.compare("gt", rho_t, 5.0), rectified, corrected)
        return F.sub(p, update), {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
