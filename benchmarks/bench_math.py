"""Measurements behind gradc.codegen.math and gradc.codegen.blas (numbers quoted in their docstrings).

    python benchmarks/bench_math.py accuracy [--quick] [--funcs exp,log]
                                                         max ulp error: float32 exhaustive (all 2^32 inputs)
                                                         vs numpy float64; float64 on ~10^7 inputs vs long double
    python benchmarks/bench_math.py speed                ns/element of the JIT kernels vs numpy
    python benchmarks/bench_math.py blas                 sgemm call cost (ctypes and from JIT code) per shape
    python benchmarks/bench_math.py fit                  re-derive the polynomial coefficients (needs mpmath)

Reuses the JIT harness of tests/test_math_approx.py, so run it from the repository root.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from test_math_approx import FUNCS, SPECIALS, Kernel, reference, ulp_error  # noqa: E402

# --------------------------------------------------------------------------------------------------- accuracy

def _worst(name, kern, x, best):
    err = ulp_error(kern(x), reference(name, x))
    i = int(np.argmax(err))
    if err[i] > best[0]:
        best = (float(err[i]), x[i])
    return best


def accuracy(quick: bool, funcs: list[str]) -> None:
    for name in funcs:
        for dtype in (np.float32, np.float64):
            kern = Kernel(name, dtype, vector=False)
            best = (0.0, None)
            t0 = time.perf_counter()
            with np.errstate(over="ignore"):
                best = _worst(name, kern, np.array(SPECIALS, dtype=dtype), best)
            if dtype == np.float32:
                chunk, step = 1 << 24, (61 if quick else 1)
                for start in range(0, 1 << 32, chunk):
                    bits = np.arange(start, start + chunk, step, dtype=np.uint64).astype(np.uint32)
                    best = _worst(name, kern, bits.view(np.float32), best)
            else:
                rng = np.random.default_rng(1)
                n = 10**6 if quick else 10**7
                for _ in range(10):
                    x = rng.integers(0, 0x7FF0000000000000, n // 10, dtype=np.uint64).view(np.float64)
                    best = _worst(name, kern, np.concatenate([x, -x]), best)
                for a in (1.0, 20.0, 100.0, 800.0):
                    best = _worst(name, kern, rng.uniform(-a, a, n // 4), best)
            print(f"{name:8s} {np.dtype(dtype).name:8s} max {best[0]:.3f} ulp at x={best[1]!r}"
                  f"  ({time.perf_counter() - t0:.0f}s)", flush=True)


# ------------------------------------------------------------------------------------------------------ speed

def _median_time(fn, reps: int = 30) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def speed() -> None:
    n = 1 << 20
    rng = np.random.default_rng(0)
    np_funcs = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
                "expm1": np.expm1, "log1p": np.log1p}
    for dtype in (np.float32, np.float64):
        x = rng.uniform(0.01, 10, n).astype(dtype)
        for name in FUNCS:
            for vector in (False, True):
                kern = Kernel(name, dtype, vector)
                out = np.empty_like(x)
                t = _median_time(lambda: kern.cfunc(x.ctypes.data, out.ctypes.data, n))
                label = "explicit vector" if vector else "auto-vectorized"
                print(f"{name:8s} {np.dtype(dtype).name:8s} {label:16s} {t / n * 1e9:6.2f} ns/elem")
            t = _median_time(lambda: np_funcs[name](x))
            print(f"{name:8s} {np.dtype(dtype).name:8s} {'numpy':16s} {t / n * 1e9:6.2f} ns/elem")


# ------------------------------------------------------------------------------------------------------- blas

BLAS_SHAPES = [(1, 5, 3), (4, 4, 4), (8, 16, 8), (16, 16, 16), (8, 32, 32), (32, 8, 32), (16, 32, 32),
               (1, 784, 256), (16, 32, 64), (32, 32, 32), (64, 64, 64), (128, 128, 128), (64, 784, 256),
               (256, 256, 256)]


def _native_repeat_kernel(m: int, k: int, n: int, inline: bool):
    """JIT `void f(ptr A, ptr B, ptr C, i64 reps)` repeating one float32 matmul `reps` times in native code, so
    the time per product has no Python in it: either a call to scipy_cblas_sgemm, or a plain i-k-j triple
    loop with constant bounds (what a lowering could inline; LLVM vectorizes the j loop)."""
    from llvmlite import binding as llvm
    from llvmlite import ir
    from test_math_approx import _loop

    from gradc.codegen import blas

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    f32, i32, i64, ptr = ir.FloatType(), ir.IntType(32), ir.IntType(64), ir.PointerType()
    mod = ir.Module()
    mod.triple = llvm.get_process_triple()
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr, i64]), name="f")
    for arg in fn.args[:3]:
        arg.add_attribute("noalias")
    A, B, C, reps = fn.args
    b = ir.IRBuilder(fn.append_basic_block())
    c32, c64 = (lambda v: ir.Constant(i32, v)), (lambda v: ir.Constant(i64, v))
    gemm = blas.declare_gemm(mod, np.float32)

    def at(base, i, j, ld):
        return b.gep(base, [b.add(b.mul(i, c64(ld)), j)], inbounds=True, source_etype=f32)

    def one(b, _):
        if not inline:
            b.call(gemm, [c32(blas.ROW_MAJOR), c32(blas.NO_TRANS), c32(blas.NO_TRANS), c32(m), c32(n), c32(k),
                          ir.Constant(f32, 1.0), A, c32(k), B, c32(n), ir.Constant(f32, 0.0), C, c32(n)])
            return

        def row(b, i):
            _loop(b, fn, c64(0), c64(n), 1, lambda b, j: b.store(ir.Constant(f32, 0.0), at(C, i, j, n)))

            def kk(b, p):
                aik = b.load(at(A, i, p, k), typ=f32)

                def col(b, j):
                    cij = at(C, i, j, n)
                    prod = b.fmul(aik, b.load(at(B, p, j, n), typ=f32), flags=("contract",))
                    b.store(b.fadd(b.load(cij, typ=f32), prod, flags=("contract",)), cij)
                _loop(b, fn, c64(0), c64(n), 1, col)
            _loop(b, fn, c64(0), c64(k), 1, kk)
        _loop(b, fn, c64(0), c64(m), 1, row)

    def barrier_then_one(b, r):
        # an empty asm with a memory clobber: LLVM must redo every repetition, not hoist or delete them
        b.asm(ir.FunctionType(ir.VoidType(), []), "", "~{memory}", [], side_effect=True)
        one(b, r)

    _loop(b, fn, c64(0), reps, 1, barrier_then_one)
    b.ret_void()
    parsed = llvm.parse_assembly(str(mod))
    target = llvm.Target.from_default_triple()
    features = llvm.get_host_cpu_features().flatten()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, opt=3)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(parsed, pb)
    engine = llvm.create_mcjit_compiler(
        parsed, target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=features, opt=3))
    engine.finalize_object()
    cf = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        engine.get_function_address("f"))
    return engine, cf


def _spot_check(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """A few entries against float64 dot products, without numpy's BLAS (whose threads would then spin
    on the same 2 cores and distort the next timings)."""
    for i, j in ((0, 0), (a.shape[0] - 1, b.shape[1] - 1), (a.shape[0] // 2, b.shape[1] // 3)):
        want = float(np.sum(a[i].astype(np.float64) * b[:, j].astype(np.float64)))
        assert abs(out[i, j] - want) <= 1e-4 * max(1.0, abs(want)), (i, j, out[i, j], want)


def blas_bench() -> None:
    """Per-product time of sgemm called from native code vs an inline triple loop, then the Python paths."""
    from gradc.codegen import blas

    if not blas.available():
        print("scipy-openblas32 is not installed")
        return
    blas.load()
    from test_blas import GemmKernel  # the JIT caller of tests/test_blas.py (one call per ctypes call)

    rng = np.random.default_rng(0)
    for threads in (1, 2):
        blas.set_num_threads(threads)
        print(f"-- OpenBLAS threads = {threads}; times per product, median of 15 runs")
        for m, k, n in BLAS_SHAPES:
            a, bm = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            pa, pb, po = a.ctypes.data, bm.ctypes.data, out.ctypes.data
            reps = max(1, int(2e7 // (m * k * n + 2000)))
            line = f"({m:3d},{k:3d})x({k:3d},{n:3d})"
            for label, inline in (("sgemm from JIT", False), ("inline loop", True)):
                if inline and threads == 2:
                    continue
                engine, cf = _native_repeat_kernel(m, k, n, inline)
                cf(pa, pb, po, 1)
                t = _median_time(lambda: cf(pa, pb, po, reps), 15) / reps
                _spot_check(out, a, bm)
                line += f"  {label} {t * 1e6:8.3f} us"
                del engine
            jit = GemmKernel(np.float32, m, k, n)
            line += f"  one ctypes call {_median_time(lambda: jit.cfunc(pa, pb, po), 200) * 1e6:7.2f} us"
            line += f"  gemm() {_median_time(lambda: blas.gemm(a, bm, out=out), 200) * 1e6:7.2f} us"
            print(line, flush=True)
    blas.set_num_threads(1)
    print("-- numpy matmul (its own OpenBLAS), measured last: two OpenBLAS pools in one process on 2 cores")
    for m, k, n in BLAS_SHAPES:
        a, bm = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        t = _median_time(lambda: np.matmul(a, bm, out=out), 200)
        print(f"({m:3d},{k:3d})x({k:3d},{n:3d})  numpy {t * 1e6:8.2f} us")


# -------------------------------------------------------------------------------------------------------- fit

def fit() -> None:
    """Print the near-minimax coefficients used in gradc/codegen/math.py."""
    import mpmath as mp

    mp.mp.dps = 50

    def lawson(target, weight, lo, hi, deg, nodes=200, iters=40):
        ts = [mp.mpf(lo) + (mp.mpf(hi) - lo) * (1 - mp.cos(mp.pi * (i + 0.5) / nodes)) / 2 for i in range(nodes)]
        fs, ws, lam = [target(t) for t in ts], [weight(t) for t in ts], [mp.mpf(1) / nodes] * nodes
        for _ in range(iters):
            A, rhs = mp.zeros(deg + 1, deg + 1), mp.zeros(deg + 1, 1)
            for t, ft, wt, lm in zip(ts, fs, ws, lam):
                pw = [t**i for i in range(deg + 1)]
                for i in range(deg + 1):
                    rhs[i] += lm * wt * wt * pw[i] * ft
                    for j in range(deg + 1):
                        A[i, j] += lm * wt * wt * pw[i] * pw[j]
            c = mp.lu_solve(A, rhs)
            err = [abs(wt * (mp.polyval([c[i] for i in range(deg, -1, -1)], t) - ft)) for t, ft, wt in zip(ts, fs, ws)]
            total = sum(lm * e for lm, e in zip(lam, err))
            lam = [lm * e / total for lm, e in zip(lam, err)]
        return [c[i] for i in range(deg + 1)], max(err)

    def show(label, cs, err, dtype):
        print(f"{label}: max weighted error {mp.nstr(err, 3)}\n   ", [float(dtype(float(c))) for c in cs])

    g_exp = lambda r: (mp.exp(r) - 1 - r) / r**2 if r else mp.mpf(0.5)  # noqa: E731
    smax2 = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2 * 1.01
    g_log = lambda z: (2 * mp.atanh(mp.sqrt(z)) / mp.sqrt(z) - 2) / z if z else mp.mpf(2) / 3  # noqa: E731
    g_tanh = lambda s: (mp.tanh(mp.sqrt(s)) / mp.sqrt(s) - 1) / s if s else -mp.mpf(1) / 3  # noqa: E731
    for dtype, d_exp, d_log, (t_small, d_tanh) in ((np.float32, 4, 3, (0.625, 4)), (np.float64, 9, 6, (0.55, 9))):
        show(f"exp_poly {dtype.__name__}", *lawson(g_exp, lambda r: r * r, -0.36, 0.36, d_exp), dtype)
        show(f"log_poly {dtype.__name__}", *lawson(g_log, lambda z: z, 0, smax2, d_log), dtype)
        show(f"tanh_poly {dtype.__name__}", *lawson(g_tanh, lambda s: s, 0, mp.mpf(t_small) ** 2, d_tanh), dtype)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["accuracy", "speed", "blas", "fit"])
    ap.add_argument("--quick", action="store_true", help="accuracy: sample instead of exhaustive float32")
    ap.add_argument("--funcs", default=",".join(FUNCS), help="accuracy: comma-separated subset")
    args = ap.parse_args()
    actions = {"accuracy": lambda: accuracy(args.quick, args.funcs.split(",")), "speed": speed,
               "blas": blas_bench, "fit": fit}
    actions[args.what]()


if __name__ == "__main__":
    main()
