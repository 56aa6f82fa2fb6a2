"""The inner function of a large program is cut into segment functions (lower.SEGMENT_KERNELS kernels each):
LLVM's optimizer and code generation grew superlinearly with one straight-line function of thousands of
kernel calls. Results must not depend on where the cuts fall, and a bad gather index must still stop the
step before a donated parameter is written."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
from gradc.codegen import lower
from gradc.ir.interp import run


def unrolled_rnn(T: int):
    def loss(W, U, xs):
        h = gradc.tanh(xs[0] @ U)
        for t in range(1, T):
            h = gradc.tanh(h @ W + xs[t] @ U)
        return (h * h).sum()
    return loss


def arrays(T: int):
    rng = np.random.default_rng(0)
    return ((rng.standard_normal((8, 8)) * 0.3).astype(np.float32),
            (rng.standard_normal((5, 8)) * 0.3).astype(np.float32),
            rng.standard_normal((T, 3, 5)).astype(np.float32))


def test_kernel_segments_are_bounded_and_start_after_the_last_gather(monkeypatch):
    monkeypatch.setattr(lower, "SEGMENT_KERNELS", 3)

    class K:
        def __init__(self, index):
            self.index = index
    kernels = [K(i) for i in range(10)]
    assert [[k.index for k in s] for s in lower.kernel_segments(kernels, -1)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8],
                                                                                  [9]]
    assert [[k.index for k in s] for s in lower.kernel_segments(kernels, 4)] == [[0, 1, 2], [3, 4], [5, 6, 7],
                                                                                 [8, 9]]
    assert lower.kernel_segments([], -1) == [[]]


@pytest.mark.parametrize("segment, T", [(1, 30), (7, 31), (10_000, 32)])  # (other T: compiled kernels are
def test_results_do_not_depend_on_the_segments(monkeypatch, segment, T):   # kept in memory by their IR)
    monkeypatch.setattr(lower, "SEGMENT_KERNELS", segment)
    monkeypatch.setenv("GRADC_CACHE", "0")
    f = gradc.value_and_grad(unrolled_rnn(T), argnums=(0, 1))
    W, U, xs = arrays(T)
    spec = f.lower(W, U, xs)
    value, (gW, gU) = f(W, U, xs)
    want = run(spec.joint, W, U, xs)
    np.testing.assert_allclose(value, want[0], rtol=2e-5)
    np.testing.assert_allclose(gW, want[1], rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(gU, want[2], rtol=2e-4, atol=1e-6)
    text = spec.as_text("llvm")
    assert ("_inner_part1" in text) == (segment < 100)  # ~190 kernels: one function only at 10,000


def test_a_bad_label_stops_a_segmented_step_before_any_parameter_is_written(monkeypatch):
    monkeypatch.setattr(lower, "SEGMENT_KERNELS", 2)
    monkeypatch.setenv("GRADC_CACHE", "0")
    model = gradc.nn.Sequential(gradc.nn.Linear(6, 5), gradc.nn.Tanh(), gradc.nn.Linear(5, 4))
    opt = gradc.optim.Adam(model.parameters(), lr=0.01)
    step = gradc.compile_step(model, gradc.nn.CrossEntropyLoss(), opt)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((7, 6)).astype(np.float32), rng.integers(0, 4, 7)
    step(x, y)
    saved = [p.detach().numpy().copy() for p in model.parameters()]
    bad = y.copy()
    bad[2] = 9
    with pytest.raises(IndexError):
        step(x, bad)
    for p, before in zip(model.parameters(), saved):
        np.testing.assert_array_equal(p.detach().numpy(), before)
    step(x, y)  # and the step still runs afterwards
    assert any(not np.array_equal(p.detach().numpy(), b) for p, b in zip(model.parameters(), saved))


def test_a_loop_kernel_takes_at_most_max_loop_roots_and_results_stay_right():
    # 150 same-shape results: before, all in one loop kernel (150 stores in one loop body, which LLVM's
    # LoopIdiomRecognize handles in quadratic time)
    from gradc.ir.passes.fuse import MAX_LOOP_ROOTS, fuse

    def many(xs):
        return tuple(gradc.tanh(xs[t]) * (t + 1) for t in range(150))
    xs = np.random.default_rng(2).standard_normal((150, 4, 9)).astype(np.float32)
    prog = fuse(gradc.make_ir(many)(xs))
    loops = [k for k in prog.kernels if k.kind == "loop"]
    assert max(len(k.stores) + len(k.reductions) for k in loops) <= MAX_LOOP_ROOTS
    assert sum(len(k.stores) for k in loops) >= 150 and len(loops) >= -(-150 // MAX_LOOP_ROOTS)
    got = gradc.compile(many)(xs)
    for t in (0, 63, 64, 149):
        np.testing.assert_allclose(got[t], np.tanh(xs[t]) * (t + 1), rtol=1e-6, atol=1e-6)
