"""sgemm/dgemm from OpenBLAS (the `scipy-openblas32` wheel) for JIT code and for Python.

The wheel ships `libscipy_openblas.so` whose CBLAS symbols carry a `scipy_` prefix (`scipy_cblas_sgemm`), so
they never clash with another BLAS in the process. `load()` makes them resolvable by name from JIT-compiled
code (`llvmlite.binding.load_library_permanently`); `declare_gemm` declares them in an llvmlite module.
`available()` is False when the wheel is missing, so the compiler can fall back to inline loops.

The 32 in the wheel's name is the integer width: all dimensions and leading dimensions are C `int` (i32).

Measured here (`python benchmarks/bench_math.py blas`; 2-core Zen 4, float32, one OpenBLAS thread, time per
product with no Python in the loop; "inline" is a plain i-k-j triple loop with constant bounds, vectorized
by LLVM):

    shape (M,K)x(K,N)     sgemm from JIT   inline loop
    (1,5)x(5,3)               0.018 us      0.002 us
    (8,16)x(16,8)             0.060 us      0.024 us
    (32,8)x(8,32)             0.19 us       0.15 us
    (16,16)x(16,16)           0.13 us       0.40 us
    (16,32)x(32,64)           0.62 us       0.93 us
    (64,64)x(64,64)           4.6 us        8.3 us
    (1,784)x(784,256)        10.7 us        8.1 us
    (64,784)x(784,256)      267 us        491 us     (2 threads: 146 us on an idle machine)

So a call costs ~20 ns; BLAS wins from about M*K*N >= 4096 with M >= 8 and K >= 16; a row vector (M = 1)
is as fast inline. A ctypes call from Python adds ~0.37 us, the checked `gemm()` helper ~7.4 us.
Threads: with 2 OpenBLAS threads on the 2 cores, any other busy thread -- another process, or numpy's own
OpenBLAS pool (a second library with its own spinning threads) -- makes a product take ~16 ms instead of
~40 us; alternating numpy and gradc matmuls of 128^3 took 48 ms per pair (97 us with both pools at 1
thread). Prefer `set_num_threads(1)` unless the machine is known to be idle.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import threading

import numpy as np
from llvmlite import ir

__all__ = ["available", "load", "declare_gemm", "gemm", "set_num_threads", "get_num_threads",
           "ROW_MAJOR", "NO_TRANS", "TRANS", "GEMM_SYMBOLS"]

ROW_MAJOR, COL_MAJOR = 101, 102          # CBLAS_ORDER
NO_TRANS, TRANS = 111, 112               # CBLAS_TRANSPOSE
GEMM_SYMBOLS = {np.dtype(np.float32): "scipy_cblas_sgemm", np.dtype(np.float64): "scipy_cblas_dgemm"}
_INT_MAX = 2**31 - 1

_lock = threading.Lock()
_path: str | None = None
_dll: ctypes.CDLL | None = None


def _find_library() -> str | None:
    """Path of libscipy_openblas*, located without importing scipy_openblas32 (that import costs ~20-40 ms:
    importlib.metadata and a ctypes load); falls back to the package's own helpers."""
    try:
        spec = importlib.util.find_spec("scipy_openblas32")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for root in spec.submodule_search_locations or ():
        lib_dir = os.path.join(root, "lib")
        try:
            names = sorted(x for x in os.listdir(lib_dir) if x.startswith("libscipy_openblas")
                           and (x.endswith((".so", ".dylib", ".dll")) or ".so." in x))
        except OSError:
            continue
        if names:
            return os.path.join(lib_dir, names[0])
    try:
        import scipy_openblas32
    except ImportError:
        return None
    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
    return path if os.path.exists(path) else None


def available() -> bool:
    """True if the scipy-openblas32 wheel (and its shared library) is installed."""
    return _path is not None or _find_library() is not None


def load() -> str:
    """Load OpenBLAS once (thread-safe) so JIT code resolves its symbols by name; returns the library path."""
    global _path, _dll
    if _path is not None:
        return _path
    with _lock:
        if _path is None:
            path = _find_library()
            if path is None:
                raise RuntimeError("OpenBLAS is not available: install the 'scipy-openblas32' package")
            from llvmlite import binding as llvm

            llvm.load_library_permanently(path)
            dll = ctypes.CDLL(path)
            for sym, ct in ((GEMM_SYMBOLS[np.dtype(np.float32)], ctypes.c_float),
                            (GEMM_SYMBOLS[np.dtype(np.float64)], ctypes.c_double)):
                f = getattr(dll, sym)
                f.restype = None
                f.argtypes = [ctypes.c_int] * 6 + [ct, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                                   ctypes.c_int, ct, ctypes.c_void_p, ctypes.c_int]
            _dll = dll
            _path = path
    return _path


