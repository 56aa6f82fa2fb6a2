"""Shared by the gradc bench tests (test_bench.py, test_bench_w6.py): the repository root, a one-call timing
budget, the columns every JSON result row has, and `gradc_cli` (the command line in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys

from gradc.bench import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = runner.Budget(seconds=0.0, min_runs=1, warmup=1)
COLUMNS = {"workload", "engine", "status", "note", "median_us", "min_us", "first_call_ms", "runs", "max_rel_err",
           "version", "native_speedup", "percent_of_limit", "first_call_cached_ms", "second_call_ms"}


def gradc_cli(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    """`python -m gradc.cli ARGS` with this checkout importable; output captured as text."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "gradc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)
