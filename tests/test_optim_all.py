"""Every gradc.optim optimizer against torch.optim: 20+ steps, param groups, maximize, weight decay variants,
eager and compile_step, and state_dicts that go both ways."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim

torch = pytest.importorskip("torch")

from tests.optim_helpers import assert_params_close, batches, eager_step, models, torch_step  # noqa: E402


@pytest.fixture(autouse=True)
def _torch_single_threaded():
    """Tiny tensors on a shared machine: torch's thread pool only spins (60 ms backward calls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# the rest run their compiled updates on the interpreter (same IR, no LLVM compile per shape: fast tests)
NATIVE_EAGER = {"sgd-maximize-wd", "rmsprop-centered-momentum-wd", "nadam", "adagrad-decay-init-wd"}
NATIVE_STEP = {"radam", "adamax-wd", "adadelta"}  # with NATIVE_EAGER: each optimizer natively once


@pytest.fixture
def interp():
    """The numpy interpreter runs the compiled updates: same IR, no LLVM compile per parameter shape."""
    before = gradc.api.get_backend()
    gradc.set_backend("interp")
    yield
    gradc.set_backend(before)


def assert_state_close(og, ot, rtol: float = 2e-4) -> None:
    mine, theirs = og.state_dict(), ot.state_dict()
    assert mine["state"].keys() == theirs["state"].keys()
    for i, state in theirs["state"].items():
        assert set(mine["state"][i]) == set(state), i
        for name, value in state.items():
            v = value.numpy()
            got = mine["state"][i][name].numpy()
            assert got.dtype == v.dtype and got.shape == v.shape, name
            np.testing.assert_allclose(got, v, rtol=rtol, atol=rtol * np.abs(v).max() + 1e-30, err_msg=name)
    for a, b in zip(mine["param_groups"], theirs["param_groups"]):
        assert a == b


