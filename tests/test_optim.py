"""gradc.optim: eager SGD/Adam/AdamW against torch.optim, zero_grad, validation and state_dict."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim

torch = pytest.importorskip("torch")

STEPS = 20


def models(seed: int = 0):
    """A gradc MLP and a PyTorch MLP with identical initial parameters."""
    gradc.manual_seed(seed)
    g = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 4))
    t = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 4))
    t.load_state_dict({k: torch.from_numpy(v) for k, v in g.state_dict().items()})
    return g, t


def batches(n: int = STEPS, size: int = 16):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((size, 6)).astype(np.float32), rng.integers(0, 4, size)) for _ in range(n)]


def eager_step(model, opt, x, y) -> float:
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(gradc.from_numpy(x)), gradc.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()


def torch_step(model, opt, x, y) -> float:
    opt.zero_grad()
    loss = torch.nn.CrossEntropyLoss()(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()


def assert_params_close(g, t, rtol: float = 1e-4) -> None:
    expected = t.state_dict()
    for name, value in g.state_dict().items():
        # relative to the parameter's scale, so entries that pass near zero do not dominate
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=rtol, atol=rtol * np.abs(value).max(),
                                   err_msg=name)


CONFIGS = {
    "sgd": (lambda p: optim.SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd-momentum": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "sgd-nesterov-wd": (lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
                        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sgd-dampening": (lambda p: optim.SGD(p, lr=0.1, momentum=0.8, dampening=0.3),
                      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, dampening=0.3)),
    "adam": (lambda p: optim.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam-amsgrad-wd": (lambda p: optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.05),
                        lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True, weight_decay=0.05)),
    "adamw": (lambda p: optim.AdamW(p, lr=0.01, betas=(0.8, 0.99)),
              lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.8, 0.99))),
}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_eager_optimizer_tracks_pytorch(config):
    make_g, make_t = CONFIGS[config]
    g, t = models()
    og, ot = make_g(g.parameters()), make_t(t.parameters())
    for x, y in batches():
        np.testing.assert_allclose(eager_step(g, og, x, y), torch_step(t, ot, x, y), rtol=1e-4)
    assert_params_close(g, t)
    state = og.state[g[0].weight]
    torch_state = ot.state[t[0].weight]
    assert set(torch_state) <= set(state)  # SGD with dampening keeps an extra step counter
    for name, value in torch_state.items():
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), rtol=1e-4,
                                   atol=1e-4 * np.abs(value.numpy()).max())


def test_lr_changes_between_steps_are_used():
    g, t = models()
    og, ot = optim.Adam(g.parameters(), lr=0.01), torch.optim.Adam(t.parameters(), lr=0.01)
    for i, (x, y) in enumerate(batches(6)):
        og.param_groups[0]["lr"] = ot.param_groups[0]["lr"] = 0.01 / (i + 1)
        eager_step(g, og, x, y), torch_step(t, ot, x, y)
    assert_params_close(g, t)


def test_zero_grad_and_params_without_grad():
    g, _ = models()
    opt = optim.SGD(g.parameters(), lr=1.0)
    g[2](gradc.randn(3, 12)).sum().backward()  # only the last layer gets gradients
    before = g[0].weight.detach().numpy().copy()
    opt.step()
    np.testing.assert_array_equal(g[0].weight.detach().numpy(), before)
    assert g[0].weight not in opt.state or not opt.state[g[0].weight]
    opt.zero_grad(set_to_none=False)
    assert g[2].weight.grad is not None and not g[2].weight.grad.numpy().any()
    opt.zero_grad()
    assert g[2].weight.grad is None


def test_param_groups_use_their_own_hyperparameters():
    g, t = models()
    og = optim.SGD([{"params": g[0].parameters(), "lr": 0.5}, {"params": g[2].parameters()}], lr=0.1, momentum=0.5)
    ot = torch.optim.SGD([{"params": t[0].parameters(), "lr": 0.5}, {"params": t[2].parameters()}], lr=0.1,
                         momentum=0.5)
    for x, y in batches(5):
        eager_step(g, og, x, y), torch_step(t, ot, x, y)
    assert_params_close(g, t)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-1), "Invalid learning rate"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "Nesterov momentum requires a momentum and zero dampening"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "Invalid beta parameter at index 1"),
    (lambda p: optim.Adam(p, eps=-1), "Invalid epsilon value"),
    (lambda p: optim.AdamW([]), "optimizer got an empty parameter list"),
])
def test_invalid_hyperparameters(make, message):
    g, _ = models()
    with pytest.raises(ValueError, match=message):
        make(g.parameters())


def test_optimizer_rejects_non_leaf_and_duplicates():
    g, _ = models()
    with pytest.raises(ValueError, match="can't optimize a non-leaf Tensor"):
        optim.SGD([g[0].weight * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [g[0].weight]}, {"params": [g[0].weight]}], lr=0.1)


def test_optimizer_state_dict_round_trip():
    g, _ = models()
    opt = optim.Adam(g.parameters(), lr=0.01)
    for x, y in batches(3):
        eager_step(g, opt, x, y)
    saved = opt.state_dict()
    h, _ = models()
    h.load_state_dict(g.state_dict())
    opt2 = optim.Adam(h.parameters(), lr=0.5)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == 0.01
    for x, y in batches(2):
        eager_step(g, opt, x, y), eager_step(h, opt2, x, y)
    for name, value in g.state_dict().items():
        np.testing.assert_array_equal(h.state_dict()[name], value)
