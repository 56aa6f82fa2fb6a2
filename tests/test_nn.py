"""gradc.nn: the Module API, state_dict exchange with PyTorch, layers and losses against PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradc
import gradc.nn as nn

torch = pytest.importorskip("torch")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6, padding_idx=0)
        self.body = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, idx):
        return self.body(self.embed(idx))


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 6, padding_idx=0)
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.LayerNorm(8),
                                        torch.nn.Dropout(0.2), torch.nn.Linear(8, 3))

    def forward(self, idx):
        return self.body(self.embed(idx))


def to_torch(module: nn.Module, torch_module):
    torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in module.state_dict().items()})
    return torch_module


# ----------------------------------------------------------------------------- Module API

def test_names_shapes_and_repr_match_pytorch():
    g, t = Net(), TorchNet()
    assert [(n, p.shape) for n, p in g.named_parameters()] == [(n, tuple(p.shape)) for n, p in t.named_parameters()]
    assert list(g.state_dict()) == list(t.state_dict())
    assert repr(g) == repr(t).replace("TorchNet(", "Net(", 1)
    assert [n for n, _ in g.named_children()] == ["embed", "body"]
    assert [type(m).__name__ for m in g.modules()][1:] == [type(m).__name__ for m in t.modules()][1:]


def test_parameter_repr_and_registration():
    data = np.array([[0.5, -1.25], [2.0, 3.0]], dtype=np.float32)
    p = nn.Parameter(gradc.from_numpy(data))
    assert p.requires_grad and p.is_leaf
    assert repr(p) == repr(torch.nn.Parameter(torch.from_numpy(data)))
    m = nn.Module()
    m.w = p
    m.child = nn.Linear(2, 2)
    m.plain = 3
    assert [n for n, _ in m.named_parameters()] == ["w", "child.weight", "child.bias"]
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'w'"):
        m.w = gradc.zeros(2)
    m.w = None
    assert [n for n, _ in m.named_parameters()] == ["child.weight", "child.bias"]


def test_train_eval_and_zero_grad():
    g = Net()
    g.eval()
    assert not any(m.training for m in g.modules())
    g.train()
    assert all(m.training for m in g.modules())
    loss = g.body(gradc.randn(4, 6)).sum()
    loss.backward()
    assert all(p.grad is not None for p in g.body.parameters())
    g.zero_grad(set_to_none=False)
    assert all(not p.grad.numpy().any() for p in g.body.parameters())
    g.zero_grad()
    assert all(p.grad is None for p in g.parameters())


def test_linear_init_is_kaiming_uniform_and_seeded():
    gradc.manual_seed(3)
    a = nn.Linear(400, 300)
    gradc.manual_seed(3)
    b = nn.Linear(400, 300)
    np.testing.assert_array_equal(a.weight.detach().numpy(), b.weight.detach().numpy())
    bound = 1 / math.sqrt(400)
    for p in (a.weight, a.bias):
        values = p.detach().numpy()
        assert values.dtype == np.float32 and np.abs(values).max() <= bound
    assert abs(a.weight.detach().numpy().std() - bound / math.sqrt(3)) < 0.02 * bound
    assert nn.Linear(400, 300).weight.detach().numpy()[0, 0] != a.weight.detach().numpy()[0, 0]


# ----------------------------------------------------------------------------- state_dict

def test_state_dict_round_trip_and_copies():
    a, b = Net().eval(), Net().eval()
    idx = gradc.tensor([[1, 2, 0], [9, 3, 4]])
    assert not np.allclose(a(idx).detach().numpy(), b(idx).detach().numpy())
    state = a.state_dict()
    b.load_state_dict(state)
    np.testing.assert_array_equal(a(idx).detach().numpy(), b(idx).detach().numpy())
    state["body.0.bias"][:] = 100  # a copy: the model is untouched
    assert np.abs(a.body[0].bias.detach().numpy()).max() < 1


def test_load_state_dict_errors_name_key_and_shape():
    g = Net()
    state = g.state_dict()
    state["body.4.weight"] = np.zeros((5, 8), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"size mismatch for body\.4\.weight: copying a param with shape "
                                           r"\[5, 8\] from checkpoint, the shape in current model is \[3, 8\]"):
        g.load_state_dict(state)
    state = g.state_dict()
    del state["embed.weight"]
    state["extra"] = np.zeros(1)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "embed.weight"'):
        g.load_state_dict(state)
    with pytest.raises(RuntimeError, match=r'Unexpected key\(s\) in state_dict: "extra"'):
        g.load_state_dict(state)
    missing, unexpected = g.load_state_dict(state, strict=False)
    assert missing == ["embed.weight"] and unexpected == ["extra"]


def test_state_dict_moves_gradc_torch_gradc():
    g = Net().eval()
    t = to_torch(g, TorchNet()).eval()
    idx = np.array([[1, 2, 0, 7], [9, 3, 4, 4]])
    with torch.no_grad():
        expected = t(torch.from_numpy(idx)).numpy()
    np.testing.assert_allclose(g(gradc.from_numpy(idx)).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    back = Net().eval()
    back.load_state_dict(t.state_dict())  # torch tensors are accepted as they are
    np.testing.assert_array_equal(back(gradc.from_numpy(idx)).detach().numpy(),
                                  g(gradc.from_numpy(idx)).detach().numpy())


# ----------------------------------------------------------------------------- layers vs PyTorch

def check_layer(g_layer, t_layer, x: np.ndarray, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Forward values and input/parameter gradients of one layer agree with PyTorch's."""
    if any(True for _ in g_layer.parameters()):
        to_torch(g_layer, t_layer)
    gx = gradc.tensor(x, requires_grad=x.dtype.kind == "f")
    tx = torch.tensor(x, requires_grad=x.dtype.kind == "f")
    gy, ty = g_layer(gx), t_layer(tx)
    np.testing.assert_allclose(gy.detach().numpy(), ty.detach().numpy(), rtol=rtol, atol=atol)
    w = np.random.default_rng(0).standard_normal(ty.shape).astype(np.float32)
    (gy * gradc.from_numpy(w)).sum().backward()
    (ty * torch.from_numpy(w)).sum().backward()
    if x.dtype.kind == "f":
        np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=rtol, atol=atol)
    for (name, p), (_, q) in zip(g_layer.named_parameters(), t_layer.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


def test_gelu_matches_pytorch_and_float64_erf():
    x = np.concatenate([np.linspace(-12, 12, 481), [-40, -9.5, -1e-3, 0.0, 1e-3, 9.5, 40]]).astype(np.float32)
    # PyTorch's float32 kernel computes 0.5 x (1 + erf(x / sqrt 2)) and loses the negative tail to
    # cancellation (absolute error ~|x| 6e-8); gradc's erfc form keeps it, so compare with both
    # (its gradient, Phi(x) + x phi(x), likewise becomes 0 near x = -5.5 where the true value is ~ -2e-6)
    check_layer(nn.GELU(), torch.nn.GELU(), x, rtol=2e-6, atol=3e-6)
    wide = x.astype(np.float64)
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in wide])
    pdf = np.exp(-wide * wide / 2) / math.sqrt(2 * math.pi)
    gx = gradc.tensor(x, requires_grad=True)
    y = nn.GELU()(gx)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), wide * cdf, rtol=3e-7, atol=1e-44)
    np.testing.assert_allclose(gx.grad.numpy(), cdf + wide * pdf, rtol=1e-6, atol=1e-7)  # the zero near -0.75
    check_layer(nn.GELU("tanh"), torch.nn.GELU("tanh"), x, rtol=2e-6, atol=3e-6)
    with pytest.raises(RuntimeError, match="approximate argument must be either none or tanh"):
        nn.GELU("erf")


