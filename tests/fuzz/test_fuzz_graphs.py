"""Differential fuzzing: random graphs (1-30 ops each, the whole registry) agree across every engine.

Each hypothesis example builds PER_BATCH (20) graphs and joins them into one Function, so one native compile
checks twenty graphs. For every batch:
  - the interpreter runs the graph and its AD joint (unoptimized: simplify/cse bugs show as differences);
  - native code runs the optimized joint (forward results and gradients in one compiled function), on
    the generated inputs and again with NaN/inf/-0.0 planted in them (NaN/inf classes must match);
  - eager tensors replay the ops and take gradients with autograd.grad (every 5th batch natively);
  - PyTorch replays the ops and takes gradients with torch.autograd (when installed);
  - graphs of at most 12 ops, all float64 and without stop_gradient, are checked against central differences
    along random directions;
  - every 5th batch also compiles the forward-only Function, and checks second order (AD of the adjoint,
    Hessian-vector products) natively against the interpreter and PyTorch's double backward.
GRADC_FUZZ_EXAMPLES sets the number of graphs (default 2,000; derandomized so CI is repeatable).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradc
from fuzz.graphgen import APPROXIMATE_RTOL, Graph, HypothesisChoices, RandomChoices, combine, generate
from fuzz.oracles import RTOL32, assert_close, directional_fd, eager, torch_replay
from gradc.codegen import compile_function
from gradc.ir.core import Function
from gradc.ir.interp import run
from gradc.ir.ops import OPS
from gradc.ir.passes import optimize
from gradc.ir.passes.ad import ad
from gradc.ir.printer import print_function

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False

GRAPHS = int(os.environ.get("GRADC_FUZZ_EXAMPLES", "2000"))
PER_BATCH = 20
FD_MAX_OPS = 12
STATS = {"graphs": 0, "ops": 0, "graphs_20_ops_or_more": 0, "batches": 0, "fd": 0, "torch": 0, "native_eager": 0,
         "second_order": 0}


def owner(graphs: list[Graph], kind: str) -> list[int]:
    """For each result (kind="results") or gradient (kind="grads") of the batch, the graph it belongs to."""
    out = []
    for k, g in enumerate(graphs):
        out += [k] * (len(g.fn.results) if kind == "results" else len(g.wrt))
    return out


def compare_all(graphs, got, want, kind: str, engine: str) -> None:
    """Compare lists of arrays; a failure names the engine and prints the graph it came from."""
    for i, (a, b, k) in enumerate(zip(got, want, owner(graphs, kind))):
        try:
            g = graphs[k]
            rtol = RTOL32 if g.has_float32 else APPROXIMATE_RTOL if g.approximate and engine == "torch" else None
            assert_close(a, b, f"{engine}: {kind[:-1]} {i}", rtol)
        except AssertionError as e:
            g = graphs[k]
            raise AssertionError(f"{e}\n--- graph {k} ---\n{print_function(g.fn)}\nargs={g.args!r}") from None


def with_special_values(args: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Copies of the float arguments with one or two elements set to NaN, +-inf or -0.0."""
    out = []
    for a in args:
        a = np.array(a, copy=True)
        if a.dtype.kind == "f" and a.size:
            for _ in range(rng.integers(1, 3)):
                a.flat[rng.integers(a.size)] = rng.choice([np.nan, np.inf, -np.inf, -0.0])
        out.append(a)
    return out


def check_second_order(graphs, fn, joint, args, wrt, cts, rng) -> None:
    """AD of the adjoint (Hessian-vector products): native vs interpreter vs PyTorch's double backward."""
    gradients = Function("gradients", joint.params, joint.ops, joint.results[len(fn.results):])
    vs = [rng.standard_normal(r.type.shape).astype(r.dtype.numpy) for r in gradients.results]
    hvp = ad(gradients, wrt, seed="param")
    want = run(hvp, *args, *cts, *vs)[len(vs):]
    compare_all(graphs, compile_function(optimize(hvp))(*args, *cts, *vs)[len(vs):], want, "grads",
                "native second order")
    if HAVE_TORCH:
        compare_all(graphs, torch_replay(fn, args, wrt, cts, second=vs)[2], want, "grads", "torch second order")
    STATS["second_order"] += len(graphs)


