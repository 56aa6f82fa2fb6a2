"""gradc.nn.utils against torch.nn.utils: gradient clipping and parameter <-> vector conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradc
import gradc.nn as nn

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _torch_single_threaded():
    """Tiny tensors on a shared machine: torch's thread pool only spins (60 ms backward calls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def models_with_grads(scale: float = 1.0):
    gradc.manual_seed(0)
    g = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    t = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    t.load_state_dict({k: torch.from_numpy(v) for k, v in g.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((9, 5)).astype(np.float32) * scale
    (g(gradc.from_numpy(x)) ** 2).sum().backward()
    (t(torch.from_numpy(x)) ** 2).sum().backward()
    return g, t


def assert_grads_close(g, t, rtol=2e-6, scales=None):
    """`scales`: each gradient's magnitude before clipping, which sets its float32 rounding (default: now)."""
    for i, (pg, pt) in enumerate(zip(g.parameters(), t.parameters())):
        want = pt.grad.numpy()  # the two backward passes differ by float32 rounding: relative to the scale
        scale = np.abs(want).max() if scales is None else scales[i]
        np.testing.assert_allclose(pg.grad.numpy(), want, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("max_norm, norm_type", [(1.0, 2.0), (0.5, 1), (0.1, math.inf), (2.0, 3.0), (1e6, 2.0),
                                                 (0.3, "inf")])
def test_clip_grad_norm_equals_pytorch(max_norm, norm_type):
    g, t = models_with_grads()
    total_g = nn.utils.clip_grad_norm_(g.parameters(), max_norm, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(t.parameters(), max_norm, norm_type=norm_type)
    assert isinstance(total_g, gradc.Tensor) and total_g.shape == () and total_g.dtype == gradc.float32
    np.testing.assert_allclose(total_g.item(), total_t.item(), rtol=1e-6)
    assert_grads_close(g, t)


def test_clip_grad_norm_single_tensor_nonfinite_and_no_grads():
    g, t = models_with_grads()
    w = g[0].weight
    np.testing.assert_allclose(nn.utils.clip_grad_norm_(w, 0.01).item(),
                               torch.nn.utils.clip_grad_norm_(t[0].weight, 0.01).item(), rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), t[0].weight.grad.numpy(), rtol=1e-6, atol=1e-8)
    w.grad.numpy()[0, 0] = np.inf
    with pytest.raises(RuntimeError, match="The total norm of order 2.0 for gradients from `parameters` is non-finite"):
        nn.utils.clip_grad_norm_(g.parameters(), 1.0, error_if_nonfinite=True)
    assert nn.utils.clip_grad_norm_([gradc.zeros(3, requires_grad=True)], 1.0).item() == 0.0


def test_clip_grad_value_equals_pytorch():
    g, t = models_with_grads(scale=3.0)
    scales = [np.abs(p.grad.numpy()).max() for p in t.parameters()]  # unclipped entries keep their rounding
    assert nn.utils.clip_grad_value_(g.parameters(), 0.05) is None
    torch.nn.utils.clip_grad_value_(t.parameters(), 0.05)
    assert_grads_close(g, t, scales=scales)
    assert max(np.abs(p.grad.numpy()).max() for p in g.parameters()) <= 0.05


def test_parameters_vector_round_trip_equals_pytorch():
    g, t = models_with_grads()
    vg = nn.utils.parameters_to_vector(g.parameters())
    vt = torch.nn.utils.parameters_to_vector(t.parameters())
    np.testing.assert_array_equal(vg.detach().numpy(), vt.detach().numpy())
    new = np.arange(vg.shape[0], dtype=np.float32) / 100
    before = g[0].weight.detach().numpy()  # a view: the parameter is updated in place
    nn.utils.vector_to_parameters(gradc.from_numpy(new.copy()), g.parameters())
    torch.nn.utils.vector_to_parameters(torch.from_numpy(new.copy()), t.parameters())
    for (name, a), b in zip(g.state_dict().items(), t.state_dict().values()):
        np.testing.assert_array_equal(a, b.numpy(), err_msg=name)
    np.testing.assert_array_equal(before, g[0].weight.detach().numpy())
    with pytest.raises(TypeError, match="expected torch.Tensor"):
        nn.utils.vector_to_parameters(new, g.parameters())


def test_import_paths_as_pytorch():
    from gradc.nn.utils import clip_grad_norm_, parameters_to_vector  # noqa: F401
    from gradc.nn.utils.convert_parameters import vector_to_parameters
    assert gradc.nn.utils.clip_grad_value_ is nn.utils.clip_grad.clip_grad_value_
    assert gradc.nn.utils.vector_to_parameters is vector_to_parameters