def test_gelu_gradient_rule_compiled_eager_and_second_order():
    """gelu's custom VJP (Phi = gelu(x) / x, a series near 0): the compiled and eager gradients agree with
    float64 Phi + x phi in float32 (including |x| < 1e-4 and 0), and its derivative (second order, through
    the rule again) with float64 central differences of the first derivative."""
    x = np.concatenate([np.linspace(-9, 9, 181), [-1e-5, 0.0, 3e-5, -1e-4, 1e-4]]).astype(np.float32)
    wide = x.astype(np.float64)
    cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in wide])
    pdf = np.exp(-wide * wide / 2) / math.sqrt(2 * math.pi)
    g = gradc.grad(lambda t: nn.GELU()(t).sum())
    np.testing.assert_allclose(g(x), cdf + wide * pdf, rtol=1e-6, atol=1e-7)
    gx = gradc.tensor(x, requires_grad=True)
    nn.GELU()(gx).sum().backward()
    np.testing.assert_allclose(gx.grad.numpy(), cdf + wide * pdf, rtol=1e-6, atol=1e-7)
    x64 = np.array([-3.0, -0.7, -1e-5, 0.0, 2e-5, 0.4, 2.5])
    dd = np.diag(gradc.hessian(lambda u: nn.GELU()(u).sum())(x64))
    h = 1e-5
    first = gradc.grad(lambda u: nn.GELU()(u).sum())
    fd = (first(x64 + h) - first(x64 - h)) / (2 * h)
    np.testing.assert_allclose(dd, fd, rtol=1e-5, atol=1e-6)
    exact = (2 - x64 * x64) * np.exp(-x64 * x64 / 2) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(dd, exact, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda m: m.LayerNorm(7), lambda m: m.LayerNorm((3, 7)), lambda m: m.Linear(7, 5), lambda m: m.Tanh(),
    lambda m: m.Sigmoid(), lambda m: m.ReLU(), lambda m: m.Softmax(dim=-1), lambda m: m.LogSoftmax(dim=1),
    lambda m: m.Flatten(), lambda m: m.Flatten(0, 1),
])
def test_layers_match_pytorch(make):
    x = np.random.default_rng(1).standard_normal((2, 3, 7)).astype(np.float32)
    g = make(nn)
    t = make(torch.nn)
    assert repr(g) == repr(t)
    check_layer(g, t, x)