def _lib() -> ctypes.CDLL:
    load()
    assert _dll is not None
    return _dll


def set_num_threads(n: int) -> None:
    """Set OpenBLAS's thread count (process-wide; affects gemm calls from JIT code too)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    _lib().scipy_openblas_set_num_threads(ctypes.c_int(n))


def get_num_threads() -> int:
    """OpenBLAS's current thread count."""
    f = _lib().scipy_openblas_get_num_threads
    f.restype = ctypes.c_int
    return int(f())


def declare_gemm(module: ir.Module, dtype: np.dtype | type | str, provider: str = "openblas") -> ir.Function:
    """Declare scipy_cblas_{s,d}gemm (or, for provider "mkl", MKL's under gradc_mkl_cblas_{s,d}gemm; see
    codegen/mkl.py) in `module`, reusing an existing declaration.

    Signature (CBLAS): void gemm(i32 order, i32 transa, i32 transb, i32 M, i32 N, i32 K, T alpha, ptr A,
    i32 lda, ptr B, i32 ldb, T beta, ptr C, i32 ldc). C = alpha op(A) op(B) + beta C; with row-major order
    op(A) is M x K, op(B) is K x N, and lda is the row stride of A as stored (K for NoTrans, M for Trans).
    Call `load()` before JIT-compiling code that uses it.
    """
    dt = np.dtype(dtype)
    if dt not in GEMM_SYMBOLS:
        raise TypeError(f"gemm supports float32 and float64, got {dt}")
    if provider == "mkl":
        from gradc.codegen import mkl
        name = mkl.SYMBOLS[dt]
    else:
        name = GEMM_SYMBOLS[dt]
    if name in module.globals:
        return module.globals[name]
    i32, ptr = ir.IntType(32), ir.PointerType()
    fty = ir.FloatType() if dt == np.float32 else ir.DoubleType()
    sig = ir.FunctionType(ir.VoidType(), [i32] * 6 + [fty, ptr, i32, ptr, i32, fty, ptr, i32])
    return ir.Function(module, sig, name=name)


def _check_operand(x: np.ndarray, name: str, dt: np.dtype) -> tuple[np.ndarray, bool]:
    """Return (C-contiguous 2-D array of dtype, transposed-view flag) without copying when possible."""
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        raise ValueError(f"gemm: {name} must be a 2-D numpy array, got {getattr(x, 'shape', type(x))}")
    if x.dtype != dt:
        raise TypeError(f"gemm: {name} has dtype {x.dtype}, expected {dt}")
    if x.flags.c_contiguous:
        return x, False
    if x.flags.f_contiguous:  # a transposed C array: pass its base layout with the opposite flag
        return x.T, True
    return np.ascontiguousarray(x), False


def gemm(a: np.ndarray, b: np.ndarray, trans_a: bool = False, trans_b: bool = False,
         out: np.ndarray | None = None) -> np.ndarray:
    """op(a) @ op(b) through OpenBLAS (op = transpose if the flag is set), written into `out` if given.

    a and b must have the same dtype, float32 or float64; `out` must be C-contiguous with the result's
    shape and dtype and must not overlap a or b.
    """
    dt = np.dtype(getattr(a, "dtype", None))
    if dt not in GEMM_SYMBOLS:
        raise TypeError(f"gemm supports float32 and float64, got {dt}")
    a2, ta = _check_operand(a, "a", dt)
    b2, tb = _check_operand(b, "b", dt)
    ta ^= bool(trans_a)
    tb ^= bool(trans_b)
    m, k = (a2.shape[1], a2.shape[0]) if ta else a2.shape
    kb, n = (b2.shape[1], b2.shape[0]) if tb else b2.shape
    if k != kb:
        raise ValueError(f"gemm: inner dimensions differ: op(a) is {m}x{k}, op(b) is {kb}x{n}")
    if max(a2.shape + b2.shape) > _INT_MAX:
        raise ValueError("gemm: dimensions exceed the 32-bit BLAS interface")
    if out is None:
        out = np.empty((m, n), dt)
    elif (not isinstance(out, np.ndarray) or out.shape != (m, n) or out.dtype != dt
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"gemm: out must be a writeable C-contiguous {dt} array of shape {(m, n)}")
    elif np.shares_memory(out, a2) or np.shares_memory(out, b2):
        raise ValueError("gemm: out overlaps an input")
    if m == 0 or n == 0:
        return out
    if k == 0:
        out.fill(0)
        return out
    fn = getattr(_lib(), GEMM_SYMBOLS[dt])
    fn(ROW_MAJOR, TRANS if ta else NO_TRANS, TRANS if tb else NO_TRANS, m, n, k, 1.0,
       a2.ctypes.data, max(a2.shape[1], 1), b2.ctypes.data, max(b2.shape[1], 1), 0.0,
       out.ctypes.data, max(n, 1))
    return out
