"""The IR verifier: the invariants every pass must keep.

Single definition, defined before use, parameters never redefined, results defined, every op a
registry op with its declared attributes, and every result type equal to the one its shape rule
derives from the operand types. Violations raise `IRError` naming the function and the op index.
"""

from __future__ import annotations

from gradc.ir.core import Function, IRError, Op, ShapeError, TensorType, Value
from gradc.ir.ops import OPS


def verify(fn: Function) -> None:
    """Raise IRError at the first broken invariant of fn; return None when fn is valid."""
    where = f"function @{fn.name}"
    defined: set[Value] = set()
    for i, p in enumerate(fn.params):
        if not isinstance(p, Value) or not isinstance(p.type, TensorType):
            raise IRError(f"{where}: parameter {i} is not a typed Value: {p!r}")
        if p in defined:
            raise IRError(f"{where}: parameter {i} appears twice in the parameter list")
        defined.add(p)
    params = set(fn.params)
    for i, op in enumerate(fn.ops):
        verify_op(op, i, where, defined, params)
        defined.add(op.result)
    for i, r in enumerate(fn.results):
        if r not in defined:
            raise IRError(f"{where}: result {i} ({r!r}) is not defined in the function")


def verify_op(op: Op, i: int, where: str, defined: set[Value], params: set[Value]) -> None:
    if not isinstance(op, Op):
        raise IRError(f"{where}: op {i} is not an Op: {op!r}")
    at = f"{where}: op {i} ({getattr(op.opdef, 'name', op.opdef)})"
    if OPS.get(op.opdef.name) is not op.opdef:
        raise IRError(f"{at}: not an op of the registry")
    if op.opdef.arity >= 0 and len(op.inputs) != op.opdef.arity:
        raise IRError(f"{at}: takes {op.opdef.arity} operands, has {len(op.inputs)}")
    if set(op.attrs) != set(op.opdef.attrs):
        raise IRError(f"{at}: has attributes {sorted(op.attrs)}, expected {sorted(op.opdef.attrs)}")
    for k, v in enumerate(op.inputs):
        if v not in defined:
            raise IRError(f"{at}: operand {k} ({v!r}) is used before it is defined")
    if op.result in params:
        raise IRError(f"{at}: redefines a parameter")
    if op.result in defined:
        raise IRError(f"{at}: redefines a value defined earlier")
    if op.result.op is not op:
        raise IRError(f"{at}: its result does not point back to the op")
    try:
        derived = op.opdef.shape([v.type for v in op.inputs], op.attrs)
    except (ShapeError, TypeError, ValueError, KeyError, IndexError) as e:
        raise IRError(f"{at}: shape rule rejects the operands: {e}") from None
    if derived != op.result.type:
        raise IRError(f"{at}: result type is {op.result.type} but the shape rule gives {derived}")
