"""Module hooks (forward, forward pre, full backward) and Module.to/cpu for a CPU-only library.

A module without hooks is called as before (`forward` directly). Full backward hooks and pre-hooks
are gradc.nn.backward_hooks.
"""

from __future__ import annotations

from typing import Any, Callable

from gradc.autograd.hooks import RemovableHandle
from gradc.device import check_device
from gradc.ir.core import DType, float32, float64
from gradc.nn.backward_hooks import BackwardCall
from gradc.nn.module import Module


def _table(module: Module, name: str) -> dict:
    table = module.__dict__.get(name)
    if table is None:
        table = {}
        object.__setattr__(module, name, table)
    return table


def _add(table: dict, entry: Any, prepend: bool) -> RemovableHandle:
    """Register `entry`; with prepend=True it runs before the hooks already there (PyTorch's order)."""
    handle = RemovableHandle(table)
    table[handle.id] = entry
    if prepend:
        for key in [k for k in table if k != handle.id]:
            table[key] = table.pop(key)
    return handle


def register_forward_pre_hook(self: Module, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False) -> Any:
    return _add(_table(self, "_forward_pre_hooks"), (hook, with_kwargs), prepend)


def register_forward_hook(self: Module, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False,
                          always_call: bool = False) -> Any:
    return _add(_table(self, "_forward_hooks"), (hook, with_kwargs), prepend)


def register_full_backward_hook(self: Module, hook: Callable, prepend: bool = False) -> Any:
    return _add(_table(self, "_backward_hooks"), hook, prepend)


def register_full_backward_pre_hook(self: Module, hook: Callable, prepend: bool = False) -> Any:
    return _add(_table(self, "_backward_pre_hooks"), hook, prepend)


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
    call = BackwardCall(self, backward, pre) if backward or pre else None
    if call is not None:
        args = call.setup_inputs(args)
    output = self.forward(*args, **kwargs)
    for hook, with_kwargs in list(d.get("_forward_hooks", {}).values()):
        result = hook(self, args, kwargs, output) if with_kwargs else hook(self, args, output)
        if result is not None:
            output = result
    if call is not None:
        output = call.setup_outputs(output)
    return output


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
