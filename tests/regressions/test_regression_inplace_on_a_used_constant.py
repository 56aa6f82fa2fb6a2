"""A constant used by an op and later overwritten in place with a value that requires grad: the op's
gradient must not flow into the new history (found by tests/fuzz/test_fuzz_inplace.py)."""

import numpy as np
import pytest

import gradc

torch = pytest.importorskip("torch")


def program(m):
    rng = np.random.default_rng(0)
    a = m.tensor(rng.standard_normal((2, 3)), requires_grad=True)
    b = m.tensor(rng.standard_normal(3), requires_grad=True)
    c = m.tensor(rng.standard_normal((2, 3)))
    d = b + c  # uses c as it is now: a constant
    c.add_(c)  # a write that records nothing
    e = c * 2.0  # still the constant
    c.add_(a)  # now c has a's history
    (d.sum() + e.sum() + (c * c).sum()).backward()
    return a.grad, b.grad


def test_the_op_sees_the_constant_it_used():
    ga, gb = program(gradc)
    ta, tb = program(torch)
    np.testing.assert_allclose(ga.numpy(), ta.numpy())
    np.testing.assert_allclose(gb.numpy(), tb.numpy())
