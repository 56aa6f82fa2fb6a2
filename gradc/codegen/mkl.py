"""Intel MKL's sgemm/dgemm as a second GEMM for JIT code (the `mkl` wheel: `pip install gradc[mkl]`).

The wheel puts `libmkl_rt.so.*` in the environment's lib directory. It is loaded privately (ctypes,
RTLD_LOCAL) with the sequential threading layer (gradc splits large GEMMs over its own threads, as it does
with OpenBLAS), and its `cblas_?gemm` addresses are given to LLVM under gradc's own names
(`gradc_mkl_cblas_sgemm`), so they never resolve to another BLAS's `cblas_sgemm` in the process (PyTorch's
statically linked MKL, numpy's OpenBLAS). `GRADC_BLAS=openblas` keeps MKL out entirely.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading

import numpy as np

SYMBOLS = {np.dtype(np.float32): "gradc_mkl_cblas_sgemm", np.dtype(np.float64): "gradc_mkl_cblas_dgemm"}
_MKL_THREADING_SEQUENTIAL = 1

_lock = threading.Lock()
_dll: ctypes.CDLL | None = None


def library() -> str | None:
    """Path of libmkl_rt from the `mkl` wheel (or $GRADC_MKL_LIBRARY), None when absent or disabled."""
    if os.environ.get("GRADC_BLAS", "auto") == "openblas":
        return None
    if os.environ.get("GRADC_MKL_LIBRARY"):
        path = os.environ["GRADC_MKL_LIBRARY"]
        return path if os.path.exists(path) else None
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")))
        if found:
            return found[-1]
    return None


def available() -> bool:
    return library() is not None


def load() -> ctypes.CDLL:
    """Load MKL once (sequential layer) and register its GEMMs with LLVM under gradc's names."""
    global _dll
    if _dll is not None:
        return _dll
    with _lock:
        if _dll is None:
            path = library()
            if path is None:
                raise RuntimeError("MKL is not available: install gradc[mkl] (the 'mkl' package)")
            os.environ.setdefault("MKL_THREADING_LAYER", "SEQUENTIAL")
            dll = ctypes.CDLL(path)
            dll.MKL_Set_Threading_Layer.argtypes = [ctypes.c_int]
            dll.MKL_Set_Threading_Layer(_MKL_THREADING_SEQUENTIAL)
            from llvmlite import binding as llvm
            for dt, name in SYMBOLS.items():
                fn = getattr(dll, "cblas_sgemm" if dt == np.float32 else "cblas_dgemm")
                llvm.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)
            _dll = dll
    return _dll


def gemm_function(dtype: np.dtype) -> ctypes._CFuncPtr:
    """MKL's cblas_?gemm as a ctypes function (for calibration and tests)."""
    dll = load()
    ct = ctypes.c_float if np.dtype(dtype) == np.float32 else ctypes.c_double
    fn = getattr(dll, "cblas_sgemm" if np.dtype(dtype) == np.float32 else "cblas_dgemm")
    fn.restype = None
    fn.argtypes = [ctypes.c_int] * 6 + [ct, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ct,
                                        ctypes.c_void_p, ctypes.c_int]
    return fn


def version() -> str:
    try:
        from importlib.metadata import version as dist_version
        return dist_version("mkl")
    except Exception:  # installed some other way (GRADC_MKL_LIBRARY)
        return library() or ""