def test_embedding_matches_pytorch_with_padding():
    idx = np.array([[0, 3, 3], [9, 0, 1]])
    check_layer(nn.Embedding(10, 4, padding_idx=0), torch.nn.Embedding(10, 4, padding_idx=0), idx)
    g = nn.Embedding(10, 4, padding_idx=0)
    assert not g.weight.detach().numpy()[0].any()
    with pytest.raises(IndexError, match="index out of range in self"):
        g(gradc.tensor([10]))


def test_dropout_eval_identity_train_seeded():
    x = gradc.ones(200, 50, requires_grad=True)
    d = nn.Dropout(0.3)
    assert d.eval()(x) is x
    d.train()
    gradc.manual_seed(7)
    a = d(x)
    gradc.manual_seed(7)
    b = d(x)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())
    values = a.detach().numpy()
    kept = values != 0
    assert set(np.unique(values)) == {0.0, np.float32(1 / 0.7)}
    assert abs(kept.mean() - 0.7) < 0.02
    a.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), values)  # gradient = mask / (1 - p)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("name, target", [
    ("MSELoss", "float"), ("CrossEntropyLoss", "label"), ("BCEWithLogitsLoss", "float"), ("NLLLoss", "label"),
])
def test_loss_modules_match_pytorch(name, target):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 4, 6) if target == "label" else rng.random((6, 4)).astype(np.float32)
    if name == "NLLLoss":
        x = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    for reduction in ("mean", "sum"):
        g, t = getattr(nn, name)(reduction=reduction), getattr(torch.nn, name)(reduction=reduction)
        gx, tx = gradc.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        gl, tl = g(gx, gradc.from_numpy(y)), t(tx, torch.from_numpy(y))
        np.testing.assert_allclose(gl.item(), tl.item(), rtol=1e-6)
        gl.backward(), tl.backward()
        np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="is not a valid value for reduction"):
        getattr(nn, name)(reduction="avg")


# ----------------------------------------------------------------------------- gradc.compile(module)

def test_compile_module_reads_current_weights_and_respecializes():
    g = Net().eval()
    f = gradc.compile(g)
    idx = np.array([[1, 2, 0], [9, 3, 4]])
    np.testing.assert_allclose(f(idx), g(gradc.from_numpy(idx)).detach().numpy(), rtol=1e-5, atol=1e-6)
    with gradc.no_grad():
        g.body[4].bias.add_(1.0)
    np.testing.assert_allclose(f(idx), g(gradc.from_numpy(idx)).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert len(f.specializations) == 1
    assert f(idx[:1]).shape == (1, 3, 3) and len(f.specializations) == 2


def test_compiled_dropout_uses_the_seeded_generator():
    model = nn.Sequential(nn.Linear(5, 64), nn.Dropout(0.5)).train()
    x = np.random.default_rng(3).standard_normal((8, 5)).astype(np.float32)
    f = gradc.compile(model)
    gradc.manual_seed(11)
    eager = model(gradc.from_numpy(x)).detach().numpy()
    gradc.manual_seed(11)
    compiled = f(x)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)
    assert (compiled == 0).mean() > 0.3
    assert not np.array_equal(f(x), compiled)  # a fresh mask per call


def test_dropout_in_a_plain_traced_function_asks_for_a_module():
    with pytest.raises(RuntimeError, match="dropout in training mode inside a traced function"):
        gradc.compile(lambda x: nn.ops.dropout(x, 0.5, True))(np.ones(3, dtype=np.float32))
