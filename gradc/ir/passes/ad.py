"""Reverse-mode AD: a Function becomes a joint Function of its outputs and its gradients.

The pass has no per-op code: it walks the active ops backwards, asks each op's VJP rule (from the
registry) to emit the input cotangents as IR, and sums cotangents where a value fans out. The
result is ordinary IR, so running `ad` again gives second derivatives.
"""

from __future__ import annotations

from typing import Sequence

from gradc.ir.builder import Builder, inline
from gradc.ir.core import Function, IRError, Value
from gradc.ir.passes.dce import dce


def active_ops(fn: Function, wrt: Sequence[Value]) -> set:
    """Ops on a path from a differentiated param to a result, through differentiable ops only."""
    varying = set(wrt)
    for op in fn.ops:
        if op.opdef.vjp is not None and op.result.dtype.is_float and any(v in varying for v in op.inputs):
            varying.add(op.result)
    useful = set(fn.results)
    active = set()
    for op in reversed(fn.ops):
        if op.result in useful and op.result in varying:
            active.add(op)
            useful.update(op.inputs)
    return active


def ad(fn: Function, wrt: Sequence[int] | None = None, seed: str = "param") -> Function:
    """fn -> joint fn returning fn's results, then d(sum_i <result_i, cotangent_i>)/d params[wrt]."""
    wrt = list(range(len(fn.params))) if wrt is None else list(wrt)
    for i in wrt:
        if not fn.params[i].dtype.is_float:
            raise TypeError(f"cannot differentiate with respect to parameter {i} of integer/bool type "
                            f"{fn.params[i].type}")
    if seed not in ("param", "ones"):
        raise ValueError(f"seed must be 'param' or 'ones', got {seed!r}")
    b = Builder()
    params = [Value(p.type, name=p.name) for p in fn.params]
    env: dict[Value, Value] = dict(zip(fn.params, params))
    for op in fn.ops:
        env[op.result] = b.emit(op.opdef.name, *(env[v] for v in op.inputs), **op.attrs)
    results = [env[r] for r in fn.results]

    if seed == "param":
        cotangents = [Value(r.type, name=f"ct{i}") for i, r in enumerate(results)]
        params += cotangents
    else:
        cotangents = [b.scalar(1.0, r) for r in results]

    adjoint: dict[Value, Value] = {}

    def accumulate(value: Value, grad: Value) -> None:
        if grad.type != value.type:
            raise IRError(f"VJP of {value.op.name if value.op else 'param'} gave a cotangent of type "
                          f"{grad.type} for a value of type {value.type}")
        adjoint[value] = b.add(adjoint[value], grad) if value in adjoint else grad

    for r, ct in zip(fn.results, cotangents):
        if r.dtype.is_float:
            accumulate(r, ct)
    active = active_ops(fn, [fn.params[i] for i in wrt])
    for op in reversed(fn.ops):
        if op not in active or op.result not in adjoint:
            continue
        inputs = [env[v] for v in op.inputs]
        grads = op.opdef.vjp(b, adjoint[op.result], env[op.result], *inputs, **op.attrs)
        if len(grads) != len(op.inputs):
            raise IRError(f"VJP of {op.name} returned {len(grads)} cotangents for {len(op.inputs)} inputs")
        for v, g in zip(op.inputs, grads):
            if g is not None and v.dtype.is_float and (v.op is None or v.op in active):
                accumulate(v, g)

    for done in b.after_ad:  # e.g. a module's backward hooks whose inputs no gradient reached
        done()
    grads = [adjoint.get(fn.params[i]) or b.scalar(0.0, params[i]) for i in wrt]
    joint = Function(f"{fn.name}_grad", params, b.ops, results + grads,
                     {"num_results": len(results), "wrt": tuple(wrt), "seed": seed})
    return dce(joint)


__all__ = ["ad", "active_ops", "inline"]
