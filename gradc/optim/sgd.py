"""torch.optim.SGD: momentum, dampening, nesterov, weight decay, maximize (PyTorch's single-tensor path)."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from gradc import functional as F
from gradc.optim.optimizer import Optimizer, add_scaled, check_nonnegative, one_minus, weight_decayed

__all__ = ["SGD"]


class SGD(Optimizer):
    """p -= lr * d_p with d_p = grad (+ weight_decay p), then momentum/dampening/nesterov as torch.optim.SGD."""

    hyper = ("lr", "momentum", "dampening", "weight_decay")
    flags = ("nesterov", "maximize")
    switches = ("momentum", "dampening", "weight_decay")

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False, fused: bool | None = None) -> None:
        check_nonnegative(lr=lr, momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        if not group["momentum"]:
            return ()
        # PyTorch's first step sets buf = d_p; with dampening that differs from 0*m + (1-d)*d_p, so a
        # step counter (gradc's own, not in state_dict) tells the first step apart
        return ("momentum_buffer", "step") if group["dampening"] else ("momentum_buffer",)

    def _saved_state_names(self, group, state):
        return [k for k in state if k != "step"]

    def _loaded_state(self, group, state):
        if "momentum_buffer" in state and "step" not in state:
            state = dict(state, step=np.ones((), np.float32))  # a buffer exists: past the first step
        return state

    def _update(self, group, p, grad, state, h):
        d_p = weight_decayed(group, p, grad, h)
        new_state = {}
        if group["momentum"] != 0:
            buf = F.mul(state["momentum_buffer"], F.cast(h["momentum"], p.dtype))
            if group["dampening"] != 0:
                step = state["step"]
                # zeros before the first step: 0 * m + 1 * d_p = d_p
                coef = F.where(F.compare("eq", step, 0.0), 1.0, one_minus(h["dampening"]))
                buf = add_scaled(buf, d_p, coef)
                new_state["step"] = F.add(step, 1.0)
            else:
                buf = F.add(buf, d_p)
            new_state["momentum_buffer"] = buf
            d_p = add_scaled(d_p, buf, h["momentum"]) if group["nesterov"] else buf
        return add_scaled(p, d_p, F.neg(h["lr"])), new_state
