"""gradc.compile_step: one compiled training step against PyTorch and against gradc's eager step."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim

torch = pytest.importorskip("torch")

STEPS = 20


def models(seed: int = 0):
    gradc.manual_seed(seed)
    g = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 4))
    t = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    t.load_state_dict({k: torch.from_numpy(v) for k, v in g.state_dict().items()})
    return g, t


def batches(n: int = STEPS, size: int = 16, last: int | None = None):
    rng = np.random.default_rng(1)
    out = [(rng.standard_normal((size, 6)).astype(np.float32), rng.integers(0, 4, size)) for _ in range(n)]
    if last:
        out.append((rng.standard_normal((last, 6)).astype(np.float32), rng.integers(0, 4, last)))
    return out


def assert_params_close(actual: dict, expected: dict, rtol: float) -> None:
    for name, value in actual.items():
        want = np.asarray(expected[name])
        np.testing.assert_allclose(value, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=name)


OPTIMIZERS = {
    "sgd-momentum": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "adam": (lambda p: optim.Adam(p, lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adamw-amsgrad": (lambda p: optim.AdamW(p, lr=0.01, amsgrad=True),
                      lambda p: torch.optim.AdamW(p, lr=0.01, amsgrad=True)),
}


@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_compile_step_tracks_pytorch(config):
    make_g, make_t = OPTIMIZERS[config]
    g, t = models()
    step = gradc.compile_step(g, nn.CrossEntropyLoss(), make_g(g.parameters()))
    opt = make_t(t.parameters())
    for x, y in batches():
        opt.zero_grad()
        loss = torch.nn.CrossEntropyLoss()(t(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        np.testing.assert_allclose(step(x, y), loss.item(), rtol=1e-4)
    assert_params_close(g.state_dict(), {k: v.numpy() for k, v in t.state_dict().items()}, rtol=1e-4)


@pytest.mark.parametrize("config", ["sgd-momentum", "adam"])
def test_compile_step_equals_eager_and_respecializes_on_the_last_batch(config):
    make_g, _ = OPTIMIZERS[config]
    eager, _ = models()
    compiled, _ = models()
    eager_opt = make_g(eager.parameters())
    step = gradc.compile_step(compiled, nn.CrossEntropyLoss(), make_g(compiled.parameters()))
    data = batches(8, last=5)
    for x, y in data:
        eager_opt.zero_grad()
        loss = nn.CrossEntropyLoss()(eager(gradc.from_numpy(x)), gradc.from_numpy(y))
        loss.backward()
        eager_opt.step()
        np.testing.assert_allclose(step(x, y), loss.item(), rtol=1e-5)
    assert len(step.specializations) == 2  # the batch of 16 and the last batch of 5
    assert_params_close(compiled.state_dict(), eager.state_dict(), rtol=1e-5)
    # the optimizer state is shared: eager steps continue where compiled ones stopped
    compiled_opt = step.optimizer
    for name in eager_opt.state[eager[0].weight]:
        np.testing.assert_allclose(compiled_opt.state[compiled[0].weight][name].numpy(),
                                   eager_opt.state[eager[0].weight][name].numpy(), rtol=1e-5, atol=1e-7)


def test_compile_step_uses_the_current_lr_and_leaves_grad_alone():
    g, _ = models()
    opt = optim.SGD(g.parameters(), lr=0.1)
    step = gradc.compile_step(g, nn.MSELoss(), opt)
    x = np.ones((4, 6), dtype=np.float32)
    y = np.zeros((4, 4), dtype=np.float32)
    before = g.state_dict()
    opt.param_groups[0]["lr"] = 0.0
    step(x, y)
    assert_params_close(g.state_dict(), before, rtol=0)
    opt.param_groups[0]["lr"] = 0.1
    loss0 = step(x, y)
    assert float(step(x, y)) < float(loss0)
    assert len(step.specializations) == 1
    assert all(p.grad is None for p in g.parameters())


def test_compile_step_with_dropout_is_seeded_and_frozen_params_stay():
    def make():
        gradc.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 4))
    eager, compiled = make(), make()
    compiled[0].weight.requires_grad_(False)
    eager[0].weight.requires_grad_(False)
    frozen = compiled[0].weight.detach().numpy().copy()
    eager_opt = optim.SGD(eager.parameters(), lr=0.1)
    step = gradc.compile_step(compiled, nn.CrossEntropyLoss(), optim.SGD(compiled.parameters(), lr=0.1))
    for k, (x, y) in enumerate(batches(3)):
        gradc.manual_seed(100 + k)
        eager_opt.zero_grad()
        nn.CrossEntropyLoss()(eager(gradc.from_numpy(x)), gradc.from_numpy(y)).backward()
        eager_opt.step()
        gradc.manual_seed(100 + k)  # the same draws: the compiled step makes the same dropout masks
        step(x, y)
    assert_params_close(compiled.state_dict(), eager.state_dict(), rtol=1e-5)
    np.testing.assert_array_equal(compiled[0].weight.detach().numpy(), frozen)
    noise = [p for p in step.lower(*batches(1)[0]).params if p.name and p.name.startswith("noise")]
    assert [p.type.shape for p in noise] == [(16, 32)]
    compiled.eval()
    assert not any(p.name and p.name.startswith("noise") for p in step.lower(*batches(1)[0]).params)


def test_compile_step_is_one_function_with_the_update_inside():
    g, _ = models()
    step = gradc.compile_step(g, nn.CrossEntropyLoss(), optim.Adam(g.parameters()))
    fn = step.lower(*batches(1)[0])
    # params: 4 parameters, 3 Adam states each, the group's hyperparameter vector (lr, betas, eps,
    # weight_decay), x, y; results: loss, 4 parameters, 12 states
    assert len(fn.params) == 4 + 12 + 1 + 2 and len(fn.results) == 1 + 4 + 12
    assert any(op.name == "sqrt" for op in fn.ops) and any(op.name == "matmul" for op in fn.ops)


def test_compile_step_errors():
    g, _ = models()
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not a parameter of the model"):
        gradc.compile_step(g, nn.MSELoss(), optim.SGD(other.parameters(), lr=0.1))
    step = gradc.compile_step(g, nn.MSELoss(reduction="none"), optim.SGD(g.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="loss_fn returning a scalar float tensor"):
        step(np.ones((2, 6), dtype=np.float32), np.ones((2, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="gradc.optim optimizer"):
        gradc.compile_step(g, nn.MSELoss(), object())
