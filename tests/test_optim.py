"""gradc.optim: eager SGD/Adam/AdamW against torch.optim, zero_grad, validation and state_dict."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.optim as optim

torch = pytest.importorskip("torch")

from tests import optim_helpers as H  # noqa: E402
from tests.optim_helpers import eager_step, torch_step  # noqa: E402


def models(seed: int = 0):
    return H.models(seed, (6, 12, 4))


def batches(n: int = H.STEPS):
    return H.batches(n, size=16, features=6, classes=4)


def assert_params_close(g, t, rtol: float = 1e-4) -> None:
    H.assert_params_close(g, t, rtol)


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
