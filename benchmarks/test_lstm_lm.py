"""W9 "lstm-lm" x {gradc-native, torch, torch.compile, jax}, from the ONE definition in gradc.bench.lstm_lm.

Each benchmark builds the engine's Adam step from the shared PyTorch-initialized weights, checks the losses
of the first steps against torch eager in float64 (rtol 1e-3), and only then times further steps.
`GRADC_W9_T` sets the sequence length (default 128). Run with
`python -m pytest benchmarks/test_lstm_lm.py --benchmark-only`.
"""

import os
import time

import numpy as np
import pytest

from gradc.bench import lstm_lm

T = int(os.environ.get("GRADC_W9_T", str(lstm_lm.STEPS_T)))


@pytest.mark.parametrize("engine_name", list(lstm_lm.ENGINES))
def test_lstm_lm_step(benchmark, engine_name):
    pytest.importorskip("torch")  # the shared initial weights come from torch.nn.LSTM
    if engine_name == "jax":
        pytest.importorskip("jax")
    x, y, state = lstm_lm.initial(T)
    ref = lstm_lm.torch_step(x, y, state, dtype="float64")
    ref_losses = [float(ref()) for _ in range(lstm_lm.CHECK_STEPS)]
    t0 = time.perf_counter()
    step = lstm_lm.ENGINES[engine_name](x, y, state)
    losses = [float(step())]
    first_call_ms = (time.perf_counter() - t0) * 1e3
    losses += [float(step()) for _ in range(lstm_lm.CHECK_STEPS - 1)]
    assert np.allclose(losses, ref_losses, rtol=1e-3), f"{engine_name}: losses {losses} != torch {ref_losses}"
    benchmark.extra_info["first_call_ms"] = round(first_call_ms, 1)
    benchmark.extra_info["T"] = T
    benchmark(step)
