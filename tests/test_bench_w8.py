"""W8 in gradc.bench: the numpy GPT reference against PyTorch float64, and gradc's step against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from gradc.bench import gpt_step, runner, workloads
from gradc.nn.gpt import GPTConfig

SMALL = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16, bias=False)


def test_reference_gradients_match_torch_float64():
    torch = pytest.importorskip("torch")
    from gradc.nn.gpt import make_gpt
    idx, targets, state = gpt_step.initial(SMALL, batch=3)
    model = make_gpt(torch)(SMALL).double()
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in state.items()}, strict=False)
    loss = model.loss(model(torch.from_numpy(idx)), torch.from_numpy(targets))
    loss.backward()
    ref_loss, grads = gpt_step.loss_and_grads(idx, targets, {k: v.astype(np.float64) for k, v in state.items()}, SMALL)
    np.testing.assert_allclose(ref_loss, loss.item(), rtol=1e-12)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_gradc_step_matches_reference_and_w8_is_registered():
    assert workloads.by_id("W8") is gpt_step.W8
    idx, targets, state = gpt_step.initial(SMALL, batch=3)
    start = {k: v.copy() for k, v in state.items()}
    reference = gpt_step.reference(idx, targets, state, steps=2, cfg=SMALL)
    step = gpt_step.gradc_step(idx, targets, state, SMALL)
    losses = [float(step()) for _ in range(2)]
    ok, err, where = runner.check_movement(losses, step.parameters(), reference, start)
    assert ok, (where, err)
    # the check fails a wrong update: one tensor moved by 5% too much
    moved = dict(step.parameters())
    name = "transformer.h.0.mlp.c_fc.weight"
    moved[name] = start[name] + 1.05 * (moved[name] - start[name])
    ok, err, where = runner.check_movement(losses, moved, reference, start)
    assert not ok and name in where, (where, err)


def test_attention_row_gradc_matches_reference():
    arrays = [a[:1, :2, :33] for a in gpt_step.attention_arrays(T=33)]
    value, grads = gpt_step.attention_gradc(*arrays)()
    ok, err, where = runner.compare((np.asarray(value), list(grads)), gpt_step.attention_reference(*arrays), 1e-3)
    assert ok, (where, err)
