"""The eager tensor API: factories, conversions, attributes and autograd semantics (PyTorch's)."""

import numpy as np
import pytest

import gradc as torch
from gradc import autograd
from gradc.autograd import _JOINT_CACHE
from gradc.ir.core import TensorType, Value, float32
from gradc.tensor import Tensor, Trace, TracerError, apply, tracing

F = torch.nn.functional


# ----------------------------------------------------------------------------- factories

def test_tensor_dtypes_follow_pytorch_defaults():
    assert torch.tensor([1.5, 2.0]).dtype == torch.float32
    assert torch.tensor([1, 2]).dtype == torch.int64
    assert torch.tensor([True, False]).dtype == torch.bool
    assert torch.tensor(np.array([1.0, 2.0])).dtype == torch.float64
    assert torch.tensor([1, 2], dtype=torch.float64).dtype == torch.float64
    assert torch.tensor(2.5).shape == () and torch.tensor(2.5).ndim == 0


def test_tensor_copies_but_from_numpy_shares_memory():
    array = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    copied, shared = torch.tensor(array), torch.from_numpy(array)
    array[0] = 10.0
    assert copied.tolist() == [1.0, 2.0, 3.0]
    assert shared.tolist() == [10.0, 2.0, 3.0]
    assert torch.from_numpy(np.array(5.0)).shape == ()
    with pytest.raises(TypeError, match="expected np.ndarray"):
        torch.from_numpy([1.0, 2.0])


@pytest.mark.parametrize("make, shape", [
    (lambda: torch.ones(2, 3), (2, 3)), (lambda: torch.zeros((4,)), (4,)), (lambda: torch.ones(()), ()),
    (lambda: torch.full((2, 2), 7.0), (2, 2)), (lambda: torch.eye(3), (3, 3)), (lambda: torch.eye(2, 5), (2, 5)),
    (lambda: torch.randn(3, 4), (3, 4)), (lambda: torch.rand([5]), (5,)), (lambda: torch.arange(6), (6,)),
])
def test_factory_shapes_and_default_float32(make, shape):
    t = make()
    assert t.shape == shape and t.numpy().shape == shape
    if t.dtype != torch.int64:
        assert t.dtype == torch.float32


def test_factory_values():
    assert torch.full((2,), 3.5).tolist() == [3.5, 3.5]
    np.testing.assert_array_equal(torch.eye(2, 3).numpy(), np.eye(2, 3))
    assert torch.arange(5).tolist() == [0, 1, 2, 3, 4] and torch.arange(5).dtype == torch.int64
    assert torch.arange(1, 2, 0.25).tolist() == [1.0, 1.25, 1.5, 1.75]
    assert torch.arange(1, 2, 0.25).dtype == torch.float32
    r = torch.rand(1000).numpy()
    assert 0.0 <= r.min() and r.max() < 1.0
    n = torch.randn(20000).numpy()
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1.0) < 0.05


def test_like_factories_keep_shape_and_dtype():
    x = torch.ones(2, 3, dtype=torch.float64)
    assert torch.zeros_like(x).dtype == torch.float64 and torch.zeros_like(x).shape == (2, 3)
    assert torch.ones_like(x).tolist() == [[1.0] * 3] * 2
    assert torch.ones_like(x, requires_grad=True).requires_grad
    assert torch.zeros_like(torch.arange(3)).dtype == torch.int64


def test_manual_seed_makes_random_tensors_reproducible():
    torch.manual_seed(3)
    a, b = torch.randn(4), torch.rand(2)
    torch.manual_seed(3)
    assert torch.randn(4).tolist() == a.tolist() and torch.rand(2).tolist() == b.tolist()
    assert torch.randn(4).tolist() != a.tolist()


def test_requires_grad_flag_on_factories():
    for t in (torch.ones(2, requires_grad=True), torch.zeros(2, requires_grad=True), torch.randn(2, requires_grad=True),
              torch.full((2,), 1.0, requires_grad=True), torch.eye(2, requires_grad=True)):
        assert t.requires_grad and t.is_leaf and t.grad is None and t.grad_fn is None


# ----------------------------------------------------------------------------- conversion, attributes

def test_conversions():
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(t.numpy(), np.ndarray) and t.numpy().dtype == np.float32
    assert t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert t[1, 0].item() == 3.0 and isinstance(t[1, 0].item(), float)
    assert torch.tensor(3).item() == 3 and isinstance(torch.tensor(3).item(), int)
    assert float(torch.tensor([2.5])) == 2.5
    assert t.shape == (2, 2) and t.size() == (2, 2) and t.size(1) == 2 and t.numel() == 4 and len(t) == 2
    assert torch.tensor([1.0], requires_grad=True).detach().numpy().tolist() == [1.0]


