"""Native kernel measurements behind two compiler constants.

    python benchmarks/bench_native.py matmul   # inline loops vs BLAS per shape -> matmul.BLAS_MIN_MNK
    python benchmarks/bench_native.py w3       # W3 fused value-and-grad, 1 vs 2 threads (GRADC_NUM_THREADS)

Times are medians (and minima) of repeated calls through gradc.codegen.compile_function.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import gradc
from gradc.api import optimize, trace
from gradc.codegen import compile_function
from gradc.codegen import matmul as mm
from gradc.ir.builder import Builder
from gradc.ir.core import TensorType, Value, float32
from gradc.ir.passes.ad import ad


def timeit(f, *args, repeat: int = 50, min_time: float = 0.2) -> tuple[float, float]:
    f(*args)
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t)
        if len(times) > 100_000:
            break
    return float(np.median(times)) * 1e6, float(np.min(times)) * 1e6


def matmul_fn(m: int, k: int, n: int, tb: bool):
    a = Value(TensorType((m, k), float32), name="a")
    b_ = Value(TensorType((n, k) if tb else (k, n), float32), name="b")
    b = Builder()
    return b.function(f"mm_{m}_{k}_{n}_{int(tb)}", [a, b_], [b.matmul(a, b.permute(b_, perm=(1, 0)) if tb else b_)])


def bench_matmul() -> None:
    shapes = [(1, 5, 3), (16, 32, 64), (16, 64, 64), (32, 32, 32), (48, 48, 48), (64, 64, 64),
              (64, 784, 256), (64, 256, 10), (256, 1024, 1024)]
    print(f"{'m,k,n':>16} {'trans_b':>7} {'inline us':>12} {'blas us':>12}  faster")
    saved = mm.BLAS_MIN_MNK
    rng = np.random.default_rng(0)
    try:
        for m, k, n in shapes:
            for tb in (False, True):
                fn = matmul_fn(m, k, n, tb)
                a = rng.standard_normal((m, k)).astype(np.float32)
                b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
                res = {}
                for path, threshold in (("inline", 2 ** 62), ("blas", 1)):
                    mm.BLAS_MIN_MNK = threshold
                    fn.name = f"mm_{m}_{k}_{n}_{int(tb)}_{path}"  # separate cache entries
                    f = compile_function(fn)
                    res[path] = timeit(f, a, b, repeat=20 if m * n * k > 1e7 else 200)
                best = min(res, key=lambda p: res[p][0])
                print(f"{f'{m},{k},{n}':>16} {tb!s:>7} {res['inline'][0]:9.1f}    {res['blas'][0]:9.1f}     {best}")
    finally:
        mm.BLAS_MIN_MNK = saved
    print(f"current BLAS_MIN_MNK = {saved}")


def w3_joint(n: int):
    def loss(x, w, b):
        return (gradc.tanh(x * w + b) * gradc.sigmoid(x) + 0.5 * (x * w) ** 2).sum() / n
    ex = np.zeros(n, dtype=np.float32)
    return optimize(ad(optimize(trace(loss, ex, ex, ex)), wrt=[1, 2], seed="ones"))


def bench_w3() -> None:
    n = 1_000_000
    joint = w3_joint(n)
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]
    moved = 5 * n * 4  # read x, w, b; write two gradients
    for threads in ("1", "2"):
        os.environ["GRADC_NUM_THREADS"] = threads
        f = compile_function(joint, f"w3_t{threads}")
        med, best = timeit(f, *args, repeat=30, min_time=1.0)
        print(f"W3 threads={threads}: median {med / 1e3:.2f} ms, min {best / 1e3:.2f} ms, "
              f"{moved / (med * 1e-6) / 1e9:.1f} GB/s effective, kernels={f.meta.get('num_kernels')}")
    a = np.empty(25_000_000, dtype=np.float32)
    b = np.ones_like(a)
    c = np.ones_like(a)
    med, _ = timeit(lambda: np.add(b, c, out=a), repeat=5, min_time=0.5)
    print(f"numpy triad-like add on 3 x 100 MB: {3 * a.nbytes / (med * 1e-6) / 1e9:.1f} GB/s "
          f"-> W3 bandwidth bound ~{moved / (3 * a.nbytes / (med * 1e-6)) * 1e3:.2f} ms")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("matmul", "all"):
        bench_matmul()
    if what in ("w3", "all"):
        bench_w3()
