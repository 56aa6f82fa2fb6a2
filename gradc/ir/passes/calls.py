"""Calls with caller-supplied VJPs (custom_vjp) after AD: each becomes the value it stands for."""

from __future__ import annotations

from gradc.ir.builder import Builder
from gradc.ir.core import Function, Value
from gradc.ir.ops import CALL


def has_calls(fn: Function) -> bool:
    return any(op.opdef.kind == CALL for op in fn.ops)


def strip_custom_vjp(fn: Function) -> Function:
    """Replace every custom_vjp by its value operand (its VJP rule has done its work in `ad`)."""
    if not has_calls(fn):
        return fn
    b = Builder()
    params = [Value(p.type, name=p.name) for p in fn.params]
    env: dict[Value, Value] = dict(zip(fn.params, params))
    for op in fn.ops:
        if op.opdef.kind == CALL:
            env[op.result] = env[op.inputs[-1]]
        else:
            env[op.result] = b.emit(op.opdef.name, *(env[v] for v in op.inputs), **op.attrs)
    return Function(fn.name, params, b.ops, [env[r] for r in fn.results], dict(fn.meta))
