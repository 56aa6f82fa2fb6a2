"""Regression (found by the donation fuzzer once scan joined the registry): a reduction result donated to
a parameter that its own kernel still reads. The accumulator is initialized before the nest, so the
donation must be refused."""

import numpy as np

from gradc.codegen import compile_function
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, float64
from gradc.ir.interp import run


def test_reduction_is_not_donated_into_a_param_its_kernel_reads():
    b = Builder()
    x, c = Value(TensorType((33,), float64), name="x"), Value(TensorType((33,), float64), name="c")
    total = b.emit("reduce_sum", x, axes=())  # an identity reduction over the same domain as the store
    out = b.add(b.mul(x, b.scalar(2.0, x)), c)
    fn = Function("f", [x, c], b.ops, [out, total])
    args = [np.arange(33.0), np.linspace(-1, 1, 33)]
    want = run(fn, *args)
    given = [a.copy() for a in args]
    native = compile_function(fn, "donate_reduce", donate={1: 1})
    got = native(*given)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
