"""PyTorch-equality tests for gradc's autograd extension points: what a custom Function's backward receives
(set_materialize_grads), module full backward hooks and pre-hooks (arguments, replaced gradients, errors),
tensor hooks through autograd.grad, and the one hook mechanism the eager engine and DDP share."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")

from tests.torch_compare import same  # noqa: E402


def kinds(grads):
    """None, or the dtype name of each gradient a backward or hook received."""
    return tuple(None if g is None else str(g.dtype).replace("torch.", "").replace("gradc.", "") for g in grads)


# ----------------------------------------------------------------------------- set_materialize_grads

def four_outputs(lib, log):
    class Four(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, materialize):
            ctx.set_materialize_grads(materialize)
            return x * 2, x * 3, (x > 0).long(), x * 4

        @staticmethod
        def backward(ctx, a, b, c, d):
            log.append(kinds((a, b, c, d)))
            total = None
            for g, k in ((a, 2.0), (b, 3.0), (d, 4.0)):
                if g is not None:
                    total = g * k if total is None else total + g * k
            return total, None

    return Four


USES = {  # which outputs the loss reads
    "first": lambda a, b, c, d: a.sum(),
    "first_and_last": lambda a, b, c, d: a.sum() + (d * d).sum(),
    "second_times_zero": lambda a, b, c, d: (b * 0).sum(),
    "all": lambda a, b, c, d: (a * b).sum() + d.sum(),
}


@pytest.mark.parametrize("materialize", [True, False])
@pytest.mark.parametrize("use", sorted(USES))
def test_materialize_grads_eager_matches_torch(materialize, use):
    got = {}
    for lib in (torch, gradc):
        log = []
        x = lib.tensor([1.0, -2.0, 0.5], requires_grad=True)
        loss = USES[use](*four_outputs(lib, log).apply(x, materialize))
        loss.backward()
        got[lib.__name__] = (log[-1], x.grad)  # gradc also calls backward once to fingerprint its IR
    assert got["gradc"][0] == got["torch"][0]
    same(got["gradc"][1], got["torch"][1])
    if not materialize:
        assert None in got["torch"][0]  # the case that can fail: no zeros for outputs without gradient


@pytest.mark.parametrize("materialize", [True, False])
def test_materialize_grads_traced_matches_torch_eager(materialize):
    log = []
    four = four_outputs(gradc, log)
    x = np.array([1.0, -2.0, 0.5], dtype=np.float32)

    def f(x):
        a, b, c, d = four.apply(x, materialize)
        return (b * b).sum()

    g = gradc.grad(f)(x)
    torch_log = []
    t = torch.tensor(x, requires_grad=True)
    f_torch = four_outputs(torch, torch_log)
    _, b, _, _ = f_torch.apply(t, materialize)
    (b * b).sum().backward()
    assert log == torch_log
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6)
    step_log = []
    fn = four_outputs(gradc, step_log)
    model = gradc.nn.Linear(3, 3)
    step = gradc.compile_step(model, lambda out, y: fn.apply(out, materialize)[3].sum(),
                              gradc.optim.SGD(model.parameters(), lr=0.1))
    step(gradc.randn(2, 3), gradc.zeros(2))
    assert step_log == [(None, None, None, "float32") if not materialize else ("float32",) * 2 + ("int64", "float32")]


def test_materialize_grads_off_through_double_backward_matches_torch():
    got = {}
    for lib in (torch, gradc):
        class Powers(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                ctx.set_materialize_grads(False)
                return x * x, x * x * x

            @staticmethod
            def backward(ctx, a, b):
                (x,) = ctx.saved_tensors
                g = 0
                if a is not None:
                    g = g + a * 2 * x
                if b is not None:
                    g = g + b * 3 * x * x
                return g

        x = lib.tensor([1.5, -0.5], requires_grad=True)
        results = []
        for use in (lambda a, b: b.sum(), lambda a, b: (a + b).sum()):
            (g,) = lib.autograd.grad(use(*Powers.apply(x)), x, create_graph=True)
            (h,) = lib.autograd.grad(g.sum(), x)
            results += [g, h]
        got[lib.__name__] = results
    for a, b in zip(got["gradc"], got["torch"]):
        same(a, b)


# ----------------------------------------------------------------------------- module full backward hooks

def values(grads):
    return [None if g is None else g.detach().numpy().copy() for g in grads]


def same_logs(a, b):
    assert len(a) == len(b), (a, b)
    for (tag_a, *xs), (tag_b, *ys) in zip(a, b):
        assert tag_a == tag_b
        for u, v in zip(xs, ys):
            assert len(u) == len(v) and [x is None for x in u] == [y is None for y in v], (tag_a, u, v)
            for p, q in zip(u, v):
                if p is not None:
                    assert p.dtype == q.dtype and p.shape == q.shape
                    np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-7)


def two_way(lib):
    class TwoWay(lib.nn.Module):
        def forward(self, a, n, b, c):
            return a * 2 + c, b * 3, n

    return TwoWay()


def test_full_backward_hooks_replace_gradients_as_torch():
    got = {}
    for lib in (torch, gradc):
        log = []
        m = two_way(lib)

        def pre(mod, gout):
            log.append(("pre", values(gout)))
            return (gout[0] + 1, None, None)

        def hook(mod, gin, gout):
            log.append(("hook", values(gin), values(gout)))
            return (gin[0] * 10, None, None, None)  # b gets no gradient, c's entry is ignored

        m.register_full_backward_pre_hook(pre)
        m.register_full_backward_hook(hook)
        a = lib.tensor([1.0, 2.0], requires_grad=True)
        b = lib.tensor([3.0, 4.0], requires_grad=True)
        c = lib.tensor([5.0, 6.0])
        y, z, n = m(a, 7, b, c)
        assert type(y.grad_fn).__name__ == "BackwardHookFunctionBackward" and n == 7
        (y * y).sum().backward()
        got[lib.__name__] = (log, a.grad, b.grad)
    same_logs(got["gradc"][0], got["torch"][0])
    assert [e[0] for e in got["gradc"][0]] == ["pre", "hook"]
    same(got["gradc"][1], got["torch"][1])
    assert got["gradc"][2] is None and got["torch"][2] is None


def test_full_backward_hooks_see_what_torch_passes():
    """Unused inputs get zeros, unused outputs None, int inputs int zeros; tensor hooks and retain_grad on a
    module output run before its pre-hooks; inner modules before outer ones; prepend; autograd.grad."""
    got = {}
    for lib in (torch, gradc):
        log = []
        nn = lib.nn

        class Pick(nn.Module):
            def forward(self, x, i, unused):
                return x * i, x * 3

        pick = Pick()
        pick.register_full_backward_pre_hook(lambda m, go: log.append(("pre", values(go))))
        pick.register_full_backward_hook(lambda m, gi, go: log.append(("hook", values(gi), values(go))))
        pick.register_full_backward_hook(lambda m, gi, go: log.append(("first", values(gi))), prepend=True)
        x = lib.tensor([1.0, -2.0], requires_grad=True)
        u = lib.tensor([0.5, 0.5], requires_grad=True)
        first, _ = pick(x, lib.tensor([2, 3]), u)
        first.register_hook(lambda g: (log.append(("tensor", values([g]))), g * 2)[1])
        first.retain_grad()
        first.sum().backward()
        log.append(("retained", values([first.grad])))

        seq = nn.Sequential(nn.Identity(), nn.Tanh())
        seq.register_full_backward_hook(lambda m, gi, go: log.append(("outer", values(gi))))
        seq[1].register_full_backward_hook(lambda m, gi, go: log.append(("inner", values(gi))))
        seq[0].register_full_backward_pre_hook(lambda m, go: log.append(("pre0", values(go))))
        (g,) = lib.autograd.grad(seq(x * 2).sum(), x)
        log.append(("grad", values([g])))
        got[lib.__name__] = (log, x.grad, u.grad)
    same_logs(got["gradc"][0], got["torch"][0])
    same(got["gradc"][1], got["torch"][1])
    same(got["gradc"][2], got["torch"][2])


def test_module_and_tensor_hooks_on_one_graph_are_ordered_as_torch():
    """A module's input group and tensor hooks inside and before it: each gradient is final before it flows on."""
    got = {}
    for lib in (torch, gradc):
        class Mix(lib.nn.Module):
            def forward(self, p, q):
                y = p * 2
                y.register_hook(lambda g: g + 1)
                return y * q + q.exp()

        m = Mix()
        m.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 10, gi[1] * 100))
        x = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
        z = x * 3
        z.register_hook(lambda g: g * 2)
        w = x.sin()
        (m(w, z) * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
        got[lib.__name__] = x.grad
    same(got["gradc"], got["torch"], rtol=1e-5)


def hook_error_cases(lib):
    nn = lib.nn
    x = lib.ones(2, requires_grad=True)
    cases = {
        "hook length": (nn.Linear(2, 2), "hook", lambda m, gi, go: (gi[0], gi[0]), x),
        "pre-hook length": (nn.Linear(2, 2), "pre", lambda m, go: (go[0], go[0]), x),
        "pre-hook returns a tensor": (nn.Identity(), "pre", lambda m, go: go[0] * 2, x),
        "no input needs grad": (nn.Linear(2, 2), "hook", lambda m, gi, go: (lib.ones(2),), lib.ones(2)),
        "size": (nn.Linear(2, 2), "hook", lambda m, gi, go: (lib.ones(3),), x),
        "type": (nn.Identity(), "hook", lambda m, gi, go: (gi[0].double(),), x),
        "not a tensor": (nn.Identity(), "hook", lambda m, gi, go: (5,), x),
        "pre-hook not a tensor": (nn.Identity(), "pre", lambda m, go: (5,), x),
    }
    return cases


@pytest.mark.parametrize("case", sorted(hook_error_cases(gradc)))
def test_full_backward_hook_errors_match_torch(case):
    errors = []
    for lib in (torch, gradc):
        module, kind, hook, x = hook_error_cases(lib)[case]
        (module.register_full_backward_hook if kind == "hook" else module.register_full_backward_pre_hook)(hook)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(Exception) as info:
                module(x).sum().backward()
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_full_backward_hook_warnings_match_torch():
    messages = {}
    for lib in (torch, gradc):
        nn = lib.nn
        calls = []

        class Listed(nn.Module):
            def forward(self, x):
                return [x * 2]

        listed = Listed()
        listed.register_full_backward_hook(lambda m, gi, go: calls.append("listed"))
        lin = nn.Linear(2, 2)
        lin.register_full_backward_hook(lambda m, gi, go: calls.append(("lin", gi, values(go))))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = listed(lib.ones(2, requires_grad=True))
            out[0].sum().backward()
            lin(lib.ones(2)).sum().backward()  # no input requires grad: the hook fires from the outputs
        messages[lib.__name__] = ([str(w.message) for w in caught], calls)
    assert messages["gradc"][0] == messages["torch"][0] and len(messages["torch"][0]) == 2
    (_, gi, go), (_, gi_t, go_t) = messages["gradc"][1][0], messages["torch"][1][0]
    assert len(messages["gradc"][1]) == len(messages["torch"][1]) == 1 and gi == gi_t == (None,)
    np.testing.assert_allclose(go[0], go_t[0])


def hooked_mlp(lib, log):
    m = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2))
    m[1].register_full_backward_hook(lambda mod, gi, go: (log.append("tanh"), (gi[0] * 0.5,))[1])
    m[2].register_full_backward_pre_hook(lambda mod, go: (log.append("pre2"), (go[0] + 1,))[1])
    m[0].register_full_backward_hook(lambda mod, gi, go: log.append(("lin0", gi[0] is None)))
    return m