# name -> (constructor name, keyword arguments); the same call on both libraries
CONFIGS = {
    "sgd-maximize-wd": ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, maximize=True)),
    "rmsprop": ("RMSprop", dict(lr=0.01)),
    "rmsprop-centered-momentum-wd": ("RMSprop", dict(lr=0.005, alpha=0.9, eps=1e-6, centered=True, momentum=0.8,
                                                     weight_decay=0.01)),
    "rmsprop-momentum-maximize": ("RMSprop", dict(lr=0.003, momentum=0.5, maximize=True)),
    "adagrad": ("Adagrad", dict(lr=0.1)),
    "adagrad-decay-init-wd": ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1,
                                              weight_decay=0.02, eps=1e-8)),
    "adadelta": ("Adadelta", dict()),
    "adadelta-rho-wd-maximize": ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.05, maximize=True)),
    "adamax": ("Adamax", dict(lr=0.01)),
    "adamax-wd": ("Adamax", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.02)),
    "nadam": ("NAdam", dict(lr=0.01)),
    "nadam-decoupled": ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True, momentum_decay=0.01)),
    "nadam-wd-maximize": ("NAdam", dict(lr=0.01, weight_decay=0.05, maximize=True)),
    "radam": ("RAdam", dict(lr=0.01)),
    "radam-decoupled": ("RAdam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.05, decoupled_weight_decay=True)),
    "radam-wd": ("RAdam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.05)),
    "adam-maximize-amsgrad": ("Adam", dict(lr=0.01, amsgrad=True, maximize=True)),
    "adam-decoupled": ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "adamw-betas": ("AdamW", dict(lr=0.01, betas=(0.3, 0.9))),  # 1 - beta1 > 0.5: lerp's other branch
}


def make(config: str, g, t):
    name, kwargs = CONFIGS[config]
    return getattr(optim, name)(g.parameters(), **kwargs), getattr(torch.optim, name)(t.parameters(), **kwargs)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_eager_optimizer_equals_pytorch(config, request):
    if config not in NATIVE_EAGER:
        request.getfixturevalue("interp")
    g, t = models()
    og, ot = make(config, g, t)
    for x, y in batches():
        np.testing.assert_allclose(eager_step(g, og, x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert_params_close(g, t)
    assert_state_close(og, ot)


@pytest.mark.parametrize("config", ["rmsprop-centered-momentum-wd", "adagrad-decay-init-wd", "adadelta",
                                    "adamax-wd", "nadam-decoupled", "radam", "sgd-maximize-wd"])
def test_compile_step_equals_pytorch(config, request):
    if config not in NATIVE_STEP:
        request.getfixturevalue("interp")
    g, t = models()
    og, ot = make(config, g, t)
    step = gradc.compile_step(g, nn.CrossEntropyLoss(), og)
    for x, y in batches():
        np.testing.assert_allclose(step(x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert_params_close(g, t)
    assert_state_close(og, ot)


GROUPED = {
    "SGD": (dict(lr=0.1, momentum=0.5), dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1)),
    "Adam": (dict(lr=0.01), dict(lr=0.003, betas=(0.5, 0.9), weight_decay=0.1, amsgrad=True)),
    "RMSprop": (dict(lr=0.01), dict(lr=0.002, alpha=0.8, centered=True, momentum=0.3)),
    "NAdam": (dict(lr=0.01), dict(lr=0.02, betas=(0.7, 0.95), maximize=True)),
}


def grouped(lib, model, name):
    first, second = GROUPED[name]
    groups = [{"params": model[0].parameters(), **second}, {"params": model[2].parameters()}]
    return getattr(lib, name)(groups, **first)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compile_step"])
@pytest.mark.parametrize("name", list(GROUPED))
def test_param_groups_have_their_own_hyperparameters(name, compiled, request):
    if name != "Adam":
        request.getfixturevalue("interp")
    g, t = models()
    og, ot = grouped(optim, g, name), grouped(torch.optim, t, name)
    step = gradc.compile_step(g, nn.CrossEntropyLoss(), og) if compiled else None
    for x, y in batches(12):
        loss = step(x, y) if compiled else eager_step(g, og, x, y)
        np.testing.assert_allclose(loss, torch_step(t, ot, x, y), rtol=2e-4)
    assert_params_close(g, t)
    assert_state_close(og, ot)


def test_add_param_group_and_frozen_groups(interp):
    g, t = models()
    og = optim.RMSprop(g[0].parameters(), lr=0.01)
    ot = torch.optim.RMSprop(t[0].parameters(), lr=0.01)
    for i, (x, y) in enumerate(batches(10)):
        if i == 4:
            og.add_param_group({"params": g[2].parameters(), "lr": 0.03, "momentum": 0.5})
            ot.add_param_group({"params": t[2].parameters(), "lr": 0.03, "momentum": 0.5})
        np.testing.assert_allclose(eager_step(g, og, x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert_params_close(g, t)
    assert_state_close(og, ot)
    with pytest.raises(ValueError, match="more than one parameter group"):
        og.add_param_group({"params": [g[0].weight]})


def test_compile_step_schedules_hyperparameters_without_recompiling():
    g, t = models()
    og = optim.Adam([{"params": g[0].parameters()}, {"params": g[2].parameters(), "lr": 0.02}], lr=0.01)
    ot = torch.optim.Adam([{"params": t[0].parameters()}, {"params": t[2].parameters(), "lr": 0.02}], lr=0.01)
    step = gradc.compile_step(g, nn.CrossEntropyLoss(), og)
    for i, (x, y) in enumerate(batches(10)):
        for o in (og, ot):  # each group's lr and beta1 cycle as OneCycleLR does it
            o.param_groups[0]["lr"] = 0.01 / (1 + i)
            o.param_groups[0]["betas"] = (0.85 + 0.01 * i, 0.999)
            o.param_groups[1]["lr"] = 0.02 * 0.9 ** i
            o.param_groups[1]["betas"] = (0.9, 0.99 + 0.0005 * i)
        np.testing.assert_allclose(step(x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert len(step.specializations) == 1
    spec = next(iter(step.specializations.values()))
    for o in (og, ot):  # structure change: weight decay switched on -> a rebuilt step, still right
        o.param_groups[0]["weight_decay"] = 0.1
    for x, y in batches(3):
        np.testing.assert_allclose(step(x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert next(iter(step.specializations.values())) is not spec
    assert_params_close(g, t)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam"])
def test_state_dict_goes_both_ways_with_torch(name, interp):
    kwargs = dict(lr=0.01, momentum=0.9, dampening=0.2) if name == "SGD" else \
        dict(lr=0.01, momentum=0.5, centered=True) if name == "RMSprop" else dict(lr=0.01)
    g, t = models()
    og = getattr(optim, name)(g.parameters(), **kwargs)
    ot = getattr(torch.optim, name)(t.parameters(), **kwargs)
    data = batches(12)
    for x, y in data[:6]:
        torch_step(t, ot, x, y)
    # torch -> numpy -> gradc: a fresh gradc optimizer continues exactly where torch's stopped
    g.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    saved = ot.state_dict()
    og.load_state_dict({"state": {i: {k: v.numpy() for k, v in s.items()} for i, s in saved["state"].items()},
                        "param_groups": saved["param_groups"]})
    assert_state_close(og, ot, rtol=0)
    # gradc -> numpy -> torch: a fresh torch optimizer continues from gradc's state
    t2 = models()[1]
    ot2 = getattr(torch.optim, name)(t2.parameters(), **kwargs)
    for x, y in data[6:]:
        eager_step(g, og, x, y), torch_step(t, ot, x, y)
    assert_params_close(g, t)
    mine = og.state_dict()
    t2.load_state_dict({k: torch.from_numpy(v) for k, v in g.state_dict().items()})
    ot2.load_state_dict({"state": {i: {k: torch.from_numpy(v.numpy()) for k, v in s.items()}
                                   for i, s in mine["state"].items()}, "param_groups": mine["param_groups"]})
    for x, y in batches(3):
        eager_step(g, og, x, y), torch_step(t2, ot2, x, y)
    assert_params_close(g, t2)


def test_load_state_dict_keeps_a_compiled_step_bound():
    g, _ = models()
    og = optim.Adam(g.parameters(), lr=0.01)
    step = gradc.compile_step(g, nn.CrossEntropyLoss(), og)
    data = batches(6)
    step(*data[0])
    saved = og.state_dict()
    weights = g.state_dict()
    step(*data[1])
    step(*data[2])
    og.load_state_dict(saved)  # written into the bound state tensors in place
    g.load_state_dict(weights)
    h, _ = models()
    h.load_state_dict(weights)
    oh = optim.Adam(h.parameters(), lr=0.01)
    oh.load_state_dict(saved)
    for x, y in data[3:]:
        np.testing.assert_allclose(step(x, y), eager_step(h, oh, x, y), rtol=1e-5)


def test_zero_grad_set_to_none_and_state_is_per_parameter():
    g, _ = models()
    opt = optim.NAdam(g.parameters())
    g(gradc.randn(4, 5)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in g.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in g.parameters())
    assert opt.state[g[0].weight] == {}


@pytest.mark.parametrize("make_opt, error, message", [
    (lambda p: optim.RMSprop(p, alpha=-0.1), ValueError, "Invalid alpha value"),
    (lambda p: optim.RMSprop(p, lr=-1), ValueError, "Invalid learning rate"),
    (lambda p: optim.Adadelta(p, rho=1.5), ValueError, "Invalid rho value"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), ValueError, "Invalid lr_decay value"),
    (lambda p: optim.NAdam(p, momentum_decay=-1), ValueError, "Invalid momentum_decay value"),
    (lambda p: optim.RAdam(p, betas=(1.0, 0.9)), ValueError, "Invalid beta parameter at index 0"),
    (lambda p: optim.Adamax(p, eps=-1), ValueError, "Invalid epsilon value"),
    (lambda p: optim.SGD([{"params": set(p)}], lr=0.1), TypeError, "ordered collections"),
    (lambda p: optim.SGD(next(iter(p)), lr=0.1), TypeError, "iterable of Tensors or dicts"),
    (lambda p: optim.Adam(p, differentiable=True), NotImplementedError, "differentiable"),
])
def test_invalid_arguments(make_opt, error, message):
    g, _ = models()
    with pytest.raises(error, match=message):
        make_opt(g.parameters())


def test_named_parameters_and_repr():
    g, t = models()
    og, ot = optim.Adam(g.named_parameters(), lr=0.1), torch.optim.Adam(t.named_parameters(), lr=0.1)
    assert og.param_groups[0]["param_names"] == ot.param_groups[0]["param_names"]
    assert "Parameter Group 0" in repr(og) and "betas: (0.9, 0.999)" in repr(og)


def test_a_user_optimizer_written_the_pytorch_way():
    def define(lib):
        class SignSGD(lib.optim.Optimizer):
            def __init__(self, params, lr=0.01, momentum=0.5):
                super().__init__(params, dict(lr=lr, momentum=momentum))

            @lib.no_grad()
            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        state = self.state[p]
                        if "buf" not in state:
                            state["buf"] = lib.zeros_like(p)
                        state["buf"].mul_(group["momentum"]).add_(p.grad)
                        p.sub_(state["buf"] * group["lr"])
        return SignSGD

    g, t = models()
    og, ot = define(gradc)(g.parameters(), lr=0.05), define(torch)(t.parameters(), lr=0.05)
    for x, y in batches(6):
        np.testing.assert_allclose(eager_step(g, og, x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert_params_close(g, t)
    assert og.state_dict()["param_groups"] == ot.state_dict()["param_groups"]


def test_eager_step_is_one_call_per_group_and_updates_in_place():
    g, t = models()
    og = optim.Adam([{"params": g[0].parameters()}, {"params": g[2].parameters(), "lr": 0.02}], lr=0.01)
    ot = torch.optim.Adam([{"params": t[0].parameters()}, {"params": t[2].parameters(), "lr": 0.02}], lr=0.01)
    weight_view = g[0].weight.detach().numpy()  # a view of the parameter's buffer
    readonly = np.array(g[2].bias.detach().numpy())
    readonly.flags.writeable = False
    g[2].bias._data = readonly  # a read-only buffer still gets its update (rebound)
    for x, y in batches(5):
        np.testing.assert_allclose(eager_step(g, og, x, y), torch_step(t, ot, x, y), rtol=2e-4)
    assert_params_close(g, t)
    np.testing.assert_array_equal(weight_view, g[0].weight.detach().numpy())
    assert len(og._update_cache) == 2  # one compiled update per group (of all its parameters)
