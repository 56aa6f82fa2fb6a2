"""The value comparison the PyTorch-equality tests share: shapes, dtypes and values of a gradc and a torch
result (None only against None)."""

import numpy as np


def same(a, b, rtol=1e-6, atol=1e-7):
    if a is None or b is None:
        assert a is None and b is None, (a, b)
        return
    a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
