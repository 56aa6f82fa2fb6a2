"""W7 "cnn-step" x {gradc-native, torch, torch-compile, jax} and W7G (value_and_grad), from the ONE
definition in gradc.bench.cnn_step.

W7: each benchmark builds the engine's Adam step of PyTorch's MNIST CNN from the shared initial weights,
runs the first `W7.steps` steps and checks every loss and the parameters after them against the float64
numpy reference (rtol 1e-3), then times further steps. W7G: loss and gradients only, checked like W1-W5.
Run with `python -m pytest benchmarks/test_cnn_step.py --benchmark-only`.
"""

import os
import time

import pytest

from gradc.bench import cnn_step, engines, runner

THREADS = int(os.environ.get("GRADC_BENCH_THREADS", "2"))  # conftest.py set the thread environment from it

_ready: set[str] = set()
_reference: dict = {}


def _engine(name, workload):
    engine = engines.get(name)
    note = engine.unavailable() or engine.unsupported(workload)
    if note:
        pytest.skip(f"{name}: {note}")
    if name not in _ready:
        engine.setup(THREADS)
        _ready.add(name)
    return engine


@pytest.mark.parametrize("engine_name", list(cnn_step.STEPS))
def test_cnn_step(benchmark, engine_name):
    w = cnn_step.W7
    engine = _engine(engine_name, w)
    if "W7" not in _reference:
        _reference["W7"] = w.reference()
    t0 = time.perf_counter()
    step = w.build(engine, *w.initial())
    losses = [float(step())]
    first_call_ms = (time.perf_counter() - t0) * 1e3
    losses += [float(step()) for _ in range(w.steps - 1)]
    ok, err, where = w.check(losses, step.parameters(), _reference["W7"])
    assert ok, f"{engine_name} disagrees with the numpy Adam reference after {w.steps} steps: {where}, " \
               f"max rel err {err:.2e}"
    benchmark.group = f"{w.id} {w.name}"
    benchmark.extra_info.update(first_call_ms=round(first_call_ms, 3), threads=THREADS, max_rel_err=err)
    benchmark(step)


@pytest.mark.parametrize("engine_name", list(cnn_step.W7G.runs))
def test_cnn_value_and_grad(benchmark, engine_name):
    w = cnn_step.W7G
    engine = _engine(engine_name, w)
    arrays = w.arrays()
    reference = runner.reference_for(w, arrays)
    step = engine.prepare(w, arrays)
    ok, err, where = runner.compare(engine.to_numpy(step()), reference)
    assert ok, f"{engine_name} disagrees with the numpy reference on W7G: {where}, max rel err {err:.2e}"
    benchmark.group = f"{w.id} {w.name}"
    benchmark.extra_info.update(threads=THREADS, max_rel_err=err)
    benchmark(step)
