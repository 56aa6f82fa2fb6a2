"""PyTorch-equality tests for gradc's autograd extension points: what a custom Function's backward receives
(set_materialize_grads), module full backward hooks and pre-hooks (arguments, replaced gradients, errors),
tensor hooks through autograd.grad, and the one hook mechanism the eager engine and DDP share."""

from __future__ import annotations

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")


def same(a, b, rtol=1e-6, atol=1e-7):
    if a is None or b is None:
        assert a is None and b is None, (a, b)
        return
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


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
