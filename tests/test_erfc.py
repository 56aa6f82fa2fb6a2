"""The erfc primitive (Numerical Recipes' formula in float64, gelu's and erf's building block): native ==
interpreter, 1.2e-7 relative to math.erfc over both tails in float32 and float64, the special values, and
torch.erfc / torch.special.erfc equal to PyTorch's at float32 accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradc
from gradc.codegen import compile_function
from gradc.ir.builder import Builder
from gradc.ir.core import TensorType, Value, dtype_of_numpy
from gradc.ir.interp import run

GRID = np.concatenate([np.linspace(-6, 27, 1000), [-1e-3, 0.0, -0.0, 1e-3, 0.4999, 0.5, 26.5]])


def erfc_function(dtype, n):
    x = Value(TensorType((n,), dtype_of_numpy(dtype)), name="x")
    b = Builder()
    return b.function("erfc_only", [x], [b.erfc(x)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_and_interpreter_agree_with_math_erfc(dtype):
    x = GRID.astype(dtype)
    fn = erfc_function(dtype, x.size)
    native, interp = compile_function(fn)(x)[0], run(fn, x)[0]
    want = np.array([math.erfc(v) for v in x.astype(np.float64)])
    tiny = np.finfo(dtype).tiny
    ok = want > tiny  # below float32's normal range the result rounds to a denormal or 0
    for got in (native, interp):
        assert got.dtype == dtype
        np.testing.assert_allclose(got[ok], want[ok], rtol=1.3e-7 if dtype == np.float64 else 2.5e-7)
    np.testing.assert_allclose(native, interp, rtol=1e-14 if dtype == np.float64 else 1.2e-7, atol=1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(dtype):
    x = np.array([np.inf, -np.inf, np.nan, 40.0, -40.0], dtype)
    fn = erfc_function(dtype, x.size)
    for got in (compile_function(fn)(x)[0], run(fn, x)[0]):
        assert got[0] == 0.0 and got[1] == 2.0 and np.isnan(got[2]) and got[3] == 0.0 and got[4] == 2.0


def test_torch_erfc_and_its_gradient_match_pytorch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-5, 9, 301).astype(np.float32)
    gx, tx = gradc.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    gy, ty = gradc.erfc(gx), torch.erfc(tx)
    np.testing.assert_allclose(gy.detach().numpy(), ty.detach().numpy(), rtol=3e-7, atol=1e-38)
    gy.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(gx.grad.numpy(), tx.grad.numpy(), rtol=2e-6, atol=1e-30)
    # the right tail: 1 - erf would cancel to 0 (erfc(9) = 4.1e-37)
    assert gradc.erfc(gradc.tensor([9.0])).item() > 0
