"""Eager results, gradients and grad_fn names equal PyTorch's on composite expressions.

Every expression is written once against a module `m` (torch or gradc) and its `F`
(m.nn.functional), run on the same inputs under both, and compared: forward values, the gradient
of every input (backward with a fixed random cotangent) and the grad_fn name.
"""

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

rng = np.random.default_rng(2024)


def randn(*shape):
    return rng.standard_normal(shape)


def probs(*shape):
    return rng.uniform(0.05, 0.95, shape)


class fixed(np.ndarray):
    """A float input that does not require grad (loss weights)."""

    def __new__(cls, array):
        return np.asarray(array).view(cls)


def labels(n, classes):
    return rng.integers(0, classes, n)


# name -> (function of (m, F, *tensors), inputs: arrays (float: differentiable) or ints (labels))
EXPRESSIONS = {
    "bce_logits mean": (lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y), [randn(4, 5), probs(4, 5)]),
    "bce_logits sum": (lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y, reduction="sum"),
                       [randn(4, 5), probs(4, 5)]),
    "bce_logits none": (lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none"),
                        [randn(4, 5), probs(4, 5)]),
    "bce_logits extreme": (lambda m, F, x, y: F.binary_cross_entropy_with_logits(x, y),
                           [np.array([-100.0, -30.0, 0.0, 30.0, 100.0]), np.array([1.0, 0.0, 0.5, 1.0, 0.0])]),
    "bce_logits pos_weight": (lambda m, F, x, y, w: F.binary_cross_entropy_with_logits(x, y, pos_weight=w),
                              [randn(3, 4), probs(3, 4), fixed(probs(4) * 3)]),
    "bce mean": (lambda m, F, x, y: F.binary_cross_entropy(m.sigmoid(x), y), [randn(6), probs(6)]),
    "bce sum": (lambda m, F, p, y: F.binary_cross_entropy(p, y, reduction="sum"), [probs(3, 4), probs(3, 4)]),
    "bce none": (lambda m, F, p, y: F.binary_cross_entropy(p, y, reduction="none"), [probs(5), probs(5)]),
    "cross_entropy mean": (lambda m, F, x, y: F.cross_entropy(x, y), [randn(5, 7), labels(5, 7)]),
    "cross_entropy sum": (lambda m, F, x, y: F.cross_entropy(x, y, reduction="sum"), [randn(5, 7), labels(5, 7)]),
    "cross_entropy none": (lambda m, F, x, y: F.cross_entropy(x, y, reduction="none"), [randn(5, 7), labels(5, 7)]),
    "cross_entropy extreme": (lambda m, F, x, y: F.cross_entropy(x * 100, y), [randn(4, 3), labels(4, 3)]),
    "cross_entropy weight": (lambda m, F, x, w, y: F.cross_entropy(x, y, weight=w),
                             [randn(6, 4), fixed(probs(4)), labels(6, 4)]),
    "cross_entropy ignore": (lambda m, F, x, y: F.cross_entropy(x, y, ignore_index=2), [randn(6, 4), labels(6, 4)]),
    "cross_entropy smoothing": (lambda m, F, x, y: F.cross_entropy(x, y, label_smoothing=0.1),
                                [randn(5, 4), labels(5, 4)]),
    "cross_entropy probs": (lambda m, F, x, p: F.cross_entropy(x, m.softmax(p, dim=1)), [randn(3, 5), randn(3, 5)]),
    "cross_entropy 3d": (lambda m, F, x, y: F.cross_entropy(x, y), [randn(2, 4, 3), rng.integers(0, 4, (2, 3))]),
    "nll mean": (lambda m, F, x, y: F.nll_loss(F.log_softmax(x, dim=1), y), [randn(5, 3), labels(5, 3)]),
    "nll sum": (lambda m, F, x, y: F.nll_loss(x, y, reduction="sum"), [randn(5, 3), labels(5, 3)]),
    "nll none": (lambda m, F, x, y: F.nll_loss(x, y, reduction="none"), [randn(5, 3), labels(5, 3)]),
    "mse mean": (lambda m, F, x, y: F.mse_loss(x, y), [randn(3, 4), randn(3, 4)]),
    "mse sum": (lambda m, F, x, y: F.mse_loss(x, y, reduction="sum"), [randn(7), randn(7)]),
    "mse none": (lambda m, F, x, y: F.mse_loss(x, y, reduction="none"), [randn(2, 3), randn(2, 3)]),
    "softmax dim 0": (lambda m, F, x: m.softmax(x, dim=0), [randn(4, 3)]),
    "softmax dim -1": (lambda m, F, x: F.softmax(x, dim=-1), [randn(2, 3, 5)]),
    "softmax extreme": (lambda m, F, x: m.softmax(x * 1000, dim=1), [randn(3, 4)]),
    "log_softmax dim 1": (lambda m, F, x: m.log_softmax(x, dim=1), [randn(4, 6)]),
    "log_softmax extreme": (lambda m, F, x: F.log_softmax(x * 1000, dim=0), [randn(5, 2)]),
    "matmul 1d 1d": (lambda m, F, a, b: m.matmul(a, b), [randn(5), randn(5)]),
    "matmul 2d 1d": (lambda m, F, a, b: a @ b, [randn(3, 5), randn(5)]),
    "matmul 1d 2d": (lambda m, F, a, b: a @ b, [randn(5), randn(5, 2)]),
    "matmul 2d 2d": (lambda m, F, a, b: m.matmul(a, b), [randn(3, 5), randn(5, 2)]),
    "matmul batched": (lambda m, F, a, b: m.matmul(a, b), [randn(2, 3, 4), randn(2, 4, 5)]),
    "matmul broadcast batch": (lambda m, F, a, b: m.matmul(a, b), [randn(2, 3, 4), randn(4, 5)]),
    "linear layer": (lambda m, F, x, w, b: m.tanh(x @ w.t() + b).sum(), [randn(8, 5), randn(3, 5), randn(3)]),
    "broadcast arithmetic": (lambda m, F, a, b, c: (a + b) * c - a / (b * b + 1), [randn(3, 4), randn(4), randn(3, 1)]),
    "scalar arithmetic": (lambda m, F, a: 2 - a * 3 + 1 / (a * a + 1) - (-a) ** 2, [randn(5)]),
    "pow tensor exponent": (lambda m, F, a, b: m.pow(a, b), [probs(6) + 0.5, randn(6)]),
    "pow of a scalar": (lambda m, F, b: 2 ** b, [randn(4)]),
    "pow fractional": (lambda m, F, a: a ** 0.5 + a.pow(3), [probs(5)]),
    "unary chain": (lambda m, F, a: m.exp(m.tanh(a)) + m.log(m.sqrt(a * a + 1)) + m.sigmoid(a) + m.abs(a),
                    [randn(3, 3)]),
    "relu": (lambda m, F, a: m.relu(a) + F.relu(-a) * 2, [randn(10)]),
    "activations": (lambda m, F, a: F.tanh(a) * F.sigmoid(a), [randn(4)]),
    "maximum": (lambda m, F, a, b: m.maximum(a, b), [randn(3, 4), randn(4)]),
    "maximum ties": (lambda m, F, a: m.maximum(a, m.zeros(4)) + m.relu(a), [np.array([-1.0, 0.0, 0.0, 2.0])]),
    "where": (lambda m, F, a, b: m.where(a > b, a * 2, b - 1), [randn(3, 4), randn(3, 4)]),
    "where broadcast": (lambda m, F, a, b: m.where(a > 0, a, b), [randn(3, 4), randn(4)]),
    "clamp both": (lambda m, F, a: m.clamp(a, -0.5, 0.5), [randn(4, 4)]),
    "clamp min": (lambda m, F, a: a.clamp(min=0.1) * 2, [randn(6)]),
    "clamp tensor bounds": (lambda m, F, a, lo: m.clamp(a, min=lo), [randn(3, 4), randn(4)]),
    "sum all": (lambda m, F, a: a.sum() * a, [randn(2, 3)]),
    "sum dim keepdim": (lambda m, F, a: a / a.sum(dim=1, keepdim=True), [probs(3, 4)]),
    "sum dims": (lambda m, F, a: m.sum(a, dim=(0, 2)), [randn(2, 3, 4)]),
    "mean keepdim": (lambda m, F, a: a - a.mean(dim=-1, keepdim=True), [randn(3, 5)]),
    "mean all": (lambda m, F, a: m.mean(a * a), [randn(4, 2)]),
    "max all": (lambda m, F, a: a.max() * 2, [randn(3, 4)]),
    "max all ties": (lambda m, F, a: a.max(), [np.array([1.0, 3.0, 3.0, 2.0])]),
    "max dim": (lambda m, F, a: a.max(dim=1)[0] * 3, [randn(4, 5)]),
    "max dim ties": (lambda m, F, a: a.max(dim=1)[0] + a.min(dim=0).values.sum(),
                     [np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 7.0], [1.0, 1.0, 0.0]])]),
    "max dim keepdim": (lambda m, F, a: a - a.max(dim=0, keepdim=True).values, [randn(4, 5)]),
    "max dim indices": (lambda m, F, a: a.max(1).indices, [randn(4, 5)]),
    "transpose and T": (lambda m, F, a: a.t() @ a + a.T @ a + a.transpose(0, 1) @ a, [randn(4, 3)]),
    "reshape view": (lambda m, F, a: a.reshape(3, 4).view(2, 6).reshape(-1) * 2, [randn(12)]),
    "indexing ints": (lambda m, F, a: a[1] * a[2, 3] + a[-1], [randn(4, 5)]),
    "indexing slices": (lambda m, F, a: a[1:3, ::2].sum() + a[:, 1:2] * a[:, -2:-1] + a[::3, 0:1].sum(),
                        [randn(4, 5)]),
    "indexing mixed": (lambda m, F, a: a[0, 1:4] + a[1, ...][None, :3], [randn(3, 5)]),
    "float64": (lambda m, F, a, b: F.cross_entropy(a @ b, m.tensor([0, 2, 1])), [randn(3, 4), randn(4, 3)]),
}

