"""A matmul's consumer: a large elementwise kernel over C runs on each row block right after the GEMM.

Checked: when it is attached (and when not), native == interpreter with and without threads and with a
donated (in-place) result, the kernels that moved before the matmul, and the arena plan (the consumer's
outputs never share memory with the GEMM's operands, which other threads may still be reading).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradc.codegen import compile_function
from gradc.codegen.lower import lower
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, float32, float64
from gradc.ir.interp import run
from gradc.ir.passes.fuse import fuse
from gradc.ir.passes.memory import plan_memory


def update_step(m: int, n: int, kk: int, dtype=float32, transposed_read: bool = False) -> Function:
    """(w - 0.1 * (g^T @ x) / sqrt(v + 1), counter + 1): a weight update fed by its gradient GEMM."""
    g = Value(TensorType((kk, m), dtype), name="g")
    x = Value(TensorType((kk, n), dtype), name="x")
    w = Value(TensorType((m, n), dtype), name="w")
    v = Value(TensorType((m, n), dtype), name="v")
    count = Value(TensorType((), dtype), name="count")
    b = Builder()
    grad = b.matmul(b.permute(g, perm=(1, 0)), x)
    if transposed_read:  # reads C at other elements: cannot run per row block
        grad = b.permute(b.permute(grad, perm=(1, 0)), perm=(1, 0))
    step = b.add(count, b.scalar(1.0, count))
    scaled = b.div(b.mul(grad, b.scalar(0.1, grad)), b.sqrt(b.add(v, b.scalar(1.0, v))))
    return Function("update", [g, x, w, v, count], b.ops, [b.sub(w, scaled), step])


def arrays(fn: Function, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random(p.shape) if p.shape else np.asarray(3.0)).astype(p.dtype.numpy) for p in fn.params]


def test_consumer_is_attached_and_independent_kernels_move_before_the_matmul():
    prog = fuse(update_step(256, 300, 64), num_threads=2)
    kinds = [(k.kind, k.consumer_of) for k in prog.kernels]
    mm = next(i for i, (kind, _) in enumerate(kinds) if kind == "matmul")
    assert kinds[mm + 1] == ("loop", mm)
    assert all(k.index == i for i, k in enumerate(prog.kernels))
    assert all(prog.producer[r][0] < mm for r in prog.fn.results if r.shape == ())  # the counter moved up


def test_consumer_outputs_never_share_memory_with_the_gemm_operands():
    prog = fuse(update_step(256, 300, 64), num_threads=2)
    plan = plan_memory(prog)
    mm = next(k for k in prog.kernels if k.kind == "matmul")
    consumer = next(k for k in prog.kernels if k.consumer_of == mm.index)
    operands = [base for base, _ in mm.operands]
    for v in consumer.stores:
        assert plan.home[v].kind != "arena" or all(
            plan.home[o].kind != "arena" or plan.home[o].index != plan.home[v].index for o in operands)


@pytest.mark.parametrize("fn", [update_step(16, 16, 8), update_step(256, 300, 64, transposed_read=True),
                                update_step(256, 2000, 64)], ids=["small", "transposed-read", "large-B"])
def test_not_attached_when_small_reading_other_elements_or_costly_to_split(fn):
    assert all(k.consumer_of is None for k in fuse(fn, num_threads=2).kernels)
    args = arrays(fn)
    for got, want in zip(compile_function(fn, "update_plain")(*args), run(fn, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("shape", [(256, 300, 64), (263, 257, 33)])  # rows not a multiple of the block
@pytest.mark.parametrize("dtype", [float32, float64])
@pytest.mark.parametrize("donate", [False, True])
def test_native_equals_interpreter(threads, shape, dtype, donate, monkeypatch):
    monkeypatch.setenv("GRADC_NUM_THREADS", str(threads))
    fn = update_step(*shape, dtype=dtype)
    assert "per row block" in lower(fn, "update_text", num_threads=threads).fused_text
    native = compile_function(fn, f"update_{threads}_{donate}", donate={0: 2} if donate else None)
    args = arrays(fn)
    expected = run(fn, *[a.copy() for a in args])
    out = native(*args)
    if donate:
        assert out[0] is args[2]
    rtol = 1e-5 if dtype is float32 else 1e-12
    for got, want in zip(out, expected):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)


def gemm_variant(ta: bool, tb: bool, reads_operand: bool, m: int = 264, n: int = 260, kk: int = 24) -> Function:
    """relu(op(a) @ op(b)) * 2 [+ b's matching elements]: all transposes, a consumer reading an operand."""
    a = Value(TensorType((kk, m) if ta else (m, kk), float32), name="a")
    bb = Value(TensorType((n, kk) if tb else (kk, n), float32), name="b")
    w = Value(TensorType((m, n), float32), name="w")
    b = Builder()
    c = b.matmul(b.permute(a, perm=(1, 0)) if ta else a, b.permute(bb, perm=(1, 0)) if tb else bb)
    out = b.mul(b.relu(c), b.scalar(2.0, c))
    if reads_operand:
        out = b.add(out, w)
    later = b.reduce_sum(b.permute(out, perm=(1, 0)), axes=(0,))  # a later kernel reads the stored result
    return Function("variant", [a, bb, w], b.ops, [out, later])


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("reads_operand", [False, True])
def test_transposes_and_consumers_reading_other_buffers(ta, tb, reads_operand, monkeypatch):
    monkeypatch.setenv("GRADC_NUM_THREADS", "2")
    fn = gemm_variant(ta, tb, reads_operand)
    assert "per row block" in lower(fn, "variant_text", num_threads=2).fused_text
    args = arrays(fn, seed=1)
    args = [a - 0.5 for a in args]
    for got, want in zip(compile_function(fn, f"variant_{ta}_{tb}_{reads_operand}")(*args), run(fn, *args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_param_the_gemm_reads_is_not_donated_to_its_consumer():
    # new_w = w - 0.1 * (w @ x) or (x @ w): the consumer would write rows of w while other threads' GEMM
    # blocks may still read them, so the donation is refused (without a consumer it would be safe)
    for w_is_b in (False, True):
        w = Value(TensorType((256, 256), float32), name="w")
        x = Value(TensorType((256, 256), float32), name="x")
        b = Builder()
        c = b.matmul(x, w) if w_is_b else b.matmul(w, x)
        fn = Function("self_update", [w, x], b.ops, [b.sub(w, b.mul(c, b.scalar(0.1, c)))])
        native = compile_function(fn, f"self_update_{w_is_b}", donate={0: 0})
        assert native.donated == {}
        args = arrays(fn, seed=2)
        np.testing.assert_allclose(native(*args)[0], run(fn, *args)[0], rtol=1e-5, atol=1e-5)
