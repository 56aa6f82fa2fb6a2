"""Loop kernels split their innermost loop at the edges of the pads of their shape (codegen/lower.py
LoopKernelLowerer.segments): a concat written as a sum of pads, a slice's VJP, a pad that also pads an outer
axis, a pad past the end, a reduction over the padded axis carried across segments, a 1-d pad split over
threads. Native results equal the interpreter's (to the stated error of exp/tanh)."""

from __future__ import annotations

import numpy as np
import pytest

from gradc.codegen import compile_function, lower
from gradc.ir.builder import Builder
from gradc.ir.core import TensorType, Value, float32
from gradc.ir.interp import run


def pad(b, x, lo, hi):
    return b.emit("pad", x, lo=tuple(lo), hi=tuple(hi), interior=(0,) * len(lo))


@pytest.fixture
def segmented(monkeypatch):
    """Records the segment edges each kernel's lowering chose; the test checks the split path ran."""
    seen: list = []
    original = lower.LoopKernelLowerer.segments

    def recording(self):
        cuts = original(self)
        seen.append(cuts)
        return cuts
    monkeypatch.setattr(lower.LoopKernelLowerer, "segments", recording)
    monkeypatch.setenv("GRADC_CACHE", "0")  # lower every kernel here (no disk-cache hit)
    return seen


def check(fn, *arrays, seen=None, split=True):
    native = compile_function(fn)(*arrays)
    if seen is not None:
        assert any(seen) == split, seen
    want = run(fn, *arrays)
    for got, ref in zip(native, want):
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=2e-6, atol=1e-6)


def params(*shapes):
    return [Value(TensorType(s, float32), name=f"x{i}") for i, s in enumerate(shapes)]


def data(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def test_concat_of_three_pieces_and_its_sum(segmented):
    shapes = [(3, 5, 16), (3, 5, 8), (3, 5, 9)]
    xs = params(*shapes)
    b = Builder()
    a = pad(b, b.exp(xs[0]), (0, 0, 0), (0, 0, 17))
    c = pad(b, b.mul(xs[1], xs[1]), (0, 0, 16), (0, 0, 9))
    d = pad(b, xs[2], (0, 0, 24), (0, 0, 0))
    cat = b.add(b.add(a, c), d)
    total = b.reduce_sum(cat, axes=(2,))
    check(b.function("cat", xs, [cat, total]), *data(*shapes), seen=segmented)
    assert [0, 16, 24, 33] in segmented


@pytest.mark.parametrize("lo, hi", [((0, 0), (0, 7)), ((0, 5), (0, 0)), ((0, 3), (0, 4)), ((1, 3), (2, 3)),
                                    ((0, 40), (0, 1)), ((0, 0), (0, 0))])
def test_one_pad(lo, hi, segmented):
    (x,) = params((4, 11))
    b = Builder()
    y = pad(b, b.tanh(x), lo, hi)
    out = b.add(y, b.scalar(1.0, y))
    check(b.function("pad1", [x], [out, b.reduce_sum(out, axes=(1,))]), *data((4, 11)), seen=segmented,
          split=lo[1] + hi[1] > 0)


def test_pad_read_through_a_broadcast_and_an_interior_pad(segmented):
    xs = params((6,), (2, 6))
    b = Builder()
    p = pad(b, xs[0], (2,), (3,))  # f32[11], read at the loop index through a broadcast
    q = b.emit("pad", xs[1], lo=(0, 1), hi=(0, 0), interior=(0, 1))  # f32[2,12]: not segmented
    r = b.add(b.broadcast_to(p, (2, 11)), b.emit("slice", q, starts=(0, 0), stops=(2, 11), steps=(1, 1)))
    check(b.function("mixed", xs, [r]), *data((6,), (2, 6)), seen=segmented, split=False)


def test_one_dimensional_pad_split_over_threads(segmented):
    n = 300_000  # above fuse.THREAD_MIN_ELEMENTS: each thread's rows are clipped to the segments
    xs = params((n,), (5000,))
    b = Builder()
    y = b.add(pad(b, b.exp(xs[0]), (1000,), (5000,)), pad(b, xs[1], (n + 1000,), (0,)))
    check(b.function("pad1d", xs, [y]), *data((n,), (5000,)), seen=segmented)