def test_full_backward_hooks_in_a_compiled_step_match_torch():
    """In compile_step the hooks run while the step is traced and what they return is compiled in."""
    torch_log, gradc_log = [], []
    gradc.manual_seed(0)
    compiled = hooked_mlp(gradc, gradc_log)
    reference = hooked_mlp(torch, torch_log)
    with torch.no_grad():
        for p, q in zip(reference.parameters(), compiled.parameters()):
            p.copy_(torch.tensor(q.detach().numpy()))
    step = gradc.compile_step(compiled, gradc.nn.MSELoss(), gradc.optim.SGD(compiled.parameters(), lr=0.1))
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    xs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    ys = np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            step(gradc.tensor(xs), gradc.tensor(ys))
            opt.zero_grad()
            torch.nn.MSELoss()(reference(torch.tensor(xs)), torch.tensor(ys)).backward()
            opt.step()
    for p, q in zip(reference.parameters(), compiled.parameters()):
        same(q, p, rtol=1e-5, atol=1e-6)
    assert torch_log == gradc_log * 3 == ["pre2", "tanh", ("lin0", True)] * 3  # once per trace in gradc
    assert any("no inputs require gradients" in str(w.message) for w in caught)


def test_full_backward_hooks_under_grad_transform_match_torch():
    log = []
    gradc.manual_seed(0)
    model = hooked_mlp(gradc, log)
    reference = hooked_mlp(torch, [])
    with torch.no_grad():
        for p, q in zip(reference.parameters(), model.parameters()):
            p.copy_(torch.tensor(q.detach().numpy()))
    x = np.random.default_rng(2).normal(size=(4, 3)).astype(np.float32)
    g = gradc.grad(lambda x: (model(x) ** 2).sum())(x)
    t = torch.tensor(x, requires_grad=True)
    (reference(t) ** 2).sum().backward()
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert log == ["pre2", "tanh", ("lin0", False)]  # the input is differentiated: lin0 sees its gradient


