"""Shared test helpers: full Jacobians from the AD pass and from central differences.

Exposed as fixtures so test modules need no imports from this file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from gradc.ir.core import Function
from gradc.ir.interp import run
from gradc.ir.passes.ad import ad
from gradc.ir.verify import verify


def ad_jacobians(fn: Function, args: Sequence[np.ndarray], wrt: Sequence[int]) -> list[np.ndarray]:
    """d result0 / d args[i] for i in wrt, as (result size, arg size) matrices, one basis cotangent at a time."""
    joint = ad(fn, wrt=wrt, seed="param")
    verify(joint)
    out = run(fn, *args)[0]
    jacs = [np.zeros((out.size, args[i].size)) for i in wrt]
    for k in range(max(out.size, 1)):
        ct = np.zeros(out.shape, dtype=out.dtype)
        if out.size:
            ct.flat[k] = 1
        results = run(joint, *args, ct)
        np.testing.assert_array_equal(results[0], out)  # the joint also returns the forward result
        for jac, i, g in zip(jacs, wrt, results[1:]):
            assert g.shape == args[i].shape and g.dtype == args[i].dtype, (g.shape, g.dtype, args[i].shape)
            if out.size:
                jac[k] = g.ravel()
            else:
                assert not np.any(g)
    return jacs


def fd_jacobians(fn: Function, args: Sequence[np.ndarray], wrt: Sequence[int], eps: float) -> list[np.ndarray]:
    """The same matrices by central differences (evaluated on the interpreter)."""
    jacs = []
    for i in wrt:
        cols = []
        for j in range(args[i].size):
            shifted = []
            for sign in (1, -1):
                a = [np.array(x, copy=True) for x in args]
                a[i].flat[j] += sign * eps
                shifted.append(run(fn, *a)[0].astype(np.float64).ravel())
            cols.append((shifted[0] - shifted[1]) / (2 * eps))
        out_size = run(fn, *args)[0].size
        jacs.append(np.array(cols).T.reshape(out_size, args[i].size))
    return jacs


class Jacobians:
    ad = staticmethod(ad_jacobians)
    fd = staticmethod(fd_jacobians)


@pytest.fixture
def jacobians() -> type[Jacobians]:
    return Jacobians


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/*.ir from the current output (same as GRADC_UPDATE_GOLDEN=1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow_memory: JIT memory tests (subprocesses compiling thousands of "
                                       "kernels, ~1-2 min); they run in CI, deselect with -m 'not slow_memory'")
    config.addinivalue_line("markers", "readme: every README command in fresh venvs (tests/test_readme.py, ~2-3 min); "
                                       "runs in CI, deselect with -m 'not readme', GRADC_README_FULL=1 for full forms")
