"""JIT, in-memory kernel cache (LRU, compile-once, eviction) and on-disk object cache."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import warnings
import weakref

import numpy as np
import pytest
from test_runtime import check, compile_fake, rand

from gradc.codegen import cache, compile_function, jit
from gradc.codegen.jit import KernelCache


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path / "cache"))
    cache.reset()
    yield
    cache.reset()


def cache_files(tmp_path):
    d = tmp_path / "cache"
    return sorted(d.glob("*" + cache.SUFFIX)) if d.exists() else []


# ------------------------------------------------------------------------------------------- JIT

def _axpy_module(n: int) -> str:
    from llvmlite import ir
    f32, i64, ptr = ir.FloatType(), ir.IntType(64), ir.PointerType()
    mod = ir.Module("axpy")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr]), "axpy")
    for a in fn.args:
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), fn.entry_basic_block)
    x, y, z = (b.load(b.gep(p, [i], inbounds=True, source_etype=f32), typ=f32) for p in fn.args)
    b.store(b.fadd(b.fmul(x, y), z), b.gep(fn.args[2], [i], inbounds=True, source_etype=f32))
    nxt = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", nxt, ir.Constant(i64, n)), loop, done)
    b.position_at_end(done)
    b.ret_void()
    return str(mod)


def test_pass_pipeline_vectorizes_a_float_loop():
    mod = jit.optimize(jit.parse(_axpy_module(4096)))
    assert "x float>" in str(mod)  # the loop vectorizer ran: vector types in the optimized IR
    asm = jit.assembly(mod)
    assert any(reg in asm for reg in ("ymm", "zmm")) or "xmm" in asm


def test_target_machine_is_fresh_per_engine():
    tms = [jit.target_machine() for _ in range(2)]
    assert tms[0] is not tms[1]
    name, features = jit.host_cpu()
    assert name and "+" in features
    # many engines one after the other (each takes ownership of its own target machine)
    fns = [compile_fake((3,)) for _ in range(5)]
    for cf in fns:
        check(cf, rand(3, seed=1), rand(3, seed=2))


# ------------------------------------------------------------------------------- in-memory cache

def test_compile_once_under_concurrency():
    kc = KernelCache(maxsize=8)
    builds, barrier = [], threading.Barrier(8)
    results = []

    def build():
        builds.append(1)
        time.sleep(0.05)  # make the race window wide
        return compile_fake((5,), tag="once")

    def worker():
        barrier.wait()
        results.append(kc.get_or_build("key", build))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 8 and all(r is results[0] for r in results)


def test_build_failure_is_not_cached_and_is_retried():
    kc = KernelCache(maxsize=4)
    with pytest.raises(RuntimeError):
        kc.get_or_build("k", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert "k" not in kc
    assert kc.get_or_build("k", lambda: "ok") == "ok"


def test_compile_function_compiles_each_specialization_once(monkeypatch):
    import gradc
    from gradc.api import trace_types
    from gradc.ir.core import TensorType, float32

    monkeypatch.setenv("GRADC_CACHE", "0")

    def f(x, y):
        return (x * y + 1.0).sum()

    fn = trace_types(f, [TensorType((33,), float32)] * 2)
    before = jit.STATS["compiled"]
    first = compile_function(fn)
    again = compile_function(trace_types(f, [TensorType((33,), float32)] * 2))  # equal IR text: same kernel
    assert again is first and jit.STATS["compiled"] == before + 1
    other = compile_function(trace_types(f, [TensorType((34,), float32)] * 2))
    assert other is not first and jit.STATS["compiled"] == before + 2
    x = np.arange(33, dtype=np.float32)
    np.testing.assert_allclose(first(x, x)[0], (x * x + 1).sum(), rtol=1e-6)
    assert gradc is not None


def test_eviction_frees_code_but_held_functions_keep_working():
    kc = KernelCache(maxsize=2)
    held = kc.get_or_build("a", lambda: compile_fake((4,)))
    dropped = kc.get_or_build("b", lambda: compile_fake((4,)))
    dropped_code = weakref.ref(dropped.code)
    dropped_fn = weakref.ref(dropped)
    del dropped
    kc.get_or_build("c", lambda: compile_fake((4,)))
    kc.get_or_build("d", lambda: compile_fake((4,)))  # evicts "a" and "b" (LRU, bound 2)
    assert "a" not in kc and "b" not in kc and len(kc) == 2
    gc.collect()
    assert dropped_fn() is None and dropped_code() is None  # engine (and its machine code) released
    assert not held.code.closed
    check(held, rand(4, seed=1), rand(4, seed=2))  # evicted, but its owner keeps it alive


def test_lru_order_keeps_recently_used():
    kc = KernelCache(maxsize=2)
    kc.get_or_build("a", lambda: "A")
    kc.get_or_build("b", lambda: "B")
    kc.get_or_build("a", lambda: "never")  # touch a
    kc.get_or_build("c", lambda: "C")
    assert "a" in kc and "b" not in kc


def test_native_code_close_is_idempotent():
    cf = compile_fake((2,))
    code = cf.code
    code.close()
    code.close()
    assert code.closed


def test_cache_size_from_env(monkeypatch):
    monkeypatch.setenv("GRADC_KERNEL_CACHE_SIZE", "3")
    assert KernelCache().maxsize == 3


# ---------------------------------------------------------------------------------- disk cache

def test_entry_written_and_loaded_without_compiling(tmp_path):
    cf = compile_fake((6,), tag="disk")
    (entry,) = cache_files(tmp_path)
    assert entry.stat().st_size > 100
    before = dict(jit.STATS)
    again = compile_fake((6,), tag="disk")  # same key: from disk, no optimization or codegen
    assert jit.STATS["compiled"] == before["compiled"] and jit.STATS["loaded"] == before["loaded"] + 1
    check(again, rand(6, seed=3), rand(6, seed=4))
    assert again.as_text("fused") == cf.as_text("fused")
    assert not list((tmp_path / "cache").glob(".tmp-*"))  # atomic write left no temporary behind


def _second_process(tmp_path, env_extra=None):
    code = ("import json, numpy as np, test_runtime as t\n"
            "from gradc.codegen import jit\n"
            "cf = t.compile_fake((9,), tag='proc')\n"
            "x = np.arange(9, dtype=np.float32)\n"
            "z, s = cf(x, x); assert np.allclose(z, x * x + 1) and s == (x * x).sum()\n"
            "print(json.dumps(jit.STATS))\n")
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=os.path.dirname(__file__),
               **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_loads_from_disk(tmp_path):
    assert _second_process(tmp_path) == {"compiled": 1, "loaded": 0}
    assert _second_process(tmp_path) == {"compiled": 0, "loaded": 1}
    assert _second_process(tmp_path, {"GRADC_CACHE": "0"}) == {"compiled": 1, "loaded": 0}


@pytest.mark.parametrize("damage", ["flip_payload", "truncate", "garbage", "empty", "wrong_key"])
def test_damaged_entry_is_recompiled_not_loaded(tmp_path, damage):
    compile_fake((7,), tag="damage")
    (entry,) = cache_files(tmp_path)
    blob = bytearray(entry.read_bytes())
    if damage == "flip_payload":
        blob[-20] ^= 0xFF
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        blob = bytearray(os.urandom(len(blob)))
    elif damage == "empty":
        blob = bytearray()
    else:  # a valid entry whose header names another key (stale or copied)
        blob = blob.replace(entry.stem.encode(), b"0" * len(entry.stem), 1)
    entry.write_bytes(bytes(blob))
    before = dict(jit.STATS)
    cf = compile_fake((7,), tag="damage")
    assert jit.STATS["compiled"] == before["compiled"] + 1 and jit.STATS["loaded"] == before["loaded"]
    check(cf, rand(7, seed=5), rand(7, seed=6))
    assert cache.load(entry.stem) is not None  # rewritten, valid again


def test_entry_for_other_cpu_features_is_not_used(tmp_path, monkeypatch):
    compile_fake((5,), tag="cpu")
    real = jit.host_cpu()
    monkeypatch.setattr(jit, "host_cpu", lambda: (real[0], real[1].replace("+avx2", "-avx2")))
    before = jit.STATS["compiled"]
    compile_fake((5,), tag="cpu")
    assert jit.STATS["compiled"] == before + 1 and len(cache_files(tmp_path)) == 2


def test_key_depends_on_every_input(monkeypatch):
    base = cache.entry_key("ir", "k", {"opt": 3})
    assert cache.entry_key("ir", "k", {"opt": 3}) == base
    assert cache.entry_key("ir2", "k", {"opt": 3}) != base
    assert cache.entry_key("ir", "k2", {"opt": 3}) != base
    assert cache.entry_key("ir", "k", {"opt": 2}) != base
    monkeypatch.setattr(jit, "versions", lambda: {"llvmlite": "0.0", "llvm": "1"})
    assert cache.entry_key("ir", "k", {"opt": 3}) != base


def test_unwritable_cache_dir_warns_once_and_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GRADC_CACHE_DIR", str(blocker / "sub"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cf1 = compile_fake((3,))
        cf2 = compile_fake((3,))
    assert len([w for w in caught if issubclass(w.category, cache.CacheWarning)]) == 1
    check(cf1, rand(3), rand(3, seed=1))
    check(cf2, rand(3), rand(3, seed=1))


def test_cache_disabled_by_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE", "0")
    compile_fake((3,))
    assert cache_files(tmp_path) == [] and cache.cache_dir() is None


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.delenv("GRADC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "gradc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "gradc"


def test_prune_keeps_recently_used(tmp_path):
    d = tmp_path / "prune"
    d.mkdir()
    for i in range(8):
        (d / f"{i:02d}{cache.SUFFIX}").write_bytes(b"x")
        os.utime(d / f"{i:02d}{cache.SUFFIX}", (1000 + i, 1000 + i))
    os.utime(d / f"00{cache.SUFFIX}")  # touched now: most recent
    cache._prune(d, limit=4)
    left = sorted(p.name for p in d.iterdir())
    assert len(left) == 3 and f"00{cache.SUFFIX}" in left and f"07{cache.SUFFIX}" in left


def test_concurrent_compiles_of_different_kernels():
    results, errors = {}, []

    def worker(i):
        try:
            cf = compile_fake((i + 3,))
            results[i] = check(cf, rand(i + 3, seed=i), rand(i + 3, seed=i + 50))
        except Exception as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert sorted(results) == list(range(6))


BLAS_PROCESS = r"""
import json, numpy as np
from gradc.api import trace_types
from gradc.codegen import compile_function, jit
from gradc.ir.core import TensorType, float32
fn = trace_types(lambda a, b: a @ b, [TensorType((64, 256), float32), TensorType((256, 128), float32)])
cf = compile_function(fn)
rng = np.random.default_rng(0)
a, b = rng.standard_normal((64, 256)).astype(np.float32), rng.standard_normal((256, 128)).astype(np.float32)
(c,) = cf(a, b)
assert np.allclose(c, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-3)
print(json.dumps({**jit.STATS, "blas": any(e.startswith(("scipy_", "gradc_mkl_")) for e in cf.meta["externals"])}))
"""


def test_blas_kernel_loads_from_disk_in_a_new_process(tmp_path):
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", BLAS_PROCESS], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0]["blas"], "this matmul is expected to go through BLAS"
    assert runs[0]["compiled"] == 1 and runs[1] == {"compiled": 0, "loaded": 1, "blas": True}
