"""Fusion and memory planning: what becomes one loop nest, multi-output fusion (W3), golden fused text.

Set GRADC_UPDATE_GOLDEN=1 to rewrite tests/golden/fused_*.txt after an intended change.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from native_helpers import Native

import gradc
from gradc.api import optimize, trace
from gradc.codegen.lower import lower
from gradc.ir import interp
from gradc.ir.builder import Builder
from gradc.ir.core import TensorType, Value, float32, float64
from gradc.ir.passes.ad import ad
from gradc.ir.passes.fuse import fuse
from gradc.ir.passes.memory import plan_memory

GOLDEN = Path(__file__).parent / "golden"


def params(*types):
    return [Value(TensorType(s, d), name=n) for n, (s, d) in types]


def w3_joint(n: int, dt=float32):
    """BENCHMARKS.md W3: loss = sum(tanh(x*w+b)*sigmoid(x) + 0.5*(x*w)**2)/N, grads wrt w and b."""
    def loss(x, w, b):
        return (gradc.tanh(x * w + b) * gradc.sigmoid(x) + 0.5 * (x * w) ** 2).sum() / n
    example = np.zeros(n, dtype=dt.numpy)
    fn = optimize(trace(loss, example, example, example))
    return optimize(ad(fn, wrt=[1, 2], seed="ones"))


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"fused_{name}.txt"
    if os.environ.get("GRADC_UPDATE_GOLDEN") == "1" or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"fused text of {name} changed (GRADC_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("dt", [float32, float64], ids=lambda d: d.name)
def test_w3_joint_is_one_pass(dt):
    n = 1001
    joint = w3_joint(n, dt)
    prog = fuse(joint, num_threads=1)
    assert prog.num_kernels == 1
    (k,) = prog.kernels
    assert k.kind == "loop" and k.domain == (n,)
    assert len(k.reductions) == 1 and len(k.stores) == 2  # the loss sum and both gradients
    assert k.epilogue_domain == () and len(k.epilogue) == 1  # loss = sum / N
    # every elementwise value is computed in the loop, none is stored to the arena
    plan = plan_memory(prog)
    assert plan.arena_bytes == 64  # only the scalar accumulator of the sum
    assert sum(op.name == "tanh" for op in k.phase_ops[0]) == 1  # computed once per element
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(n).astype(dt.numpy) for _ in range(3)]
    got = Native(joint)(*args)
    ref = interp.run(joint, *args)
    tol = 1e-12 if dt == float64 else 1e-5
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * float(np.max(np.abs(r))))


def test_w3_threaded_matches_interpreter():
    n = 400_000
    joint = w3_joint(n, float64)
    native = Native(joint, num_threads=2)
    assert native.lowered.num_kernels == 1 and native.lowered.program.kernels[0].threads == 2
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(n) for _ in range(3)]
    for g, r in zip(native(*args), interp.run(joint, *args)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-15)


def test_golden_pointwise_loss_and_adjoint():
    # built with the Builder (not traced, no simplify) so the golden only moves when fusion does
    x, w = params(("x", ((8,), float32)), ("w", ((8,), float32)))
    b = Builder()
    fn = b.function("loss", [x, w], [b.reduce_sum(b.mul(b.sigmoid(b.mul(x, w)), b.exp(b.neg(x))), axes=(0,))])
    joint = ad(fn, wrt=[1], seed="ones")
    low = lower(joint, "golden", num_threads=1)
    assert low.num_kernels == 1
    check_golden("pointwise_loss", low.fused_text)
    x = np.linspace(-2, 2, 8, dtype=np.float32)
    w = np.linspace(1, -1, 8, dtype=np.float32)
    for g, r in zip(Native(joint)(x, w), interp.run(joint, x, w)):
        np.testing.assert_allclose(g, r, rtol=1e-5)


def test_golden_softmax_cross_entropy():
    # reductions over the inner axis with their prologues; the adjoint needs the max and the sum
    z, y = params(("z", ((4, 5), float32)), ("y", ((4, 5), float32)))
    b = Builder()

    def rows(v):  # [4] -> [4, 5]
        return b.broadcast_to(b.reshape(v, shape=(4, 1)), (4, 5))
    shifted = b.sub(z, rows(b.stop_gradient(b.reduce_max(z, axes=(1,)))))
    logp = b.sub(shifted, rows(b.log(b.reduce_sum(b.exp(shifted), axes=(1,)))))
    total = b.reduce_sum(b.mul(logp, y), axes=(0, 1))
    fn = b.function("xent", [z, y], [b.div(b.neg(total), b.scalar(4.0, total))])
    joint = ad(fn, wrt=[0], seed="ones")
    low = lower(joint, "softmax", num_threads=1)
    check_golden("softmax_xent", low.fused_text)
    rng = np.random.default_rng(2)
    args = [rng.standard_normal((4, 5)).astype(np.float32), rng.random((4, 5)).astype(np.float32)]
    for g, r in zip(Native(joint)(*args), interp.run(joint, *args)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_layout_ops_fold_into_loads():
    x, bias, m = params(("x", ((4, 6), float32)), ("bias", ((4,), float32)), ("m", ((6, 4), float32)))
    b = Builder()
    t = b.permute(x, perm=(1, 0))  # [6, 4]
    y = b.add(b.exp(t), b.broadcast_to(bias, (6, 4)))
    y = b.add(y, b.reshape(b.slice(b.pad(m, lo=(1, 0), hi=(0, 0), interior=(0, 0)), starts=(0, 0),
                                   stops=(6, 4), steps=(1, 1)), shape=(6, 4)))
    fn = b.function("f", [x, bias, m], [y])
    prog = fuse(fn, num_threads=1)
    assert prog.num_kernels == 1 and plan_memory(prog).arena_bytes == 0  # no copies for layout ops
    rng = np.random.default_rng(3)
    args = [rng.standard_normal(p.shape).astype(np.float32) for p in fn.params]
    np.testing.assert_allclose(Native(fn)(*args)[0], interp.run(fn, *args)[0], rtol=2e-6)


def test_multi_output_and_reduction_prologue():
    x, y = params(("x", ((5, 33), float64)), ("y", ((5, 33), float64)))
    b = Builder()
    e = b.exp(b.mul(x, y))
    fn = b.function("f", [x, y], [b.reduce_sum(e, axes=(1,)), b.mul(e, x), b.reduce_max(e, axes=(0,)), b.tanh(e)])
    prog = fuse(fn, num_threads=1)
    assert prog.num_kernels == 1 and len(prog.kernels[0].stores) == 2 and len(prog.kernels[0].reductions) == 2
    rng = np.random.default_rng(4)
    args = [rng.standard_normal((5, 33)), rng.standard_normal((5, 33))]
    for g, r in zip(Native(fn)(*args), interp.run(fn, *args)):
        np.testing.assert_allclose(g, r, rtol=1e-12)


def test_dependent_reduction_starts_a_new_kernel():
    # x - max(x) needs the max before the loop that uses it: two kernels, the max kept in the arena
    (x,) = params(("x", ((3, 10), float32)))
    b = Builder()
    mx = b.reduce_max(x, axes=(1,))
    s = b.reduce_sum(b.exp(b.sub(x, b.broadcast_to(b.reshape(mx, shape=(3, 1)), (3, 10)))), axes=(1,))
    fn = b.function("f", [x], [s])
    prog = fuse(fn, num_threads=1)
    assert [k.kind for k in prog.kernels] == ["loop", "loop"]
    plan = plan_memory(prog)
    assert plan.home[mx].kind == "arena" and plan.home[s].kind == "result"


def test_matmul_is_a_boundary_and_transposes_are_flags():
    x, w, bias = params(("x", ((4, 5), float32)), ("w", ((3, 5), float32)), ("bias", ((3,), float32)))
    b = Builder()
    z = b.matmul(x, b.permute(w, perm=(1, 0)))
    h = b.tanh(b.add(z, b.broadcast_to(bias, (4, 3))))
    fn = b.function("f", [x, w, bias], [h])
    prog = fuse(fn, num_threads=1)
    assert [k.kind for k in prog.kernels] == ["matmul", "loop"]
    assert prog.kernels[0].operands == ((x, False), (w, True))


@pytest.mark.parametrize("shape, starts, stops, steps, offset", [
    ((4, 5), (1, 0), (3, 5), (1, 1), 5),  # whole rows
    ((4, 5), (2, 1), (3, 4), (1, 1), 11),  # part of one row
    ((3, 4, 5), (1, 2, 0), (2, 4, 5), (1, 1, 1), 30),  # unit extent, then rows
    ((4, 5), (0, 1), (4, 3), (1, 1), None),  # columns of every row: strided
    ((8,), (0,), (8,), (2,), None),  # a step
    ((4, 5), (1, 0), (1, 5), (1, 1), None),  # empty
])
def test_contiguous_offset(shape, starts, stops, steps, offset):
    from gradc.ir.passes.fuse import contiguous_offset
    assert contiguous_offset(shape, starts, stops, steps) == offset


def test_contiguous_slices_of_buffers_are_views():
    """A contiguous part of a matmul result read by another matmul (a scan's unpack read by a GEMM) is read in
    place: no copy kernel, its home is the base's at an offset; a strided slice still gets its own buffer."""
    a, w, v = params(("a", ((6, 8), float64)), ("w", ((8, 4), float64)), ("v", ((3, 5), float64)))
    b = Builder()
    flat = b.reshape_to(b.matmul(a, w), (24,))  # a [6, 4] product, flattened
    piece = b.slice(flat, starts=(8,), stops=(20,), steps=(1,))  # elements 8..19 (matmul reads it as [4, 3])
    part = b.reshape_to(piece, (4, 3))
    strided = b.slice(b.reshape_to(flat, (6, 4)), starts=(0, 1), stops=(3, 4), steps=(1, 1))  # [3,3]: not a view
    fn = b.function("f", [a, w, v], [b.matmul(part, v), b.matmul(strided, v), b.tanh(flat)])
    prog = fuse(fn, num_threads=1)
    assert piece in prog.views and prog.views[piece][1] == 8
    assert strided not in prog.views
    plan = plan_memory(prog)
    base = plan.home[prog.views[piece][0]]
    assert (plan.home[piece].kind, plan.home[piece].index, plan.home[piece].offset) == (base.kind, base.index,
                                                                                      base.offset + 64)
    assert sum(k.kind == "loop" and piece in k.stores for k in prog.kernels) == 0
    rng = np.random.default_rng(3)
    args = [rng.standard_normal(p.shape) for p in fn.params]
    for g, r in zip(Native(fn)(*args), interp.run(fn, *args)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dt", [float32, float64])
def test_sum_of_pads_that_tile_is_stored_in_place(dt):
    """A concatenation written as pads summed (an LSTM's gate gradients) is stored piece by piece into the
    sum's buffer by the nest computing the pieces: no buffers for the pieces, no [B, 4H] nest of selects;
    signed zeros come out as the sum gives them (+0.0)."""
    x, y = params(("x", ((5, 3), dt)), ("y", ((5, 3), dt)))
    b = Builder()
    pieces = [b.mul(x, y), b.sub(x, y), b.tanh(x), b.neg(b.mul(x, b.scalar(0.0, x)))]  # the last: -0.0s
    padded = [b.pad(p, lo=(0, 3 * i), hi=(0, 3 * (3 - i)), interior=(0, 0)) for i, p in enumerate(pieces)]
    total = b.add(b.add(padded[0], padded[1]), b.add(padded[2], padded[3]))
    fn = b.function("f", [x, y], [b.reduce_sum(total, axes=(0,)), total])
    prog = fuse(fn, num_threads=1)
    assert set(prog.tiles) == set(pieces) and all(t is total for t, _ in prog.tiles.values())
    loops = [k for k in prog.kernels if k.kind == "loop"]
    assert not any(k.domain == (5, 12) and total in k.stores for k in loops)
    assert all(p not in plan_memory(prog).home for p in pieces)
    rng = np.random.default_rng(5)
    args = [rng.standard_normal((5, 3)).astype(dt.numpy) for _ in range(2)]
    got, ref = Native(fn)(*args), interp.run(fn, *args)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6 if dt == float32 else 1e-12, atol=1e-6)
    np.testing.assert_array_equal(np.signbit(got[1]), np.signbit(ref[1]))


def test_pads_that_overlap_or_leave_gaps_are_not_tiles():
    x, = params(("x", ((4, 3), float64)))
    b = Builder()
    gap = b.add(b.pad(x, lo=(0, 0), hi=(0, 4), interior=(0, 0)), b.pad(x, lo=(0, 4), hi=(0, 0), interior=(0, 0)))
    overlap = b.add(b.pad(b.tanh(x), lo=(0, 0), hi=(0, 1), interior=(0, 0)),
                    b.pad(b.exp(x), lo=(0, 1), hi=(0, 0), interior=(0, 0)))
    fn = b.function("f", [x], [gap, overlap])
    assert not fuse(fn, num_threads=1).tiles
    args = [np.random.default_rng(6).standard_normal((4, 3))]
    for g, r in zip(Native(fn)(*args), interp.run(fn, *args)):
        np.testing.assert_allclose(g, r, rtol=1e-12)
