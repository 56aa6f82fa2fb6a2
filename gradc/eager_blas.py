"""Eager 2-D float matmuls on gradc's own single-threaded OpenBLAS copy instead of numpy's threaded one.

An eager training step alternates numpy's matmuls (the forward) with gradc's native calls (the adjoint
and the optimizer update, whose GEMMs use gradc's OpenBLAS copy at one thread, split over gradc's own
threads: codegen/blas.py). numpy's OpenBLAS pool at 2 threads on 2 cores then waits at its barriers
for a core that another busy thread holds: measured on W6, the eager forward took 17-45 ms per step
instead of 1.2-1.7 ms with that pool at one thread. So eager products of at least MIN_MACS
multiply-adds go to gradc's copy (the same OpenBLAS kernels, one thread, ~12 us more per call than
np.matmul); smaller ones (OpenBLAS runs products under 65536 * 4 multiply-adds on one thread anyway),
batched or integer ones, and everything under `gradc.set_backend("interp")` (the numpy reference) stay
on np.matmul.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

MIN_MACS = 1 << 18  # OpenBLAS's own threshold for using its threads (SMP_THRESHOLD_MIN * 4)
_gemm: Callable[..., np.ndarray] | None | bool = None  # None: not looked up yet; False: unavailable


def _load() -> Any:
    global _gemm
    if _gemm is None:
        try:
            from gradc import codegen
            from gradc.codegen import blas

            with codegen._openblas_starts_one_thread():
                path = blas.load()
            codegen._single_threaded_blas(path)
            _gemm = blas.gemm
        except Exception:  # no scipy-openblas32 wheel, no llvmlite: numpy does every product
            _gemm = False
    return _gemm


def matmul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """np.matmul(x, y), through gradc's single-threaded OpenBLAS for large enough 2-D float products."""
    if (x.ndim == 2 and y.ndim == 2 and x.dtype == y.dtype and x.dtype.kind == "f"
            and x.shape[0] * x.shape[1] * y.shape[1] >= MIN_MACS):
        from gradc import api
        gemm = _load() if api.get_backend() != "interp" else False
        if gemm:
            return gemm(x, y)
    return np.matmul(x, y)
