"""What the user's training step must at least do: its GEMMs (read off compile_step's traced joint) and bytes."""

from __future__ import annotations

import numpy as np

from gradc.bench.usermodel import spec as specs
from gradc.bench.workloads import Gemm

STATE_ARRAYS = {"sgd": 0, "adam": 2, "adamw": 2}  # optimizer state arrays per parameter (momentum-free SGD)


def model_gemms(spec: specs.BenchSpec, state: dict[str, np.ndarray], inputs: list[np.ndarray],
                target: np.ndarray) -> list[Gemm]:
    """Every matmul of the forward + adjoint that compile_step compiles, as float32 GEMM shapes."""
    import gradc
    from gradc.api import optimize
    from gradc.bench.usermodel.engines import load_weights
    from gradc.bench.usermodel.loader import build_model
    from gradc.ir.core import TensorType, dtype_of_numpy
    from gradc.ir.passes.ad import ad

    path, name = spec.model.rpartition(":")[::2]
    model, _ = build_model(path, name, "gradc", spec.seed)
    load_weights(model, state, "gradc")
    step = gradc.compile_step(model, specs.loss_function(spec, "gradc"), gradc.optim.SGD(model.parameters(), lr=0.0))
    x, y = inputs[0], target
    forward = optimize(step._forward(TensorType(x.shape, dtype_of_numpy(x.dtype)),
                                     TensorType(y.shape, dtype_of_numpy(y.dtype))))
    joint = optimize(ad(forward, [i for i, _ in step.trainable], seed="ones"))
    found: dict[tuple, int] = {}
    for op in joint.ops:
        if op.name != "matmul":
            continue
        a, b = op.inputs[0].type.shape, op.inputs[1].type.shape
        count = int(np.prod(a[:-2], dtype=np.int64)) if len(a) > 2 else 1
        key = (a[-2], a[-1], b[-1])
        found[key] = found.get(key, 0) + count
    return [Gemm(m, k, n, "nn", count) for (m, k, n), count in found.items()]


def min_bytes(spec: specs.BenchSpec, state: dict[str, np.ndarray], inputs: list[np.ndarray],
              target: np.ndarray) -> int:
    """Parameters and optimizer state read and written once, the batch read once (activations assumed cached)."""
    params = sum(v.nbytes for v in state.values() if v.dtype.kind == "f")
    return 2 * params * (1 + STATE_ARRAYS[spec.optimizer]) + sum(x.nbytes for x in inputs) + target.nbytes
