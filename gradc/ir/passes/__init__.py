"""IR passes by name, and the pipeline that runs them.

Every pass is a plain `Function -> Function` that leaves its input alone. `run_pipeline` reads
`GRADC_DEBUG`: 1 verifies the IR after each pass (so a broken pass is named at once), 2 also prints
the IR after each pass to stderr. `ad` is not here: it takes arguments (which inputs, which seed).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from gradc.ir.core import Function, IRError
from gradc.ir.passes.cse import attr_key, cse
from gradc.ir.passes.dce import dce
from gradc.ir.passes.simplify import simplify
from gradc.ir.printer import print_function
from gradc.ir.verify import verify

Pass = Callable[[Function], Function]

PASSES: dict[str, Pass] = {"simplify": simplify, "cse": cse, "dce": dce}

OPTIMIZE = ("simplify", "cse", "dce")


def debug_level() -> int:
    try:
        return int(os.environ.get("GRADC_DEBUG", "0") or 0)
    except ValueError:
        return 0


def run_pipeline(fn: Function, names: Sequence[str]) -> Function:
    """Run the named passes in order; GRADC_DEBUG=1 verifies after each, =2 also prints."""
    unknown = [n for n in names if n not in PASSES]
    if unknown:
        raise KeyError(f"unknown pass {unknown[0]!r}; known passes: {', '.join(sorted(PASSES))}")
    level = debug_level()
    if level >= 1:
        check(fn, "the pipeline input")
    for name in names:
        fn = PASSES[name](fn)
        if level >= 1:
            check(fn, f"pass {name!r}")
        if level >= 2:
            print(f"// ----- IR after {name} ({len(fn.ops)} ops)\n{print_function(fn)}", file=sys.stderr)
    return fn


def check(fn: Function, after: str) -> None:
    try:
        verify(fn)
    except IRError as e:
        raise IRError(f"invalid IR after {after}: {e}") from e


def structure(fn: Function) -> tuple:
    """What the printed text says, without printing (large constants would make that slow)."""
    index = {v: i for i, v in enumerate(fn.params)}
    rows = []
    for op in fn.ops:
        index[op.result] = len(index)
        attrs = tuple((k, attr_key(v)) for k, v in sorted(op.attrs.items()))
        rows.append((op.name, tuple(index.get(v, -1) for v in op.inputs), attrs, op.result.type))
    return tuple(p.type for p in fn.params), tuple(rows), tuple(index.get(r, -1) for r in fn.results)


def optimize(fn: Function, max_rounds: int = 3) -> Function:
    """simplify, cse, dce, repeated until the IR stops changing (at most max_rounds times)."""
    from gradc.ir.scan import optimize_bodies  # (scan bodies get the same pipeline, once each)
    fn = optimize_bodies(fn)
    shape = structure(fn)
    for _ in range(max_rounds):
        fn = run_pipeline(fn, OPTIMIZE)
        new_shape = structure(fn)
        if new_shape == shape:
            break
        shape = new_shape
    return fn


__all__ = ["PASSES", "run_pipeline", "optimize", "simplify", "cse", "dce", "verify"]
