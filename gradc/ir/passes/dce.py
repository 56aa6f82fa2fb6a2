"""Dead code elimination: drop ops whose results no result depends on."""

from __future__ import annotations

from gradc.ir.core import Function


def dce(fn: Function) -> Function:
    """Remove ops that do not contribute to any result."""
    live = set(fn.results)
    kept = []
    for op in reversed(fn.ops):
        if op.result in live:
            kept.append(op)
            live.update(op.inputs)
    kept.reverse()
    return Function(fn.name, list(fn.params), kept, list(fn.results), dict(fn.meta))
