"""Which BLAS runs each GEMM shape: OpenBLAS or MKL, chosen by measurement at first use.

A shape class is (dtype, m, n, k, transpose flags) as a matmul kernel calls it. With one library installed,
`GRADC_BLAS=openblas|mkl`, or an AMD CPU (considers_mkl), there is nothing to choose. Otherwise both run the
shape on scratch operands, single-threaded and interleaved, and MKL is taken only where its median is at
least MKL_MARGIN faster: its first call in a process loads its CPU-specific kernel library (~80 ms measured
on an AMD EPYC), which a near tie does not repay in a short process (a 3% win on W2's smallest GEMM had made
every cached W2 process load MKL). The choice is kept in memory and in `gemm-choices.json` beside the kernel
cache, keyed by the host CPU, its features, the two libraries' versions and the rule: a machine measures each
shape once and then always picks the same library, so results stay bitwise reproducible on it. A corrupt or
foreign file is ignored and rewritten.
"""

from __future__ import annotations

import ctypes
import json
import os
import threading
import time

import numpy as np

PROVIDERS = ("openblas", "mkl")
CHOICES_FILE = "gemm-choices.json"
BUDGET_S = 0.03  # measuring time per library and shape, about
MKL_MARGIN = 0.9  # MKL's median must be below this fraction of OpenBLAS's

_lock = threading.Lock()
_table: dict[str, str] | None = None
_MEASURED: dict[str, tuple[float, float]] = {}  # this process's measurements (openblas s, mkl s), for reports


def forced() -> str | None:
    """The library GRADC_BLAS names, or None for automatic choice."""
    value = os.environ.get("GRADC_BLAS", "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if value not in PROVIDERS:
        raise ValueError(f"GRADC_BLAS must be auto, openblas or mkl, got {value!r}")
    return value


def shape_key(dtype: np.dtype, m: int, n: int, k: int, ta: bool, tb: bool) -> str:
    return f"{np.dtype(dtype).char}:{m}x{n}x{k}:{'t' if ta else 'n'}{'t' if tb else 'n'}"


def choose(dtype: np.dtype, m: int, n: int, k: int, ta: bool, tb: bool) -> str:
    """"openblas" or "mkl" for this GEMM shape (measured once per machine when both are installed)."""
    from gradc.codegen import blas, mkl
    want = forced()
    if want == "mkl" and not mkl.available():
        raise RuntimeError("GRADC_BLAS=mkl but MKL is not installed: pip install gradc[mkl]")
    if want is not None:
        return want
    if not mkl.available() or (blas.available() and not considers_mkl()):
        return "openblas"
    if not blas.available():
        return "mkl"
    key = shape_key(dtype, m, n, k, ta, tb)
    with _lock:
        table = _load()
        if key not in table:
            t_open, t_mkl = measure(dtype, m, n, k, ta, tb)
            _MEASURED[key] = (t_open, t_mkl)
            table[key] = "mkl" if t_mkl < MKL_MARGIN * t_open else "openblas"
            _save(table)
        return table[key]


# LLVM's names of AMD cores: there the automatic choice does not measure MKL
AMD_CPU_PREFIXES = ("znver", "bdver", "btver", "amdfam")


def considers_mkl() -> bool:
    """Whether the automatic choice measures MKL on this host: not on AMD CPUs, where none of W2-W9's 85 GEMM
    shapes ran 10% faster on MKL than on OpenBLAS (EPYC znver3, 2026-12-03: 0.90-2.46x OpenBLAS's time) and
    measuring would only cost MKL's ~80 ms first call. `GRADC_BLAS=mkl` still forces it."""
    from gradc.codegen import jit
    return not jit.host_cpu()[0].startswith(AMD_CPU_PREFIXES)


def measure(dtype: np.dtype, m: int, n: int, k: int, ta: bool, tb: bool) -> tuple[float, float]:
    """Median seconds of thread CPU time of one single-threaded call of (OpenBLAS, MKL) on this shape,
    interleaved. CPU time, not wall time: on the shared 2-core machine (load 3-5) wall-clock medians of the
    same shape moved 30-60% between runs and picked MKL for W7's conv2 weight gradient, 25% of the step
    at 2 threads; thread CPU time repeated within 5% (OpenBLAS 23.2-24.5 ms, MKL 24.6-25.2 ms)."""
    from gradc.codegen import blas, mkl
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dt)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dt)
    c = np.zeros((m, n), dt)
    scalar = ctypes.c_float if dt == np.float32 else ctypes.c_double
    args = (blas.ROW_MAJOR, blas.TRANS if ta else blas.NO_TRANS, blas.TRANS if tb else blas.NO_TRANS, m, n, k,
            scalar(1.0), a.ctypes.data, m if ta else k, b.ctypes.data, k if tb else n, scalar(0.0), c.ctypes.data, n)
    blas.load()
    openblas_fn = getattr(blas._lib(), blas.GEMM_SYMBOLS[dt])
    blas._lib().scipy_openblas_set_num_threads(ctypes.c_int(1))  # as gradc's kernels call it
    mkl_fn = mkl.gemm_function(dt)
    fns = (openblas_fn, mkl_fn)
    first = []
    for fn in fns:  # warm up (packing buffers, page faults) and size the repetitions
        fn(*args)
        t0 = time.thread_time()
        fn(*args)
        first.append(time.thread_time() - t0)
    reps = int(min(15, max(3, BUDGET_S / max(max(first), 1e-7))))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        for fn, out in zip(fns, times):
            t0 = time.thread_time()
            fn(*args)
            out.append(time.thread_time() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def measured() -> dict[str, tuple[float, float]]:
    """The shapes measured in this process: key -> (OpenBLAS seconds, MKL seconds)."""
    return dict(_MEASURED)


def identity() -> dict[str, str]:
    """What a stored choice depends on: the CPU, both libraries' versions and the rule that chose."""
    from gradc.codegen import blas, jit, mkl
    return {**jit.code_identity(), "mkl": mkl.version(), "openblas": os.path.basename(blas._find_library() or ""),
            "rule": f"mkl below {MKL_MARGIN} x openblas, not on AMD"}


def _path() -> str | None:
    from gradc.codegen import cache
    d = cache.cache_dir()
    return None if d is None else os.path.join(str(d), CHOICES_FILE)


def _load() -> dict[str, str]:
    global _table
    if _table is None:
        _table = {}
        path = _path()
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    saved = json.load(f)
                if saved.get("identity") == identity() and all(v in PROVIDERS for v in saved["choices"].values()):
                    _table = dict(saved["choices"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                _table = {}  # corrupt or foreign: measured again and rewritten
    return _table


def _save(table: dict[str, str]) -> None:
    path = _path()
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"identity": identity(), "choices": table}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError:  # an unwritable cache directory: the choices stay in memory
        pass


def reset() -> None:
    """Forget the in-memory table (tests; the next choice reads the file again)."""
    global _table
    with _lock:
        _table = None
        _MEASURED.clear()