def test_requires_grad_and_is_leaf():
    x = torch.ones(3)
    assert not x.requires_grad
    assert x.requires_grad_() is x and x.requires_grad and x.is_leaf
    y = x * 2
    assert y.requires_grad and not y.is_leaf and y.grad_fn.name() == "MulBackward0"
    assert (torch.ones(3) * 2).grad_fn is None  # nothing requires grad: nothing recorded
    x.requires_grad_(False)
    assert not (x * 2).requires_grad


def test_next_functions_link_nodes_and_accumulators():
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    c = a * b
    d = c + torch.ones(2)
    (mul, _), (none, _) = d.grad_fn.next_functions
    assert mul is c.grad_fn and none is None
    (acc_a, _), (acc_b, _) = mul.next_functions
    assert acc_a.name() == "AccumulateGrad" and acc_a.variable is a and acc_b.variable is b
    assert (a * 3).grad_fn.next_functions[0][0] is acc_a  # one accumulator per leaf


def test_integer_and_bool_arithmetic():
    i = torch.tensor([1, 2, 3])
    assert (i + 1).dtype == torch.int64 and (i + 1).tolist() == [2, 3, 4]
    assert (i / 2).dtype == torch.float32 and (i / 2).tolist() == [0.5, 1.0, 1.5]
    assert (i * 1.5).dtype == torch.float32
    assert (i > 1).dtype == torch.bool and (i > 1).tolist() == [False, True, True]
    assert torch.where(i > 1, i, 0).tolist() == [0, 2, 3]


# ----------------------------------------------------------------------------- autograd

def test_backward_with_gradient_and_accumulation():
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    y.backward(torch.tensor([1.0, 0.5, 0.0]), retain_graph=True)
    assert x.grad.tolist() == [2.0, 2.0, 0.0]
    y.backward(torch.tensor([1.0, 1.0, 1.0]))
    assert x.grad.tolist() == [4.0, 6.0, 6.0]
    x.grad.zero_()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0, 3.0]


def test_grad_of_fan_out_sums_contributions():
    x = torch.tensor(2.0, requires_grad=True)
    y = x * x * x + x  # x used four times
    y.backward()
    assert x.grad.item() == 13.0


def test_detach_shares_data_and_stops_gradient():
    x = torch.ones(3, requires_grad=True)
    d = x.detach()
    assert not d.requires_grad and d.is_leaf and np.shares_memory(d.numpy(), x.detach().numpy())
    y = (x * d).sum()
    y.backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_no_grad_enable_grad_and_set_grad_enabled():
    x = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        assert not torch.is_grad_enabled()
        assert not (x * 2).requires_grad
        with torch.enable_grad():
            assert (x * 2).requires_grad
        assert not (x * 2).requires_grad
    assert torch.is_grad_enabled() and (x * 2).requires_grad

    @torch.no_grad()
    def double(t):
        return t * 2
    assert not double(x).requires_grad and torch.is_grad_enabled()
    with torch.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad


def test_in_place_update_of_a_leaf_under_no_grad_then_new_graph():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    with torch.no_grad():
        w -= 0.5 * w.grad  # an SGD step: allowed under no_grad, as in PyTorch
    assert w.tolist() == [0.0, 0.0] and w.is_leaf and w.requires_grad
    w.grad.zero_()
    ((w + 1) * (w + 1)).sum().backward()
    assert w.grad.tolist() == [2.0, 2.0]


def test_autograd_grad_leaves_dot_grad_alone():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    y = x * w
    gx, gw = autograd.grad(y, [x, w], grad_outputs=torch.ones(2))
    assert gx.tolist() == [3.0, 4.0] and gw.tolist() == [1.0, 2.0]
    assert x.grad is None and w.grad is None
    with pytest.raises(RuntimeError, match="^Trying to backward through the graph a second time"):
        autograd.grad(y.sum(), x)


def test_autograd_grad_retain_graph_and_allow_unused():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.ones(2, requires_grad=True)
    y = (torch.exp(x)).sum()
    (g1,) = autograd.grad(y, x, retain_graph=True)
    (g2,) = autograd.grad(y, x, retain_graph=True)
    np.testing.assert_allclose(g1.numpy(), np.exp([1.0, 2.0]), rtol=1e-6)
    # the second call may run the tiered-up native adjoint: equal within its math error, not bitwise
    np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-6)
    gx, gu = autograd.grad(y, [x, unused], allow_unused=True)
    assert gu is None
    np.testing.assert_allclose(gx.numpy(), g1.numpy(), rtol=1e-6)


