"""Rows: aliases, in-place methods, Tensor introspection and the deterministic factories."""

import numpy as np

from .dsl import DType, binary, both, build, inplace_binary, row, rows, samples, unary

POS = dict(lo=0.1, hi=4.0)
SPECIAL_VALUES = np.array([np.nan, np.inf, -np.inf, 0.0, 1.5], np.float32)
VALUES_ONLY = dict(grad=False, native=False)  # in-place and Python-valued results: eager values only

ROWS = [
    *both("absolute", unary()), *both("negative", unary()), *both("multiply", binary()),
    *both("subtract", binary()), *both("divide", binary(lo2=0.5, hi2=3.0)),
    *both("true_divide", binary(lo2=0.5, hi2=3.0)),
    *rows("Tensor.greater Tensor.greater_equal Tensor.less Tensor.less_equal Tensor.not_equal", binary(), grad=False),
    row("Tensor.fix", unary()), row("Tensor.msort", build(lambda rng: [(rng.normal(size=(9, 3)).astype(np.float32),)])),
    # in-place methods (on a tensor that does not require grad)
    *rows("Tensor.floor_ Tensor.ceil_ Tensor.trunc_ Tensor.round_ Tensor.frac_ Tensor.sign_ Tensor.exp2_ "
          "Tensor.expm1_ Tensor.square_ Tensor.erf_ Tensor.erfc_ Tensor.nan_to_num_", unary(), **VALUES_ONLY),
    *rows("Tensor.log2_ Tensor.log10_ Tensor.log1p_ Tensor.rsqrt_", unary(**POS), **VALUES_ONLY),
    *rows("Tensor.add_ Tensor.sub_ Tensor.mul_", inplace_binary(), **VALUES_ONLY),
    row("Tensor.div_", inplace_binary(lo2=0.5, hi2=3.0), **VALUES_ONLY),
    row("Tensor.pow_", inplace_binary(**POS, lo2=-2.0, hi2=2.0), **VALUES_ONLY),
    *rows("Tensor.cumsum_ Tensor.cumprod_",
          build(lambda rng: [(rng.uniform(0.5, 1.5, size=(3, 9)).astype(np.float32), 1)]), **VALUES_ONLY),
    row("Tensor.scatter_", build(lambda rng: [(rng.normal(size=(3, 9)).astype(np.float32), 0,
                                                np.stack([rng.permutation(3) for _ in range(9)], axis=1)[:2],
                                                rng.normal(size=(2, 9)).astype(np.float32))]), **VALUES_ONLY),
    row("Tensor.scatter_add_", build(lambda rng: [(rng.normal(size=(3, 9)).astype(np.float32), 1,
                                                    rng.integers(0, 9, size=(3, 4)),
                                                    rng.normal(size=(3, 4)).astype(np.float32))]), **VALUES_ONLY),
    row("Tensor.index_add_", build(lambda rng: [(rng.normal(size=(5, 7)).astype(np.float32), 0,
                                                  rng.integers(0, 5, size=(9,)),
                                                  rng.normal(size=(9, 7)).astype(np.float32))]), **VALUES_ONLY),
    row("Tensor.index_copy_", build(lambda rng: [(rng.normal(size=(5, 7)).astype(np.float32), 0, rng.permutation(5)[:3],
                                                   rng.normal(size=(3, 7)).astype(np.float32))]), **VALUES_ONLY),
    row("Tensor.zero_", unary(special=False), **VALUES_ONLY),
    row("Tensor.fill_", build(lambda rng: [(rng.normal(size=(3, 9)).astype(np.float32), 2.5)]), **VALUES_ONLY),
    row("Tensor.copy_", build(lambda rng: [(np.zeros((3, 9), np.float32), rng.normal(size=(3, 9)).astype(np.float32))]),
        **VALUES_ONLY),
    *rows("Tensor.__iadd__ Tensor.__isub__ Tensor.__imul__", inplace_binary(), **VALUES_ONLY),
    row("Tensor.__itruediv__", inplace_binary(lo2=0.5, hi2=3.0), **VALUES_ONLY),
    # introspection and conversion
    *rows("Tensor.numpy Tensor.requires_grad_", unary(special=False), **VALUES_ONLY),
    *rows("Tensor.dim Tensor.numel Tensor.size Tensor.tolist Tensor.shape Tensor.ndim", unary(special=False),
          **VALUES_ONLY),
    row("Tensor.size", build(lambda rng: [(np.zeros((3, 9), np.float32), -1), (np.zeros((3, 9), np.float32), 0)]),
        **VALUES_ONLY),
    row("Tensor.item", samples((np.array(2.5, np.float32),), (np.array([7]),), (np.array([[True]]),)), **VALUES_ONLY),
    row("Tensor.detach", unary(special=False), **VALUES_ONLY),
    row("Tensor.is_leaf", unary(special=False), **VALUES_ONLY),
    *rows("Tensor.__bool__ Tensor.__float__ Tensor.__int__",
          samples((np.array([2.5], np.float32),), (np.array(-3),), (np.array([[0.0]], np.float32),)), **VALUES_ONLY),
    row("Tensor.__len__", unary(special=False, shapes=((1,), (7,), (3, 8), (0, 3))), **VALUES_ONLY),
    row("Tensor.__repr__", build(lambda rng: [(rng.normal(size=(3, 4)).astype(np.float32),), (np.arange(5),),
                                              (np.array([True, False]),), (np.array(2.5, np.float32),),
                                              (rng.normal(size=(2, 3)) * 1e5,), (SPECIAL_VALUES,)]), **VALUES_ONLY),
    row("Tensor.__rmatmul__", build(lambda rng: [(rng.normal(size=(9, 7)).astype(np.float32),
                                                  rng.normal(size=(3, 9)).astype(np.float32))])),
    row("torch.is_tensor", samples((np.ones(3, np.float32),), (3.0,)), **VALUES_ONLY),
    # factories
    row("torch.zeros", samples((3, 4), ((2,), {"dtype": DType("float64")}), ((0, 3),)), **VALUES_ONLY),
    row("torch.ones", samples((3, 4), ((7,), {"dtype": DType("int64")})), **VALUES_ONLY),
    row("torch.full", samples(((2, 3), 1.5), ((9,), -0.5)), **VALUES_ONLY),
    row("torch.eye", samples((3,), (2, 5)), **VALUES_ONLY),
    row("torch.arange", samples((5,), (1, 7, 2), (0.0, 1.0, 0.25)), **VALUES_ONLY),
    *rows("torch.zeros_like torch.ones_like", unary(special=False), **VALUES_ONLY),
    row("torch.tensor", samples(([1.0, 2.0],), ([[1, 2], [3, 4]],), ((True,),)), **VALUES_ONLY),
]