FLOAT64 = {"float64"}  # the rest run in float32


def build(module, arrays, dtype):
    tensors = []
    for a in arrays:
        if isinstance(a, fixed):
            tensors.append(module.tensor(np.asarray(a).astype(dtype)))
        elif a.dtype.kind == "f":
            tensors.append(module.tensor(a.astype(dtype), requires_grad=True))
        else:
            tensors.append(module.tensor(a))
    return tensors


def run(module, name, dtype):
    fn, arrays = EXPRESSIONS[name]
    inputs = build(module, arrays, dtype)
    out = fn(module, module.nn.functional, *inputs)
    return inputs, out


@pytest.mark.parametrize("name", list(EXPRESSIONS))
def test_values_gradients_and_grad_fn_match_torch(name):
    dtype = np.float64 if name in FLOAT64 else np.float32
    rtol, atol = (1e-10, 1e-12) if dtype == np.float64 else (2e-5, 1e-6)
    t_in, t_out = run(torch, name, dtype)
    g_in, g_out = run(gradc, name, dtype)
    expected = t_out.detach().numpy()
    assert g_out.shape == tuple(t_out.shape)
    assert g_out.dtype.name == str(t_out.dtype).removeprefix("torch.")
    np.testing.assert_allclose(g_out.detach().numpy(), expected, rtol=rtol, atol=atol)
    if not t_out.requires_grad:
        assert not g_out.requires_grad
        return
    assert g_out.grad_fn.name() == type(t_out.grad_fn).__name__
    cotangent = rng.standard_normal(expected.shape).astype(dtype)
    t_out.backward(torch.tensor(cotangent))
    g_out.backward(gradc.tensor(cotangent))
    for t, g in zip(t_in, g_in):
        if t.grad is None:
            assert g.grad is None
        else:
            np.testing.assert_allclose(g.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=atol * 10)


