"""Regression (found by tests/fuzz/test_fuzz_inplace.py): which in-place changes refuse backward.

gradc refused `q = a / b; q.add_(1); backward` ("modified by an inplace operation") although PyTorch's
DivBackward0 saves the operands, not the quotient, so PyTorch goes on; and gradc let `r = relu(a);
r.mul_(2); backward` through although PyTorch's ReluBackward0 saves its result and refuses. Fixed in
gradc/methods.py (SAVES_RESULT lists the primitives whose PyTorch node saves the result). In 1,500 random
in-place programs gradc never returned a wrong gradient, before or after: only the refusals moved.
"""

import numpy as np
import pytest

import gradc


def test_inplace_change_of_a_quotient_backpropagates_like_pytorch():
    a = gradc.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    b = gradc.tensor(np.array([2.0, 4.0, 5.0]), requires_grad=True)
    q = a / b
    q.add_(1)
    (q * q).sum().backward()
    an, bn = a.detach().numpy(), b.detach().numpy()
    outer = 2 * (an / bn + 1)
    np.testing.assert_allclose(a.grad.numpy(), outer / bn, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), -outer * an / bn ** 2, rtol=1e-12)


def test_inplace_change_of_a_relu_result_refuses_like_pytorch():
    a = gradc.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    r = gradc.relu(a)
    r.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        r.sum().backward()
