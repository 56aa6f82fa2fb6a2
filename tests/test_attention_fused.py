"""The fused attention primitives (gradc/ir/attention.py, gradc/codegen/attention.py) and SDPA's use of them.

Values and gradients against PyTorch's SDPA in float32 and float64 (causal and not, T_q != T_k both ways,
sizes hitting the 64-row blocks and the vector tails), native vs interpreter vs eager, float64 central
differences, second order through SDPA, and the traced IR of a compiled SDPA holding the primitive.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn.functional as F
from gradc.ir.attention import eval_attention, eval_attention_grad
from gradc.ir.builder import Builder
from gradc.ir.core import Function, ShapeError, TensorType, Value, float32, float64
from gradc.ir.interp import run
from gradc.ir.passes.ad import ad

torch = pytest.importorskip("torch")

# (B, H, Tq, Tk, D, Dv): blocks of 64 and vector tails (1, 7, 33, 65; D 8, 17, 32, 64)
SHAPES = [(1, 1, 1, 1, 8, 8), (2, 1, 7, 7, 17, 17), (1, 2, 33, 65, 32, 32), (1, 2, 65, 33, 8, 17),
          (1, 1, 65, 65, 64, 64), (2, 2, 130, 70, 17, 8)]
TOL = {np.float64: 1e-10, np.float32: 2e-5}


def _torch_sdpa(q, k, v, ct, causal, scale=None):
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal, scale=scale)
    (out * torch.tensor(ct)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in (tq, tk, tv)]


def _arrays(shape, dtype, seed=0):
    B, H, L, S, E, Ev = shape
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev), (B, H, L, Ev))]


def _close(got, want, dtype, what):
    scale = max(float(np.abs(want).max()), 1.0)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale, err_msg=what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_compiled_and_eager_sdpa_equal_pytorch(shape, causal, dtype):
    q, k, v, ct = _arrays(shape, dtype)
    want_out, want_grads = _torch_sdpa(q, k, v, ct, causal)
    c = gradc.tensor(ct)

    def loss(q, k, v):
        return (F.scaled_dot_product_attention(q, k, v, is_causal=causal) * c).sum()
    _, grads = gradc.value_and_grad(loss, argnums=(0, 1, 2))(q, k, v)
    for g, w, name in zip(grads, want_grads, "qkv"):
        _close(np.asarray(g), w, dtype, f"compiled d{name}")
    eq, ek, ev = (gradc.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.scaled_dot_product_attention(eq, ek, ev, is_causal=causal)
    _close(out.detach().numpy(), want_out, dtype, "eager out")
    (out * c).sum().backward()
    for t, w, name in zip((eq, ek, ev), want_grads, "qkv"):
        _close(t.grad.numpy(), w, dtype, f"eager d{name}")
    assert "ScaledDotProductFlashAttentionForCpuBackward0" in repr(out.grad_fn)


def test_explicit_scale_and_three_dims():
    q, k, v, ct = _arrays((1, 3, 9, 5, 8, 4), np.float64)
    q, k, v, ct = (a[0] for a in (q, k, v, ct))  # (H, T, D): one batch dim
    want_out, want_grads = _torch_sdpa(q, k, v, ct, True, scale=0.3)
    c = gradc.tensor(ct)
    _, grads = gradc.value_and_grad(lambda q, k, v: (F.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=0.3) * c).sum(), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(grads, want_grads):
        _close(np.asarray(g), w, np.float64, "scale=0.3")


def _one_op(n, tq, tk, d, dv, dt, causal, scale=0.4):
    b = Builder()
    shapes = (((n, tq, d), "q"), ((n, tk, d), "k"), ((n, tk, dv), "v"))
    q, k, v = (Value(TensorType(s, dt), name=nm) for s, nm in shapes)
    return Function("att", [q, k, v], b.ops, [b.emit("attention", q, k, v, scale=scale, causal=causal)])


@pytest.mark.parametrize("dt", [float64, float32], ids=["f64", "f32"])
@pytest.mark.parametrize("dims", [(1, 1, 1, 8, 8), (2, 7, 9, 17, 5), (1, 65, 33, 32, 32), (3, 33, 65, 8, 17),
                                  (1, 130, 130, 64, 64)])
@pytest.mark.parametrize("causal", [False, True])
def test_native_equals_interpreter_forward_and_backward(dims, causal, dt):
    from gradc.codegen import compile_function
    joint = ad(_one_op(*dims, dt, causal))
    rng = np.random.default_rng(1)
    args = [rng.standard_normal(p.type.shape).astype(dt.numpy) for p in joint.params]
    ref = run(joint, *args)
    got = compile_function(joint)(*args)
    tol = 1e-12 if dt == float64 else 3e-6
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol * max(1.0, float(np.abs(r).max())))


def test_float64_central_differences_full_jacobian():
    n, tq, tk, d, dv = 1, 3, 5, 3, 2
    for causal in (False, True):
        fn = _one_op(n, tq, tk, d, dv, float64, causal)
        rng = np.random.default_rng(2)
        args = [rng.standard_normal(p.type.shape) for p in fn.params]
        ct = rng.standard_normal(fn.results[0].shape)
        grads = run(ad(fn), *args, ct)[1:]
        for i, a in enumerate(args):
            fd = np.zeros_like(a)
            for j in np.ndindex(a.shape):
                hi, lo = [x.copy() for x in args], [x.copy() for x in args]
                hi[i][j] += 1e-6
                lo[i][j] -= 1e-6
                fd[j] = ((run(fn, *hi)[0] - run(fn, *lo)[0]) * ct).sum() / 2e-6
            np.testing.assert_allclose(grads[i], fd, rtol=1e-6, atol=1e-8, err_msg=f"causal={causal} input {i}")


def test_causal_with_more_queries_than_keys_is_top_left_aligned():
    q, k, v, ct = _arrays((1, 1, 9, 4, 8, 8), np.float64)
    want_out, _ = _torch_sdpa(q, k, v, ct, True)
    res = eval_attention(q[0], k[0], v[0], 1 / np.sqrt(8), True)
    np.testing.assert_allclose(res[:9 * 8].reshape(9, 8), want_out[0, 0], rtol=1e-12, atol=1e-12)


def test_second_order_through_sdpa_matches_pytorch():
    q, k, v, ct = _arrays((1, 2, 7, 5, 4, 3), np.float64)
    rng = np.random.default_rng(3)
    w = rng.standard_normal(q.shape)
    for causal in (False, True):
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
        (gq,) = torch.autograd.grad((out * torch.tensor(ct)).sum(), tq, create_graph=True)
        want = torch.autograd.grad((gq * torch.tensor(w)).sum(), (tq, tk, tv))
        from gradc.api import trace
        from gradc.codegen import compile_function
        c = gradc.tensor(ct)
        fn = trace(lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, is_causal=causal) * c).sum(), q, k, v)
        assert "attention" in [op.name for op in fn.ops]
        first = ad(fn, seed="ones")  # results: loss, dq, dk, dv
        b = Builder()
        from gradc.ir.builder import inline
        params = [Value(p.type, name=p.name) for p in first.params]
        dq = inline(b, first, params)[1]
        wc = b.constant(w, dq.type)
        outer = Function("outer", params, b.ops, [b.reduce_sum(b.mul(dq, wc), axes=(0, 1, 2, 3))])
        second = ad(outer, seed="ones")
        assert "attention_grad" in [op.name for op in second.ops]
        for engine in (lambda f: (lambda *a: run(f, *a)), compile_function):
            got = engine(second)(q, k, v)[1:]
            for g, wnt in zip(got, want):
                np.testing.assert_allclose(np.asarray(g), wnt.numpy(), rtol=1e-9, atol=1e-10)


def test_eager_double_backward_through_sdpa():
    q, k, v, ct = _arrays((1, 1, 6, 6, 4, 4), np.float64)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    s = (tq @ tk.transpose(-1, -2) / 2.0).masked_fill(~torch.ones(6, 6, dtype=torch.bool).tril(), float("-inf"))
    out = torch.softmax(s, -1) @ tv  # the math definition (PyTorch's flash backward has no derivative)
    (gk,) = torch.autograd.grad((out * torch.tensor(ct)).sum(), tk, create_graph=True)
    (want,) = torch.autograd.grad(gk.square().sum(), tq)
    eq, ek, ev = (gradc.tensor(a, requires_grad=True) for a in (q, k, v))
    o = F.scaled_dot_product_attention(eq, ek, ev, is_causal=True)
    (g,) = gradc.autograd.grad((o * gradc.tensor(ct)).sum(), ek, create_graph=True)
    (got,) = gradc.autograd.grad((g * g).sum(), eq)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-10)


def test_traced_ir_of_compiled_sdpa_holds_the_primitive_and_no_score_matrix():
    def loss(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).sum()
    from gradc.api import trace
    q = np.zeros((2, 2, 96, 16), np.float32)
    fn = trace(loss, q, q, q)
    names = [op.name for op in fn.ops]
    assert "attention" in names
    joint = ad(fn)
    assert "attention_grad" in [op.name for op in joint.ops]
    assert not any(op.name == "matmul" for op in joint.ops), "a T x T product is left in the joint IR"


def test_masks_and_dropout_keep_the_composite():
    from gradc.api import trace
    q = np.zeros((1, 1, 4, 8), np.float32)
    mask = np.tril(np.ones((4, 4), bool))
    fn = trace(lambda q: F.scaled_dot_product_attention(q, q, q, attn_mask=gradc.tensor(mask)).sum(), q)
    assert "attention" not in [op.name for op in fn.ops] and "matmul" in [op.name for op in fn.ops]


def test_shape_rule_names_the_problem():
    b = Builder()
    q = Value(TensorType((2, 3, 4), float64))
    k = Value(TensorType((2, 5, 3), float64))
    with pytest.raises(ShapeError, match="do not fit"):
        b.emit("attention", q, k, k, scale=1.0, causal=False)
    with pytest.raises(ShapeError, match="rank 3"):
        b.emit("attention", Value(TensorType((3, 4), float64)), k, k, scale=1.0, causal=False)


def test_eval_rules_block_the_queries_consistently():
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 300, 8)), rng.standard_normal((2, 200, 8)), rng.standard_normal((2, 200, 4))
    res = eval_attention(q, k, v, 0.5, True)
    s = q @ k.transpose(0, 2, 1) * 0.5
    s = np.where(np.tril(np.ones((300, 200), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(res[:2 * 300 * 4].reshape(2, 300, 4), p @ v, rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(res.shape)
    grads = eval_attention_grad(q, k, v, res, g, 0.5, True)
    assert grads.shape == (2 * 300 * 8 + 2 * 200 * 8 + 2 * 200 * 4,) and np.isfinite(grads).all()