def test_create_graph_gives_a_differentiable_gradient():
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    y = (x ** 3).sum()
    (g,) = autograd.grad(y, x, create_graph=True)
    assert g.requires_grad and not g.is_leaf and g.grad_fn is not None
    np.testing.assert_allclose(g.detach().numpy(), 3 * x.detach().numpy() ** 2)
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.detach().numpy())


def test_backward_inputs_restricts_accumulation():
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    (a * b * 3).sum().backward(inputs=[a])
    assert a.grad.tolist() == [3.0, 3.0] and b.grad is None


def test_backward_of_a_long_chain_does_not_recurse():
    x = torch.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad.item(), 1.0001 ** 3000, rtol=1e-4)
    assert y.grad_fn.next_functions[0][0].name() == "MulBackward0"


def test_identical_graphs_reuse_one_joint_function():
    def step(v):
        x = torch.tensor(v, requires_grad=True)
        F.mse_loss(torch.tanh(x * 2), torch.zeros(3)).backward()
        return x.grad
    step([1.0, 2.0, 3.0])
    size = len(_JOINT_CACHE)
    g = step([0.1, 0.2, 0.3])
    assert len(_JOINT_CACHE) == size  # same structure: no new AD run
    x = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(g.numpy(), 2 * np.tanh(2 * x) * (1 - np.tanh(2 * x) ** 2) * 2 / 3, rtol=1e-5)


def test_in_place_on_non_leaf_is_recorded():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = a * 2
    b.add_(a)
    assert b.grad_fn.name() == "AddBackward0" and b.tolist() == [3.0, 6.0]
    b.sum().backward()
    assert a.grad.tolist() == [3.0, 3.0]
    c = a * 2
    c.zero_()
    assert c.grad_fn.name() == "ZeroBackward0"
    (c + a).sum().backward()
    assert a.grad.tolist() == [4.0, 4.0]


# ----------------------------------------------------------------------------- ops

def test_max_with_dim_returns_values_and_indices():
    x = torch.tensor([[1.0, 5.0, 5.0], [7.0, 2.0, 3.0]], requires_grad=True)
    values, indices = x.max(dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0] and indices.dtype == torch.int64
    assert values.grad_fn.name() == "MaxBackward0"
    kept = torch.max(x, 0, keepdim=True)
    assert kept.values.shape == (1, 3) and kept.indices.tolist() == [[1, 0, 0]]
    values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]  # the gradient goes to the argmax


def test_indexing_with_ints_slices_none_and_ellipsis():
    x = torch.arange(24).reshape(2, 3, 4)
    a = np.arange(24).reshape(2, 3, 4)
    for key in [1, -1, (0, 2), (slice(None), 1), (1, slice(1, 3)), (..., 2), (None, 0), (slice(None, None, 2),),
                (0, ..., slice(1, None, 2)), (1, 2, 3)]:
        assert x[key].tolist() == a[key].tolist(), key


def test_reductions_transposes_and_views():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = torch.tensor(a)
    assert x.sum().item() == a.sum() and x.sum(0).tolist() == a.sum(0).tolist()
    assert x.mean(dim=1, keepdim=True).tolist() == a.mean(1, keepdims=True).tolist()
    assert x.t().tolist() == a.T.tolist() and x.T.tolist() == a.T.tolist()
    assert x.transpose(0, 1).shape == (4, 3) and x.view(2, 6).shape == (2, 6) and x.reshape(-1).shape == (12,)
    assert torch.sum(x, dim=-1).tolist() == a.sum(-1).tolist()


# ----------------------------------------------------------------------------- traced tensors

def test_ops_on_traced_tensors_emit_ir_and_refuse_conversion():
    trace = Trace()
    with tracing(trace):
        x = Tensor._from_value(Value(TensorType((2, 3), float32), name="x"))
        y = torch.relu(x * 2).sum(dim=1)
        assert y.is_traced and y.shape == (2,) and repr(y) == "tensor(<traced f32[2]>)"
        assert [op.name for op in trace.builder.ops][-2:] == ["relu", "reduce_sum"]
        with pytest.raises(TracerError, match="needs a concrete value"):
            y.numpy()
        with pytest.raises(TracerError):
            bool(y.sum() > 0)


def test_apply_evaluates_primitives_eagerly():
    out = apply("add", torch.ones(2), torch.ones(2))
    assert out.tolist() == [2.0, 2.0] and out._record is None
