"""Rows: elementwise functions and their Tensor methods (unary math, arithmetic, comparisons, rounding)."""

import numpy as np

from .dsl import Sample, binary, both, build, integers, row, rows, samples, unary

POS = dict(lo=0.1, hi=4.0)


def _int_pow(rng):
    base = rng.integers(-4, 5, size=(9,)).astype(np.int64)
    return [(base, rng.integers(0, 4, size=(9,)).astype(np.int64)), (base, 3),
            (rng.uniform(0.5, 2, size=(3, 7)).astype(np.float32), rng.integers(-2, 4, size=(7,)).astype(np.int64))]


def _close(rng):
    a = rng.uniform(-2, 2, size=(9,)).astype(np.float32)
    b = (a + np.float32(1e-6)).astype(np.float32)
    nan = np.array([np.nan, 1.0, np.inf, -np.inf], np.float32)
    return [(a, b), (a, rng.uniform(-2, 2, size=(9,)).astype(np.float32)), ((a, a + 1e-3), {"atol": 1e-2}),
            ((nan, nan.copy()), {}), ((nan, nan.copy()), {"equal_nan": True})]


def _compare_pairs(rng):
    a = rng.integers(-2, 3, size=(3, 9)).astype(np.float32)
    return [(a, rng.integers(-2, 3, size=(9,)).astype(np.float32)), (a, 1.0),
            (rng.integers(-3, 3, size=(7,)), rng.integers(-3, 3, size=(7,)))]


