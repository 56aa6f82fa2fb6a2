"""Common subexpression elimination by hash-consing (op name, operands, attributes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gradc.ir.builder import Builder
from gradc.ir.core import Function, Value


def attr_key(value: Any) -> Any:
    """A hashable key that is equal only for attributes with the same meaning."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, float):
        return ("float", repr(value))  # 0.0 and -0.0 differ; nan equals nan
    if isinstance(value, tuple):
        return ("tuple",) + tuple(attr_key(v) for v in value)
    return (type(value).__name__, value)  # int and bool are kept apart too


def cse(fn: Function) -> Function:
    """Merge ops that compute the same op on the same operands with the same attributes."""
    b = Builder()
    params = [Value(p.type, name=p.name) for p in fn.params]
    env: dict[Value, Value] = dict(zip(fn.params, params))
    seen: dict[tuple, Value] = {}
    for op in fn.ops:
        inputs = tuple(env[v] for v in op.inputs)
        key = (op.name, inputs,  # Values hash by identity
               tuple((k, attr_key(v)) for k, v in sorted(op.attrs.items())))
        if key not in seen:
            seen[key] = b.emit(op.name, *inputs, **op.attrs)
        env[op.result] = seen[key]
    return Function(fn.name, params, b.ops, [env[r] for r in fn.results], dict(fn.meta))
