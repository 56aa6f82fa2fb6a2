"""Transforms on plain Python functions: trace, grad, value_and_grad, vjp, jacobian, hessian."""

import numpy as np
import pytest

import gradc
import gradc.nn.functional as F
from gradc import api
from gradc.ir.verify import verify

rng = np.random.default_rng(0)


def mlp_loss(x, w1, b1, w2, b2, labels):
    hidden = gradc.relu(x @ w1 + b1)
    return F.cross_entropy(hidden @ w2 + b2, labels)


def mlp_args(dtype=np.float32):
    return (rng.standard_normal((8, 7)).astype(dtype), rng.standard_normal((7, 9)).astype(dtype),
            rng.standard_normal(9).astype(dtype), rng.standard_normal((9, 3)).astype(dtype),
            rng.standard_normal(3).astype(dtype), rng.integers(0, 3, 8))


def numeric_grad(fn, args, index, eps=1e-6):
    args = [np.array(a) for a in args]
    x = args[index]
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        hi = float(fn(*args))
        x[i] = old - eps
        lo = float(fn(*args))
        x[i] = old
        grad[i] = (hi - lo) / (2 * eps)
    return grad


@pytest.fixture(params=["interp", "auto"])
def backend(request):
    api.set_backend(request.param)
    yield request.param
    api.set_backend("auto")


def test_value_and_grad_matches_finite_differences(backend):
    args = mlp_args(np.float64)
    value, grads = gradc.value_and_grad(mlp_loss, argnums=(1, 2, 3, 4))(*args)
    forward = gradc.compile(mlp_loss)
    np.testing.assert_allclose(value, forward(*args), rtol=1e-12)
    for k, g in zip((1, 2, 3, 4), grads):
        np.testing.assert_allclose(g, numeric_grad(forward, args, k), rtol=1e-5, atol=1e-7)


def test_grad_int_and_tuple_argnums(backend):
    f = lambda x, y: (gradc.tanh(x) * y).sum()  # noqa: E731
    x, y = np.linspace(-1, 1, 9), np.linspace(2, 3, 9)
    gx = gradc.grad(f)(x, y)
    gx2, gy = gradc.grad(f, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, (1 - np.tanh(x) ** 2) * y, rtol=1e-12)
    np.testing.assert_allclose(gx2, gx, rtol=1e-12)
    np.testing.assert_allclose(gy, np.tanh(x), rtol=1e-12)


def test_results_are_numpy_and_scalars_are_0d(backend):
    value, grad = gradc.value_and_grad(lambda x: (x * x).sum())(np.arange(3.0))
    assert isinstance(value, np.ndarray) and value.shape == ()
    assert isinstance(grad, np.ndarray) and grad.shape == (3,)
    np.testing.assert_allclose(grad, [0.0, 2.0, 4.0])


def test_arguments_may_be_tensors_and_python_scalars(backend):
    f = gradc.value_and_grad(lambda x, s: (x * s).sum())
    value, grad = f(gradc.tensor([1.0, 2.0]), 3.0)
    assert value.dtype == np.float32 and float(value) == pytest.approx(9.0)
    np.testing.assert_allclose(grad, [3.0, 3.0])


def test_specializes_per_shape_and_dtype(backend):
    f = gradc.grad(lambda x: (x ** 2).sum())
    np.testing.assert_allclose(f(np.ones(3, np.float32)), 2 * np.ones(3))
    np.testing.assert_allclose(f(np.ones(5, np.float32)), 2 * np.ones(5))
    assert f(np.ones(2, np.float64)).dtype == np.float64
    assert len(f.specializations) == 3
    np.testing.assert_allclose(f(np.ones(3, np.float32)), 2 * np.ones(3))  # back to a cached one
    assert len(f.specializations) == 3


def test_compile_returns_tuples_like_the_function(backend):
    f = gradc.compile(lambda x: (x + 1, x * 2))
    a, b = f(np.arange(3.0))
    np.testing.assert_allclose(a, [1, 2, 3])
    np.testing.assert_allclose(b, [0, 2, 4])


def test_integer_labels_are_not_differentiable():
    with pytest.raises(TypeError, match="floating point"):
        gradc.grad(mlp_loss, argnums=5)(*mlp_args())


