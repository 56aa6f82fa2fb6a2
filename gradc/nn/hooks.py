"""Module hooks (forward, forward pre, full backward) and Module.to/cpu for a CPU-only library.

A module without hooks is called as before (`forward` directly). Full backward hooks ride on tensor
hooks: the module's tensor inputs are passed through an alias node and its outputs get a hook, so the
eager backward hands both gradients to `hook(module, grad_input, grad_output)` once per call, when the
last of them is known.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from gradc.autograd.hooks import RemovableHandle
from gradc.device import check_device
from gradc.ir.core import DType, float32, float64
from gradc.nn.module import Module
from gradc.tensor import Tensor


def _table(module: Module, name: str) -> dict:
    table = module.__dict__.get(name)
    if table is None:
        table = {}
        object.__setattr__(module, name, table)
    return table


def register_forward_pre_hook(self: Module, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False) -> Any:
    table = _table(self, "_forward_pre_hooks")
    handle = RemovableHandle(table)
    table[handle.id] = (hook, with_kwargs)
    return handle


def register_forward_hook(self: Module, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False,
                          always_call: bool = False) -> Any:
    table = _table(self, "_forward_hooks")
    handle = RemovableHandle(table)
    table[handle.id] = (hook, with_kwargs)
    return handle


def register_full_backward_hook(self: Module, hook: Callable, prepend: bool = False) -> Any:
    table = _table(self, "_backward_hooks")
    handle = RemovableHandle(table)
    table[handle.id] = hook
    return handle


def register_full_backward_pre_hook(self: Module, hook: Callable, prepend: bool = False) -> Any:
    table = _table(self, "_backward_pre_hooks")
    handle = RemovableHandle(table)
    table[handle.id] = hook
    return handle


def _call(self: Module, *args: Any, **kwargs: Any) -> Any:
    d = self.__dict__
    if not (d.get("_forward_pre_hooks") or d.get("_forward_hooks") or d.get("_backward_hooks")
            or d.get("_backward_pre_hooks")):
        return self.forward(*args, **kwargs)
    for hook, with_kwargs in list(d.get("_forward_pre_hooks", {}).values()):
        result = hook(self, args, kwargs) if with_kwargs else hook(self, args)
        if result is not None:
            if with_kwargs:
                args, kwargs = result
            else:
                args = result if isinstance(result, tuple) else (result,)
    backward = list(d.get("_backward_hooks", {}).values())
    pre = list(d.get("_backward_pre_hooks", {}).values())
    call = _BackwardCall(self, backward, pre) if backward or pre else None
    if call is not None:
        args = call.watch_inputs(args)
    output = self.forward(*args, **kwargs)
    for hook, with_kwargs in list(d.get("_forward_hooks", {}).values()):
        result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
        if result is not None:
            output = result
    if call is not None:
        call.watch_outputs(output)
    return output


class _BackwardCall:
    """The gradients of one module call's inputs and outputs, gathered for its full backward hooks."""

    def __init__(self, module: Module, hooks: list, pre_hooks: list) -> None:
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self.pending = 0

    def watch_inputs(self, args: tuple) -> tuple:
        from gradc import functional as F
        out = []
        for a in args:
            if isinstance(a, Tensor) and a.requires_grad and not a.is_traced:
                alias = F.cast_op(a, a.dtype)  # a node of its own, so the gradient reaching it can be read
                k = len(self.inputs)
                self.inputs.append(None)
                self.pending += 1
                alias.register_hook(lambda g, k=k: self._arrived(self.inputs, k, g))
                out.append(alias)
            else:
                if isinstance(a, Tensor):
                    self.inputs.append(None)
                out.append(a)
        return tuple(out)

    def watch_outputs(self, output: Any) -> None:
        outs = [output] if isinstance(output, Tensor) else [o for o in output if isinstance(o, Tensor)] \
            if isinstance(output, (tuple, list)) else []
        if any(o.is_traced for o in outs):
            warnings.warn(f"{type(self.module).__name__}: full backward hooks do not run inside gradc.compile / "
                          "compile_step / grad (no Python callbacks in native code)", stacklevel=3)
        self.outputs = [None] * len(outs)
        for k, o in enumerate(outs):
            if o.requires_grad and not o.is_traced:
                self.pending += 1
                o.register_hook(lambda g, k=k: self._arrived(self.outputs, k, g))

    def _arrived(self, table: list, k: int, g: Tensor) -> None:
        """One input or output gradient is known; the module's hooks run once all of them are."""
        table[k] = g
        self.pending -= 1
        if self.pending:
            return
        grad_output = tuple(self.outputs)
        for hook in self.pre_hooks:
            if hook(self.module, grad_output) is not None:
                raise NotImplementedError("gradc: a full backward pre-hook that returns new gradients is not supported")
        for hook in self.hooks:
            if hook(self.module, tuple(self.inputs), grad_output) is not None:
                raise NotImplementedError("gradc: a full backward hook that returns new gradients is not supported")


def _to(self: Module, *args: Any, **kwargs: Any) -> Module:
    """Module.to(device) / .to(dtype): converts floating point parameters and buffers in place."""
    from gradc.tensor_protocol import _parse_to
    where, dtype = _parse_to(args, kwargs)
    check_device(where)
    if dtype is not None:
        if not isinstance(dtype, DType) or not dtype.is_float:
            raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
        for t in list(self.parameters()) + list(self.buffers()):
            if t.dtype.is_float and t.dtype != dtype:
                t._data = t._data.astype(dtype.numpy)
                if t.grad is not None:
                    t.grad._data = t.grad._data.astype(dtype.numpy)
    return self


Module.__call__ = _call
Module.register_forward_pre_hook = register_forward_pre_hook
Module.register_forward_hook = register_forward_hook
Module.register_full_backward_hook = register_full_backward_hook
Module.register_full_backward_pre_hook = register_full_backward_pre_hook
Module.to = _to
Module.cpu = lambda self: self
Module.cuda = lambda self, *a, **k: check_device("cuda")
Module.double = lambda self: _to(self, float64)
Module.float = lambda self: _to(self, float32)
