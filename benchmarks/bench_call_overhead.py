"""Per-call overhead of compiled functions, and first-call (compile) time with and without the disk cache.

    python benchmarks/bench_call_overhead.py overhead     W1: CompiledFunction call vs an empty ctypes call
    python benchmarks/bench_call_overhead.py first-call   W2: first call cold, then in a new process from disk
                                                          (first call = trace + AD + compile or disk load,
                                                          after `import gradc, gradc.codegen`)

`overhead` times, per call (min and median of repeats): an empty JIT-ed function called through ctypes with
one pointer argument per buffer (the floor), the same with one py_object argument, np.empty for the outputs,
the native entry on a prebuilt tuple (checks + kernel), `CompiledFunction.__call__` and the user-facing
`gradc.value_and_grad` call.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gradc  # noqa: E402
from gradc.bench.workloads import WORKLOADS  # noqa: E402
from gradc.codegen import jit  # noqa: E402


def per_call_us(fn, number: int = 20000, repeat: int = 7) -> tuple[float, float]:
    times = sorted(t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat))
    return times[0], times[len(times) // 2]


def empty_functions(nptr: int):
    """Empty JIT-ed functions `void f(ptr x nptr)` and `i32 g(ptr)`, as ctypes functions (+ their code)."""
    from llvmlite import ir
    ptr = ir.PointerType()
    mod = ir.Module("empty")
    f = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr] * nptr), "empty_ptrs")
    ir.IRBuilder(f.append_basic_block()).ret_void()
    g = ir.Function(mod, ir.FunctionType(ir.IntType(32), [ptr]), "empty_obj")
    ir.IRBuilder(g.append_basic_block()).ret(ir.Constant(ir.IntType(32), 0))
    code = jit.jit_module(jit.optimize(jit.parse(str(mod))))
    fp = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * nptr)(code.address("empty_ptrs"))
    fo = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.py_object)(code.address("empty_obj"))
    return code, fp, fo


def overhead() -> None:
    w = WORKLOADS["W1"]
    arrays = w.arrays()
    vg = gradc.value_and_grad(w.bind(gradc), argnums=w.argnums())
    spec = vg.lower(*arrays)
    cf = spec.run
    n, m = len(cf.param_types), len(cf.result_types)
    print(f"W1 joint: {n} inputs, {m} outputs, arena {cf.meta['arena_bytes']} bytes ({cf.meta['arena_mode']}),"
          f" struct path: {type(cf).__call__ is not type(cf)._call_ctypes}")
    loss, grads = vg(*arrays)
    ref_loss, ref_grads = w.reference(*[a.astype(np.float64) for a in arrays])
    assert np.allclose(loss, ref_loss, rtol=1e-4) and all(np.allclose(g, r, rtol=1e-4, atol=1e-6)
                                                           for g, r in zip(grads, ref_grads))
    nptr = n + m + 1
    _code, fp, fo = empty_functions(nptr)
    ptrs = [a.ctypes.data for a in arrays] + [0] * (nptr - n)
    outs = tuple(np.empty(t.shape, np.dtype(t.dtype.numpy)) for t in cf.result_types)
    tup = tuple(arrays) + outs
    specs = cf._specs
    entry = cf._entry
    rows = [
        (f"empty ctypes call, {nptr} pointer args", lambda: fp(*ptrs)),
        ("empty ctypes call, 1 py_object arg", lambda: fo(tup)),
        (f"np.empty x {m} (outputs)", lambda: [specs[j](specs[j + 1], specs[j + 2]) for j in range(0, 3 * m, 3)]),
        ("native entry on a prebuilt tuple (checks + kernel)", lambda: entry(tup)),
        ("CompiledFunction.__call__", lambda: cf(*arrays)),
        ("gradc.value_and_grad(...)(*arrays)", lambda: vg(*arrays)),
    ]
    floor = None
    print(f"{'':54s} {'min us':>8s} {'median us':>10s} {'x floor':>8s}")
    for label, fn in rows:
        lo, med = per_call_us(fn)
        floor = floor or lo
        print(f"{label:54s} {lo:8.2f} {med:10.2f} {lo / floor:8.2f}")


FIRST_CALL = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, gradc
from gradc.bench.workloads import WORKLOADS
t_gradc = time.perf_counter()
from gradc.codegen import jit, TIMES  # llvmlite; otherwise imported by the first call
t1 = time.perf_counter()
w = WORKLOADS[sys.argv[1]]
arrays = w.arrays()
vg = gradc.value_and_grad(w.bind(gradc), argnums=w.argnums())
t2 = time.perf_counter()
vg(*arrays)
t3 = time.perf_counter()
vg(*arrays)
t4 = time.perf_counter()
print(json.dumps({"import_s": t_gradc - t0, "import_codegen_s": t1 - t_gradc, "first_call_s": t3 - t2,
                  "second_call_s": t4 - t3, **jit.STATS, **TIMES}))
"""


PHASES = ("lower_s", "optimize_s", "codegen_s", "blas_load_s", "disk_load_s")


def first_call(workload: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, GRADC_CACHE_DIR=d, PYTHONPATH=ROOT)
        for label in ("cold (empty disk cache)", "new process, warm disk cache", "new process, warm again"):
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", FIRST_CALL, workload], env=env, capture_output=True,
                                  text=True, timeout=600)
            wall = time.perf_counter() - t
            if proc.returncode:
                print(proc.stderr[-3000:])
                raise SystemExit(1)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            phases = ", ".join(f"{k[:-2]} {r[k] * 1e3:.0f} ms" for k in PHASES if k in r)
            print(f"{workload} {label:30s} first call {r['first_call_s'] * 1e3:7.1f} ms "
                  f"(compiled {r['compiled']}, loaded {r['loaded']}{'; ' + phases if phases else ''}); "
                  f"second call {r['second_call_s'] * 1e3:.2f} ms; import gradc {r['import_s'] * 1e3:.0f} ms "
                  f"+ gradc.codegen {r['import_codegen_s'] * 1e3:.0f} ms; process {wall:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["overhead", "first-call", "all"])
    ap.add_argument("--workload", default="W2")
    args = ap.parse_args()
    if args.what in ("overhead", "all"):
        overhead()
    if args.what in ("first-call", "all"):
        first_call(args.workload)


if __name__ == "__main__":
    main()
