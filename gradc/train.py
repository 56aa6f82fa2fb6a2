"""Compiled modules: `gradc.compile(module)` (inference) and `gradc.compile_step` (a whole training step).

Both trace the module with its parameters and buffers substituted by function inputs (so updated
weights are read on every call without recompiling) and specialize per input shapes and dtypes and
per train/eval mode, like `jax.jit`. A traced dropout adds a noise input that is filled on every call
from gradc's seeded generator (see gradc.nn.ops).

`compile_step(model, loss_fn, optimizer)` builds ONE Function of (parameters, optimizer state, one
float64 vector per param group holding its hyperparameters (lr, betas, momentum, ...: runtime inputs, so
a schedule never recompiles), x, y[, noise]) returning (loss, new parameters, new state): the forward,
its adjoint from the AD pass, and the optimizer's `_update` traced on the gradients. The new parameters
and state are *donated* results: the native code writes them into the parameter and state arrays
themselves, in place, as torch.optim does (a numpy view of a weight sees every step). Per step, Python
reads the arrays into one argument list and makes one compiled call. Results the compiler could not
write in place (and the interpreter's) are copied into the arrays.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Sequence

import numpy as np

from gradc.api import argument_array, compile_function_or_interp, optimize
from gradc.autograd.hooks import grad_hooks, traced_hooks
from gradc.grad_mode import enable_grad
from gradc.ir.builder import inline
from gradc.ir.core import Function, TensorType, Value, float64
from gradc.ir.passes.ad import ad
from gradc.nn.module import Module
from gradc.nn.normalization import buffer_updates
from gradc.nn.ops import noise_arrays, noise_inputs
from gradc.optim import Optimizer
from gradc.tensor import Tensor, Trace, tracing

__all__ = ["compile_step", "CompiledStep", "CompiledModule"]


def _value_name(name: str) -> str:
    name = re.sub(r"\W", "_", name)
    return name if name[:1].isalpha() else "p" + name


def _results(out: Any) -> Sequence[np.ndarray]:
    # native functions return a bare array for one result, the interpreter a list
    return out if isinstance(out, (list, tuple)) else (out,)


class substituted:
    """Within the block, each tensor reads as the given traced Value (parameters become inputs)."""

    def __init__(self, tensors: Sequence[Tensor], values: Sequence[Value]) -> None:
        self.pairs = list(zip(tensors, values, strict=True))

    def __enter__(self) -> None:
        for t, v in self.pairs:
            if t._value is not None:
                raise RuntimeError("a module parameter is already traced: nested compilation of one module")
            t._value = v
            hooks = grad_hooks(t)
            if hooks:  # a parameter's hooks act on its gradient in the compiled step too
                t._value = traced_hooks(t, hooks)

    def __exit__(self, *exc: Any) -> None:
        for t, _ in self.pairs:
            t._value = None


def _module_tensors(module: Module) -> tuple[list[str], list[Tensor]]:
    names, tensors, seen = [], [], set()
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            names.append(name)
            tensors.append(t)
    return names, tensors


def trace_with_tensors(body: Callable[..., Any], tensors: Sequence[Tensor], names: Sequence[str],
                       input_types: Sequence[TensorType], fn_name: str) -> Function:
    """Trace body(*inputs) with `tensors` as leading function params; traced dropouts append noise params;
    traced running-stat updates (batch norm) append results, their tensors listed in meta["updated_buffers"]."""
    t = Trace()
    tensor_values = [Value(x._type(), name=_value_name(n)) for x, n in zip(tensors, names)]
    inputs = [Value(ty, name=f"input{i}") for i, ty in enumerate(input_types)]
    with tracing(t), enable_grad(), noise_inputs() as noise, substituted(tensors, tensor_values), \
            buffer_updates() as updates:
        out = body(*(Tensor._from_value(v) for v in inputs))
        single = not isinstance(out, (tuple, list))
        outs = [out] if single else list(out)
        for i, o in enumerate(outs):
            if not isinstance(o, Tensor):
                raise TypeError(f"the module returned a {type(o).__name__} as output {i}; compiled modules "
                                "must return gradc Tensors (or a tuple of them)")
        results = [t.lift(o) for o in outs] + [v for _, v in updates]
    return Function(fn_name, tensor_values + inputs + list(noise), t.builder.ops, results,
                    {"single_output": single, "num_noise": len(noise), "updated_buffers": [b for b, _ in updates]})


class _Spec:
    __slots__ = ("fn", "function", "noise", "single", "buffers")

    def __init__(self, fn: Callable, function: Function, noise: Sequence[Value], single: bool,
                 buffers: Sequence[Tensor] = ()) -> None:
        self.fn, self.function, self.noise, self.single = fn, function, list(noise), single
        self.buffers = list(buffers)  # updated by the call: its last len(buffers) results


class CompiledModule:
    """`gradc.compile(module)`: a native forward taking the module's inputs; returns numpy arrays."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.names, self.tensors = _module_tensors(module)
        self.specializations: dict[tuple, _Spec] = {}

    def __repr__(self) -> str:
        return f"<gradc.compile of {type(self.module).__name__}>"

    def _specialize(self, arrays: list[np.ndarray]) -> _Spec:
        key = (self.module.training,) + tuple((a.shape, a.dtype.str) for a in arrays)
        spec = self.specializations.get(key)
        if spec is None:
            types = [TensorType(a.shape, _dtype(a)) for a in arrays]
            fn = optimize(trace_with_tensors(self.module, self.tensors, self.names, types,
                                             type(self.module).__name__.lower()))
            noise = fn.params[len(fn.params) - fn.meta["num_noise"]:]
            spec = self.specializations[key] = _Spec(compile_function_or_interp(fn), fn, noise,
                                                     fn.meta["single_output"], fn.meta["updated_buffers"])
        return spec

    def lower(self, *inputs: Any) -> Function:
        """The traced (optimized) forward Function for these inputs."""
        return self._specialize([argument_array(a, i) for i, a in enumerate(inputs)]).function

    def __call__(self, *inputs: Any) -> Any:
        arrays = [argument_array(a, i) for i, a in enumerate(inputs)]
        spec = self._specialize(arrays)
        out = _results(spec.fn(*[t._data for t in self.tensors], *arrays, *noise_arrays(spec.noise)))
        if spec.buffers:
            _store_updates(spec.buffers, out[len(out) - len(spec.buffers):])
            out = out[:len(out) - len(spec.buffers)]
        return out[0] if spec.single else tuple(out)


