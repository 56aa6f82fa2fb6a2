"""torch.optim.RMSprop (alpha, eps, centered, momentum, weight decay, maximize), PyTorch's single-tensor path."""

from __future__ import annotations

from typing import Any, Iterable

from gradc import functional as F
from gradc.optim.optimizer import (
    Optimizer,
    add_scaled,
    addcdiv,
    addcmul,
    check_nonnegative,
    lerp,
    one_minus,
    scalar,
    small_weight,
    weight_decayed,
)

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """v = alpha v + (1 - alpha) g^2; p -= lr g / (sqrt(v [- mean(g)^2]) + eps), or through a momentum buffer."""

    hyper = ("lr", "momentum", "alpha", "eps", "weight_decay")
    flags = ("centered", "maximize")
    lerp_weights = ("alpha",)
    switches = ("momentum", "weight_decay")

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 capturable: bool = False, foreach: bool | None = None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        check_nonnegative(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                                      weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        names = ("step", "square_avg")
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        return names + ("grad_avg",) if group["centered"] else names

    def _update(self, group, p, grad, state, h):
        g = weight_decayed(group, p, grad, h)
        square_avg = addcmul(F.mul(state["square_avg"], scalar(h["alpha"], p)), g, g, one_minus(h["alpha"]))
        new_state = {"step": F.add(state["step"], 1.0), "square_avg": square_avg}
        if group["centered"]:
            grad_avg = new_state["grad_avg"] = lerp(state["grad_avg"], g, one_minus(h["alpha"]),
                                                    small_weight(group["alpha"]))
            avg = F.sqrt(addcmul(square_avg, grad_avg, grad_avg, -1.0))
        else:
            avg = F.sqrt(square_avg)
        avg = F.add(avg, scalar(h["eps"], p))
        if group["momentum"] > 0:
            buf = new_state["momentum_buffer"] = addcdiv(F.mul(state["momentum_buffer"], scalar(h["momentum"], p)),
                                                         g, avg)
            return add_scaled(p, buf, F.neg(h["lr"])), new_state
        return addcdiv(p, g, avg, F.neg(h["lr"])), new_state
