"""torch.optim.Adamax (infinity-norm Adam), PyTorch's single-tensor path."""

from __future__ import annotations

from typing import Any, Iterable

from gradc import functional as F
from gradc.optim.optimizer import (
    Optimizer,
    addcdiv,
    as_double,
    check_betas,
    check_nonnegative,
    lerp,
    one_minus,
    scalar,
    small_weight,
    weight_decayed,
)

__all__ = ["Adamax"]


class Adamax(Optimizer):
    """m = lerp(m, g, 1-beta1); u = max(beta2 u, |g| + eps); p -= lr / (1 - beta1^t) m / u."""

    hyper = ("lr", "betas", "eps", "weight_decay")
    flags = ("maximize",)
    lerp_weights = ("betas",)

    def __init__(self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, capturable: bool = False) -> None:
        check_nonnegative(lr=lr, eps=eps)
        betas = check_betas(betas)
        check_nonnegative(weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, capturable=capturable))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "exp_avg", "exp_inf")

    def _update(self, group, p, grad, state, h):
        g = weight_decayed(group, p, grad, h)
        step = F.add(state["step"], 1.0)
        exp_avg = lerp(state["exp_avg"], g, one_minus(h["betas0"]), small_weight(group["betas"]))
        exp_inf = F.maximum(F.mul(state["exp_inf"], scalar(h["betas1"], p)), F.add(F.abs(g), scalar(h["eps"], p)))
        clr = F.div(h["lr"], one_minus(F.pow(h["betas0"], as_double(step))))
        new_state = {"step": step, "exp_avg": exp_avg, "exp_inf": exp_inf}
        return addcdiv(p, exp_avg, exp_inf, F.neg(clr)), new_state