def test_second_derivatives_match_torch():
    x0 = rng.standard_normal(5)
    results = []
    for m in (torch, gradc):
        x = m.tensor(x0, requires_grad=True)
        y = (m.tanh(x) * x ** 3 + m.exp(x / 3)).sum()
        (g,) = m.autograd.grad(y, x, create_graph=True)
        assert g.requires_grad and g.grad_fn is not None
        (h,) = m.autograd.grad((g * g).sum(), x)
        results.append((g.detach().numpy(), h.numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-10)


def test_hessian_vector_product_through_backward_create_graph_matches_torch():
    w0, v0 = rng.standard_normal((3, 3)), rng.standard_normal((3, 3))
    results = []
    for m in (torch, gradc):
        w = m.tensor(w0, requires_grad=True)
        loss = m.log_softmax(w @ w, dim=1).sum()
        loss.backward(create_graph=True)
        (hv,) = m.autograd.grad((w.grad * m.tensor(v0)).sum(), w)
        results.append(hv.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-9, atol=1e-12)


def test_grad_with_respect_to_an_intermediate_and_a_leaf_matches_torch():
    x0 = rng.standard_normal(4)
    results = []
    for m in (torch, gradc):
        x = m.tensor(x0, requires_grad=True)
        z = m.exp(x)
        y = (z * z).sum()
        gz, gx = m.autograd.grad(y, [z, x], retain_graph=True)
        (go,) = m.autograd.grad(y * 2, y)
        results.append((gz.numpy(), gx.numpy(), go.item()))
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_in_place_rebased_history_matches_torch():
    results = []
    for m in (torch, gradc):
        a = m.tensor([1.0, 2.0, 3.0], requires_grad=True)
        b = a * 2
        c = b + 1  # saves nothing: may be backpropagated after b changes
        b.mul_(a)
        (c * b).sum().backward()
        results.append((a.grad.numpy(), type(b.grad_fn).__name__ if m is torch else b.grad_fn.name()))
    np.testing.assert_allclose(results[1][0], results[0][0])
    assert results[1][1] == results[0][1]
