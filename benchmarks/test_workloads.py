"""W1-W5 x every engine, from the ONE definition in gradc.bench.workloads (see ../shared/BENCHMARKS.md).

Each benchmark builds the engine's value-and-grad step, checks its loss and gradients against the numpy
hand-written reference (rtol 1e-3, float32) on the first and a steady-state call, and only then times it.
Engines that are not installed are skipped with the reason. Groups are per workload, so
`--benchmark-only` prints one table per workload with the engines side by side.
"""

import os
import time

import pytest

from gradc.bench import engines, runner
from gradc.bench.workloads import WORKLOADS

THREADS = int(os.environ.get("GRADC_BENCH_THREADS", "2"))  # conftest.py set the thread environment from it

_ready: set[str] = set()


@pytest.mark.parametrize("engine_name", list(engines.ENGINES))
@pytest.mark.parametrize("workload_id", list(WORKLOADS))
def test_value_and_grad(benchmark, workload_id, engine_name):
    engine = engines.get(engine_name)
    note = engine.unavailable()
    if note:
        pytest.skip(f"{engine_name}: {note}")
    if engine_name not in _ready:
        engine.setup(THREADS)
        _ready.add(engine_name)
    workload = WORKLOADS[workload_id]
    arrays = workload.arrays()
    reference = runner.reference_for(workload, arrays)

    t0 = time.perf_counter()
    step = engine.prepare(workload, arrays)
    first = engine.to_numpy(step())
    first_call_ms = (time.perf_counter() - t0) * 1e3
    for label, got in (("first call", first), ("steady state", engine.to_numpy(step()))):
        ok, err, where = runner.compare(got, reference)
        assert ok, f"{engine_name} disagrees with the numpy reference on {workload_id} ({label}): " \
                   f"{where}, max rel err {err:.2e}"

    benchmark.group = f"{workload_id} {workload.name}"
    benchmark.extra_info.update(first_call_ms=round(first_call_ms, 3), threads=THREADS, max_rel_err=err)
    benchmark(step)
