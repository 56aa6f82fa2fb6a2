"""One engine (or the limits) for `gradc bench --model`, in its own process: `python -m gradc.bench.usermodel.child`.

The parent writes the initial weights and the batch to a work folder; this process builds the engine, times
its first step (build + trace + compile, or a load from gradc's disk cache), checks its loss and gradients at
the initial weights against the reference engine's (written to the same folder by the first engine) and,
only if they agree, its first steps' losses, then times steady-state steps. It prints one `RESULT {json}` line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

from gradc.bench.runner import FULL, QUICK, compare, limit_cpus, measure
from gradc.bench.usermodel import engines
from gradc.bench.usermodel import spec as specs

CHECK_STEPS = 3
RTOL = 1e-3


def _load(folder: str) -> tuple[dict[str, np.ndarray], list[np.ndarray], np.ndarray]:
    with np.load(os.path.join(folder, "state.npz")) as f:
        state = {k: f[k] for k in f.files}
    with np.load(os.path.join(folder, "batch.npz")) as f:
        n = len([k for k in f.files if k.startswith("input")])
        inputs, target = [f[f"input{i}"] for i in range(n)], f["target"]
    return state, inputs, target


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def check_gradients(got: tuple[float, dict], ref: tuple[float, dict], rtol: float = RTOL) -> list[str]:
    """One line per disagreeing array (the loss, or a parameter's gradient by name); empty when all agree."""
    problems = []
    (loss, grads), (ref_loss, ref_grads) = got, ref
    ok, err, _ = compare((np.asarray(loss), []), (np.asarray(ref_loss, np.float64), []), rtol)
    if not ok:
        problems.append(f"loss {loss:.6g} vs {ref_loss:.6g} (rel err {err:.2e})")
    for name in ref_grads:
        if name not in grads:
            problems.append(f"{name}: no gradient")
            continue
        ok, err, _ = compare((np.zeros(()), [grads[name]]), (np.zeros(()), [ref_grads[name]]), rtol)
        if not ok:
            problems.append(f"{name}: gradient differs (max rel err {err:.2e})")
    for name in grads:
        if name not in ref_grads:
            problems.append(f"{name}: a gradient the reference engine has not")
    return problems


def run_engine(engine: str, spec: specs.BenchSpec, folder: str, quick: bool, threads: int,
               first_only: bool) -> dict:
    result: dict = {"engine": engine, "status": "ok", "note": ""}
    note = engines.unavailable(engine)
    if note:
        return {**result, "status": "skipped", "note": note}
    if engines.FRAMEWORK[engine] == "torch":
        import torch
        torch.set_num_threads(threads)
        result["version"] = torch.__version__
    else:
        import gradc
        result["version"] = gradc.__version__
    state, inputs, target = _load(folder)
    try:
        t0 = time.perf_counter()
        built = engines.build(engine, spec, state, inputs, target)
        losses = [built.step()]
        result["first_step_ms"] = (time.perf_counter() - t0) * 1e3
        if first_only:
            return result
        got = engines.gradients(engine, spec, state, inputs, target)
        ref_path = os.path.join(folder, "reference.npz")
        if os.path.exists(ref_path):
            with np.load(ref_path) as f:
                ref = (float(f["__loss__"]), {k: f[k] for k in f.files if k not in ("__loss__", "__losses__")})
                ref_losses = f["__losses__"]
            problems = check_gradients(got, ref)
            losses += [built.step() for _ in range(CHECK_STEPS - 1)]
            ok, err, _ = compare((np.asarray(losses), []), (ref_losses, []), RTOL)
            if not ok:
                problems.append(f"the first {CHECK_STEPS} steps' losses differ from the reference engine's "
                                f"(max rel err {err:.2e}): {[round(v, 6) for v in losses]} vs "
                                f"{[round(float(v), 6) for v in ref_losses]}")
            if problems:
                return {**result, "status": "mismatch", "note": "; ".join(problems), "peak_rss_mb": _peak_rss_mb()}
        else:  # this engine is the reference
            losses += [built.step() for _ in range(CHECK_STEPS - 1)]
            np.savez(ref_path, __loss__=np.float64(got[0]), __losses__=np.asarray(losses, np.float64), **got[1])
        result["losses"] = losses
        budget = QUICK if quick else FULL
        result["median_us"], result["min_us"], result["runs"] = measure(built.step, budget)
    except Exception as exc:  # one engine failing must not stop the others
        first = str(exc).splitlines()[0] if str(exc) else ""
        result.update(status="error", note=f"{type(exc).__name__}: {first}")
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def run_limits(spec: specs.BenchSpec, folder: str, threads: int, quick: bool) -> dict:
    """The model's GEMMs (from compile_step's traced joint) at the measured BLAS rate; its bytes at the bandwidth."""
    from gradc.bench import limits
    from gradc.bench.usermodel.shapes import min_bytes, model_gemms

    state, inputs, target = _load(folder)
    gemms = model_gemms(spec, state, inputs, target)
    bandwidth = limits.memory_bandwidth(threads, megabytes=128, repeats=3 if quick else 5)
    out = {"memory_bandwidth_gbs": bandwidth / 1e9, "blas": limits.blas_name(),
           "gemm_flops": sum(g.flops for g in gemms), "gemms": len(gemms)}
    nbytes = min_bytes(spec, state, inputs, target)
    out.update(min_bytes=nbytes, bandwidth_bound_us=nbytes / bandwidth * 1e6)
    if gemms:
        overhead = limits.empty_call_seconds(14, calls=5000)
        seconds = sum(limits.gemm_seconds(g, repeats=3, budget_s=0.05 if quick else 0.2, call_overhead=overhead)
                      for g in gemms)
        out.update(gemm_bound_us=seconds * 1e6, gemm_gflops=out["gemm_flops"] / seconds / 1e9)
    out["bound_us"] = max(out["bandwidth_bound_us"], out.get("gemm_bound_us", 0.0))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gradc.bench.usermodel.child")
    p.add_argument("--engine", default="")
    p.add_argument("--limits", action="store_true")
    p.add_argument("--folder", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--first-step-only", action="store_true")
    p.add_argument("--model", required=True)
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--target", default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--loss", default="cross_entropy")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    limit_cpus(a.threads)
    spec = specs.BenchSpec(a.model, a.input, a.target, a.batch, a.loss, a.optimizer, a.lr, a.seed)
    if a.limits:
        print("LIMITS " + json.dumps(run_limits(spec, a.folder, a.threads, a.quick)), flush=True)
    else:
        print("RESULT " + json.dumps(run_engine(a.engine, spec, a.folder, a.quick, a.threads, a.first_step_only)),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
