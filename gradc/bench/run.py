"""`gradc bench`: run every engine in its own process with the same thread limit, collect one JSON document.

Each engine gets a fresh `python -m gradc.bench child` process whose environment caps the thread pools
(OMP/OpenBLAS/MKL/gradc) before numpy, torch or jax are imported; torch also gets `set_num_threads`, and
on a machine with more cores than the limit the process is pinned to that many CPUs (which caps XLA).
The limits run in one more process under the same settings.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Callable

from gradc.bench import engines as engine_table
from gradc.bench import workloads as workload_table
from gradc.bench.runner import FULL, QUICK, Result, thread_environment

COMPILE_HEAVY = ("torch-compile",)  # left out of --quick unless named: inductor compiles for 10-50 s


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


class Progress:
    """A progress bar on a stream: redrawn in place on a terminal, one line per step otherwise."""

    def __init__(self, total: int, stream: IO[str] | None) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.start = time.perf_counter()

    def show(self, label: str, advance: bool = False) -> None:
        if advance:
            self.done += 1
        if self.stream is None:
            return
        elapsed = time.perf_counter() - self.start
        if self.tty:
            filled = int(30 * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} "
                              f"{elapsed:5.0f}s {label:<40.40}")
        elif advance:
            self.stream.write(f"bench: {self.done}/{self.total} {label} ({elapsed:.0f}s)\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.tty:
            self.stream.write("\r" + " " * 90 + "\r")
            self.stream.flush()


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(thread_environment(threads))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.pop("GRADC_BACKEND", None)  # each gradc engine chooses its backend itself
    return env


def run_child(args: list[str], threads: int, on_line: Callable[[str], None],
              extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run `python -m gradc.bench ARGS`, feeding stdout lines to on_line; (exit code, stderr tail).

    The child's stderr (engines print warnings there) goes to a temporary file, shown only if it dies.
    """
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gradc.bench", *args], stdout=subprocess.PIPE,
                                stderr=err, text=True, env={**child_env(threads), **(extra_env or {})})
        assert proc.stdout is not None
        for line in proc.stdout:
            on_line(line.rstrip("\n"))
        code = proc.wait()
        err.seek(0)
        tail = err.read()[-2000:]
    return code, tail


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def resolve_engines(spec: str | None, quick: bool) -> tuple[list[str], list[str]]:
    """Engine names to run (validated) and notes about engines left out."""
    notes = []
    if spec:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        for n in names:
            engine_table.get(n)  # ValueError for an unknown name or a bad FILE.py:NAME
        return names, notes
    names = list(engine_table.ENGINES)
    if quick:
        names = [n for n in names if n not in COMPILE_HEAVY]
        notes.append("--quick leaves out torch-compile (its first call compiles for 10-50 s); "
                     "name it in --engines to include it")
    return names, notes


def run(workload_spec: str | None = None, engine_spec: str | None = None, quick: bool = False,
        threads: int = 2, progress: IO[str] | None = sys.stderr, with_limits: bool = True) -> dict:
    """Run the benchmark; returns the JSON document (see gradc.bench.report)."""
    chosen = workload_table.select(workload_spec)
    ids = ",".join(w.id for w in chosen)
    names, notes = resolve_engines(engine_spec, quick)
    budget = QUICK if quick else FULL
    bar = Progress(len(names) * len(chosen) + (1 if with_limits else 0), progress)
    results: list[Result] = []
    load_start = _load()
    doc: dict[str, Any] = {"meta": {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "threads": threads,
        "thread_settings": ", ".join(f"{k}={v}" for k, v in thread_environment(threads).items())
                           + f", torch.set_num_threads({threads}), CPU affinity <= {threads} cores",
        "timing": (f"{'quick: ' if quick else ''}at least {budget.min_runs} timed calls or "
                   f"{budget.seconds:g} s per engine and workload after {budget.warmup} warm-up call(s); "
                   "fast calls timed in batches"),
        "load_average_before": round(load_start, 2), "quick": quick,
        "engines": names, "workloads": [w.id for w in chosen], "notes": notes,
        "rtol": 1e-3}}

    if with_limits:
        bar.show("limits: bandwidth, BLAS, ctypes call")
        found: dict[str, Any] = {}

        def on_limits(line: str) -> None:
            if line.startswith("LIMITS "):
                found.update(json.loads(line[7:]))
        code, tail = run_child(["limits", "--workloads", ids, "--threads", str(threads)]
                               + (["--quick"] if quick else []), threads, on_limits)
        if not found:
            notes.append(f"limits failed (exit {code}): {tail.strip().splitlines()[-1] if tail.strip() else ''}")
        doc["limits"] = found
        bar.show("limits", advance=True)

    shown = [engine_table.get(n).name for n in names]  # a custom FILE.py:CLASS engine shows its own name
    for spec, name in zip(names, shown):
        engine = engine_table.get(spec)
        note = engine.unavailable() if not isinstance(engine, engine_table.GradcEngine) else None
        if note or all(engine.unsupported(w) for w in chosen):  # nothing to run: no process needed
            for w in chosen:
                results.append(Result(w.id, name, "skipped", note or engine.unsupported(w) or ""))
                bar.show(f"{name} {w.id} skipped", advance=True)
            continue
        got: list[Result] = []

        def on_line(line: str, name: str = name) -> None:
            if line.startswith("START "):
                bar.show(f"{name} {line[6:]}")
            elif line.startswith("RESULT "):
                r = Result(**json.loads(line[7:]))
                got.append(r)
                bar.show(f"{name} {r.workload} {r.status}", advance=True)
        args = ["child", "--engine", spec, "--workloads", ids, "--threads", str(threads)]
        with tempfile.TemporaryDirectory(prefix="gradc-bench-cache-") as cache:
            # gradc: the first call compiles cold (empty on-disk cache), then a new process loads from the cache
            env = {"GRADC_CACHE_DIR": cache} if isinstance(engine, engine_table.GradcEngine) else None
            code, tail = run_child(args + (["--quick"] if quick else []), threads, on_line, env)
            if name == "gradc-native" and got:
                cached: dict[str, float] = {}

                def on_cached(line: str) -> None:
                    if line.startswith("RESULT "):
                        r = json.loads(line[7:])
                        cached[r["workload"]] = r["first_call_ms"]
                run_child(args + ["--first-call-only"], threads, on_cached, env)
                for r in got:
                    r.first_call_cached_ms = cached.get(r.workload)
        done = {r.workload for r in got}
        for w in chosen:
            if w.id not in done:  # the child died (crash, out of memory, ...)
                last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
                got.append(Result(w.id, name, "error", f"engine process exited with code {code}: {last}"))
                bar.show(f"{name} {w.id} error", advance=True)
        results.extend(got)
    bar.close()
    if load_start > (os.cpu_count() or 1) * 0.5:  # measured before this run started its own processes
        notes.append(f"load average {load_start:.1f} on {os.cpu_count()} CPUs before the run: other processes compete "
                     "for the cores, so times (multi-threaded ones most) are noisy; rerun on an idle machine")
    doc["results"] = [r.to_json() for r in sorted(results, key=lambda r: (
        [w.id for w in chosen].index(r.workload), shown.index(r.engine) if r.engine in shown else len(shown)))]
    from gradc.bench.report import add_derived
    return add_derived(doc)