UNARY_ANY = "neg abs exp tanh sigmoid"
ROWS = [
    *[r for n in UNARY_ANY.split() for r in both(n, unary())],
    *both("log", unary(**POS)), *both("sqrt", unary(**POS)), *both("reciprocal", unary(**POS)),
    *both("rsqrt", unary(**POS)), *both("log2", unary(**POS)), *both("log10", unary(**POS)),
    *both("log1p", unary(lo=-0.9, hi=3.0)), *both("exp2", unary()), *both("expm1", unary()),
    *both("square", unary()), *both("erf", unary(), grad_rtol=2e-6), *both("erfc", unary(), grad_rtol=2e-6),
    *both("relu", unary()),
    *both("floor", unary()), *both("ceil", unary()), *both("trunc", unary()), *both("round", unary()),
    *both("frac", unary()), *both("sign", unary()), *both("sgn", unary()), row("torch.fix", unary()),
    row("torch.round", unary(decimals=1, special=False), grad=True),
    *both("isnan", unary(), grad=False), *both("isinf", unary(), grad=False),
    *both("isfinite", unary(), grad=False), *both("isposinf", unary(), grad=False),
    *both("isneginf", unary(), grad=False),
    *both("nan_to_num", unary()), row("torch.nan_to_num", unary(nan=1.0, posinf=5.0, neginf=-5.0)),
    *both("add", binary()), *both("sub", binary()), *both("mul", binary()), *both("div", binary(lo2=0.5, hi2=3)),
    row("torch.add", binary(alpha=2.0)), row("torch.sub", binary(alpha=0.5)),
    *both("maximum", binary(scalar=None)), *both("minimum", binary(scalar=None)),
    *both("pow", binary(**POS, lo2=-2.0, hi2=2.0)), row("torch.pow", build(_int_pow), grad=False),
    row("Tensor.pow", build(_int_pow), grad=False),
    row("Tensor.__pow__", build(_int_pow), grad=False),
    row("Tensor.__pow__", binary(**POS, lo2=-2.0, hi2=2.0)),
    row("Tensor.__rpow__", samples((np.array([0.5, 1.5, 2.0], np.float32), 2.0))),
    *[r for op in "add sub mul".split() for r in rows(f"Tensor.__{op}__ Tensor.__r{op}__", binary())],
    *rows("Tensor.__truediv__ Tensor.__rtruediv__", binary(lo=0.5, hi=3.0, lo2=0.5, hi2=3.0)),
    *rows("Tensor.__neg__ Tensor.__abs__", unary()),
    *both("clamp", unary(min=-1.0, max=1.5)), row("torch.clamp", unary(min=0.5)),
    *both("clip", unary(min=-1.0, max=1.5)),
    row("torch.where", build(lambda rng: [(rng.uniform(size=(3, 9)) > 0.5, rng.normal(size=(3, 9)).astype(
        np.float32), rng.normal(size=(9,)).astype(np.float32))])),
    *[r for p in "eq ne lt le gt ge".split() for r in both(p, build(_compare_pairs), grad=False)],
    *[r for p in "eq ne lt le gt ge".split() for r in rows(f"Tensor.__{p}__", build(_compare_pairs), grad=False)],
    *rows("torch.greater torch.greater_equal torch.less torch.less_equal torch.not_equal",
          build(_compare_pairs), grad=False),
    *both("isclose", build(_close), grad=False), *both("allclose", build(_close), grad=False, native=False),
    *both("equal", samples((np.ones(3, np.float32), np.ones(3, np.float32)),
                           (np.ones(3, np.float32), np.zeros(3, np.float32)),
                           (np.ones(3, np.float32), np.ones(4, np.float32))), grad=False, native=False),
    *[r for op in "logical_and logical_or logical_xor".split() for r in both(op, build(lambda rng: [
        (rng.uniform(size=(9,)) > 0.5, rng.uniform(size=(9,)) > 0.5),
        (rng.integers(-1, 2, size=(3, 7)), rng.uniform(-1, 1, size=(7,)).round().astype(np.float32))]), grad=False)],
    *both("logical_not", integers(-1, 2), grad=False),
    *rows("torch.abs Tensor.abs torch.neg torch.sign torch.square", integers(), grad=False),
    *rows("torch.floor torch.round", integers(), grad=False),
    # dtype promotion: float32 with float64, int64 with float32, bool with int64
    *rows("torch.add torch.mul torch.maximum", build(lambda rng: [
        (rng.normal(size=(3, 9)).astype(np.float32), rng.normal(size=(9,))),
        (rng.integers(-3, 3, size=(7,)), rng.normal(size=(7,)).astype(np.float32))]), grad=False),
    row("torch.add", build(lambda rng: [(rng.uniform(size=(9,)) > 0.5, rng.integers(-3, 3, size=(9,)))]), grad=False),
    *rows("torch.floor torch.exp", build(lambda rng: [(rng.normal(size=(3, 9)),)]), grad=False),
    *rows("torch.cumsum torch.sort", build(lambda rng: [(rng.normal(size=(3, 9)), -1)]), grad=False),
]

# bad inputs: PyTorch's exception type
ERROR_ROWS = [
    row("torch.add", binary(),
        errors=[Sample((np.ones((2, 3), np.float32), np.ones((4,), np.float32)))]),
    row("torch.frac", unary(special=False), errors=[Sample((np.arange(3),))]),
    row("torch.isclose", build(_close), grad=False,
        errors=[Sample((np.ones(3, np.float32), np.ones(3))), Sample((np.ones(3, np.float32),) * 2, {"rtol": -1.0})]),
    row("torch.pow", build(_int_pow), grad=False, errors=[Sample((np.arange(3), -2))]),
    row("torch.clamp", unary(min=0.0), errors=[Sample((np.ones(3, np.float32),))]),
]
ROWS += ERROR_ROWS

# grad_fn names that differ (core arithmetic, not this table's ops): x.__rsub__(tensor) is RsubBackward0 in
# PyTorch (gradc: RsubBackward1, PyTorch's name for number - tensor); x.__rtruediv__(tensor) is DivBackward0
# in gradc, PyTorch computes it as a reciprocal times (MulBackward0)
for _r in ROWS:
    if _r.name in ("Tensor.__rsub__", "Tensor.__rtruediv__"):
        _r.node = False
