"""gradc native on W1-W5: steady-state time per call, and the first call of W2 split into its phases.

    python benchmarks/bench_perf.py calls [--workloads W2,W4] [--repeat 3]   medians of per-call times
    python benchmarks/bench_perf.py first-call [--runs 5]                    W2 first call, new process each
    python benchmarks/bench_perf.py profile                                  cProfile of W2's first call
    python benchmarks/bench_perf.py gemm                                     GEMM split constants (matmul.py)

Each `calls` row is the median (and min) over at least 2 s of calls, repeated `--repeat` times in fresh
processes; the table shows the median of the per-process medians. Thread limit: 2 (like `gradc bench`).
The machine is shared: `uptime` is printed before and after; compare rows from the same run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
THREADS = os.environ.get("GRADC_BENCH_THREADS", "2")
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": THREADS,
       "OPENBLAS_NUM_THREADS": os.environ.get("BENCH_OPENBLAS_THREADS", THREADS),
       "GRADC_NUM_THREADS": THREADS, "MKL_NUM_THREADS": THREADS}

CALLS = r"""
import json, sys, time
import numpy as np, gradc
from gradc.bench.workloads import WORKLOADS
out = {}
for wid in sys.argv[1].split(","):
    w = WORKLOADS[wid]
    arrays = w.arrays()
    vg = gradc.value_and_grad(w.bind(gradc), argnums=w.argnums())
    for _ in range(3):
        vg(*arrays)
    times, start = [], time.perf_counter()
    while time.perf_counter() - start < 2.0 or len(times) < 10:
        t = time.perf_counter()
        vg(*arrays)
        times.append(time.perf_counter() - t)
    out[wid] = [float(np.median(times)), float(np.min(times))]
print(json.dumps(out))
"""

FIRST = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, gradc
from gradc.bench.workloads import WORKLOADS
from gradc.codegen import TIMES, jit
w = WORKLOADS[sys.argv[1]]
arrays = w.arrays()
vg = gradc.value_and_grad(w.bind(gradc), argnums=w.argnums())
t1, c1 = time.perf_counter(), time.process_time()
vg(*arrays)
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"first_call_s": t2 - t1, "first_call_cpu_s": c2 - c1, **TIMES}))
"""


def uptime() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def run(code: str, *args: str, env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env or ENV, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:9.1f} us"


def calls(workloads: str, repeat: int) -> None:
    print(f"load {uptime()}; threads {THREADS}")
    runs = [run(CALLS, workloads) for _ in range(repeat)]
    import numpy as np
    for wid in workloads.split(","):
        meds = sorted(r[wid][0] for r in runs)
        print(f"{wid}: median {fmt(float(np.median(meds)))}  min {fmt(min(r[wid][1] for r in runs))}  "
              f"(per-process medians {', '.join(fmt(m).strip() for m in meds)})")
    print(f"load {uptime()}")


def first_call(runs: int, workload: str = "W2") -> None:
    print(f"load {uptime()}")
    rows = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            rows.append(run(FIRST, workload, env={**ENV, "GRADC_CACHE_DIR": d}))
    import numpy as np
    phases = ("lower_s", "optimize_s", "codegen_s", "blas_load_s")
    keys = ["first_call_s", "first_call_cpu_s"] + [k for k in phases if k in rows[0]]
    print(f"{workload} first call (empty disk cache), median of {runs}: "
          + ", ".join(f"{k[:-2]} {float(np.median([r.get(k, 0) for r in rows])) * 1e3:.0f} ms" for k in keys))
    print(f"load {uptime()}")


def profile(workload: str = "W2") -> None:
    import cProfile
    import pstats
    os.environ["GRADC_CACHE"] = "0"
    import gradc
    from gradc.bench.workloads import WORKLOADS
    w = WORKLOADS[workload]
    arrays = w.arrays()
    vg = gradc.value_and_grad(w.bind(gradc), argnums=w.argnums())
    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.runcall(vg, *arrays)
    print(f"first call {1e3 * (time.perf_counter() - t):.0f} ms (profiled)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


def gemm() -> None:
    """Single-threaded sgemm speed on W2/W4 shapes and on the blocks a split makes of them, then W2/W4
    with GEMMs split across threads or not (GRADC_GEMM_THREAD_MIN_MNK) -> matmul.GEMM_* constants."""
    import time

    import numpy as np

    from gradc.codegen import blas
    blas.load()
    blas.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("single-threaded OpenBLAS sgemm (best of 100):")
    for m, k, n, ta in [(64, 784, 256, 0), (64, 784, 128, 0), (64, 784, 64, 0), (784, 64, 256, 1),
                        (392, 64, 256, 1), (200, 64, 256, 1), (256, 1024, 1024, 0), (256, 1024, 256, 0),
                        (1024, 256, 1024, 1), (256, 256, 1024, 1)]:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        blas.gemm(a, b, trans_a=bool(ta))
        best = min((lambda t: (blas.gemm(a, b, trans_a=bool(ta)), time.perf_counter() - t)[1])(time.perf_counter())
                   for _ in range(100))
        print(f"  {m}x{k}x{n}{' (A^T)' if ta else ''}: {best * 1e6:8.1f} us  {2 * m * n * k / best / 1e9:6.1f} GFLOP/s")
    print(f"load {uptime()}")
    for label, value in (("split", "2097152"), ("not split", str(2 ** 62))):
        env = {**ENV, "GRADC_GEMM_THREAD_MIN_MNK": value, "GRADC_CACHE": "0"}
        r = run(CALLS, "W2,W4", env=env)
        print(f"GEMMs {label:9s}: W2 median {fmt(r['W2'][0])} min {fmt(r['W2'][1])}; "
              f"W4 median {fmt(r['W4'][0])} min {fmt(r['W4'][1])}")
    print(f"load {uptime()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["calls", "first-call", "profile", "gemm"])
    ap.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if args.what == "calls":
        calls(args.workloads, args.repeat)
    elif args.what == "first-call":
        first_call(args.runs)
    elif args.what == "gemm":
        gemm()
    else:
        profile()


if __name__ == "__main__":
    main()
