"""Reference interpreter: runs any Function on numpy arrays with each op's numpy eval rule.

It is the oracle of the test suite and the "interpreted engine" that native code is compared with.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gradc.ir.core import Function, TensorType, Value


def check_argument(param: Value, arg: Any, position: int) -> np.ndarray:
    """Convert one argument to the param's exact type, or raise naming the mismatch."""
    t: TensorType = param.type
    array = np.asarray(arg)
    if array.shape != t.shape:
        raise ValueError(f"argument {position} has shape {list(array.shape)}, expected {list(t.shape)} ({t})")
    if array.dtype != np.dtype(t.dtype.numpy):
        if np.dtype(array.dtype).newbyteorder("=") == np.dtype(t.dtype.numpy):
            return array.astype(t.dtype.numpy)  # non-native byte order: same values, native layout
        raise TypeError(f"argument {position} has dtype {array.dtype}, expected {t.dtype.name} ({t})")
    return array


def run(fn: Function, *args: Any) -> list[np.ndarray]:
    """Evaluate fn on args; returns one numpy array per result (0-d for scalars)."""
    env = run_values(fn, args)
    return [np.array(env[r]) for r in fn.results]


def run_values(fn: Function, args: Sequence[Any]) -> dict[Value, np.ndarray]:
    """Evaluate fn and return every value's array (for tests and debugging)."""
    if len(args) != len(fn.params):
        raise TypeError(f"{fn.name} takes {len(fn.params)} arguments, got {len(args)}")
    env: dict[Value, np.ndarray] = {p: check_argument(p, a, i) for i, (p, a) in enumerate(zip(fn.params, args))}
    with np.errstate(all="ignore"):  # NaN and inf propagate as values, as in native code
        for op in fn.ops:
            env[op.result] = np.asarray(op.opdef.eval(*(env[v] for v in op.inputs), **op.attrs),
                                        dtype=op.result.dtype.numpy)
    return env
