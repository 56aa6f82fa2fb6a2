"""The W8 attention row side by side: `python -m gradc.bench.gpt_attention [--quick] [--memory]`.

Each engine's causal SDPA forward + backward (gpt_step.ATTENTION_ENGINES) is first checked against the numpy
float64 reference (rtol 1e-3 with the bench's scale floor), then timed; the ratios are to gradc-native in the
same run. `--memory` measures each engine's peak extra resident memory over its build and two calls at T = 256 and
T = 1024 in a fresh process (Linux: VmHWM reset through /proc/self/clear_refs, minus VmRSS before).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from gradc.bench import gpt_step
from gradc.bench.runner import compare


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_extra_bytes(engine: str, T: int) -> int:
    """Peak resident bytes above the level before the engine was built, over its build and two calls (a fresh
    process: allocators that cache freed memory hide the peak of later calls). gradc's count includes its
    compilation's."""
    arrays = gpt_step.attention_arrays(T)
    __import__({"torch": "torch", "torch-compile": "torch", "jax": "jax.numpy"}.get(engine, "gradc"))  # not counted
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    run = gpt_step.ATTENTION_ENGINES[engine](*arrays)
    run()
    run()
    return (_status_kb("VmHWM") - before) * 1024


def time_engine(engine: str, rounds: int) -> dict:
    arrays = gpt_step.attention_arrays()
    try:
        run = gpt_step.ATTENTION_ENGINES[engine](*arrays)
        t0 = time.perf_counter()
        value, grads = run()
        first = time.perf_counter() - t0
    except ImportError as exc:
        return {"engine": engine, "status": "skipped", "note": str(exc)}
    ok, err, where = compare((np.asarray(value), [np.asarray(g) for g in grads]),
                             gpt_step.attention_reference(*arrays), 1e-3, ["loss", "dq", "dk", "dv"])
    if not ok:
        return {"engine": engine, "status": "mismatch", "note": f"{where}: max rel err {err:.2e}"}
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"engine": engine, "status": "ok", "median_ms": 1e3 * float(np.median(times)),
            "min_ms": 1e3 * min(times), "first_ms": 1e3 * first, "max_rel_err": err}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak extra memory at T = 256 and 1024")
    parser.add_argument("--engines", default=",".join(gpt_step.ATTENTION_ENGINES))
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(peak_extra_bytes(args.child[0], int(args.child[1]))))
        return 0
    from gradc.bench.runner import limit_cpus
    limit_cpus(2)
    a = gpt_step.ATTENTION
    print(f"W8 attention row: causal SDPA forward + backward, B {a['B']}, H {a['H']}, T {a['T']}, D {a['D']}, "
          "float32, 2 threads (a shared machine: noisy)")
    rows = [time_engine(e, 3 if args.quick else 15) for e in args.engines.split(",")]
    base = next((r for r in rows if r["engine"] == "gradc-native" and r["status"] == "ok"), None)
    for r in rows:
        if r["status"] != "ok":
            print(f"  {r['engine']:14s} {r['status']}: {r['note']}")
            continue
        ratio = f"  gradc is {r['median_ms'] / base['median_ms']:.2f}x faster" if base and r is not base else ""
        print(f"  {r['engine']:14s} median {r['median_ms']:8.1f} ms  min {r['min_ms']:8.1f} ms  first call "
              f"{r['first_ms']:8.0f} ms  rel err {r['max_rel_err']:.1e}{ratio}")
    if args.memory:
        for T in (256, 1024):
            cells = []
            for e in args.engines.split(","):
                proc = subprocess.run([sys.executable, "-m", "gradc.bench.gpt_attention", "--child", e, str(T)],
                                      capture_output=True, text=True, timeout=900)
                cells.append(f"{e} {json.loads(proc.stdout) / 2**20:.1f} MiB" if proc.returncode == 0
                             else f"{e} failed")
            print(f"  peak extra memory at T = {T}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
