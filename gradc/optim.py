"""torch.optim: SGD, Adam and AdamW with PyTorch's update formulas (its single-tensor CPU path).

Each optimizer writes its update ONCE, as gradc tensor ops in `_update`:
  - eagerly, `step()` runs it on the numpy-backed tensors under no_grad and writes the results into
    the parameter and state buffers in place;
  - `gradc.compile_step` runs the same `_update` on traced tensors, so the update becomes IR fused
    with the forward and adjoint into one compiled function.
Step-dependent scalars (Adam's bias corrections) are computed from a `step` state tensor in float64,
as PyTorch computes them in Python doubles, and rounded to the parameter dtype where PyTorch does.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from gradc import functional as F
from gradc.grad_mode import enable_grad, no_grad
from gradc.ir.core import TensorType, float64
from gradc.tensor import Tensor, zero_grads

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]


class Optimizer:
    """Parameter groups, per-parameter state (gradc Tensors) and zero_grad, as torch.optim.Optimizer."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.state: dict[Tensor, dict[str, Tensor]] = {}
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor) or p.is_traced:
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        full = {**self.defaults, **group, "params": params}
        self.param_groups.append(full)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k != "params"]
        return "\n".join(lines) + "\n)"

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    # --- state shared by the eager step and compile_step
    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def state_for(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """p's state tensors, created (zeros; a 0-d float32 `step`) on first use."""
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = {}
        for name in self._state_names(group):
            if name not in state:
                if name == "step":
                    state[name] = Tensor._from_array(np.zeros((), dtype=np.float32))
                else:
                    state[name] = Tensor._from_array(np.zeros_like(p._data))
        return state

    def _update(self, group: dict[str, Any], p: Tensor, grad: Tensor, state: dict[str, Tensor],
                lr: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(new param, new state) from tensor ops; lr is a 0-d float64 tensor (an input when compiled)."""
        raise NotImplementedError

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a .grad, written into its buffers in place.

        `_update` is traced once per (parameter type, hyperparameters) and compiled, so a step is one
        compiled call per parameter rather than a dozen eager ops.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = np.asarray(group["lr"], dtype=np.float64)
            names = self._state_names(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state_for(p, group)
                update = self._compiled_update(group, p, names)
                results = update(p._data, p.grad._concrete("a gradient"), lr, *(state[n]._data for n in names))
                p._data[...] = results[0]
                p._bump_version()
                for name, value in zip(names, results[1:]):
                    state[name]._data[...] = value
        return loss

    def _compiled_update(self, group: dict[str, Any], p: Tensor, names: tuple[str, ...]) -> Callable:
        hyper = tuple((k, repr(v)) for k, v in sorted(group.items()) if k not in ("params", "lr"))
        key = (type(self), p.shape, p.dtype, hyper)
        cache = self.__dict__.setdefault("_update_cache", {})
        update = cache.get(key)
        if update is None:
            from gradc.api import compile_function_or_interp, optimize, trace_types

            def fn(param: Tensor, grad: Tensor, lr: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
                new_p, new_state = self._update(group, param, grad, dict(zip(names, states)), lr)
                return (new_p, *(new_state.get(n, s) for n, s in zip(names, states)))

            state = self.state_for(p, group)
            types = [p._type(), p._type(), TensorType((), float64)] + [state[n]._type() for n in names]
            with enable_grad():  # under no_grad every traced op would be followed by a stop_gradient
                traced = trace_types(fn, types, name=f"{type(self).__name__.lower()}_update")
            update = cache[key] = compile_function_or_interp(optimize(traced))
        return update

    def state_dict(self) -> dict[str, Any]:
        """State by parameter index (numpy copies) and the groups' hyperparameters, as PyTorch lays it out."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: {k: v._data.copy() for k, v in s.items()} for p, s in self.state.items()
                 if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = []
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
            params += list(zip(mine["params"], theirs["params"]))
            mine.update({k: v for k, v in theirs.items() if k != "params"})
        for p, i in params:
            saved = state_dict["state"].get(i)
            if saved is not None:
                self.state[p] = {k: Tensor._from_array(np.array(np.asarray(v), dtype=(np.float32 if k == "step"
                                 else p._data.dtype))) for k, v in saved.items()}


def _scalar(value: Tensor, like: Tensor) -> Tensor:
    """A float64 scalar rounded to the parameter dtype (PyTorch's Python-double scalars in a float kernel)."""
    return F.cast(value, like.dtype)


class SGD(Optimizer):
    """p -= lr * d_p with d_p = grad (+ weight_decay p), momentum/dampening/nesterov as torch.optim.SGD."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        if not group["momentum"]:
            return ()
        # PyTorch's first step sets buf = d_p; with dampening that differs from 0*m + (1-d)*d_p, so a
        # step counter tells the first step apart
        return ("momentum_buffer", "step") if group["dampening"] else ("momentum_buffer",)

    def _update(self, group, p, grad, state, lr):
        d_p = F.neg(grad) if group["maximize"] else grad
        if group["weight_decay"]:
            d_p = F.add(d_p, F.mul(p, group["weight_decay"]))
        new_state = {}
        momentum = group["momentum"]
        if momentum:
            buf = F.mul(state["momentum_buffer"], momentum)  # zeros before the first step: 0 * m + d_p = d_p
            if group["dampening"]:
                step = state["step"]
                first = F.compare("eq", step, 0.0)
                coef = F.where(first, F.to_tensor(1.0, d_p), F.to_tensor(1.0 - group["dampening"], d_p))
                buf = F.add(buf, F.mul(d_p, coef))
                new_state["step"] = F.add(step, 1.0)
            else:
                buf = F.add(buf, d_p)
            new_state["momentum_buffer"] = buf
            d_p = F.add(d_p, F.mul(buf, momentum)) if group["nesterov"] else buf
        return F.add(p, F.mul(d_p, _scalar(F.neg(lr), p))), new_state


class Adam(Optimizer):
    """Adam with PyTorch's bias correction: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)."""

    decoupled_weight_decay = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        names = ("step", "exp_avg", "exp_avg_sq")
        return names + ("max_exp_avg_sq",) if group["amsgrad"] else names

    def _update(self, group, p, grad, state, lr):
        beta1, beta2 = group["betas"]
        wd = group["weight_decay"]
        g = F.neg(grad) if group["maximize"] else grad
        step = F.add(state["step"], 1.0)
        if wd and self.decoupled_weight_decay:
            p = F.mul(p, _scalar(F.rsub(F.mul(lr, wd), 1.0), p))  # p *= 1 - lr * wd
        elif wd:
            g = F.add(g, F.mul(p, wd))
        # exp_avg.lerp_(g, 1 - beta1): PyTorch's lerp is m + w (g - m) for w < 0.5, g - (g - m)(1 - w) otherwise
        weight = 1.0 - beta1
        if abs(weight) < 0.5:
            m = F.add(state["exp_avg"], F.mul(F.sub(g, state["exp_avg"]), weight))
        else:
            m = F.sub(g, F.mul(F.sub(g, state["exp_avg"]), 1.0 - weight))
        v = F.add(F.mul(state["exp_avg_sq"], beta2), F.mul(F.mul(g, 1.0 - beta2), g))  # addcmul_
        new_state = {"step": step, "exp_avg": m, "exp_avg_sq": v}
        if group["amsgrad"]:
            v = new_state["max_exp_avg_sq"] = F.maximum(state["max_exp_avg_sq"], v)
        step64 = F.cast(step, float64)
        bias_correction1 = F.rsub(F.pow(beta1, step64), 1.0)
        bias_correction2 = F.rsub(F.pow(beta2, step64), 1.0)
        step_size = F.div(lr, bias_correction1)
        denom = F.add(F.div(F.sqrt(v), _scalar(F.sqrt(bias_correction2), p)), group["eps"])
        new_p = F.add(p, F.div(F.mul(m, _scalar(F.neg(step_size), p)), denom))  # addcdiv_
        return new_p, new_state


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr * weight_decay before the Adam step), as torch.optim.AdamW."""

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