# ----------------------------------------------------------------------------- one hook mechanism

def test_autograd_grad_runs_tensor_hooks_and_retains_grads_as_torch():
    got = {}
    for lib in (torch, gradc):
        seen = []
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        x.register_hook(lambda g: g * 5)
        x.register_post_accumulate_grad_hook(lambda t: seen.append("post"))  # not run by autograd.grad
        y = x * 2
        y.register_hook(lambda g: g * 3)
        y.retain_grad()
        side = x * 7
        side.register_hook(lambda g: seen.append("side"))  # not needed for y's gradient: not run
        (gx,) = lib.autograd.grad(y.sum(), x, retain_graph=True)
        (gy,) = lib.autograd.grad((y * y).sum() + side.sum(), y)
        got[lib.__name__] = (gx, gy, y.grad, seen)
    for a, b in zip(got["gradc"][:3], got["torch"][:3]):
        same(a, b)
    assert got["gradc"][3] == got["torch"][3] == []


def test_hook_tables_live_and_die_with_their_tensors(monkeypatch):
    import gc

    from gradc.autograd import hooks
    gc.collect()
    before = hooks._live[0]
    x = gradc.ones(2, requires_grad=True)
    handle = x.register_hook(lambda g: g * 2)
    x.register_post_accumulate_grad_hook(lambda t: None)
    assert hooks._live[0] == before + 1 and hooks.live()  # one table for every kind of hook
    (x * 3).sum().backward()
    assert x.grad.tolist() == [6.0, 6.0]
    handle.remove()
    del x, handle
    gc.collect()
    assert hooks._live[0] == before

    def never(*args, **kwargs):
        raise AssertionError("the plain path must not stage")

    monkeypatch.setattr(hooks, "_live", [0])
    monkeypatch.setattr(hooks, "staged_backward", never)
    w = gradc.ones(2, requires_grad=True)
    (w * 4).sum().backward()
    assert w.grad.tolist() == [4.0, 4.0]


def test_traced_backward_hooks_with_mixed_dtypes_are_a_clear_error():
    class Add(gradc.nn.Module):
        def forward(self, a, b):
            return a + b

    m = Add()
    m.register_full_backward_hook(lambda mod, gi, go: None)
    x = np.ones(2, dtype=np.float32)
    with pytest.raises(NotImplementedError, match="Add: inside gradc.grad / compile_step, full backward hooks"):
        gradc.grad(lambda x: m(x, x.double()).sum())(x)