def check_batch(graphs: list[Graph], extra: bool, rng: np.random.Generator) -> None:
    fn, args, wrt, cts = combine(graphs)
    n = len(fn.results)
    forward = run(fn, *args)
    joint = ad(fn, wrt, seed="param")
    reference = run(joint, *args, *cts)
    compare_all(graphs, reference[:n], forward, "results", "interpreter joint vs forward")
    want_grads = reference[n:]

    compiled = compile_function(optimize(joint))
    native = compiled(*args, *cts)
    compare_all(graphs, native[:n], forward, "results", "native joint")
    compare_all(graphs, native[n:], want_grads, "grads", "native gradients")

    # NaN, +-inf and -0.0 in the inputs: the same NaN/inf classes everywhere; integer results too (a cast
    # of NaN/inf or of an out-of-range float is numpy's and PyTorch's x86 value, INT_MIN, in native code)
    special = with_special_values(args, rng)
    want = run(joint, *special, *cts)
    got = compiled(*special, *cts)
    compare_all(graphs, got[:n], want[:n], "results", "native, special inputs")
    compare_all(graphs, got[n:], want[n:], "grads", "native gradients, special inputs")

    if extra:
        compare_all(graphs, compile_function(optimize(fn))(*args), forward, "results", "native forward")
        check_second_order(graphs, fn, joint, args, wrt, cts, rng)
        gradc.set_backend("native")
    try:
        results, grads = eager(fn, args, wrt, cts)
    finally:
        gradc.set_backend("auto")
    compare_all(graphs, results, forward, "results", "eager")
    compare_all(graphs, grads, want_grads, "grads", "eager native" if extra else "eager")
    STATS["native_eager"] += extra

    if HAVE_TORCH:
        results, grads = torch_replay(fn, args, wrt, cts)
        compare_all(graphs, results, forward, "results", "torch")
        compare_all(graphs, grads, want_grads, "grads", "torch")
        STATS["torch"] += len(graphs)

    for k, g in enumerate(graphs):
        if len(g.fn.ops) <= FD_MAX_OPS and not g.has_float32 and not g.approximate and not any(
                op.name == "stop_gradient" for op in g.fn.ops):
            sub = reference[n:]
            start = sum(len(h.wrt) for h in graphs[:k])
            try:
                directional_fd(g.fn, g.args, g.wrt, g.cotangents, sub[start:start + len(g.wrt)], rng)
            except AssertionError as e:
                raise AssertionError(f"{e}\n--- graph {k} ---\n{print_function(g.fn)}") from None
            STATS["fd"] += 1
    STATS["graphs"] += len(graphs)
    STATS["graphs_20_ops_or_more"] += sum(len(g.fn.ops) >= 20 for g in graphs)
    STATS["ops"] += len(fn.ops)
    STATS["batches"] += 1


@settings(max_examples=max(1, GRAPHS // PER_BATCH), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(st.data())
def test_native_eager_torch_and_fd_agree_on_random_graphs(data):
    ch = HypothesisChoices(data)
    graphs = [generate(ch, prefix=f"g{k}_") for k in range(PER_BATCH)]
    check_batch(graphs, extra=STATS["batches"] % 5 == 0, rng=np.random.default_rng(ch.integer(0, 2**31)))


@pytest.fixture
def threads_and_blas_everywhere(monkeypatch):
    """Every loop nest with an outer dimension >= 2 split over threads, every matmul through (threaded) BLAS,
    every elementwise first reader of a matmul its consumer, run in row blocks of 8, every deep product split
    over its depth."""
    from gradc.codegen import matmul
    from gradc.ir.passes import fuse
    monkeypatch.setattr(fuse, "THREAD_MIN_ELEMENTS", 2)
    monkeypatch.setattr(fuse, "CONSUMER_MIN_ELEMENTS", 1)
    monkeypatch.setattr(matmul, "CONSUMER_BLOCK_BYTES", 1)
    monkeypatch.setattr(matmul, "BLAS_MIN_MNK", 1)
    monkeypatch.setattr(matmul, "GEMM_THREAD_MIN_MNK", 1)
    monkeypatch.setattr(fuse, "GEMM_K_SPLIT_MIN_MNK", 1)  # deep products: depth-split GEMMs
    monkeypatch.setenv("GRADC_NUM_THREADS", "3")  # also part of the kernel cache key: no stale kernels
    yield


@settings(max_examples=max(1, GRAPHS // PER_BATCH // 10), derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), print_blob=True)
@given(st.data())
def test_threaded_kernels_and_blas_agree_on_random_graphs(threads_and_blas_everywhere, data):
    """The same checks with the size thresholds lowered: thread splitting and BLAS calls on small graphs."""
    ch = HypothesisChoices(data)
    graphs = [generate(ch, prefix=f"t{k}_") for k in range(PER_BATCH)]
    check_batch(graphs, extra=False, rng=np.random.default_rng(ch.integer(0, 2**31)))


def test_generator_covers_the_whole_registry():
    """Every registered op appears in the generated graphs (a new op without a fuzz rule fails here)."""
    used: dict[str, int] = {}
    from fuzz.graphgen import GraphGen
    for seed in range(300):
        ch = RandomChoices(seed)
        gen = GraphGen(ch)
        gen.build(ch.integer(1, 30))
        for name, count in gen.used.items():
            used[name] = used.get(name, 0) + count
    missing = sorted(set(OPS) - set(used))
    assert not missing, f"ops never generated: {missing}"


def test_fuzz_statistics_report():
    """Runs after the fuzz test in file order: prints what was checked (visible with -s) and sanity-checks it."""
    if STATS["batches"] == 0:
        pytest.skip("the fuzz test did not run in this session")
    print(f"\nfuzz: {STATS}")
    assert STATS["graphs"] >= min(GRAPHS, PER_BATCH)
    assert STATS["fd"] > 0
