"""Rows: reductions, scans and sorting (sum, mean, max, prod, cumsum, sort, all, ...)."""

import numpy as np

from .dsl import Sample, both, build, reduction, row, rows, samples

DIMS = ({}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": 1}, {"dim": (0, -1)})
ONE_DIM = ({"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": 1})
SCAN = ({"dim": 0}, {"dim": -1}, {"dim": 1})


def _logic(rng):
    x = rng.uniform(size=(3, 9)) > 0.3
    f = np.where(rng.uniform(size=(2, 7)) > 0.5, 0.0, rng.normal(size=(2, 7))).astype(np.float32)
    return [(x,), ((x,), {"dim": 1}), ((x,), {"dim": 0, "keepdim": True}), (f,), ((f,), {"dim": -1}),
            (np.zeros((0, 3), bool),), (np.array([np.nan, 0.0], np.float32),)]


def _sort(rng):
    x = rng.normal(size=(3, 9)).astype(np.float32)
    ties = rng.integers(0, 3, size=(2, 17)).astype(np.float32)
    nan = np.array([1.0, np.nan, -np.inf, 3.0, np.nan, 0.5, np.inf], np.float32)
    return [(x,), ((x,), {"dim": 0}), ((x,), {"descending": True}), ((ties,), {"stable": True}),
            ((ties,), {"stable": True, "descending": True}), ((rng.normal(size=(8,)).astype(np.float32),), {}),
            Sample((nan,), special=True), Sample((nan,), {"descending": True}, special=True),
            ((rng.integers(-5, 5, size=(9,)),), {"stable": True}), (np.zeros((3, 0), np.float32),),
            ((np.zeros((0, 4), np.float32),), {"dim": 0}), (np.array(1.5, np.float32),)]


def _prod(rng):
    x = rng.uniform(0.5, 1.5, size=(3, 9)).astype(np.float32) * np.sign(rng.normal(size=(3, 9))).astype(np.float32)
    z = x.copy()
    z[1, 3] = 0.0
    return [(x,), ((x,), {"dim": 1}), ((x,), {"dim": 0, "keepdim": True}), ((z,), {"dim": 1}), (z,),
            (rng.uniform(0.5, 1.5, size=(17,)).astype(np.float32),), ((np.zeros((0, 3), np.float32),), {"dim": 0}),
            ((rng.integers(-3, 4, size=(7,)),), {})]


def _argmax(rng):
    x = rng.normal(size=(3, 9)).astype(np.float32)
    return [(x,), ((x,), {"dim": 1}), ((x,), {"dim": 0, "keepdim": True}), ((rng.normal(size=(17,)),), {})]


ROWS = [
    *both("sum", reduction(DIMS)), *both("mean", reduction(DIMS)), *both("amax", reduction(DIMS)),
    *both("amin", reduction(DIMS)),
    row("torch.sum", samples((np.arange(6).reshape(2, 3),), (np.ones((0, 3), np.float32),))),
    *both("max", reduction(({},) + ONE_DIM)), *both("min", reduction(({},) + ONE_DIM)),
    *both("argmax", build(_argmax), grad=False), *both("argmin", build(_argmax), grad=False),
    *both("prod", build(_prod)),
    *both("cumsum", reduction(SCAN)), *both("cumprod", reduction(SCAN, lo=0.5, hi=1.5)),
    row("torch.cumsum", samples(((np.arange(9),), {"dim": 0}), ((np.ones((3, 0), np.float32),), {"dim": 1}))),
    *both("all", build(_logic), grad=False), *both("any", build(_logic), grad=False),
    *both("sort", build(_sort)), *both("argsort", build(_sort), grad=False),
    # the traced sort (pairwise ranking) on ties and NaN, compiled natively against the eager (numpy) order
    row("torch.sort", build(lambda rng: [_sort(rng)[3]]), grad=False),
    row("torch.sort", build(lambda rng: [_sort(rng)[4]]), grad=False),
    row("torch.sort", samples(_sort(np.random.default_rng(0))[6].args), grad=False),
    row("torch.argsort", samples((_sort(np.random.default_rng(0))[7].args, {"descending": True})), grad=False),
    row("torch.msort", build(lambda rng: [(rng.normal(size=(9, 3)).astype(np.float32),)])),
    *both("softmax", reduction(SCAN)), *both("log_softmax", reduction(SCAN)),
    *rows("torch.nn.functional.softmax torch.nn.functional.log_softmax", reduction(SCAN)),
    row("torch.sum", reduction(DIMS), errors=[Sample((np.ones((2, 3), np.float32),), {"dim": 2})]),
    row("torch.mean", reduction(DIMS), errors=[Sample((np.arange(3),))]),
    row("torch.cumsum", reduction(SCAN), errors=[Sample((np.ones(3, np.float32),), {"dim": 1})]),
    row("torch.sort", build(_sort), errors=[Sample((np.ones(3, np.float32),), {"dim": 3})]),
]
