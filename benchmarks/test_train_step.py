"""W6 "train-step" x {gradc-native, torch, jax}, from the ONE definition in gradc.bench.train_step.

Each benchmark builds the engine's Adam training step from the shared initial weights, runs the first
`W6.steps` steps and checks every loss and the parameters after them against the numpy Adam reference
(rtol 1e-3, float32), and only then times further steps (one step per benchmark round).
Run with `python -m pytest benchmarks/test_train_step.py --benchmark-only`.
"""

import os
import time

import pytest

from gradc.bench import engines, runner, train_step

THREADS = int(os.environ.get("GRADC_BENCH_THREADS", "2"))  # conftest.py set the thread environment from it

_ready: set[str] = set()


@pytest.mark.parametrize("engine_name", list(train_step.STEPS))
def test_train_step(benchmark, engine_name):
    engine = engines.get(engine_name)
    note = engine.unavailable() or engine.unsupported(train_step.W6)
    if note:
        pytest.skip(f"{engine_name}: {note}")
    if engine_name not in _ready:
        engine.setup(THREADS)
        _ready.add(engine_name)
    w = train_step.W6

    t0 = time.perf_counter()
    step = engine.train_step(*w.initial())
    losses = [float(step())]
    first_call_ms = (time.perf_counter() - t0) * 1e3
    losses += [float(step()) for _ in range(w.steps - 1)]
    ok, err, where = runner.check_training(losses, step.parameters(), w.reference())
    assert ok, f"{engine_name} disagrees with the numpy Adam reference after {w.steps} steps: {where}, " \
               f"max rel err {err:.2e}"

    benchmark.group = f"{w.id} {w.name}"
    benchmark.extra_info.update(first_call_ms=round(first_call_ms, 3), threads=THREADS, max_rel_err=err)
    benchmark(step)
