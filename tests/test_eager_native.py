"""Eager backward goes native: a graph shape seen before runs its compiled adjoint (tiered)."""

import numpy as np
import pytest

import gradc as torch
import gradc.nn.functional as F
from gradc import api
from gradc.autograd import _JOINT_CACHE, TIER_UP_AFTER

pytestmark = pytest.mark.skipif(not api.native_available(), reason="native backend not available")


def mlp_step(seed, dtype=torch.float32, batch=4):
    rng = np.random.default_rng(seed)
    w1 = torch.tensor(rng.standard_normal((6, 5)), dtype=dtype, requires_grad=True)
    b1 = torch.tensor(rng.standard_normal(5), dtype=dtype, requires_grad=True)
    w2 = torch.tensor(rng.standard_normal((5, 3)), dtype=dtype, requires_grad=True)
    x = torch.tensor(rng.standard_normal((batch, 6)), dtype=dtype)
    labels = torch.tensor(rng.integers(0, 3, batch))
    loss = F.cross_entropy(torch.tanh(x @ w1 + b1) @ w2, labels)
    loss.backward()
    return loss, [w1.grad.numpy(), b1.grad.numpy(), w2.grad.numpy()]


def entry_of_last_graph():
    return next(reversed(_JOINT_CACHE.values()))


@pytest.fixture
def backend():
    yield api.set_backend
    api.set_backend("auto")


def test_auto_backend_tiers_up_after_the_first_backward(backend):
    backend("auto")
    _, grads_first = mlp_step(1)
    entry = entry_of_last_graph()
    assert entry.native is None  # a cold graph is interpreted
    for _ in range(TIER_UP_AFTER):
        _, grads_native = mlp_step(1)
    assert entry_of_last_graph() is entry and entry.native is not None
    for a, b in zip(grads_first, grads_native):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_native_backend_equals_interpreter_in_float64(backend):
    backend("interp")
    loss_i, grads_i = mlp_step(2, torch.float64)
    backend("native")
    loss_n, grads_n = mlp_step(2, torch.float64)
    assert entry_of_last_graph().native is not None
    for a, b in zip(grads_i, grads_n):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_interp_backend_never_compiles(backend):
    backend("interp")
    for _ in range(TIER_UP_AFTER + 1):
        mlp_step(3, batch=7)  # a graph shape no other test compiled
    assert entry_of_last_graph().native is None


def test_native_eager_matches_pytorch(backend):
    pt = pytest.importorskip("torch")
    backend("native")
    _, grads = mlp_step(4)
    rng = np.random.default_rng(4)
    w1 = pt.tensor(rng.standard_normal((6, 5)), dtype=pt.float32, requires_grad=True)
    b1 = pt.tensor(rng.standard_normal(5), dtype=pt.float32, requires_grad=True)
    w2 = pt.tensor(rng.standard_normal((5, 3)), dtype=pt.float32, requires_grad=True)
    x = pt.tensor(rng.standard_normal((4, 6)), dtype=pt.float32)
    labels = pt.tensor(rng.integers(0, 3, 4))
    pt.nn.functional.cross_entropy(pt.tanh(x @ w1 + b1) @ w2, labels).backward()
    for g, t in zip(grads, (w1, b1, w2)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_native_adjoint_reads_the_saved_forward_values_as_pytorch(backend):
    """A leaf changed through numpy between forward and backward (no version bump): the compiled adjoint
    reads tanh's recorded output as PyTorch's TanhBackward reads its saved result; recomputing the forward
    from the changed leaf would give other gradients."""
    pt = pytest.importorskip("torch")
    backend("native")
    rng = np.random.default_rng(5)
    w0, x0 = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32)

    def run(lib):
        w = lib.tensor(w0.copy(), requires_grad=True)
        x = lib.tensor(x0.copy(), requires_grad=True)
        loss = (lib.tanh(x @ w) * 3.0).sum()
        w.detach().numpy()[...] = 0.5  # shares w's memory: PyTorch's matmul node sees the new w
        loss.backward()
        return x.grad.numpy().copy(), w.grad.numpy().copy()
    for _ in range(TIER_UP_AFTER):
        got = run(torch)
    assert entry_of_last_graph().native is not None and entry_of_last_graph().saved
    want = run(pt)
    for g, t in zip(got, want):
        np.testing.assert_allclose(g, t, rtol=1e-5, atol=1e-6)


def test_eager_matmul_uses_gradcs_single_threaded_blas_but_not_under_interp(backend, monkeypatch):
    from gradc import eager_blas
    from gradc.codegen import blas
    if not blas.available():
        pytest.skip("scipy-openblas32 is not installed")
    rng = np.random.default_rng(6)
    a, w = rng.standard_normal((64, 300)).astype(np.float32), rng.standard_normal((20, 300)).astype(np.float32)
    assert 64 * 300 * 20 >= eager_blas.MIN_MACS
    calls = []
    real = eager_blas._load()
    monkeypatch.setattr(eager_blas, "_gemm", lambda x, y: calls.append(x.shape) or real(x, y))
    backend("auto")
    got = (torch.from_numpy(a) @ torch.from_numpy(w).t()).numpy()
    assert calls == [(64, 300)]
    np.testing.assert_array_equal(got, a @ w.T)  # the same OpenBLAS kernels: bit for bit numpy's product
    small = torch.ones(4, 5) @ torch.ones(5, 3)
    assert calls == [(64, 300)] and small.numpy().tolist() == [[5.0] * 3] * 4  # small products stay numpy's
    backend("interp")
    np.testing.assert_array_equal((torch.from_numpy(a) @ torch.from_numpy(w).t()).numpy(), a @ w.T)
    assert calls == [(64, 300)]  # the interpreter backend is numpy's reference
