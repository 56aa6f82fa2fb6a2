"""Version counters: views and detach() share their base's counter, as in PyTorch, so a graph that saved a
view refuses backward after its base changed in place (an optimizer step, eager or compiled), instead of
silently using the new values."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn as nn
import gradc.optim as optim

REFUSAL = "one of the variables needed for gradient computation has been modified by an inplace operation"


def test_views_and_detach_share_the_version_counter():
    w = gradc.ones(4, 3, requires_grad=True)
    views = [w.T, w.reshape(12), w[1:], w.detach()]
    before = [v._version for v in views]
    with gradc.no_grad():
        w.add_(1.0)
    assert [v._version for v in views] == [b + 1 for b in before]
    copy = w * 1.0  # a new tensor, not a view
    version = copy._version
    with gradc.no_grad():
        w.add_(1.0)
    assert copy._version == version


def graph_then_step(step_kind: str):
    gradc.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    opt = optim.SGD(model.parameters(), lr=0.1)
    x = np.ones((3, 6), np.float32)
    y = np.array([0, 1, 2])
    loss_fn = nn.CrossEntropyLoss()
    saved = loss_fn(model(gradc.tensor(x)), gradc.tensor(y))  # saves the second layer's weight (as a view)
    if step_kind == "eager":
        loss_fn(model(gradc.tensor(x)), gradc.tensor(y)).backward()
        opt.step()
    else:
        gradc.compile_step(model, loss_fn, opt)(x, y)
    return saved


@pytest.mark.parametrize("step_kind", ["eager", "compiled"])
def test_backward_through_a_graph_whose_weights_a_step_changed_is_refused(step_kind):
    saved = graph_then_step(step_kind)
    with pytest.raises(RuntimeError, match=REFUSAL):
        saved.backward()


def test_pytorch_refuses_the_same_program():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.ones(3, 6), torch.tensor([0, 1, 2])
    saved = torch.nn.functional.cross_entropy(model(x), y)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    with pytest.raises(RuntimeError, match=REFUSAL):
        saved.backward()
