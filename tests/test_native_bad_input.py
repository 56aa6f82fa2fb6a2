"""Bad and unusual arguments to a compiled function: each is converted (copied) or refused clearly.

Never read wrongly, never a crash: the nastiest inputs also run in a subprocess, whose exit code is checked.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gradc
from gradc.api import trace_types
from gradc.codegen import compile_function
from gradc.ir.core import TensorType, bool_, float32, int64

TYPES = [TensorType((4, 3), float32), TensorType((3,), float32), TensorType((4,), int64), TensorType((4, 3), bool_)]


def f(x, w, lab, m):
    return gradc.where(m, x * w, 0.0).sum(1), lab * 2


def reference(x, w, lab, m):
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    return np.where(m, x * w, 0.0).sum(1), np.asarray(lab) * 2


@pytest.fixture(scope="module")
def cf():
    os.environ.setdefault("GRADC_CACHE", "0")
    return compile_function(trace_types(f, TYPES))


def good_args():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    w = rng.standard_normal(3).astype(np.float32)
    return x, w, np.arange(4, dtype=np.int64), x > 0


def assert_matches(cf, *args):
    snapshot = [np.array(a, copy=True) for a in args]
    got = cf(*args)
    want = reference(*args)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == np.float32 and got[1].dtype == np.int64
    for a, s in zip(args, snapshot):
        np.testing.assert_array_equal(a, s)  # inputs never written


def test_conforming_arguments(cf):
    assert_matches(cf, *good_args())


LAYOUTS = {
    "f_order": lambda a: np.asfortranarray(a),
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "negative_stride": lambda a: a[::-1].copy()[::-1],
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "misaligned": lambda a: np.frombuffer(b"\0" + a.tobytes(), a.dtype, offset=1).reshape(a.shape),
    "read_only_view": lambda a: np.lib.stride_tricks.as_strided(a, a.shape, a.strides, writeable=False),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("which", [0, 1, 2, 3])
def test_nonconforming_layouts_are_copied(cf, layout, which):
    args = list(good_args())
    args[which] = LAYOUTS[layout](args[which])
    assert_matches(cf, *args)


def test_misaligned_really_is_misaligned():
    a = np.frombuffer(b"\0" + np.zeros(12, np.float32).tobytes(), np.float32, offset=1)
    assert not a.flags.aligned


def test_read_only_input_is_used_without_copy(cf):
    args = list(good_args())
    for a in args:
        a.flags.writeable = False
    assert_matches(cf, *args)


def test_broadcast_zero_stride_input(cf):
    x, w, lab, m = good_args()
    xb = np.broadcast_to(x[:1], (4, 3))  # stride 0, read-only
    assert_matches(cf, xb, w, lab, m)


def test_int64_with_longlong_type_num(cf):
    x, w, lab, m = good_args()
    assert_matches(cf, x, w, lab.astype(np.longlong), m)


def test_ndarray_subclass(cf):
    class Sub(np.ndarray):
        pass

    x, w, lab, m = good_args()
    assert_matches(cf, x.view(Sub), w, lab, m)


def test_wrong_dtype_is_a_type_error(cf):
    x, w, lab, m = good_args()
    with pytest.raises(TypeError, match=r"argument 1 of f: expected float32\[4,3\], got float64\[4,3\] array"):
        cf(x.astype(np.float64), w, lab, m)
    with pytest.raises(TypeError, match=r"argument 3 of f: expected int64\[4\], got int32"):
        cf(x, w, lab.astype(np.int32), m)
    with pytest.raises(TypeError, match=r"argument 4 of f: expected bool\[4,3\]"):
        cf(x, w, lab, m.astype(np.float32))


def test_wrong_rank_and_shape_are_value_errors(cf):
    x, w, lab, m = good_args()
    with pytest.raises(ValueError, match=r"argument 1 of f: expected float32\[4,3\] \(rank 2\), got .*rank 1"):
        cf(x.ravel(), w, lab, m)
    with pytest.raises(ValueError, match=r"argument 2 of f: expected float32\[3\], got .*shape \(4,\)"):
        cf(x, np.zeros(4, np.float32), lab, m)
    with pytest.raises(ValueError, match=r"argument 1 of f: expected float32\[4,3\], got .*shape \(3, 4\)"):
        cf(x.T.copy(), w, lab, m)


def test_wrong_number_of_arguments(cf):
    x, w, lab, m = good_args()
    with pytest.raises(TypeError, match=r"f\(\) takes 4 arguments .* got 3"):
        cf(x, w, lab)
    with pytest.raises(TypeError, match=r"got 5"):
        cf(x, w, lab, m, m)
    with pytest.raises(TypeError, match=r"got 0"):
        cf()


@pytest.mark.parametrize("bad", [None, "text", object(), {"a": 1}, 1.5])
def test_non_arrays_are_type_errors(cf, bad):
    x, w, lab, m = good_args()
    with pytest.raises((TypeError, ValueError), match="argument 2 of f"):
        cf(x, bad, lab, m)


def test_lists_of_the_right_kind_convert_exactly_when_dtypes_match(cf):
    x, w, lab, m = good_args()
    got = cf(x, w, lab.tolist(), m)  # a list of Python ints is int64 on Linux
    np.testing.assert_array_equal(got[1], lab * 2)
    with pytest.raises(TypeError, match="argument 2 of f"):
        cf(x, w.tolist(), lab, m)  # floats are float64: no silent narrowing


def test_zero_size_and_zero_rank():
    g = compile_function(trace_types(lambda a, b: (a * b, (a * b).sum()), [TensorType((0, 5), float32)] * 2))
    prod, total = g(np.zeros((0, 5), np.float32), np.zeros((0, 5), np.float32))
    assert prod.shape == (0, 5) and total.shape == () and total == 0
    with pytest.raises(ValueError):
        g(np.zeros((1, 5), np.float32), np.zeros((0, 5), np.float32))
    h = compile_function(trace_types(lambda a: a * 2.0, [TensorType((), float32)]))
    (out,) = h(np.float32(1.5))
    assert isinstance(out, np.ndarray) and out.shape == () and out == 3.0
    assert h(2)[0] == 4.0 and h(np.array(0.25, np.float32))[0] == 0.5
    with pytest.raises(ValueError, match="rank 0"):
        h(np.zeros(1, np.float32))


NASTY = r"""
import os, numpy as np, gradc
from gradc.api import trace_types
from gradc.codegen import compile_function
from gradc.ir.core import TensorType, float32
def f(x, y):
    return (x * y).sum(), x + y
cf = compile_function(trace_types(f, [TensorType((1000,), float32)] * 2))
good = np.ones(1000, np.float32)
nasty = [None, 3, "x" * 1000, b"\0" * 8000, object(), [good], (good,), good.astype(object),
         np.zeros(1000, "S4"), np.zeros(1000, [("a", "f4")]), np.zeros((1000,) * 1 + (1,) * 30, np.float32),
         np.empty((0,) * 32, np.float32), np.broadcast_to(np.float32(1), (1000,)), np.zeros(1000, "c8"),
         good[::-1], good.view(np.int32),
         np.ma.masked_array(good), np.zeros(999, np.float32), np.zeros(10**6, np.float32)[::1000]]
ok = 0
for bad in nasty:
    for args in [(bad, good), (good, bad), (bad,), (bad, bad, bad)]:
        try:
            cf(*args)
            ok += 1
        except (TypeError, ValueError):
            ok += 1
print("survived", ok)
"""


def test_nasty_inputs_in_a_subprocess(tmp_path):
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", NASTY], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "survived" in proc.stdout
