"""Rows: the small integer dtypes (int32, int16, int8, uint8) through arithmetic, comparisons, floor division,
casts and reductions, across the extreme values (wrapping) and PyTorch's promotion between dtypes.

One row per dtype (pair): the native check compiles a row's first sample only."""

import numpy as np

from .dsl import build, rows

SMALL = (np.int32, np.int16, np.int8, np.uint8)
PAIRS = ((np.uint8, np.uint8), (np.int8, np.int8), (np.int16, np.int16), (np.int32, np.int32),
         (np.uint8, np.int8), (np.int8, np.int16), (np.uint8, np.int32), (np.int32, np.int64), (np.bool_, np.int8))


def full_range(rng: np.random.Generator, dtype, shape: tuple) -> np.ndarray:
    if dtype is np.bool_:
        return rng.uniform(size=shape) > 0.5
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _pairs(a_dtype, b_dtype, nonzero: bool = False, numbers: bool = True):
    def make(rng):
        a, b = full_range(rng, a_dtype, (3, 9)), full_range(rng, b_dtype, (9,))
        if nonzero:
            b[b == 0] = 1
            b[:3] = np.array([1, 2, 3], b.dtype)  # small divisors: big quotients
        return [(a, b), (a[0], 3), (a[1], 2.5)] if numbers else [(a, b), (a[0], b[::-1].copy())]
    return build(make)


def _one(dtype, lo=None, hi=None):
    def make(rng):
        if lo is None:
            return [(full_range(rng, dtype, (2, 17)),), (full_range(rng, dtype, (7,)),)]
        return [(rng.uniform(lo, hi, size=(2, 17)).astype(dtype),)]
    return build(make)


def _matmul(dtype):
    def make(rng):
        return [(full_range(rng, dtype, (3, 9)), full_range(rng, dtype, (9, 7))),
                (full_range(rng, dtype, (2, 7, 17)), full_range(rng, dtype, (17,))),
                (full_range(rng, dtype, (9,)), full_range(rng, dtype, (9,))),
                (full_range(rng, dtype, (33, 40)), full_range(rng, dtype, (40, 17)))]
    return build(make)


def _reduce(dtype, whole: bool = True):
    return build(lambda rng: [(full_range(rng, dtype, (3, 17)),)] * whole + [
        (full_range(rng, dtype, (3, 17)), 1), (full_range(rng, dtype, (9, 8)), 0)])


_ARITH = "torch.add torch.sub torch.mul torch.div torch.lt torch.ge torch.eq"
ROWS = [
    *[r for a, b in PAIRS for r in rows(_ARITH if a is not np.bool_ else "torch.add torch.mul torch.lt",
                                        _pairs(a, b), grad=False)],
    *[r for a, b in PAIRS for r in rows("torch.maximum torch.minimum", _pairs(a, b, numbers=False), grad=False)],
    *[r for a, b in PAIRS if a is not np.bool_
      for r in rows("torch.floor_divide torch.remainder", _pairs(a, b, nonzero=True), grad=False)],
    *[r for d in SMALL for r in rows("torch.abs torch.neg Tensor.float Tensor.long Tensor.int Tensor.short "
                                     "Tensor.byte Tensor.char Tensor.bool Tensor.double", _one(d), grad=False)],
    # float -> small integer casts truncate, then wrap (300.0 -> uint8 44, -1.5 -> uint8 255)
    *[r for d in (np.float32, np.float64)
      for r in rows("Tensor.int Tensor.short Tensor.byte Tensor.char", _one(d, -1000.0, 1000.0), grad=False)],
    *[r for d in SMALL for r in rows("torch.sum torch.amax torch.argmax torch.amin torch.argmin torch.min", _reduce(d),
                                     grad=False)],
    *[r for d in SMALL for r in rows("torch.cumsum torch.prod", _reduce(d, whole=False), grad=False)],
    # integer products stay integer and wrap (inline loops natively: BLAS is for floats)
    *[r for d in SMALL + (np.int64,) for r in rows("torch.matmul Tensor.__matmul__", _matmul(d), grad=False)],
]
