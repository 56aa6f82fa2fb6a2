"""The scaffold the optimizer tests share: a gradc MLP and a PyTorch MLP with identical weights, seeded
classification batches, one eager training step for each library, and parameter comparison."""

from __future__ import annotations

import numpy as np

import gradc
import gradc.nn as nn

STEPS = 20


def models(seed: int = 0, sizes: tuple[int, int, int] = (5, 7, 3)):
    """A gradc MLP (Linear-Tanh-Linear of `sizes`) and a PyTorch one with the same initial parameters."""
    import torch
    gradc.manual_seed(seed)
    a, b, c = sizes
    g = nn.Sequential(nn.Linear(a, b), nn.Tanh(), nn.Linear(b, c))
    t = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.Tanh(), torch.nn.Linear(b, c))
    t.load_state_dict({k: torch.from_numpy(v) for k, v in g.state_dict().items()})
    return g, t


def batches(n: int = STEPS, size: int = 9, features: int = 5, classes: int = 3):
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((size, features)).astype(np.float32), rng.integers(0, classes, size))
            for _ in range(n)]


def eager_step(model, opt, x, y) -> float:
    opt.zero_grad()
    loss = nn.CrossEntropyLoss()(model(gradc.from_numpy(x)), gradc.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()


def torch_step(model, opt, x, y) -> float:
    import torch
    opt.zero_grad()
    loss = torch.nn.CrossEntropyLoss()(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()


def assert_params_close(g, t, rtol: float = 2e-4) -> None:
    expected = t.state_dict()
    for name, value in g.state_dict().items():
        # relative to the parameter's scale, so entries that pass near zero do not dominate
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=rtol, atol=rtol * np.abs(value).max(),
                                   err_msg=name)