def test_grad_of_non_scalar_output_is_refused():
    with pytest.raises(TypeError, match="scalar"):
        gradc.grad(lambda x: x * 2)(np.ones(3, np.float32))


def test_python_control_flow_on_traced_value_is_refused():
    def f(x):
        if x.sum() > 0:
            return x.sum()
        return -x.sum()
    with pytest.raises(gradc.api.TracerError, match="control flow"):
        gradc.grad(f)(np.ones(3, np.float32))


def test_returning_a_non_tensor_is_refused():
    with pytest.raises(TypeError, match="must return gradc Tensors"):
        gradc.compile(lambda x: 3.0)(np.ones(3, np.float32))


def test_unsupported_argument_types_are_refused():
    with pytest.raises(TypeError, match="float16"):
        gradc.compile(lambda x: x + 1)(np.ones(3, np.float16))
    with pytest.raises(TypeError, match="list"):
        gradc.compile(lambda x: x + 1)([1.0, 2.0])


def test_vjp_of_a_non_scalar_output(backend):
    x = np.linspace(-1, 1, 7)
    out, vjp_fn = gradc.vjp(lambda x, y: gradc.tanh(x) * y, x, np.full(7, 2.0))
    ct = np.arange(7.0)
    gx, gy = vjp_fn(ct)
    np.testing.assert_allclose(out, np.tanh(x) * 2)
    np.testing.assert_allclose(gx, ct * 2 * (1 - np.tanh(x) ** 2), rtol=1e-12)
    np.testing.assert_allclose(gy, ct * np.tanh(x), rtol=1e-12)


def test_jacobian_and_hessian(backend):
    x = np.array([0.3, -0.7, 1.1])
    jac = gradc.jacobian(lambda x: gradc.tanh(x) * x.sum())(x)
    expected = np.diag((1 - np.tanh(x) ** 2) * x.sum()) + np.tanh(x)[:, None]
    np.testing.assert_allclose(jac, expected, rtol=1e-12)
    hess = gradc.hessian(lambda x: (x ** 3).sum() * x[0])(x)
    # f = x0 * sum(x^3): H_ij = 6 x_i x0 [i==j] + 3 x_i^2 [j==0] + 3 x_j^2 [i==0]
    expected = np.diag(6 * x * x[0]) + np.outer(3 * x ** 2, [1, 0, 0]) + np.outer([1, 0, 0], 3 * x ** 2)
    np.testing.assert_allclose(hess, expected, rtol=1e-10)


def test_lower_shows_ir_and_ad_stages():
    spec = gradc.value_and_grad(mlp_loss, argnums=(1,)).lower(*mlp_args())
    assert spec.as_text("ir").startswith("func @mlp_loss(%x: f32[8,7], %w1: f32[7,9]")
    assert "matmul" in spec.as_text("ad") and spec.as_text("ad").count("matmul") >= 4
    verify(spec.joint)
    with pytest.raises(ValueError, match="unknown stage"):
        spec.as_text("nope")


def test_make_ir_prints_the_traced_function():
    text = str(gradc.make_ir(lambda x, y: (x * y).sum())(np.ones((2, 3), np.float32), np.ones(3, np.float32)))
    assert text == (
        "func @f(%x: f32[2,3], %y: f32[3]) -> f32[] {\n"
        "  %0 = broadcast_to %y {shape = [2,3]} : f32[2,3]\n"
        "  %1 = mul %x, %0 : f32[2,3]\n"
        "  %2 = reduce_sum %1 {axes = [0,1]} : f32[]\n"
        "  return %2\n"
        "}\n")


def test_matches_pytorch_on_the_mlp():
    torch = pytest.importorskip("torch")
    args = mlp_args()
    value, grads = gradc.value_and_grad(mlp_loss, argnums=(1, 2, 3, 4))(*args)
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in args]
    x, w1, b1, w2, b2, labels = tensors
    loss = torch.nn.functional.cross_entropy(torch.relu(x @ w1 + b1) @ w2 + b2, labels)
    loss.backward()
    np.testing.assert_allclose(value, loss.item(), rtol=1e-5)
    for g, t in zip(grads, (w1, b1, w2, b2)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-6)
