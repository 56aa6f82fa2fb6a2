"""Matmul kernels: inline loops for small products, cblas ?gemm above a measured threshold.

C[b] = op(A[b]) @ op(B[b]) with op = transpose when the IR operand was a permute of the last two
axes (peeled by fusion: a BLAS flag / an index swap, never a copy). Inline forms:
  B not transposed: i-k-j order, the j loop streams contiguous rows of B and C (vectorizes);
  B transposed:     i-j-k dot products over contiguous rows (a `reassoc` reduction, vectorizes).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir

from gradc.codegen.emitter import I1, constant, mem_type
from gradc.codegen.loops import I64, const_i64, for_range
from gradc.ir.passes.fuse import Kernel

# m*n*k at and above which BLAS is called (inline loops below); see benchmarks/bench_matmul_threshold.py
BLAS_MIN_MNK = int(os.environ.get("GRADC_BLAS_MIN_MNK", 16 * 16 * 16))
MUL_FLAGS = ("contract",)
I32 = ir.IntType(32)
CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112


def dims(k: Kernel) -> tuple[int, int, int, int]:
    """(batch, m, n, kk) of the kernel's product."""
    a, b = k.matmul.op.inputs
    m, kk = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = int(np.prod(a.shape[:-2], dtype=np.int64)) if a.shape[:-2] else 1
    return batch, m, n, kk


def use_blas(k: Kernel) -> bool:
    batch, m, n, kk = dims(k)
    if m * n * kk < BLAS_MIN_MNK or max(m, n, kk) >= 2 ** 31:
        return False
    try:
        from gradc.codegen import blas
    except ImportError:
        return False
    return bool(blas.available())


def emit_matmul_call(low, k: Kernel, b: ir.IRBuilder) -> None:
    (base_a, ta), (base_b, tb) = k.operands
    c = k.matmul
    ptrs = [low.pointer(b, base_a), low.pointer(b, base_b), low.pointer(b, c)]
    if use_blas(k):
        emit_blas(low, k, b, *ptrs)
        return
    func = emit_inline(low, k)
    b.call(func, ptrs)


def emit_blas(low, k: Kernel, b: ir.IRBuilder, pa, pb, pc) -> None:
    from gradc.codegen import blas
    (_, ta), (_, tb) = k.operands
    batch, m, n, kk = dims(k)
    dtype = k.matmul.dtype
    gemm = blas.declare_gemm(low.module, dtype.numpy)
    ty = mem_type(dtype)
    lda, ldb = (m if ta else kk), (kk if tb else n)
    i32 = lambda v: ir.Constant(I32, v)  # noqa: E731

    def call(bt):
        def at(p, size):
            if bt is None:
                return p
            return b.gep(p, [b.mul(bt, const_i64(size), flags=("nsw",))], inbounds=True, source_etype=ty)
        b.call(gemm, [i32(CBLAS_ROW_MAJOR), i32(CBLAS_TRANS if ta else CBLAS_NO_TRANS),
                      i32(CBLAS_TRANS if tb else CBLAS_NO_TRANS), i32(m), i32(n), i32(kk),
                      constant(ty, 1.0), at(pa, m * kk), i32(lda), at(pb, kk * n), i32(ldb),
                      constant(ty, 0.0), at(pc, m * n), i32(n)])
        return []
    if batch == 1:
        call(None)
    else:
        for_range(b, 0, batch, lambda bt, _c: call(bt), name="batch")


def emit_inline(low, k: Kernel) -> ir.Function:
    (base_a, ta), (base_b, tb) = k.operands
    c = k.matmul
    batch, m, n, kk = dims(k)
    ty = mem_type(c.dtype)
    size = int(np.dtype(c.dtype.numpy).itemsize)
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}", [("a", base_a), ("b", base_b), ("c", c)],
                                       {("c", c)})
    pa, pb, pc = ptrs[("a", base_a)], ptrs[("b", base_b)], ptrs[("c", c)]
    zero = constant(ty, 0.0)

    def at(ptr, *terms):
        off = const_i64(0)
        for i, s in terms:
            t = i if s == 1 else bld.mul(i, const_i64(s), flags=("nsw",))
            off = t if (isinstance(off, ir.Constant) and off.constant == 0) else bld.add(off, t, flags=("nsw",))
        return bld.gep(ptr, [off], inbounds=True, source_etype=ty)

    def load(ptr):
        return bld.load(ptr, typ=ty, align=size)

    def a_at(bt, i, p):  # A[bt, i, p]
        return at(pa, (bt, m * kk), (p, 1), (i, kk)) if not ta else at(pa, (bt, m * kk), (i, 1), (p, m))

    def b_at(bt, p, j):  # B[bt, p, j]
        return at(pb, (bt, kk * n), (j, 1), (p, n)) if not tb else at(pb, (bt, kk * n), (p, 1), (j, kk))

    def per_batch(bt, _c):
        if not tb:
            def row(i, _c):
                for_range(bld, 0, n, lambda j, _: bld.store(zero, at(pc, (bt, m * n), (i, n), (j, 1)),
                                                            align=size) and [], name="z")

                def kstep(p, _c):
                    a = load(a_at(bt, i, p))

                    def col(j, _c):
                        cp = at(pc, (bt, m * n), (i, n), (j, 1))
                        prod = bld.fmul(a, load(b_at(bt, p, j)), flags=MUL_FLAGS)
                        bld.store(bld.fadd(load(cp), prod, flags=MUL_FLAGS), cp, align=size)
                        return []
                    for_range(bld, 0, n, col, name="j")
                    return []
                for_range(bld, 0, kk, kstep, name="p")
                return []
            for_range(bld, 0, m, row, name="i")
        else:
            def row(i, _c):
                def col(j, _c):
                    def dot(p, acc):
                        prod = bld.fmul(load(a_at(bt, i, p)), load(b_at(bt, p, j)), flags=MUL_FLAGS)
                        return [bld.fadd(acc[0], prod, flags=("reassoc", "contract"))]
                    (s,) = for_range(bld, 0, kk, dot, carried=[zero], name="p")
                    bld.store(s, at(pc, (bt, m * n), (i, n), (j, 1)), align=size)
                    return []
                for_range(bld, 0, n, col, name="j")
                return []
            for_range(bld, 0, m, row, name="i")
        return []

    for_range(bld, 0, batch, per_batch, name="batch")
    bld.ret_void()
    return low.dedupe(func)


__all__ = ["emit_matmul_call", "BLAS_MIN_MNK", "I1", "I64"]
