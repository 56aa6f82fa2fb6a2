"""pytest-benchmark setup for benchmarks/: the same thread limit for every engine, set before numpy loads.

Run with `python -m pytest benchmarks/ --benchmark-only` (the normal `python -m pytest` runs tests/ only).
GRADC_BENCH_THREADS changes the limit (default 2); `gradc bench` is the side-by-side table of the same runs.
"""

import os

THREADS = int(os.environ.get("GRADC_BENCH_THREADS", "2"))
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "GRADC_NUM_THREADS",
              "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ.setdefault(_name, str(THREADS))

from gradc.bench.runner import limit_cpus  # noqa: E402  (after the environment is set)

limit_cpus(THREADS)


def pytest_report_header(config):
    return f"gradc benchmarks: thread limit {THREADS} for every engine (GRADC_BENCH_THREADS to change)"
