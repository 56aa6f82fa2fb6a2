"""torch.optim.Optimizer: parameter groups, state, state_dict, and the update written once as tensor ops.

Each optimizer writes its update ONCE, as gradc tensor ops in `_update`:
  - eagerly, `step()` runs it (traced once per parameter type and group structure, then compiled) on the
    numpy-backed tensors and writes the results into the parameter and state buffers in place;
  - `gradc.compile_step` runs the same `_update` on traced tensors, so the update becomes IR fused
    with the forward and adjoint into one compiled function.
Every numeric hyperparameter of a group (lr, betas, momentum, eps, weight_decay, ...) is a runtime input
(one float64 vector per group: doubles, as PyTorch holds them in Python floats), rounded to the
parameter dtype where PyTorch's kernels round them. So a learning-rate or momentum schedule never
recompiles anything; only the group's *structure* (boolean flags, which hyperparameters are zero)
selects the compiled code. Step-dependent scalars (bias corrections) are computed from the float32
`step` state in float64.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Iterable

import numpy as np

from gradc import functional as F
from gradc.grad_mode import enable_grad, no_grad
from gradc.ir.core import TensorType, float64
from gradc.tensor import Tensor, zero_grads

__all__ = ["Optimizer", "required"]

Hyper = dict[str, Tensor]


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Parameter groups, per-parameter state (gradc Tensors), zero_grad and state_dict, as torch.optim.Optimizer.

    Subclasses declare `hyper` (numeric hyperparameters: runtime inputs of the compiled update; a tuple
    value such as betas becomes one input per element), `flags` (booleans compiled in), `switches`
    (hyperparameters whose zero-ness is compiled in: no weight decay, no momentum), `lerp_weights`
    (hyperparameters v whose lerp weight 1 - v picks a compiled branch), and implement
    `_state_names`, `_update` and, where the initial state is not zeros, `_initial_state`. A user's
    subclass written the PyTorch way (its own `step` over `param_groups` and `state`) works too, eagerly.
    """

    hyper: tuple[str, ...] = ("lr",)
    flags: tuple[str, ...] = ()
    switches: tuple[str, ...] = ("weight_decay",)  # hyperparameters whose zero-ness changes the code
    lerp_weights: tuple[str, ...] = ()  # hyperparameters v of a lerp by 1 - v: its branch is compiled in

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {params.type() if hasattr(params, 'type') else 'Tensor'}")
        if defaults.get("differentiable"):
            raise NotImplementedError("gradc optimizers do not support differentiable=True")
        if defaults.get("capturable"):
            raise NotImplementedError("gradc optimizers do not support capturable=True (there is no CUDA graph)")
        self.defaults = defaults
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; missing hyperparameters come from the optimizer's defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        names = None
        if params and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in params):
            names, params = [n for n, _ in params], [p for _, p in params]  # model.named_parameters()
        for p in params:
            if not isinstance(p, Tensor) or p.is_traced:
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        full = dict(param_group, params=params)
        if names is not None:
            full["param_names"] = names
        for name, default in self.defaults.items():
            if default is required and name not in full:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter "
                                 f"{name}")
            full.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(full)
        self._after_add_group(full)

    def _after_add_group(self, group: dict[str, Any]) -> None:
        """Hook: Adagrad creates its state when a group is added, as PyTorch's does."""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {group[k]}" for k in sorted(group) if k not in ("params", "param_names")]
        return "\n".join(lines) + "\n)"

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    # --- hyperparameters: runtime values and compiled structure
    def hyper_names(self, group: dict[str, Any]) -> list[str]:
        """Names of the group's runtime scalars in input order (betas -> betas0, betas1)."""
        names = []
        for k in self.hyper:
            v = group[k]
            names += [f"{k}{i}" for i in range(len(v))] if isinstance(v, (tuple, list)) else [k]
        return names

    def hyper_values(self, group: dict[str, Any]) -> list[float]:
        values: list[float] = []
        for k in self.hyper:
            v = group[k]
            if isinstance(v, Tensor):
                v = v.item()
            values += [float(x) for x in v] if isinstance(v, (tuple, list)) else [float(v)]
        return values

    def structure(self, group: dict[str, Any]) -> tuple:
        """What selects the compiled update: the flags, which switches are zero, the lerps' branches."""
        return (tuple(bool(group[f]) for f in self.flags), tuple(group[k] != 0 for k in self.switches),
                tuple(small_weight(group[k]) for k in self.lerp_weights))

    @staticmethod
    def hyper_dict(names: list[str], vector: Tensor) -> Hyper:
        """The runtime scalars by name, from the group's float64 hyperparameter vector (a function input)."""
        return {n: vector[i] for i, n in enumerate(names)}

    # --- state shared by the eager step and compile_step
    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _initial_state(self, name: str, p: Tensor, group: dict[str, Any]) -> np.ndarray:
        """A state tensor's first value: a 0-d float32 `step` (as PyTorch's), else zeros like p."""
        if name == "step":
            return np.zeros((), dtype=np.float32)
        return np.zeros_like(p._data)

    def state_for(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """p's state tensors, created on first use."""
        state = self.state[p]
        for name in self._state_names(group):
            if name not in state:
                state[name] = Tensor._from_array(self._initial_state(name, p, group))
        return state

    def _update(self, group: dict[str, Any], p: Tensor, grad: Tensor, state: dict[str, Tensor],
                h: Hyper) -> tuple[Tensor, dict[str, Tensor]]:
        """(new param, new state) from tensor ops; h maps hyper_names to 0-d float64 tensors (runtime inputs)."""
        raise NotImplementedError

    @no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a .grad, written into its buffers in place.

        `_update` of all of a group's parameters is traced once per (parameter types, group structure)
        and compiled into one function whose results are donated to the parameter and state arrays, so
        a step is one compiled call per group rather than a dozen eager ops per parameter.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            names = self._state_names(group)
            states = [self.state_for(p, group) for p in params]
            update = self._compiled_update(group, params, names)
            tensors = params + [s[n] for s in states for n in names]
            targets = [t._data for t in tensors]
            results = update(*targets[:len(params)], *(p.grad._concrete("a gradient") for p in params),
                             np.array(self.hyper_values(group), dtype=np.float64), *targets[len(params):])
            for t, value in zip(tensors, results if isinstance(results, (list, tuple)) else (results,)):
                if value is t._data:
                    continue
                if t._data.flags.writeable:  # not written in place (the interpreter, a non-conforming array)
                    t._data[...] = value
                else:  # a read-only buffer (e.g. from a read-only numpy array): rebind
                    t._data = np.array(value)
            for p in params:
                p._bump_version()
        return loss

    def _compiled_update(self, group: dict[str, Any], params: list[Tensor], names: tuple[str, ...]) -> Callable:
        """fn(params..., grads..., hyper, states...) -> (new params..., new states...), donated in place."""
        key = (type(self), tuple((p.shape, p.dtype) for p in params), self.structure(group), names)
        cache = self.__dict__.setdefault("_update_cache", {})
        update = cache.get(key)
        if update is None:
            from gradc.api import compile_function_or_interp, optimize, trace_types
            hyper_names = self.hyper_names(group)
            n, k = len(params), len(names)

            def fn(*args: Tensor) -> tuple[Tensor, ...]:
                h = self.hyper_dict(hyper_names, args[2 * n])
                new_params, new_states = [], []
                for i in range(n):
                    state = dict(zip(names, args[2 * n + 1 + i * k:2 * n + 1 + (i + 1) * k]))
                    new_p, new_state = self._update(group, args[i], args[n + i], state, h)
                    new_params.append(new_p)
                    new_states += [new_state.get(name, state[name]) for name in names]
                return (*new_params, *new_states)

            states = [self.state_for(p, group) for p in params]
            types = [p._type() for p in params] * 2 + [TensorType((len(hyper_names),), float64)] + \
                [s[name]._type() for s in states for name in names]
            with enable_grad():  # under no_grad every traced op would be followed by a stop_gradient
                traced = trace_types(fn, types, name=f"{type(self).__name__.lower()}_update")
            # result i (a parameter) into argument i; state result j into the j-th state argument
            donate = {i: i for i in range(n)}
            donate.update({n + j: 2 * n + 1 + j for j in range(n * k)})
            update = cache[key] = compile_function_or_interp(optimize(traced), donate)
        return update

    # --- state_dict in PyTorch's layout
    def _saved_state_names(self, group: dict[str, Any], state: dict[str, Tensor]) -> list[str]:
        """The state entries PyTorch's optimizer has (gradc's private extras left out)."""
        return list(state)

    def _loaded_state(self, group: dict[str, Any], state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Hook: fill in gradc's private state entries from a PyTorch state."""
        return state

    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: {name: Tensor}}, 'param_groups': [{hyperparameters..., 'params': [index]}]}.

        The layout of torch.optim's: parameters are numbered in group order; state tensors are copies.
        """
        index: dict[int, int] = {}
        groups = []
        saved: dict[int, dict[str, Tensor]] = {}
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                i = index.setdefault(id(p), len(index))
                ids.append(i)
                state = self.state.get(p)
                if state:
                    saved[i] = {k: Tensor._from_array(state[k]._data.copy())
                                for k in self._saved_state_names(group, state)}
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        return {"state": saved, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict of this layout (from gradc, or a torch optimizer's converted to numpy).

        State values may be gradc Tensors, numpy arrays, anything np.asarray reads, or numbers. Existing
        state tensors are overwritten in place, so a compile_step built on this optimizer keeps working.
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        pairs = []
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "optimizer's group")
            pairs += [(p, i, mine) for p, i in zip(mine["params"], theirs["params"])]
            mine.update({k: v for k, v in theirs.items() if k not in ("params", "param_names")})
        states = state_dict["state"]
        for p, i, group in pairs:
            saved = states.get(i, states.get(str(i)))
            if saved is None:
                continue
            arrays = {k: _as_array(v) for k, v in saved.items()}
            arrays = self._loaded_state(group, arrays)
            state = self.state[p]
            for k, v in arrays.items():
                dtype = np.float32 if k == "step" else p._data.dtype
                value = np.array(v, dtype=dtype)
                if k == "step":
                    value = value.reshape(())
                old = state.get(k)
                if old is not None and old._data.shape == value.shape and old._data.dtype == value.dtype \
                        and old._data.flags.writeable:
                    old._data[...] = value
                    old._bump_version()
                else:
                    state[k] = Tensor._from_array(value)


def _as_array(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        return v._concrete("a state tensor")
    if hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch tensor
        return v.detach().cpu().numpy()
    return np.asarray(v)


# ----------------------------------------------------------------------------- helpers for `_update`

def scalar(value: Tensor, like: Tensor) -> Tensor:
    """A float64 scalar rounded to the parameter dtype (PyTorch's Python-double scalars in a float kernel)."""
    return F.cast(value, like.dtype)


def as_double(x: Tensor) -> Tensor:
    return F.cast(x, float64)


def lerp(start: Tensor, end: Tensor, weight: Tensor, small: bool) -> Tensor:
    """start.lerp_(end, weight) with a float64 scalar weight, as PyTorch's CPU kernel computes it.

    The weight is rounded to the tensor dtype; |w| < 0.5 (`small`, compiled in: see `lerp_weights`):
    start + w (end - start), else end - (end - start)(1 - w).
    """
    w = scalar(weight, start)
    diff = F.sub(end, start)
    return F.add(start, F.mul(w, diff)) if small else F.sub(end, F.mul(diff, F.rsub(w, 1.0)))


def small_weight(value: Any) -> bool:
    """Whether lerp weight 1 - value (value: a beta1 or an alpha) takes PyTorch's |w| < 0.5 branch."""
    value = value[0] if isinstance(value, (tuple, list)) else value
    return abs(1.0 - float(value)) < 0.5


def addcmul(x: Tensor, t1: Tensor, t2: Tensor, value: Tensor | float = 1.0) -> Tensor:
    """x + value * t1 * t2 (PyTorch's evaluation order)."""
    if isinstance(value, Tensor):
        value = scalar(value, x)
    return F.add(x, F.mul(F.mul(t1, value), t2) if not (isinstance(value, float) and value == 1.0)
                 else F.mul(t1, t2))


def addcdiv(x: Tensor, t1: Tensor, t2: Tensor, value: Tensor | float = 1.0) -> Tensor:
    """x + value * t1 / t2 (PyTorch's evaluation order)."""
    if isinstance(value, Tensor):
        value = scalar(value, x)
    return F.add(x, F.div(F.mul(t1, value), t2) if not (isinstance(value, float) and value == 1.0)
                 else F.div(t1, t2))


def add_scaled(x: Tensor, other: Tensor, alpha: Tensor) -> Tensor:
    """x.add(other, alpha=alpha) with a float64 scalar alpha."""
    return F.add(x, F.mul(other, scalar(alpha, x)))


def weight_decayed(group: dict[str, Any], p: Tensor, grad: Tensor, h: Hyper) -> Tensor:
    """grad (negated under maximize) + weight_decay * p when weight_decay != 0 (coupled L2)."""
    g = F.neg(grad) if group["maximize"] else grad
    if group["weight_decay"] != 0:
        g = add_scaled(g, p, h["weight_decay"])
    return g


def one_minus(x: Tensor) -> Tensor:
    return F.rsub(x, 1.0)


def check_nonnegative(**values: float) -> None:
    """PyTorch's constructor checks: 'Invalid learning rate: -1', 'Invalid momentum value: -1', ..."""
    for name, v in values.items():
        if isinstance(v, Tensor):
            v = v.item()
        if not 0.0 <= v:
            what = {"lr": "learning rate", "eps": "epsilon value"}.get(name, f"{name} value")
            raise ValueError(f"Invalid {what}: {v}")


def check_betas(betas: Any) -> tuple[float, float]:
    betas = tuple(betas)
    for i, beta in enumerate(betas):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
    return betas
