"""Hardware limits measured in the same run as the benchmarks, to put each time beside what is possible.

* memory bandwidth: a STREAM-style add (a = b + c) over arrays far larger than the last-level cache,
  split across the thread limit (numpy releases the GIL inside ufunc loops), best of several repeats;
* BLAS float32 GFLOP/s on each workload's own GEMM shapes (OpenBLAS sgemm with transposes as flags, the
  BLAS gradc's native code calls; best of several runs, as a bound should be);
* the cost of one empty ctypes call with as many pointer arguments as the workload has arrays
  (inputs + loss + gradients): the floor under any native call from Python.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Callable

import numpy as np

from gradc.bench.workloads import Gemm


def _best_of(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def memory_bandwidth(threads: int = 2, megabytes: int = 64, repeats: int = 5) -> float:
    """Bytes per second of a = b + c (each array `megabytes` MB; 3 arrays of traffic), over `threads` threads."""
    n = megabytes * (1 << 20) // 4
    a, b, c = np.empty(n, np.float32), np.ones(n, np.float32), np.ones(n, np.float32)
    a.fill(0)  # touch the pages before timing
    bounds = np.linspace(0, n, threads + 1).astype(int)
    chunks = [(a[lo:hi], b[lo:hi], c[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]

    def add_all() -> None:
        workers = [threading.Thread(target=np.add, args=(y, z), kwargs={"out": x}) for x, y, z in chunks[1:]]
        for w in workers:
            w.start()
        x, y, z = chunks[0]
        np.add(y, z, out=x)
        for w in workers:
            w.join()
    add_all()
    return 3 * a.nbytes / _best_of(add_all, repeats)


def _cblas_sgemm() -> Callable | None:
    """scipy_cblas_sgemm from the scipy-openblas32 wheel (the BLAS gradc's native code calls), if installed."""
    try:
        import os

        import scipy_openblas32
        lib = ctypes.CDLL(os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True)))
    except (ImportError, OSError):
        return None
    fn = lib.scipy_cblas_sgemm
    i, p, f = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
    fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    fn.restype = None
    return fn


def _mkl_sgemm() -> Callable | None:
    """MKL's cblas_sgemm (sequential, as gradc's kernels call it) when the mkl wheel is installed."""
    from gradc.codegen import mkl
    return mkl.gemm_function(np.float32) if mkl.available() else None


def blas_name() -> str:
    name = "OpenBLAS (scipy-openblas32, cblas_sgemm)" if _cblas_sgemm() else "numpy.matmul"
    if _mkl_sgemm() is not None:
        from gradc.codegen import gemm_choice, mkl
        name += f" and MKL {mkl.version()} (sequential), the faster per shape"
        if not gemm_choice.considers_mkl():
            name += " (gradc's kernels use OpenBLAS only on this AMD CPU)"
    return name


def gemm_seconds(g: Gemm, repeats: int = 5, budget_s: float = 0.3, call_overhead: float = 0.0) -> float:
    """Best seconds for all `g.count` float32 GEMMs of this shape (transposes as BLAS flags).

    `call_overhead` (the cost of an empty ctypes call with sgemm's 14 arguments) is taken off each call, so
    tiny GEMMs (W5) are not bounded by Python's call cost, which native code calling BLAS does not pay.
    """
    rng = np.random.default_rng(0)
    a_shape = (g.k, g.m) if g.trans == "tn" else (g.m, g.k)
    b_shape = (g.n, g.k) if g.trans == "nt" else (g.k, g.n)
    a = rng.standard_normal(a_shape, dtype=np.float32)
    b = rng.standard_normal(b_shape, dtype=np.float32)
    out = np.empty((g.m, g.n), np.float32)
    row_major, no, yes = 101, 111, 112
    args = (row_major, yes if g.trans == "tn" else no, yes if g.trans == "nt" else no, g.m, g.n, g.k, 1.0,
            a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], 0.0, out.ctypes.data, g.n)
    libraries = [fn for fn in (_cblas_sgemm(), _mkl_sgemm()) if fn is not None]
    calls = [lambda fn=fn: fn(*args) for fn in libraries]
    if not calls:  # numpy may skip BLAS for some transposed views: use contiguous operands
        a_op = np.ascontiguousarray(a.T if g.trans == "tn" else a)
        b_op = np.ascontiguousarray(b.T if g.trans == "nt" else b)
        calls = [lambda: np.matmul(a_op, b_op, out=out)]
        call_overhead = 0.0
    best = float("inf")
    for call in calls:  # the machine's limit: the faster library for this shape
        call()
        runs = 0
        start = time.perf_counter()
        while runs < repeats or (time.perf_counter() - start < budget_s and runs < 1000):
            t0 = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t0)
            runs += 1
    return max(best - call_overhead, best * 0.05) * g.count


