"""torch.optim.Adadelta (rho, eps, weight decay, maximize), PyTorch's single-tensor path."""

from __future__ import annotations

from typing import Any, Iterable

from gradc import functional as F
from gradc.optim.optimizer import Optimizer, add_scaled, addcmul, check_nonnegative, one_minus, scalar, weight_decayed

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    """v = rho v + (1-rho) g^2; d = sqrt(u + eps) / sqrt(v + eps) g; u = rho u + (1-rho) d^2; p -= lr d."""

    hyper = ("lr", "rho", "eps", "weight_decay")
    flags = ("maximize",)

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, foreach: bool | None = None, *, capturable: bool = False,
                 maximize: bool = False, differentiable: bool = False) -> None:
        check_nonnegative(lr=lr, eps=eps, weight_decay=weight_decay)
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize,
                                      capturable=capturable, foreach=foreach, differentiable=differentiable))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "square_avg", "acc_delta")

    def _update(self, group, p, grad, state, h):
        g = weight_decayed(group, p, grad, h)
        rho, eps = scalar(h["rho"], p), scalar(h["eps"], p)
        square_avg = addcmul(F.mul(state["square_avg"], rho), g, g, one_minus(h["rho"]))
        std = F.sqrt(F.add(square_avg, eps))
        delta = F.mul(F.div(F.sqrt(F.add(state["acc_delta"], eps)), std), g)
        acc_delta = addcmul(F.mul(state["acc_delta"], rho), delta, delta, one_minus(h["rho"]))
        new_state = {"step": F.add(state["step"], 1.0), "square_avg": square_avg, "acc_delta": acc_delta}
        return add_scaled(p, delta, F.neg(h["lr"])), new_state
