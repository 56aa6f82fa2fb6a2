"""gradc.codegen.blas: OpenBLAS gemm through ctypes and from JIT-compiled llvmlite code, against numpy."""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest
from llvmlite import binding as llvm
from llvmlite import ir

from gradc.codegen import blas

pytestmark = pytest.mark.skipif(not blas.available(), reason="scipy-openblas32 is not installed")

SIZES = (1, 7, 17, 33)
TOL = {np.float32: dict(rtol=2e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def operands(dtype, m, k, n, ta, tb, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    return a, b, want


class GemmKernel:
    """JIT: void mm(ptr A, ptr B, ptr C) { gemm(RowMajor, ta, tb, m, n, k, 1, A, lda, B, ldb, 0, C, n) }."""

    def __init__(self, dtype, m, k, n, ta=False, tb=False):
        blas.load()
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        i32, ptr = ir.IntType(32), ir.PointerType()
        fty = ir.FloatType() if dtype == np.float32 else ir.DoubleType()
        mod = ir.Module(name="gemm_test")
        mod.triple = llvm.get_process_triple()
        fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, ptr, ptr]), name="mm")
        g = blas.declare_gemm(mod, dtype)
        assert blas.declare_gemm(mod, dtype) is g  # declared once per module
        b = ir.IRBuilder(fn.append_basic_block())
        c = lambda v: ir.Constant(i32, v)  # noqa: E731
        lda, ldb = (m if ta else k), (k if tb else n)
        b.call(g, [c(blas.ROW_MAJOR), c(blas.TRANS if ta else blas.NO_TRANS), c(blas.TRANS if tb else blas.NO_TRANS),
                   c(m), c(n), c(k), ir.Constant(fty, 1.0), fn.args[0], c(lda), fn.args[1], c(ldb),
                   ir.Constant(fty, 0.0), fn.args[2], c(n)])
        b.ret_void()
        self.ir_text = str(mod)
        parsed = llvm.parse_assembly(self.ir_text)
        parsed.verify()
        target = llvm.Target.from_default_triple()
        tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(), opt=2)
        self.engine = llvm.create_mcjit_compiler(parsed, tm)
        self.engine.finalize_object()
        self.cfunc = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
            self.engine.get_function_address("mm"))

    def __call__(self, a, b, out):
        self.cfunc(a.ctypes.data, b.ctypes.data, out.ctypes.data)
        return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_numpy_all_transposes(dtype, ta, tb):
    for m in SIZES:
        for k in SIZES:
            for n in SIZES:
                a, b, want = operands(dtype, m, k, n, ta, tb, seed=m * 10000 + k * 100 + n)
                got = blas.gemm(a, b, trans_a=ta, trans_b=tb)
                assert got.dtype == dtype and got.shape == (m, n)
                np.testing.assert_allclose(got, want, **TOL[dtype], err_msg=f"{m}x{k}x{n} ta={ta} tb={tb}")


def test_gemm_transposed_views_need_no_flag_and_no_copy():
    a, b, want = operands(np.float32, 17, 33, 7, True, True)
    np.testing.assert_allclose(blas.gemm(a.T, b.T), want, **TOL[np.float32])  # F-contiguous views
    out = np.full((17, 7), np.nan, np.float32)
    assert blas.gemm(a, b, True, True, out=out) is out
    np.testing.assert_allclose(out, want, **TOL[np.float32])


def test_gemm_non_contiguous_and_empty():
    rng = np.random.default_rng(1)
    big = rng.standard_normal((20, 20))
    a, b = big[::2, ::3], big[1::3, ::2]  # strided views are copied
    np.testing.assert_allclose(blas.gemm(a, b[: a.shape[1]]), a @ b[: a.shape[1]], rtol=1e-12)
    assert blas.gemm(np.ones((3, 0)), np.ones((0, 4))).tolist() == np.zeros((3, 4)).tolist()
    assert blas.gemm(np.ones((0, 5)), np.ones((5, 4))).shape == (0, 4)


def test_gemm_bad_input():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="inner dimensions"):
        blas.gemm(a, np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="float32 and float64"):
        blas.gemm(np.ones((3, 4), np.int64), np.ones((4, 2), np.int64))
    with pytest.raises(TypeError, match="dtype float64, expected float32"):
        blas.gemm(a, np.ones((4, 2)))
    with pytest.raises(ValueError, match="2-D"):
        blas.gemm(np.ones(4, np.float32), np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        blas.gemm(a, np.ones((4, 2), np.float32), out=np.empty((2, 3), np.float32))
    with pytest.raises(ValueError, match="overlaps"):
        sq = np.ones((4, 4), np.float32)
        blas.gemm(sq, np.ones((4, 4), np.float32), out=sq)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_jit_code_calls_declared_gemm(dtype, ta, tb):
    m, k, n = 7, 33, 17
    kern = GemmKernel(dtype, m, k, n, ta, tb)
    assert f"declare void @\"{blas.GEMM_SYMBOLS[np.dtype(dtype)]}\"(i32" in kern.ir_text
    a, b, want = operands(dtype, m, k, n, ta, tb)
    out = np.full((m, n), np.nan, dtype)
    kern(a, b, out)
    np.testing.assert_allclose(out, want, **TOL[dtype])


def test_load_is_idempotent_and_thread_safe():
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(blas.load())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and paths[0].endswith(".so")


def test_set_num_threads_round_trips():
    before = blas.get_num_threads()
    try:
        blas.set_num_threads(1)
        assert blas.get_num_threads() == 1
        a, b, want = operands(np.float32, 64, 64, 64, False, False)
        np.testing.assert_allclose(blas.gemm(a, b), want, **TOL[np.float32])
    finally:
        blas.set_num_threads(before)
    with pytest.raises(ValueError, match="positive int"):
        blas.set_num_threads(0)


def test_declare_gemm_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32 and float64"):
        blas.declare_gemm(ir.Module(), np.int32)
