"""torch.optim.NAdam (Nesterov Adam with momentum decay; coupled or decoupled weight decay), PyTorch's formulas."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from gradc import functional as F
from gradc.ir.core import float32
from gradc.optim.adam import decay, moments
from gradc.optim.optimizer import Optimizer, addcdiv, as_double, check_betas, check_nonnegative, one_minus, scalar

__all__ = ["NAdam"]


class NAdam(Optimizer):
    """mu_t = beta1 (1 - 0.5 * 0.96^(t psi)); two addcdiv steps with the running product of the mu's."""

    hyper = ("lr", "betas", "eps", "weight_decay", "momentum_decay")
    flags = ("maximize", "decoupled_weight_decay")
    lerp_weights = ("betas",)

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, foreach: bool | None = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False) -> None:
        check_nonnegative(lr=lr, eps=eps)
        betas = check_betas(betas)
        check_nonnegative(weight_decay=weight_decay, momentum_decay=momentum_decay)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                                      maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "mu_product", "exp_avg", "exp_avg_sq")

    def _initial_state(self, name, p, group):
        if name == "mu_product":
            return np.ones((), dtype=np.float32)
        return super()._initial_state(name, p, group)

    def _update(self, group, p, grad, state, h):
        step = F.add(state["step"], 1.0)
        t = as_double(step)
        beta1 = h["betas0"]
        bias_correction2 = one_minus(F.pow(h["betas1"], t))
        p, g = decay(group, p, grad, h)

        def mu_at(s):
            return F.mul(beta1, one_minus(F.mul(F.pow(0.96, F.mul(s, h["momentum_decay"])), 0.5)))

        mu, mu_next = mu_at(t), mu_at(F.add(t, 1.0))
        mu_product = F.mul(state["mu_product"], F.cast(mu, float32))  # a float32 tensor, as PyTorch's
        exp_avg, exp_avg_sq = moments(group, state, g, h)
        denom = F.add(F.sqrt(F.div(exp_avg_sq, scalar(bias_correction2, p))), scalar(h["eps"], p))
        mp = as_double(mu_product)
        neg_lr = F.neg(h["lr"])
        p = addcdiv(p, g, denom, F.div(F.mul(neg_lr, one_minus(mu)), one_minus(mp)))
        p = addcdiv(p, exp_avg, denom, F.div(F.mul(neg_lr, mu_next), one_minus(F.mul(mp, mu_next))))
        return p, {"step": step, "mu_product": mu_product, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