def empty_call_seconds(pointers: int, calls: int = 20000) -> float:
    """Seconds per ctypes call of an empty native function taking `pointers` pointer arguments."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    args = ", ".join(["ptr"] * pointers)
    module = llvm.parse_assembly(f"define void @empty({args}) {{\n  ret void\n}}\n")
    target = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(module, target)
    engine.finalize_object()
    prototype = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * pointers)
    fn = prototype(engine.get_function_address("empty"))
    buffers = [np.zeros(4, np.float32) for _ in range(pointers)]
    addresses = [b.ctypes.data for b in buffers]
    fn(*addresses)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls // 5):
            fn(*addresses)
        best = min(best, (time.perf_counter() - t0) / (calls // 5))
    del fn, engine  # the engine owns the code: drop the function pointer first
    return best


def last_level_cache_bytes() -> int | None:
    """Size of the largest CPU cache (Linux sysfs), or None where it cannot be read."""
    import glob
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else None


def measure(workloads: list, threads: int, quick: bool) -> dict:
    """Bandwidth, per-workload GEMM time and ctypes floor, plus each workload's bound times (in us)."""
    bandwidth = memory_bandwidth(threads, megabytes=128, repeats=3 if quick else 7)
    llc = last_level_cache_bytes()
    out = {"memory_bandwidth_gbs": bandwidth / 1e9, "memory_test": f"a = b + c on float32 arrays, 128 MB each, "
           f"{threads} threads, best of {3 if quick else 7}", "last_level_cache_bytes": llc, "blas": blas_name(),
           "workloads": {}}
    floors: dict[int, float] = {}
    for w in workloads:
        pointers = w.ctypes_pointers()
        if pointers not in floors:
            floors[pointers] = empty_call_seconds(pointers, calls=5000 if quick else 50000)
        row = {"min_bytes": w.min_bytes(), "bandwidth_bound_us": w.min_bytes() / bandwidth * 1e6,
               "fits_in_cache": bool(llc and w.min_bytes() < llc),
               "ctypes_pointers": pointers, "ctypes_floor_us": floors[pointers] * 1e6}
        if w.gemms and sum(g.flops for g in w.gemms) > 1e5:
            if "sgemm_call" not in out:
                out["sgemm_call_overhead_us"] = empty_call_seconds(14, calls=5000 if quick else 50000) * 1e6
                out["sgemm_call"] = "each GEMM's time less one empty 14-argument ctypes call"
            seconds = sum(gemm_seconds(g, repeats=3 if quick else 7, budget_s=0.1 if quick else 0.3,
                                       call_overhead=out["sgemm_call_overhead_us"] * 1e-6) for g in w.gemms)
            flops = sum(g.flops for g in w.gemms)
            row.update(gemm_bound_us=seconds * 1e6, gemm_gflops=flops / seconds / 1e9, gemm_flops=flops)
        row["bound_us"] = max(row["bandwidth_bound_us"], row["ctypes_floor_us"], row.get("gemm_bound_us", 0.0))
        out["workloads"][w.id] = row
    return out
