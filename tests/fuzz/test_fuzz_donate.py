"""Donation fuzzing: random graphs (and their value-and-grad joints) compiled with results donated to
parameters of the same type, so the native code writes them in place wherever memory.donate_results
judges it safe. Guarantee tested: donation never changes a result; a donated output IS its argument array.

Each batch joins 10 random graphs into one Function and asks for every type-compatible (result, param)
pair it can (each param at most once, chosen at random), on 1 and 3 threads with BLAS, thread splitting and
matmul consumers forced onto the small graphs, where in-place writes meet every kind of kernel.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from fuzz.graphgen import RandomChoices, combine, generate
from fuzz.oracles import RTOL32, assert_close
from gradc.codegen import compile_function
from gradc.ir.core import Function, float32
from gradc.ir.interp import run
from gradc.ir.passes import optimize
from gradc.ir.passes.ad import ad

BATCHES = max(1, int(os.environ.get("GRADC_FUZZ_EXAMPLES", "2000")) // 100)  # 20 batches of 10 graphs in CI
PER_BATCH = 10


def donations(fn: Function, rng: random.Random) -> dict[int, int]:
    """Every result gets a random not-yet-taken parameter of its exact type, where one exists."""
    free = list(range(len(fn.params)))
    rng.shuffle(free)
    donate = {}
    for r, v in enumerate(fn.results):
        match = next((p for p in free if fn.params[p].type == v.type), None)
        if match is not None:
            donate[r] = match
            free.remove(match)
    return donate


def check(fn: Function, args: list[np.ndarray], rng: random.Random, tag: str) -> int:
    donate = donations(fn, rng)
    want = run(fn, *args)
    native = compile_function(fn, f"donate_fuzz_{tag}", donate=donate)
    assert set(native.donated.items()) <= set(donate.items())
    given = [a.copy() for a in args]
    got = native(*given)
    # any float32 value (casts mix precisions) puts the whole batch at float32 tolerance, and errors are judged
    # against each array's largest magnitude, as in the other fuzzers (tanh saturating at 1.0 in float32 makes
    # 1 - tanh^2 exactly 0 where numpy's tanh leaves one ulp: amplified, that is small beside the array's scale)
    tol = RTOL32 if any(v.dtype == float32 for v in fn.params + [op.result for op in fn.ops]) else 1e-9
    for r, (g, w) in enumerate(zip(got, want)):
        if r in native.donated:
            assert g is given[native.donated[r]], f"{tag}: donated result {r} is not its argument array"
        if w.dtype.kind == "f":  # the other fuzzers' tolerance: float32 cancellations (1 - tanh^2 near saturation)
            assert_close(g, w, f"{tag}: result {r}", rtol=tol)  # differ by more than tol absolute between
        else:  # numpy's tanh and the native polynomial
            np.testing.assert_array_equal(g, w, err_msg=f"{tag}: result {r}")
    for p, (a, b) in enumerate(zip(given, args)):  # parameters not donated are never written
        if p not in native.donated.values():
            np.testing.assert_array_equal(a, b, err_msg=f"{tag}: argument {p} changed")
    return len(native.donated)


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads-blas-consumers"])
def threading_mode(request, monkeypatch):
    if request.param > 1:
        from gradc.codegen import matmul
        from gradc.ir.passes import fuse
        monkeypatch.setattr(fuse, "THREAD_MIN_ELEMENTS", 2)
        monkeypatch.setattr(fuse, "CONSUMER_MIN_ELEMENTS", 1)
        monkeypatch.setattr(matmul, "BLAS_MIN_MNK", 1)
        monkeypatch.setattr(matmul, "GEMM_THREAD_MIN_MNK", 1)
        monkeypatch.setattr(fuse, "GEMM_K_SPLIT_MIN_MNK", 1)  # deep products: depth-split GEMMs
        monkeypatch.setattr(matmul, "CONSUMER_BLOCK_BYTES", 1)
    monkeypatch.setenv("GRADC_NUM_THREADS", str(request.param))  # part of the kernel cache key
    return request.param


def test_donated_results_equal_the_interpreter(threading_mode):
    applied = 0
    for batch in range(BATCHES):
        seed = 7919 * batch + threading_mode
        graphs = [generate(RandomChoices(seed * 100 + k), prefix=f"d{k}_") for k in range(PER_BATCH)]
        fn, args, wrt, cts = combine(graphs)
        rng = random.Random(seed)
        applied += check(optimize(fn), args, rng, f"fwd{batch}_{threading_mode}")
        if wrt:
            applied += check(optimize(ad(fn, wrt, seed="param")), args + cts, rng, f"joint{batch}_{threading_mode}")
    assert applied >= BATCHES  # the generator does give donatable results (in place at least once a batch)
