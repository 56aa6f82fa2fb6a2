"""gradc.optim.lr_scheduler against torch.optim.lr_scheduler: lr (and momentum) sequences, state_dicts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gradc
import gradc.optim as optim
from gradc.optim import lr_scheduler

torch = pytest.importorskip("torch")

EPOCHS = 40


def optimizers(name: str = "SGD", **kwargs):
    """The same two-group optimizer in both libraries (second group with its own lr)."""
    g = [gradc.zeros(3, requires_grad=True), gradc.zeros(2, requires_grad=True)]
    t = [torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)]
    args = dict(lr=0.1, **kwargs)
    og = getattr(optim, name)([{"params": [g[0]]}, {"params": [g[1]], "lr": 0.02}], **args)
    ot = getattr(torch.optim, name)([{"params": [t[0]]}, {"params": [t[1]], "lr": 0.02}], **args)
    return og, ot


def lambda_scale(epoch):
    return 0.95 ** epoch


def mult(epoch):
    return 0.9 if epoch % 3 else 1.05


# name -> (optimizer kwargs, build(lib_lr_scheduler, optimizer))
SCHEDULES = {
    "StepLR": ("SGD", {}, lambda m, o: m.StepLR(o, step_size=7, gamma=0.5)),
    "MultiStepLR": ("SGD", {}, lambda m, o: m.MultiStepLR(o, milestones=[3, 10, 10, 25], gamma=0.3)),
    "ExponentialLR": ("SGD", {}, lambda m, o: m.ExponentialLR(o, gamma=0.9)),
    "CosineAnnealingLR": ("SGD", {}, lambda m, o: m.CosineAnnealingLR(o, T_max=12, eta_min=0.001)),
    "CosineAnnealingWarmRestarts": ("SGD", {}, lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2,
                                                                                           eta_min=0.01)),
    "LambdaLR": ("SGD", {}, lambda m, o: m.LambdaLR(o, lr_lambda=[lambda_scale, lambda e: 1 / (1 + e)])),
    "MultiplicativeLR": ("SGD", {}, lambda m, o: m.MultiplicativeLR(o, lr_lambda=mult)),
    "LinearLR": ("SGD", {}, lambda m, o: m.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=9)),
    "ConstantLR": ("SGD", {}, lambda m, o: m.ConstantLR(o, factor=0.5, total_iters=6)),
    "PolynomialLR": ("SGD", {}, lambda m, o: m.PolynomialLR(o, total_iters=20, power=2.0)),
    "OneCycleLR-sgd": ("SGD", {"momentum": 0.9},
                       lambda m, o: m.OneCycleLR(o, max_lr=[0.5, 0.1], total_steps=EPOCHS + 1)),
    "OneCycleLR-adam-linear-3phase": ("Adam", {}, lambda m, o: m.OneCycleLR(
        o, max_lr=0.3, epochs=EPOCHS + 1, steps_per_epoch=1, anneal_strategy="linear", three_phase=True)),
    "CyclicLR": ("SGD", {"momentum": 0.9}, lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=[0.1, 0.05],
                                                                   step_size_up=4, step_size_down=6)),
    "CyclicLR-triangular2-adam": ("Adam", {}, lambda m, o: m.CyclicLR(o, base_lr=0.001, max_lr=0.01, step_size_up=3,
                                                                      mode="triangular2")),
    "CyclicLR-exp_range": ("RMSprop", {"momentum": 0.5}, lambda m, o: m.CyclicLR(
        o, base_lr=0.001, max_lr=0.01, step_size_up=5, mode="exp_range", gamma=0.97)),
    "SequentialLR": ("SGD", {}, lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.ExponentialLR(o, gamma=0.9),
            m.StepLR(o, step_size=4, gamma=0.5)], milestones=[5, 15])),
    "ChainedScheduler": ("SGD", {}, lambda m, o: m.ChainedScheduler(
        [m.ConstantLR(o, factor=0.5, total_iters=4), m.ExponentialLR(o, gamma=0.95),
         m.CosineAnnealingLR(o, T_max=9)])),
}


def momentum_of(group):
    return group["betas"][0] if "betas" in group else group.get("momentum")


def run(lib, sched_lib, config):
    name, kwargs, build = SCHEDULES[config]
    opt = config_opt = optimizers(name, **kwargs)[0 if lib is optim else 1]
    sched = build(sched_lib, opt)
    lrs, momenta = [sched.get_last_lr()], [[momentum_of(g) for g in config_opt.param_groups]]
    for _ in range(EPOCHS):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
        momenta.append([momentum_of(g) for g in opt.param_groups])
    return sched, opt, lrs, momenta


@pytest.mark.parametrize("config", list(SCHEDULES))
def test_lr_sequence_equals_pytorch(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'scheduler before optimizer' warning on either side
        sg, og, lrs_g, mom_g = run(optim, lr_scheduler, config)
        st, ot, lrs_t, mom_t = run(torch.optim, torch.optim.lr_scheduler, config)
    np.testing.assert_allclose(np.array(lrs_g, dtype=float), np.array(lrs_t, dtype=float), rtol=1e-12, atol=0)
    np.testing.assert_allclose(np.array(mom_g, dtype=float), np.array(mom_t, dtype=float), rtol=1e-12)
    assert [g["lr"] for g in og.param_groups] == pytest.approx([g["lr"] for g in ot.param_groups], rel=1e-12)
    # the state_dict holds the same entries as PyTorch's (functions left out the same way)
    state_g, state_t = sg.state_dict(), st.state_dict()
    assert set(state_g) == set(state_t)
    for key in ("last_epoch", "_step_count", "base_lrs", "_last_lr"):
        if key in state_t:
            assert state_g[key] == pytest.approx(state_t[key], rel=1e-12), key


@pytest.mark.parametrize("config", ["StepLR", "CosineAnnealingWarmRestarts", "OneCycleLR-sgd", "CyclicLR",
                                    "SequentialLR", "LambdaLR"])
def test_state_dict_resumes_the_schedule(config):
    name, kwargs, build = SCHEDULES[config]
    opt, _ = optimizers(name, **kwargs)
    sched = build(lr_scheduler, opt)
    for _ in range(13):
        opt.step()
        sched.step()
    saved, groups = sched.state_dict(), [dict(g) for g in opt.state_dict()["param_groups"]]
    expected = []
    for _ in range(10):
        opt.step()
        sched.step()
        expected.append(sched.get_last_lr())
    opt2, _ = optimizers(name, **kwargs)
    sched2 = build(lr_scheduler, opt2)
    opt2.load_state_dict({"state": {}, "param_groups": groups})
    sched2.load_state_dict(saved)
    got = []
    for _ in range(10):
        opt2.step()
        sched2.step()
        got.append(sched2.get_last_lr())
    assert got == expected


def test_reduce_lr_on_plateau_equals_pytorch():
    metrics = [1.0, 0.9, 0.91, 0.92, 0.93, 0.95, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.7, 0.71] * 3
    out = []
    for lib in (optim, torch.optim):
        opt = optimizers("SGD")[0 if lib is optim else 1]
        sched = lib.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1, min_lr=[0.01, 0.004])
        lrs = []
        for m in metrics:
            opt.step()
            sched.step(gradc.tensor(m, dtype=gradc.float64) if lib is optim else m)  # a tensor metric works
            lrs.append(sched.get_last_lr())
        out.append((lrs, {k: v for k, v in sched.state_dict().items()}))
    (lrs_g, state_g), (lrs_t, state_t) = out
    assert lrs_g == lrs_t
    assert state_g == state_t


def test_max_mode_abs_threshold_plateau():
    out = []
    for lib in (optim, torch.optim):
        opt = optimizers("SGD")[0 if lib is optim else 1]
        sched = lib.lr_scheduler.ReduceLROnPlateau(opt, mode="max", threshold=0.05, threshold_mode="abs", patience=1)
        for m in [0.1, 0.12, 0.13, 0.2, 0.21, 0.22, 0.4]:
            sched.step(m)
        out.append(sched.get_last_lr())
    assert out[0] == out[1]


def test_closed_form_with_epoch_argument_warns_like_pytorch():
    out = []
    for lib in (optim, torch.optim):
        opt = optimizers("SGD")[0 if lib is optim else 1]
        sched = lib.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        opt.step()
        with pytest.warns(UserWarning, match="epoch parameter"):
            sched.step(7)
        out.append(sched.get_last_lr())
    assert out[0] == out[1] == [0.1 * 0.25, 0.02 * 0.25]


def test_scheduler_before_optimizer_warns():
    opt, _ = optimizers("SGD")
    sched = lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step\\(\\)`"):
        sched.step()


def test_bad_arguments():
    opt, _ = optimizers("Adagrad")
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    with pytest.raises(ValueError, match="You must define either total_steps OR"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, cycle_momentum=False)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="Expected positive integer T_0"):
        lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=0)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=2, cycle_momentum=False)
    opt.step()
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match="Tried to step 3 times"):
        sched.step()


def test_schedules_drive_compile_step_without_recompiling():
    import gradc.nn as nn
    gradc.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=12)  # cycles lr and momentum
    step = gradc.compile_step(model, nn.MSELoss(), opt)
    x, y = np.ones((5, 4), np.float32), np.zeros((5, 2), np.float32)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(11):
            losses.append(float(step(x, y)))
            sched.step()
    assert len(step.specializations) == 1 and losses[-1] < losses[0]
    assert math.isclose(opt.param_groups[0]["lr"], sched.get_last_lr()[0])
