"""`gradc bench --model FILE.py:NAME`: the model on every engine, each in its own process, and the report.

The initial weights come from the PyTorch load of the file (seeded), or from gradc's when PyTorch is not
installed; the batch from the specs or the file's make_batch. Both are written to a temporary folder that
every engine process reads. The first engine that runs (torch-eager, else gradc-eager) is the reference for
the cross-check of every other engine's loss and gradients. gradc-step's first step is timed twice: with an
empty disk cache, and in a new process with the cache that the first process wrote.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from typing import IO, Any, Callable

import numpy as np

from gradc.bench.run import Progress, child_env, machine
from gradc.bench.usermodel import coverage, engines
from gradc.bench.usermodel import spec as specs
from gradc.bench.usermodel.loader import ModelSpecError, build_model, split_spec, uses_torch

COMPILE_HEAVY = ("torch-compile",)


def resolve_engines(text: str | None, quick: bool) -> list[str]:
    if text:
        names = [n.strip() for n in text.split(",") if n.strip()]
        for n in names:
            engines.unavailable(n)  # ValueError for an unknown name
        return names
    return [n for n in engines.ENGINES if not (quick and n in COMPILE_HEAVY)]


def prepare(spec: specs.BenchSpec, folder: str) -> str:
    """Write state.npz (initial weights) and batch.npz; returns which framework made the weights."""
    path, name = split_spec(spec.model)
    framework = "torch" if importlib.util.find_spec("torch") is not None else "gradc"
    model, module = build_model(path, name, framework, spec.seed)
    state = {k: np.ascontiguousarray(v.detach().numpy() if hasattr(v, "detach") else v)
             for k, v in model.state_dict().items()}
    inputs, target = specs.make_batch(spec, module)
    np.savez(os.path.join(folder, "state.npz"), **state)
    np.savez(os.path.join(folder, "batch.npz"), target=target, **{f"input{i}": x for i, x in enumerate(inputs)})
    return framework


def _child(args: list[str], threads: int, env: dict[str, str] | None = None) -> tuple[dict | None, str]:
    cmd = [sys.executable, "-m", "gradc.bench.usermodel.child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**child_env(threads), **(env or {})})
    for line in proc.stdout.splitlines():
        if line.startswith(("RESULT ", "LIMITS ")):
            return json.loads(line.split(" ", 1)[1]), ""
    tail = proc.stderr.strip().splitlines()
    return None, f"engine process exited with code {proc.returncode}: {tail[-1] if tail else 'no output'}"


def run(spec: specs.BenchSpec, engine_text: str | None = None, quick: bool = False, threads: int = 2,
        progress: IO[str] | None = sys.stderr, child: Callable[..., tuple[dict | None, str]] = _child) -> dict:
    """Run every engine on the model; returns the JSON document (meta, limits, results)."""
    names = resolve_engines(engine_text, quick)
    path, name = split_spec(spec.model)
    # the reference runs first: torch eager when installed, else gradc eager
    order = sorted(names, key=lambda n: 0 if n == "torch-eager" else 1 if n == "gradc-eager" else 2)
    bar = Progress(len(order) + 1, progress)
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gradc-bench-model-") as folder:
        weights = prepare(spec, folder)
        base = spec.to_args() + ["--folder", folder, "--threads", str(threads)] + (["--quick"] if quick else [])
        bar.show("limits: GEMMs, bandwidth")
        limits, note = child(base + ["--limits"], threads)
        bar.show("limits", advance=True)
        reference = None
        for engine in order:
            skip = engines.unavailable(engine)
            if skip:
                results.append({"engine": engine, "status": "skipped", "note": skip})
                bar.show(f"{engine} skipped", advance=True)
                continue
            bar.show(f"{engine}")
            cache = tempfile.mkdtemp(prefix="cache-", dir=folder)
            env = {"GRADC_CACHE_DIR": cache}
            got, died = child(base + ["--engine", engine], threads, env)
            got = got or {"engine": engine, "status": "error", "note": died}
            if got["status"] == "ok" and reference is None:
                reference = engine
                got["note"] = (got.get("note") or "") + "reference for the cross-check"
            if engine == "gradc-step" and got["status"] == "ok":
                again, _ = child(base + ["--engine", engine, "--first-step-only"], threads, env)
                got["first_step_cached_ms"] = (again or {}).get("first_step_ms")
            results.append(got)
            bar.show(f"{engine} {got['status']}", advance=True)
    bar.close()
    ok = {r["engine"]: r for r in results if r["status"] == "ok"}
    base_row = ok.get("gradc-step")
    for r in results:
        r["steps_per_s"] = 1e6 / r["median_us"] if r.get("median_us") else None
        r["vs_gradc_step"] = (r["median_us"] / base_row["median_us"]
                              if base_row and r.get("median_us") else None)
    return {"meta": {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine(),
                     "threads": threads, "model": spec.model, "model_name": name, "file": path,
                     "inputs": spec.inputs, "target": spec.target, "batch": spec.batch, "loss": spec.loss,
                     "optimizer": spec.optimizer, "lr": spec.lr, "seed": spec.seed, "quick": quick,
                     "initial_weights": f"{weights} load of the file, seed {spec.seed}",
                     "reference": reference, "rtol": engines_rtol(), "limits_note": note},
            "limits": limits or {}, "results": results}


def engines_rtol() -> float:
    from gradc.bench.usermodel.child import RTOL
    return RTOL


def _us(us: float | None) -> str:
    if us is None:
        return "-"
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:,.1f} us" if us < 100 else f"{us:,.0f} us"


def format_table(doc: dict) -> str:
    m = doc["meta"]
    lines = [f"gradc bench --model {m['model']} ({m['date']}; {m['machine']}; {m['threads']} threads per engine)",
             f"batch: {', '.join(m['inputs']) or 'make_batch()'} -> {m['target'] or 'make_batch()'}; loss "
             f"{m['loss']}; optimizer {m['optimizer']}(lr={m['lr']:g}); weights: {m['initial_weights']}",
             f"cross-check: loss and every gradient at the initial weights, and the first 3 steps' losses, against "
             f"{m['reference'] or 'no engine'} (rtol {m['rtol']:g})", "",
             "| engine | median step | min | steps/s | first step | cached first step | peak RSS | vs gradc-step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['engine']} | {r['status'].upper()}: {r.get('note', '')} | | | | | | |")
            continue
        first = f"{r['first_step_ms']:,.0f} ms" if r.get("first_step_ms") is not None else "-"
        cached = f"{r['first_step_cached_ms']:,.0f} ms" if r.get("first_step_cached_ms") is not None else "-"
        ratio = f"{r['vs_gradc_step']:.2f}x" if r.get("vs_gradc_step") else "-"
        lines.append(f"| {r['engine']} | {_us(r['median_us'])} | {_us(r['min_us'])} | {r['steps_per_s']:,.0f} | "
                     f"{first} | {cached} | {r.get('peak_rss_mb', 0):,.0f} MB | {ratio} |")
    lim = doc.get("limits") or {}
    if lim:
        parts = []
        if "gemm_bound_us" in lim:
            parts.append(f"GEMM-bound {_us(lim['gemm_bound_us'])} ({lim['gemm_flops'] / 1e9:.3f} GFLOP in "
                         f"{lim['gemms']} GEMM shapes at {lim['gemm_gflops']:.0f} GFLOP/s, {lim['blas']})")
        parts.append(f"bandwidth-bound {_us(lim['bandwidth_bound_us'])} ({lim['min_bytes'] / 1e6:.2f} MB at "
                     f"{lim['memory_bandwidth_gbs']:.1f} GB/s)")
        lines += ["", "limits: " + ", ".join(parts)]
    elif doc["meta"].get("limits_note"):
        lines += ["", f"limits failed: {doc['meta']['limits_note']}"]
    return "\n".join(lines) + "\n"


def any_failed(doc: dict) -> bool:
    return any(r["status"] in ("mismatch", "error") for r in doc["results"])


def plot(doc: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in doc["results"] if r["status"] == "ok"]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(rows)))
    ax.barh([r["engine"] for r in rows], [r["median_us"] / 1000 for r in rows], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel("median training step (ms), lower is better")
    ax.set_title(f"{doc['meta']['model_name']}: {doc['meta']['optimizer']} step, {doc['meta']['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- the commands

def spec_from_args(args: Any) -> specs.BenchSpec:
    spec = specs.BenchSpec(args.model, list(args.input or []), args.target, args.batch, args.loss, args.optimizer,
                           args.lr, args.seed)
    spec.validate()
    path = split_spec(spec.model)[0]
    if not uses_torch(path):
        raise ModelSpecError(f"{path} does not import torch: gradc bench --model runs a file written against "
                             "torch on both PyTorch and gradc")
    return spec


def check_command(spec: specs.BenchSpec, out: IO[str]) -> int:
    """`gradc check`: the coverage report; 0 when gradc can run the model, 2 when it cannot."""
    cov = coverage.check(spec)
    out.write(cov.report() + "\n")
    return 0 if cov.ok else 2  # names missing anywhere in the file count here, reached or not


def bench_command(args: Any, out: IO[str], progress: IO[str] | None) -> int:
    spec = spec_from_args(args)
    cov = coverage.check(spec)
    if not cov.runnable:
        out.write(cov.report() + "\n")
        return 2
    if not cov.ok and progress is not None:
        progress.write(cov.report() + "\n")
    doc = run(spec, args.engines, quick=args.quick, threads=args.threads, progress=progress)
    out.write(format_table(doc))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    if args.plot:
        plot(doc, args.plot)
    if any_failed(doc):
        print("gradc bench: some engines disagreed with the reference engine or failed (see the table)",
              file=sys.stderr)
        return 1
    return 0
