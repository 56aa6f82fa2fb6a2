"""torch.optim.Adagrad (lr_decay, initial_accumulator_value, weight decay, maximize), PyTorch's formulas."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from gradc import functional as F
from gradc.optim.optimizer import Optimizer, addcdiv, addcmul, as_double, check_nonnegative, scalar, weight_decayed

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """sum += g^2; p -= clr g / (sqrt(sum) + eps) with clr = lr / (1 + (step - 1) lr_decay)."""

    hyper = ("lr", "lr_decay", "eps", "weight_decay")
    flags = ("maximize",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None) -> None:
        check_nonnegative(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                          initial_accumulator_value=initial_accumulator_value, eps=eps)
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                                      maximize=maximize, differentiable=differentiable, fused=fused))

    def _after_add_group(self, group: dict[str, Any]) -> None:
        for p in group["params"]:  # PyTorch's Adagrad creates its state in the constructor
            self.state_for(p, group)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("step", "sum")

    def _initial_state(self, name, p, group):
        if name == "sum":
            return np.full_like(p._data, group["initial_accumulator_value"])
        return super()._initial_state(name, p, group)

    def _update(self, group, p, grad, state, h):
        step = F.add(state["step"], 1.0)
        g = weight_decayed(group, p, grad, h)
        clr = F.div(h["lr"], F.add(F.mul(F.sub(as_double(step), 1.0), h["lr_decay"]), 1.0))
        total = addcmul(state["sum"], g, g)
        std = F.add(F.sqrt(total), scalar(h["eps"], p))
        return addcdiv(p, g, std, F.neg(clr)), {"step": step, "sum": total}
