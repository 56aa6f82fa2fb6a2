"""PyTorch's autograd tutorial, run with `import gradc as torch` (issue 2, "The tutorial, as a test")."""

import re

import numpy as np
import pytest

import gradc as torch

ROW = [0.3133, 0.0832, 0.2035]


def make_graph():
    w = torch.tensor([[0.5, -1.0, 0.25], [1.5, 0.0, -0.5], [-0.75, 0.2, 1.0], [0.3, 0.3, -1.2],
                      [1.1, -0.4, 0.6]], requires_grad=True)
    b = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
    x = torch.ones(5)
    y = torch.zeros(3)
    z = torch.matmul(x, w) + b
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    return x, w, b, z, loss


def test_loss_and_gradients_to_four_decimals():
    _, w, b, _, loss = make_graph()
    loss.backward()
    assert round(loss.item(), 4) == 1.3475
    assert repr(loss) == "tensor(1.3475, grad_fn=<BinaryCrossEntropyWithLogitsBackward0>)"
    assert [[round(v, 4) for v in row] for row in w.grad.tolist()] == [ROW] * 5
    assert [round(v, 4) for v in b.grad.tolist()] == ROW
    assert repr(b.grad) == "tensor([0.3133, 0.0832, 0.2035])"
    assert repr(w.grad) == ("tensor([[0.3133, 0.0832, 0.2035],\n"
                            "        [0.3133, 0.0832, 0.2035],\n"
                            "        [0.3133, 0.0832, 0.2035],\n"
                            "        [0.3133, 0.0832, 0.2035],\n"
                            "        [0.3133, 0.0832, 0.2035]])")


def test_grad_fn_reprs_and_graph():
    x, w, b, z, loss = make_graph()
    assert re.fullmatch(r"<AddBackward0 object at 0x[0-9a-f]+>", repr(z.grad_fn))
    assert re.fullmatch(r"<BinaryCrossEntropyWithLogitsBackward0 object at 0x[0-9a-f]+>", repr(loss.grad_fn))
    # z = matmul(x, w) + b: the add's inputs are the vector-matrix product and b's accumulator
    (mm, _), (acc, _) = z.grad_fn.next_functions
    assert mm.name() == "SqueezeBackward4" and acc.name() == "AccumulateGrad" and acc.variable is b
    assert loss.grad_fn.next_functions[0][0] is z.grad_fn
    assert w.is_leaf and b.is_leaf and x.is_leaf and not z.is_leaf
    assert w.grad is None and z.grad_fn is not None and x.grad_fn is None


def test_no_grad_and_detach_flags():
    x, w, b, z, _ = make_graph()
    assert z.requires_grad is True
    with torch.no_grad():
        z = torch.matmul(x, w) + b
    assert z.requires_grad is False
    z = torch.matmul(x, w) + b
    z_det = z.detach()
    assert z_det.requires_grad is False and z_det.grad_fn is None
    np.testing.assert_array_equal(z_det.numpy(), z.detach().numpy())


def test_eye_accumulation_and_zero():
    inp = torch.eye(4, 5, requires_grad=True)
    out = (inp + 1).pow(2).t()
    assert out.shape == (5, 4) and out.grad_fn.name() == "TBackward0"
    out.backward(torch.ones_like(out), retain_graph=True)
    expected = np.full((4, 5), 2.0) + 2 * np.eye(4, 5)
    np.testing.assert_array_equal(inp.grad.numpy(), expected)  # 4 on the diagonal, 2 elsewhere
    out.backward(torch.ones_like(out), retain_graph=True)
    np.testing.assert_array_equal(inp.grad.numpy(), 2 * expected)  # accumulated: 8 and 4
    inp.grad.zero_()
    np.testing.assert_array_equal(inp.grad.numpy(), np.zeros((4, 5)))
    assert repr(inp.grad).startswith("tensor([[0., 0., 0., 0., 0.],")


def test_second_backward_without_retain_graph_fails():
    _, _, _, _, loss = make_graph()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"^Trying to backward through the graph a second time"):
        loss.backward()


def test_non_scalar_backward_without_gradient_fails():
    inp = torch.eye(4, 5, requires_grad=True)
    out = (inp + 1).pow(2).t()
    with pytest.raises(RuntimeError, match=r"^grad can be implicitly created only for scalar outputs"):
        out.backward()
