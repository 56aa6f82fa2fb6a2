"""W8 "gpt-step" x {gradc-native, torch, jax} and its attention row, from the ONE definition in gradc.bench.gpt_step.

Each training benchmark checks its first W8.steps losses and the parameters after them against the numpy
float64 AdamW reference (W8.check: the losses and each parameter's movement), then times one step per round;
each attention benchmark checks value and gradients against the numpy reference (rtol 1e-3) before timing.
Run with `python -m pytest benchmarks/test_gpt_step.py --benchmark-only`.
"""

import os
import time

import numpy as np
import pytest

from gradc.bench import engines, gpt_step, runner

THREADS = int(os.environ.get("GRADC_BENCH_THREADS", "2"))
_ready: set[str] = set()
_reference: list = []


@pytest.mark.parametrize("engine_name", list(gpt_step.STEPS))
def test_gpt_step(benchmark, engine_name):
    engine = engines.get(engine_name)
    w = gpt_step.W8
    note = engine.unavailable() or engine.unsupported(w)
    if note:
        pytest.skip(f"{engine_name}: {note}")
    if engine_name not in _ready:
        engine.setup(THREADS)
        _ready.add(engine_name)
    if not _reference:
        _reference.append(w.reference())
    t0 = time.perf_counter()
    step = engine.train_step(*w.initial())
    losses = [float(step())]
    first_call_ms = (time.perf_counter() - t0) * 1e3
    losses += [float(step()) for _ in range(w.steps - 1)]
    ok, err, where = w.check(losses, step.parameters(), _reference[0])
    assert ok, f"{engine_name} disagrees with the numpy AdamW reference: {where}, max rel err {err:.2e}"
    benchmark.group = f"{w.id} {w.name}"
    benchmark.extra_info.update(first_call_ms=round(first_call_ms, 3), threads=THREADS, max_rel_err=err)
    benchmark(step)


@pytest.mark.parametrize("engine_name", list(gpt_step.ATTENTION_ENGINES))
def test_attention_row(benchmark, engine_name):
    arrays = gpt_step.attention_arrays()
    try:
        run = gpt_step.ATTENTION_ENGINES[engine_name](*arrays)
    except ImportError as exc:
        pytest.skip(f"{engine_name}: {exc}")
    value, grads = run()
    ok, err, where = runner.compare((np.asarray(value), list(grads)), gpt_step.attention_reference(*arrays), 1e-3)
    assert ok, f"{engine_name}: {where} max rel err {err:.2e}"
    benchmark.group = "W8 attention row (B16 H4 T256 D32, causal, fwd+bwd)"
    benchmark(run)