def _dtype(array: np.ndarray):
    from gradc.ir.core import dtype_of_numpy
    return dtype_of_numpy(array.dtype)


class CompiledStep:
    """`step(x, y) -> loss` (a 0-d numpy array): forward, backward and optimizer update in one compiled call."""

    def __init__(self, model: Module, loss_fn: Callable[[Tensor, Tensor], Tensor], optimizer: Optimizer) -> None:
        if not isinstance(model, Module):
            raise TypeError(f"compile_step needs a gradc.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"compile_step needs a gradc.optim optimizer, got {type(optimizer).__name__}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.names, self.tensors = _module_tensors(model)
        position = {id(t): i for i, t in enumerate(self.tensors)}
        # (model tensor index, group) for every optimized parameter that the model owns
        self.trainable: list[tuple[int, dict]] = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if id(p) not in position:
                    raise ValueError(f"the optimizer holds a parameter of shape {list(p.shape)} that is not a "
                                     "parameter of the model")
                if p.requires_grad:
                    self.trainable.append((position[id(p)], group))
        if not self.trainable:
            raise ValueError("no parameter of the model requires grad in the optimizer")
        self.specializations: dict[tuple, _Spec] = {}
        self._swap: list[Tensor] = []  # tensors the step updates (in place: results donated to their arrays)
        self._swap_positions: list[int] = []  # each one's position in the argument list
        self._inputs: list[Tensor] = []  # model tensors, then optimizer state tensors
        self._groups: list[dict] = []
        self._structure: list[tuple] = []  # each group's compiled-in structure when the step was built
        self._watched: list | None = None  # the groups' hyperparameters and flags at the last call
        self._watch_keys: list[tuple[dict, str]] = []
        self._hyper_arrays: list[np.ndarray] = []
        self._last: _Spec | None = None
        self._last_key: tuple | None = None

    def __repr__(self) -> str:
        return f"<gradc.compile_step of {type(self.model).__name__} with {type(self.optimizer).__name__}>"

    # --- building
    def _forward(self, x_type: TensorType, y_type: TensorType) -> Function:
        def loss_of(x: Tensor, y: Tensor) -> Tensor:
            loss = self.loss_fn(self.model(x), y)
            if not isinstance(loss, Tensor) or loss.shape != () or not loss.dtype.is_float:
                what = f"{loss.dtype.name} tensor of shape {list(loss.shape)}" if isinstance(loss, Tensor) \
                    else type(loss).__name__
                raise TypeError(f"compile_step needs a loss_fn returning a scalar float tensor, got a {what}")
            return loss
        return trace_with_tensors(loss_of, self.tensors, self.names, [x_type, y_type], "loss")

    def _build(self, x: np.ndarray, y: np.ndarray) -> _Spec:
        opt = self.optimizer
        forward = optimize(self._forward(TensorType(x.shape, _dtype(x)), TensorType(y.shape, _dtype(y))))
        n_noise = forward.meta["num_noise"]
        buffers = forward.meta["updated_buffers"]  # results 1.. of forward: detached running stats
        joint = optimize(ad(forward, [i for i, _ in self.trainable], seed="ones"))

        groups = {id(g): g for _, g in self.trainable}
        group_index = {gid: k for k, gid in enumerate(groups)}
        states = [(self.tensors[i], g, opt.state_for(self.tensors[i], g)) for i, g in self.trainable]
        state_names = [opt._state_names(g) for _, g, _ in states]

        tensor_values = [Value(p.type, name=p.name) for p in forward.params[:len(self.tensors)]]
        state_values = [[Value(s[n]._type(), name=f"{_value_name(self.names[i])}_{n}") for n in names]
                        for (i, _), (_, _, s), names in zip(self.trainable, states, state_names)]
        hyper_names = [opt.hyper_names(g) for g in groups.values()]
        hyper_values = [Value(TensorType((len(names),), float64), name=f"hyper{k}")
                        for k, names in enumerate(hyper_names)]
        data_values = [Value(p.type, name=p.name) for p in forward.params[len(self.tensors):]]

        trace = Trace()
        with tracing(trace), enable_grad():
            loss, *grads = inline(trace.builder, joint, tensor_values + data_values)
            hyper = [opt.hyper_dict(names, Tensor._from_value(v)) for names, v in zip(hyper_names, hyper_values)]
            new_buffers, grads = grads[:len(buffers)], grads[len(buffers):]
            new_params, new_states = [], []
            for (i, group), grad, values, names in zip(self.trainable, grads, state_values, state_names):
                new_p, new_s = opt._update(group, Tensor._from_value(tensor_values[i]), Tensor._from_value(grad),
                                           {n: Tensor._from_value(v) for n, v in zip(names, values)},
                                           hyper[group_index[id(group)]])
                new_params.append(trace.lift(new_p))
                new_states += [trace.lift(new_s[n]) if n in new_s else v for n, v in zip(names, values)]
        params = tensor_values + [v for vs in state_values for v in vs] + hyper_values + data_values
        step_fn = optimize(Function("train_step", params, trace.builder.ops,
                                    [loss, *new_params, *new_states, *new_buffers], {"num_noise": n_noise}))

        self._groups = list(groups.values())
        self._structure = [opt.structure(g) for g in self._groups]
        self._watch_keys = [(g, k) for g in self._groups for k in opt.hyper + opt.flags]
        self._swap = [self.tensors[i] for i, _ in self.trainable] + \
            [s[n] for (_, _, s), names in zip(states, state_names) for n in names]
        self._inputs = self.tensors + [s[n] for (_, _, s), names in zip(states, state_names) for n in names]
        self._watched = None
        noise = data_values[len(data_values) - n_noise:] if n_noise else []
        # result 1 + j is trainable parameter j's new value, then the state tensors in _inputs order
        n_trainable, first_state = len(self.trainable), len(self.tensors)
        donate = {1 + j: i for j, (i, _) in enumerate(self.trainable)}
        donate.update({1 + n_trainable + s: first_state + s for s in range(len(self._swap) - n_trainable)})
        position = {id(t): i for i, t in enumerate(self.tensors)}
        for j, buf in enumerate(buffers):  # running stats: written in place when the buffer is a model tensor
            if id(buf) in position:
                donate[1 + len(self._swap) + j] = position[id(buf)]
        self._swap_positions = [donate[r] for r in range(1, 1 + len(self._swap))]
        return _Spec(compile_function_or_interp(step_fn, donate), step_fn, noise, True, buffers)

    def _specialize(self, x: np.ndarray, y: np.ndarray) -> _Spec:
        key = (self.model.training, x.shape, x.dtype.str, y.shape, y.dtype.str)
        spec = self.specializations.get(key)
        if spec is None:
            spec = self.specializations[key] = self._build(x, y)
        return spec

    def lower(self, x: Any, y: Any) -> Function:
        """The whole step as one IR Function (before fusion) for this batch's shapes."""
        return self._specialize(argument_array(x, 0), argument_array(y, 1)).function

    # --- the step
    def __call__(self, x: Any, y: Any) -> np.ndarray:
        x = x if type(x) is np.ndarray else argument_array(x, 0)
        y = y if type(y) is np.ndarray else argument_array(y, 1)
        spec = self._last
        if spec is None or self._last_key != (x.shape, x.dtype, y.shape, y.dtype, self.model.training):
            spec = self._specialize(x, y)
            self._last, self._last_key = spec, (x.shape, x.dtype, y.shape, y.dtype, self.model.training)
        opt = self.optimizer
        opt._opt_called = True  # the step counts as optimizer.step() for lr_scheduler's order check
        watched = [g[k] for g, k in self._watch_keys]
        if watched != self._watched:  # the vectors are rebuilt only when a hyperparameter changes
            if [opt.structure(g) for g in self._groups] != self._structure:
                # a flag flipped or a weight decay / momentum became (non)zero: different code
                self.specializations.clear()
                self._last = None
                return self(x, y)
            self._watched = watched
            self._hyper_arrays = [np.array(opt.hyper_values(g), dtype=np.float64) for g in self._groups]
        args = [t._data for t in self._inputs]
        args += self._hyper_arrays
        args.append(x)
        args.append(y)
        if spec.noise:
            args += noise_arrays(spec.noise)
        out = spec.fn(*args)
        n_swap = len(self._swap)
        if not all(map(operator.is_, out[1:1 + n_swap], map(args.__getitem__, self._swap_positions))):
            _store_updates(self._swap, out[1:1 + n_swap])
        if spec.buffers:  # running stats (batch norm in training mode)
            _store_updates(spec.buffers, out[1 + n_swap:])
        for p in self._swap[:len(self.trainable)]:  # the parameters count the step, as torch.optim's in-place
            p._version += 1  # update: graphs that saved them refuse backward
        return out[0]


def _store_updates(tensors: Sequence[Tensor], arrays: Sequence[np.ndarray]) -> None:
    """Results not written in place: copy them into the tensors' arrays (rebind when those are read-only)."""
    for t, array in zip(tensors, arrays):
        if array is t._data:
            continue
        if t._data.flags.writeable and t._data.shape == array.shape and t._data.dtype == array.dtype:
            np.copyto(t._data, array)
        else:
            t._data = array


def compile_step(model: Module, loss_fn: Callable[[Tensor, Tensor], Tensor], optimizer: Optimizer) -> CompiledStep:
    """One compiled training step: `loss = step(x, y)` updates model parameters and optimizer state.

    The parameters' .grad is not written (the gradients live only inside the compiled function). The
    learning rates and other numeric hyperparameters of every group are read on every call (runtime
    inputs); flags (amsgrad, nesterov, maximize, ...) and whether weight decay / momentum is zero are
    compiled in, and changing them rebuilds the step. The parameter and
    state tensors are bound when a specialization is built: replace them (a new Parameter, the
    optimizer's load_state_dict) and build a new step.
    """
    if getattr(model, "require_backward_grad_sync", None) is not None:  # DistributedDataParallel
        from gradc.distributed.compiled import compile_ddp_step
        return compile_ddp_step(model, loss_fn, optimizer)
    return CompiledStep(model, loss_fn, optimizer)
