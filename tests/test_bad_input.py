"""Malformed input to the transforms (compile, grad, value_and_grad, vjp, jacobian, hessian) and autograd misuse.

Each refused case asserts the exact exception type and a message naming the problem; each accepted odd
input (strided, negative-stride, F-order, big-endian, read-only, 0-d, size-0, aliased, NaN/inf) asserts
the right result. CompiledFunction-level argument checks are in test_native_bad_input.py and PyTorch-worded
eager errors in test_eager_errors.py; this file covers the user-facing transforms on top of them, and runs
itself once more in a subprocess so that a native crash fails one test instead of killing the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import gradc
from gradc.api import TracerError

CHILD = os.environ.get("GRADC_BAD_INPUT_CHILD") == "1"


@pytest.fixture(autouse=True)
def _native(monkeypatch, tmp_path_factory):
    """Native backend and a private disk cache (shared with the subprocess run)."""
    monkeypatch.setenv("GRADC_CACHE_DIR", os.environ.get("GRADC_CACHE_DIR") if CHILD else
                       str(tmp_path_factory.getbasetemp() / "bad_input_cache"))
    gradc.set_backend("native")
    yield
    gradc.set_backend("auto")


def sumsq(x):
    return (x * x).sum()


def mul_add(x, y):
    return x * y + 1.0


X = np.arange(12, dtype=np.float32).reshape(3, 4) / 10


def raises(exc: type, message: str, fn, *args):
    """fn(*args) raises exactly `exc` (not a subclass) whose message contains `message`."""
    with pytest.raises(exc, match=re.escape(message)) as info:
        fn(*args)
    assert type(info.value) is exc, f"{type(info.value).__name__} is not exactly {exc.__name__}"


# ----------------------------------------------------------------------------- refused: dtypes

@pytest.mark.parametrize("dtype", ["float16", "uint16", "complex64", "object", "S4"])
def test_unsupported_dtypes_are_named(dtype):
    bad = X.astype(dtype)
    shown = np.dtype(dtype).name if dtype != "S4" else "|S4"
    raises(TypeError, f"unsupported dtype {shown}; gradc supports float32, float64, int64, int32, int16, int8, "
                      "uint8, bool", gradc.compile(mul_add), bad, X)


@pytest.mark.parametrize("transform", [gradc.grad, gradc.value_and_grad, gradc.hessian])
@pytest.mark.parametrize("dtype, shown", [(np.int64, "i64[3,4]"), (np.bool_, "i1[3,4]")])
def test_gradient_of_an_integer_or_bool_input_names_the_input(transform, dtype, shown):
    # regression: this used to blame the (then integer) output: "requires ... scalar floating point output"
    raises(TypeError, f"grad requires real floating point inputs; argument 0 is {shown}",
           transform(lambda x: x.sum() * 1), X.astype(dtype))


# ----------------------------------------------------------------------------- refused: shapes

def test_broadcast_mismatch_names_both_shapes():
    raises(RuntimeError, "The size of tensor a (4) must match the size of tensor b (5) at non-singleton dimension 1",
           gradc.compile(mul_add), X, np.ones(5, np.float32))


def test_matmul_mismatch_names_both_shapes():
    raises(RuntimeError, "mat1 and mat2 shapes cannot be multiplied (3x4 and 5x2)",
           gradc.compile(lambda a, b: a @ b), X, np.ones((5, 2), np.float32))


def test_matmul_of_a_0d_operand():
    raises(RuntimeError, "both arguments to matmul need to be at least 1D, but they are 0D and 2D",
           gradc.compile(lambda a, b: a @ b), np.float32(2), np.ones((5, 2), np.float32))


def test_a_new_shape_is_a_new_specialization_never_a_stale_kernel():
    f = gradc.grad(sumsq)
    for shape in [(3, 4), (4, 3), (12,), (3, 4), (0, 4), ()]:
        x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
        g = f(x)
        assert g.shape == shape
        np.testing.assert_allclose(g, 2 * x, rtol=1e-6)


# ----------------------------------------------------------------------------- refused: traced functions

def test_grad_of_a_non_scalar_output():
    raises(TypeError, "grad requires a function with one scalar floating point output; got f32[3,4]",
           gradc.grad(lambda x: x * 2), X)


def test_grad_of_several_outputs():
    raises(TypeError, "value_and_grad requires a function with one scalar floating point output; got f32[], f32[]",
           gradc.value_and_grad(lambda x: (x.sum(), x.sum())), X)


def test_grad_of_an_integer_output():
    raises(TypeError, "grad requires a function with one scalar floating point output; got i64[]",
           gradc.grad(lambda x: (x > 0).sum()), X)


def test_python_if_on_a_traced_value():
    def f(x):
        if x.sum() > 0:
            return x
        return -x
    raises(TracerError, "bool() needs a concrete value, but this tensor is traced (i1[])", gradc.compile(f), X)
    assert issubclass(TracerError, TypeError)


def test_python_float_of_a_traced_value():
    raises(TracerError, "item() needs a concrete value, but this tensor is traced (f32[])",
           gradc.grad(lambda x: x.sum() * float(x.sum())), X)


def test_numpy_of_a_traced_value():
    raises(TracerError, "numpy() needs a concrete value, but this tensor is traced (f32[3,4])",
           gradc.compile(lambda x: x * x.numpy()), X)


@pytest.mark.parametrize("returned, name", [(lambda x: 3, "int"), (lambda x: np.ones(3), "ndarray"),
                                            (lambda x: None, "NoneType"), (lambda x: (x, "s"), "str")])
def test_traced_function_returning_a_non_tensor(returned, name):
    index = 1 if name == "str" else 0
    raises(TypeError, f"returned a {name} as output {index}; traced functions must return gradc Tensors",
           gradc.compile(returned), X)


def test_argnums_out_of_range_and_of_a_wrong_type():
    raises(ValueError, "argnums 3 is out of range for a function of 1 arguments", gradc.grad(sumsq, argnums=3), X)
    raises(TypeError, "argnums must be an int or a non-empty tuple of ints", gradc.grad, sumsq, ())


def test_vjp_cotangent_of_a_wrong_shape_or_count():
    _, vjp_fn = gradc.vjp(lambda x: x * 2, X)
    raises(ValueError, "cotangent has shape [4], expected [3, 4]", vjp_fn, np.ones(4, np.float32))
    raises(TypeError, "vjp_fn takes 1 cotangent(s), got 2", vjp_fn, X, X)


def test_jacobian_of_several_outputs():
    raises(TypeError, "jacobian needs a function with one output", gradc.jacobian(lambda x: (x, x)), X)


@pytest.mark.parametrize("bad, name", [([1.0, 2.0], "list"), ("abc", "str"), (None, "NoneType"), ({}, "dict")])
def test_non_array_arguments(bad, name):
    raises(TypeError, f"argument 0 has type {name}; gradc functions take numpy arrays, gradc Tensors and Python "
           "numbers", gradc.grad(sumsq), bad)


def test_unknown_stage_and_backend():
    raises(ValueError, "unknown stage 'bitcode'", gradc.compile(mul_add).lower(X, X).as_text, "bitcode")
    raises(ValueError, "backend must be 'native', 'interp' or 'auto', got 'gpu'", gradc.set_backend, "gpu")


@pytest.mark.parametrize("bad, shown", [(4, "index 4"), (-1, "index -1"), (2**40, f"index {2**40}")])
@pytest.mark.parametrize("transform", ["compile", "value_and_grad"])
def test_gather_out_of_range_index_is_an_index_error_not_a_clamp(transform, bad, shown):
    idx = np.array([[0], [bad], [1]], np.int64)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    f = (gradc.compile(lambda x, i: gradc.gather(x, 1, i)) if transform == "compile" else
         gradc.value_and_grad(lambda x, i: gradc.gather(x, 1, i).sum()))
    f(x, np.zeros((3, 1), np.int64))  # compiled and fast path warm: the native code must check too
    raises(IndexError, f"{shown} is out of bounds for dimension 1 with size 4", f, x, idx)


# ----------------------------------------------------------------------------- accepted: odd layouts and values

LAYOUTS = {
    "strided": lambda a: np.repeat(a, 2, axis=1)[:, ::2],
    "negative_stride": lambda a: a[::-1, ::-1].copy()[::-1, ::-1],
    "f_order": np.asfortranarray,
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "read_only": lambda a: np.lib.stride_tricks.as_strided(a, a.shape, a.strides, writeable=False),
    "zero_stride": lambda a: np.broadcast_to(a[:1], a.shape),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("first", [True, False], ids=["first_call", "after_warmup"])
def test_odd_layouts_are_copied_and_correct(layout, first):
    f = gradc.value_and_grad(lambda x, y: (x * y).sum() + (x * x).sum(), argnums=(0, 1))
    x, y = X, np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    if not first:
        f(x, y)  # the next call takes the native fast path, which must refuse and copy
    xo = LAYOUTS[layout](x)
    before = np.array(xo, copy=True)
    value, (gx, gy) = f(xo, y)
    xd = np.asarray(xo, np.float64)
    np.testing.assert_allclose(value, (xd * y).sum() + (xd * xd).sum(), rtol=1e-5)
    np.testing.assert_allclose(gx, y + 2 * xd, rtol=1e-6)
    np.testing.assert_allclose(gy, xd, rtol=1e-6)
    assert gx.flags.c_contiguous and gx.dtype == np.float32
    np.testing.assert_array_equal(xo, before)  # the input was only read


def test_zero_dim_and_size_zero_inputs():
    assert gradc.grad(sumsq)(np.float32(3.0)) == 6.0
    assert gradc.grad(sumsq)(3.0) == 6.0  # a Python float is a 0-d float32
    value, g = gradc.value_and_grad(sumsq)(np.ones((0, 4), np.float32))
    assert value == 0 and g.shape == (0, 4) and g.dtype == np.float32
    out = gradc.compile(lambda a, b: a @ b)(np.ones((0, 3), np.float32), np.ones((3, 2), np.float32))
    assert out.shape == (0, 2)


def test_outputs_are_fresh_arrays_never_views_of_inputs():
    ident = gradc.compile(lambda x: x * 1.0)
    pair = gradc.compile(lambda x, y: (x + y, x))
    x = X.copy()
    a, b = ident(x), ident(x)
    s, same = pair(x, x)  # the same array as two inputs (aliased)
    for out in (a, b, s, same):
        assert not np.shares_memory(out, x)
    assert not np.shares_memory(a, b)
    np.testing.assert_array_equal(s, 2 * x)
    a[...] = -1  # writing a result changes neither the input nor later results
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(ident(x), X)


def test_nan_and_inf_propagate_without_errors_or_warnings():
    x = np.array([np.nan, np.inf, -np.inf, -0.0, 1.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, g = gradc.value_and_grad(sumsq)(x)
        e = gradc.compile(lambda x: (gradc.exp(x), gradc.log(x), gradc.maximum(x, 0.0 * x)))(x)
    assert np.isnan(value)
    np.testing.assert_array_equal(g, [np.nan, np.inf, -np.inf, -0.0, 2.0])
    with np.errstate(all="ignore"):
        want = (np.exp(x), np.log(x), np.maximum(x, 0.0 * x))
    for got, ref in zip(e, want):  # NaN where NaN, the same infinities, finite values within 4 ulp
        np.testing.assert_allclose(got, ref, rtol=5e-7)
        real = ~np.isnan(ref)  # the sign of a NaN carries no meaning (numpy's log(-inf) is -nan)
        np.testing.assert_array_equal(np.signbit(got[real]), np.signbit(ref[real]))


# ----------------------------------------------------------------------------- autograd misuse (native adjoints)

def native_loss(x):
    return (gradc.tanh(x) * x).sum()


def tiered_leaf():
    """A leaf whose graph shape already ran backward natively (the compiled adjoint is in use)."""
    for _ in range(2):
        w = gradc.tensor(X, requires_grad=True)
        native_loss(w).backward()
    return gradc.tensor(X, requires_grad=True)


def test_second_backward_with_a_native_adjoint():
    w = tiered_leaf()
    loss = native_loss(w)
    loss.backward()
    raises(RuntimeError, "Trying to backward through the graph a second time", loss.backward)


def test_inplace_change_of_a_saved_tensor_with_a_native_adjoint():
    w = tiered_leaf()
    t = w * 2
    loss = (gradc.tanh(t) * t).sum()
    t.add_(1)
    raises(RuntimeError, "one of the variables needed for gradient computation has been modified by an inplace "
           "operation", loss.backward)


def test_inplace_change_of_a_leaf_that_requires_grad():
    raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation.",
           tiered_leaf().mul_, 2)


def test_retain_graph_then_backward_twice_accumulates_natively():
    w = tiered_leaf()
    loss = native_loss(w)
    loss.backward(retain_graph=True)
    loss.backward()
    x = X.astype(np.float64)
    want = 2 * (np.tanh(x) + x * (1 - np.tanh(x) ** 2))
    np.testing.assert_allclose(w.grad.numpy(), want, rtol=1e-5)


# ----------------------------------------------------------------------------- the whole battery in a subprocess

@pytest.mark.skipif(CHILD, reason="already the subprocess")
def test_battery_in_a_subprocess(tmp_path):
    """A segfault in native code would end the test run; in a child process it is one failed test."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, GRADC_BAD_INPUT_CHILD="1", GRADC_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=path)
    proc = subprocess.run([sys.executable, "-m", "pytest", __file__, "-p", "no:cacheprovider", "-x"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 50, proc.stdout[-3000:]
