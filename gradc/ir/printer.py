"""Deterministic MLIR-like text for Functions; names are assigned at print time.

    func @f(%x: f32[3,4], %y: f32[4]) -> f32[3] {
      %0 = broadcast_to %y {shape = [3,4]} : f32[3,4]
      %1 = mul %x, %0 : f32[3,4]
      %2 = reduce_sum %1 {axes = [1]} : f32[3]
      return %2
    }
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from gradc.ir.core import DType, Function, Value

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# attributes that the printed result type already states; the parser takes them from it
IMPLIED_BY_RESULT_TYPE = {"const": ("shape", "dtype"), "iota": ("shape",)}


def format_scalar(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def format_nested(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(format_nested(v) for v in value) + "]"
    return format_scalar(value)


def format_attr(value: Any) -> str:
    if isinstance(value, Function):  # a region (scan's body): the nested function's own text, indented
        return print_function(value).rstrip("\n").replace("\n", "\n    ")
    if isinstance(value, DType):
        return value.short
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        return f"dense<{format_nested(value.tolist())}>"
    if not isinstance(value, (bool, int, float, np.number, np.bool_)):
        return f"<{value!r}>"  # an opaque object (a custom_vjp rule): printed, not parseable
    return format_scalar(value)


def param_names(params: list[Value]) -> list[str]:
    names, seen = [], set()
    for i, p in enumerate(params):
        name = p.name if p.name and IDENTIFIER.match(p.name) else f"arg{i}"
        while name in seen:
            name += "_"
        seen.add(name)
        names.append(name)
    return names


def print_function(fn: Function) -> str:
    names: dict[Value, str] = {p: f"%{n}" for p, n in zip(fn.params, param_names(fn.params))}

    def ref(v: Value) -> str:
        return names.get(v) or f"<undefined {v.type}>"

    head = ", ".join(f"{names[p]}: {p.type}" for p in fn.params)
    result_types = [str(r.type) for r in fn.results]
    ret = result_types[0] if len(result_types) == 1 else f"({', '.join(result_types)})"
    lines = [f"func @{fn.name}({head}) -> {ret} {{"]
    for i, op in enumerate(fn.ops):
        names[op.result] = f"%{i}"
        text = f"  %{i} = {op.name}"
        if op.inputs:
            text += " " + ", ".join(ref(v) for v in op.inputs)
        shown = [k for k in op.opdef.attrs if k not in IMPLIED_BY_RESULT_TYPE.get(op.name, ())]
        if shown:
            text += " {" + ", ".join(f"{k} = {format_attr(op.attrs[k])}" for k in shown) + "}"
        lines.append(f"{text} : {op.result.type}")
    lines.append("  return " + ", ".join(ref(r) for r in fn.results))
    lines.append("}")
    return "\n".join(lines) + "\n"
