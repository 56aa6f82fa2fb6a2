"""nanoGPT's model, written for PyTorch, run by gradc with only the module swapped: eager and compile_step."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
from tests.nanogpt_model import Config, build

torch = pytest.importorskip("torch")


def _pair(flash: bool):
    cfg = Config(flash=flash)
    torch.manual_seed(0)
    tm, gm = build(torch)(cfg), build(gradc)(cfg)
    gm.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    return tm, gm


@pytest.mark.parametrize("flash", [True, False])  # SDPA, or the manual masked_fill(tril == 0, -inf) path
def test_eager_loss_gradients_and_generate(flash):
    tm, gm = _pair(flash)
    assert gm.n_params == tm.n_params  # the tied weight counts once
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    tgt[0, 0] = -1  # ignore_index=-1
    lt = tm(torch.tensor(idx), torch.tensor(tgt))[1]
    lt.backward()
    lg = gm(gradc.tensor(idx), gradc.tensor(tgt))[1]
    lg.backward()
    np.testing.assert_allclose(lg.item(), lt.item(), rtol=1e-5)
    grads = dict(gm.named_parameters())
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(grads[name].grad.numpy(), p.grad.numpy(), rtol=2e-4, atol=2e-5, err_msg=name)
    out = gm.generate(gradc.tensor(idx[:, :2]), 9, top_k=3)  # logits[logits < v[:, [-1]]] = -inf inside
    assert out.shape == (3, 11) and (out.numpy()[:, :2] == idx[:, :2]).all()


@pytest.mark.parametrize("flash", [True, False])
def test_compile_step_with_configure_optimizers(flash):
    tm, gm = _pair(flash)
    rng = np.random.default_rng(1)
    idx, tgt = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 1))
    topt, gopt = tm.configure_optimizers(0.1, 1e-2, (0.9, 0.95)), gm.configure_optimizers(0.1, 1e-2, (0.9, 0.95))
    F = gradc.nn.functional
    step = gradc.compile_step(gm, lambda out, y: F.cross_entropy(out[0].view(-1, 11), y.view(-1)), gopt)
    for _ in range(2):
        topt.zero_grad()
        lt = torch.nn.functional.cross_entropy(tm(torch.tensor(idx))[0].view(-1, 11), torch.tensor(tgt).view(-1))
        lt.backward()
        topt.step()
        np.testing.assert_allclose(float(step(idx, tgt)), lt.item(), rtol=1e-5)


def test_setitem():
    x = gradc.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    x[x > 3] = -1.0
    x[0, 1] = 7.0
    x[:, [2]] = 5.0
    assert x.tolist() == [[0.0, 7.0, 5.0], [3.0, -1.0, 5.0]]
    w = gradc.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = w * 2
    y[y > 1] = 0.0  # recorded: the masked elements get no gradient
    (y * gradc.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert w.grad.tolist() == [0.0, 0.0, 0.0]
    z = w * 2
    z[0] = 1.0  # an integer key on a graph tensor is recorded too (CopySlices, as in PyTorch)
    w.grad = None
    z.sum().backward()
    assert w.grad.tolist() == [0.0, 2.0, 2.0] and type(z.grad_fn).__name__ == "CopySlices"
