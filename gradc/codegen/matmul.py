"""Matmul kernels: inline loops for small products, cblas ?gemm above a measured threshold (OpenBLAS, or
MKL where it measured faster for the shape: gemm_choice.py).

C[b] = op(A[b]) @ op(B[b]) with op = transpose when the IR operand was a permute of the last two
axes (peeled by fusion: a BLAS flag / an index swap, never a copy).

Threads: gradc's OpenBLAS runs single-threaded (see codegen/__init__.py); a large GEMM is cut into
column (or row) blocks that the kernel's own threads claim one at a time from an atomic counter, each
block one single-threaded ?gemm call on a view (pointer offset + leading dimension, no copies). OpenBLAS's
own threads spin-wait at barriers inside every call: on a loaded 2-core machine a descheduled peer
made a 6 ms GEMM take 30 ms, while here a thread that never gets a core only means the calling thread
claims more blocks.

A consumer (fuse.py: an elementwise loop kernel over C, e.g. an optimizer update of a weight gradient) runs
per block of C's rows inside the same claimed block, right after the GEMM wrote it: blocks are sized to stay
in cache, so C is read back from there and the pool is entered once for both.

Inline forms:
  B not transposed: i-k-j order, the j loop streams contiguous rows of B and C (vectorizes);
  B transposed:     i-j-k dot products over contiguous rows (a `reassoc` reduction, vectorizes).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np
from llvmlite import ir

from gradc.codegen.emitter import I1, constant, mem_type
from gradc.codegen.loops import I64, const_i64, for_range
from gradc.ir.passes.fuse import Kernel, gemm_k_parts, grid_threads

# m*n*k at and above which BLAS is called (inline loops below); see benchmarks/bench_matmul_threshold.py
BLAS_MIN_MNK = int(os.environ.get("GRADC_BLAS_MIN_MNK", 16 * 16 * 16))
# m*n*k at and above which a BLAS GEMM is split across threads (see benchmarks/bench_perf.py gemm)
GEMM_THREAD_MIN_MNK = int(os.environ.get("GRADC_GEMM_THREAD_MIN_MNK", 2 ** 21))
# blocks are claimed dynamically (a thread that does not get a core leaves its share to the others); two
# per thread above this size, one below: a 64x784x64 block runs at 85 GFLOP/s, 64x784x128 at 91
GEMM_TWO_BLOCKS_MIN_MNK = 2 ** 25
MUL_FLAGS = ("contract",)
I32 = ir.IntType(32)
PTR = ir.PointerType()
CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_TRANS = 101, 111, 112


def dims(k: Kernel) -> tuple[int, int, int, int]:
    """(batch, m, n, kk) of the kernel's product."""
    a, b = k.matmul.op.inputs
    m, kk = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    batch = int(np.prod(a.shape[:-2], dtype=np.int64)) if a.shape[:-2] else 1
    return batch, m, n, kk


@functools.cache
def blas_library() -> str | None:
    """The OpenBLAS library path, found WITHOUT importing scipy_openblas32 when possible: its import
    (importlib.metadata and more, ~17-30 ms) was the largest part of lowering in a first call.
    Falls back to gradc.codegen.blas's finder; None when OpenBLAS is not installed."""
    try:
        spec = importlib.util.find_spec("scipy_openblas32")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    for root in spec.submodule_search_locations or ():
        lib = os.path.join(root, "lib")
        try:
            names = sorted(x for x in os.listdir(lib) if x.startswith("libscipy_openblas")
                           and (x.endswith((".so", ".dylib", ".dll")) or ".so." in x))
        except OSError:
            continue
        if names:
            return os.path.join(lib, names[0])
    try:
        from gradc.codegen import blas
        return blas._find_library()
    except ImportError:
        return None


def use_blas(k: Kernel) -> bool:
    batch, m, n, kk = dims(k)
    if not k.matmul.dtype.is_float or m * n * kk < BLAS_MIN_MNK or max(m, n, kk) >= 2 ** 31:
        return False
    return blas_library() is not None


# a consumer's row blocks aim at this many bytes of C (read back from cache right after the GEMM): W6 step,
# medians of 20 x 100 steps: 64 KB 358-368 us, 256 KB 391-395 us, 1 MB (one block per thread) 373-374 us
CONSUMER_BLOCK_BYTES = 64 * 1024


def emit_matmul_call(low, k: Kernel, b: ir.IRBuilder, consumer=None) -> None:
    """The matmul kernel k at the builder; `consumer` (a LoopKernelLowerer) runs on C after it."""
    (base_a, ta), (base_b, tb) = k.operands
    c = k.matmul
    ptrs = [low.pointer(b, base_a), low.pointer(b, base_b), low.pointer(b, c)]
    if use_blas(k):
        if consumer is not None and dims(k)[0] == 1:
            emit_blas_with_consumer(low, k, b, *ptrs, consumer)
            return
        emit_blas(low, k, b, *ptrs)
    else:
        b.call(emit_inline(low, k), ptrs)
    if consumer is not None:
        consumer.emit_call(b)


def provider(low, k: Kernel) -> str:
    """The BLAS for this kernel's GEMM shape (gemm_choice.py), noted in the lowering's fused text."""
    from gradc.codegen.gemm_choice import choose
    (_, ta), (_, tb) = k.operands
    _, m, n, kk = dims(k)
    choice = choose(k.matmul.dtype.numpy, m, n, kk, ta, tb)
    low.gemm_providers[k.index] = choice
    return choice


def emit_blas(low, k: Kernel, b: ir.IRBuilder, pa, pb, pc) -> None:
    from gradc.codegen import blas
    (_, ta), (_, tb) = k.operands
    batch, m, n, kk = dims(k)
    dtype = k.matmul.dtype
    gemm = blas.declare_gemm(low.module, dtype.numpy, provider(low, k))
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
    blocks = gemm_blocks(k)
    if batch == 1 and gemm_k_parts(k) > 1:  # (parts fixed by the shape: the same bits at any thread count)
        emit_blas_k_parts(low, k, b, pa, pb, pc, low.prog.num_threads)
    elif blocks > 1:
        counter = b.alloca(I64, name="blocks")
        b.store(const_i64(0), counter)
        part = emit_blas_blocks(low, k, blocks)
        threads = min(low.prog.num_threads, blocks)
        if threads > 1:
            from gradc.codegen.threads import fork_join
            fork_join(low, b, part, [[pa, pb, pc, counter]] * threads)
        else:  # the same blocks one after another: the same bits as with more threads
            b.call(part, [pa, pb, pc, counter])
    elif batch == 1:
        call(None)
    else:
        for_range(b, 0, batch, lambda bt, _c: call(bt), name="batch")


def gemm_blocks(k: Kernel) -> int:
    """How many blocks of C this GEMM is cut into (1: one plain call), from its shape and grid_threads()."""
    batch, m, n, kk = dims(k)
    if batch != 1 or m * n * kk < GEMM_THREAD_MIN_MNK:
        return 1
    threads = max(1, min(grid_threads(), max(m, n) // 16))
    blocks = threads * (2 if m * n * kk >= GEMM_TWO_BLOCKS_MIN_MNK else 1)
    return blocks if threads > 1 else 1


def emit_blas_blocks(low, k: Kernel, blocks: int) -> ir.Function:
    """`void part(ptr a, ptr b, ptr c, ptr counter)`: claim blocks of C's columns (rows if m >= n) from
    *counter until none is left, one single-threaded gemm each (A/B/C views: offsets, same strides)."""
    (base_a, _), (base_b, _) = k.operands
    _, m, n, _ = dims(k)
    by_cols = m < n  # each block re-packs the whole other operand: split the larger side
    size = n if by_cols else m
    step = 16 if by_cols else 8  # column blocks start on 64-byte boundaries
    chunk = -(-(-(-size // blocks)) // step) * step
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}_gemm", [("a", base_a), ("b", base_b), ("c", k.matmul)],
                                       {("c", k.matmul)}, ret=None, extra=[PTR])
    views = ptrs[("a", base_a)], ptrs[("b", base_b)], ptrs[("c", k.matmul)]
    claim_blocks(func, bld, func.args[3], chunk, size,
                 lambda lo, hi: gemm_block(low, k, bld, *views, lo, hi, by_cols))
    return low.dedupe(func)


def emit_blas_k_parts(low, k: Kernel, b: ir.IRBuilder, pa, pb, pc, threads: int) -> None:
    """C = sum over fuse.GEMM_K_PARTS slices of the depth of op(A)[:, part] @ op(B)[part, :]: part 0 into C,
    part p > 0 into arena scratch p - 1 (parts claimed by the threads from a counter), then
    C = ((C + P1) + P2) + ... in that order: the same bits whichever thread ran which part."""
    from gradc.codegen import blas
    (base_a, ta), (base_b, tb) = k.operands
    _, m, n, kk = dims(k)
    parts = gemm_k_parts(k)
    width = -(-kk // parts)
    ty = mem_type(k.matmul.dtype)
    gemm = blas.declare_gemm(low.module, k.matmul.dtype.numpy, provider(low, k))
    lda, ldb = (m if ta else kk), (kk if tb else n)
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}_gemm_depth", [("a", base_a), ("b", base_b),
                                       ("c", k.matmul)], {("c", k.matmul)}, ret=None, extra=[PTR, PTR])
    va, vb, vc = ptrs[("a", base_a)], ptrs[("b", base_b)], ptrs[("c", k.matmul)]
    scratch = func.args[3]

    def at(p, off):
        return bld.gep(p, [off], inbounds=True, source_etype=ty)

    def part(lo, hi):  # one part per claimed block: lo = part index
        start = bld.mul(lo, const_i64(width), flags=("nsw",))
        depth = bld.sub(bld.select(bld.icmp_signed(">", const_i64(kk), bld.add(start, const_i64(width))),
                                   bld.add(start, const_i64(width)), const_i64(kk)), start)
        a = at(va, bld.mul(start, const_i64(m)) if ta else start)  # op(A)[:, part]: rows of A^T or columns of A
        bb = at(vb, start if tb else bld.mul(start, const_i64(n)))
        slot = at(scratch, bld.mul(bld.sub(lo, const_i64(1)), const_i64(m * n)))
        c = bld.select(bld.icmp_signed("==", lo, const_i64(0)), vc, slot)
        i32 = lambda v: ir.Constant(I32, v)  # noqa: E731
        bld.call(gemm, [i32(CBLAS_ROW_MAJOR), i32(CBLAS_TRANS if ta else CBLAS_NO_TRANS),
                        i32(CBLAS_TRANS if tb else CBLAS_NO_TRANS), i32(m), i32(n), bld.trunc(depth, I32),
                        constant(ty, 1.0), a, i32(lda), bb, i32(ldb), constant(ty, 0.0), c, i32(n)])
    claim_blocks(func, bld, func.args[4], 1, parts, part)
    run = low.dedupe(func)
    counter = b.alloca(I64, name="parts")
    b.store(const_i64(0), counter)
    scratch_ptr = low.arena_offset(b, low.plan.partials[(k.index, k.matmul)])
    args = [pa, pb, pc, scratch_ptr, counter]
    if threads > 1:
        from gradc.codegen.threads import fork_join
        fork_join(low, b, run, [args] * min(threads, parts))
    else:
        b.call(run, args)
    b.call(emit_sum_parts(low, k, parts), [pc, scratch_ptr])


def emit_sum_parts(low, k: Kernel, parts: int) -> ir.Function:
    """`void sum(ptr c, ptr scratch)`: C = ((C + P1) + P2) + ... elementwise (the parts of emit_blas_k_parts)."""
    _, m, n, _ = dims(k)
    ty = mem_type(k.matmul.dtype)
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}_sum_parts", [("c", k.matmul)], {("c", k.matmul)},
                                       ret=None, extra=[PTR])
    c, scratch = ptrs[("c", k.matmul)], func.args[1]
    scratch.attributes.add("noalias")
    scratch.attributes.align = 4

    def body(i, _carried):
        pi = bld.gep(c, [i], inbounds=True, source_etype=ty)
        acc = bld.load(pi, typ=ty)
        for p in range(1, parts):
            q = bld.gep(scratch, [bld.add(i, const_i64((p - 1) * m * n), flags=("nsw",))], inbounds=True,
                        source_etype=ty)
            acc = bld.fadd(acc, bld.load(q, typ=ty))
        bld.store(acc, pi)
        return []
    for_range(bld, 0, m * n, body, name="e")
    bld.ret_void()
    return low.dedupe(func)


def claim_blocks(func: ir.Function, bld: ir.IRBuilder, counter: ir.Value, chunk: int, size: int, body) -> None:
    """Finish `func` with a loop claiming blocks [lo, hi) of `chunk` (the last one clamped to `size`) from
    *counter until none is left; body(lo, hi) emits one block's work."""
    head, block, done = (func.append_basic_block(x) for x in ("claim", "block", "done"))
    bld.branch(head)
    bld.position_at_end(head)
    blk = bld.atomic_rmw("add", counter, const_i64(1), "monotonic")
    bld.cbranch(bld.icmp_signed("<", blk, const_i64(-(-size // chunk))), block, done)
    bld.position_at_end(block)
    lo = bld.mul(blk, const_i64(chunk), flags=("nsw",))
    hi = bld.add(lo, const_i64(chunk), flags=("nsw",))
    hi = bld.select(bld.icmp_signed(">", hi, const_i64(size)), const_i64(size), hi)
    body(lo, hi)
    bld.branch(head)
    bld.position_at_end(done)
    bld.ret_void()


def gemm_block(low, k: Kernel, bld: ir.IRBuilder, pa, pb, pc, lo, hi, by_cols: bool) -> None:
    """One single-threaded gemm on C[:, lo:hi] (by_cols) or C[lo:hi, :]: views by pointer offset."""
    from gradc.codegen import blas
    (_, ta), (_, tb) = k.operands
    _, m, n, kk = dims(k)
    ty = mem_type(k.matmul.dtype)
    gemm = blas.declare_gemm(low.module, k.matmul.dtype.numpy, provider(low, k))
    lda, ldb = (m if ta else kk), (kk if tb else n)
    width = bld.trunc(bld.sub(hi, lo), I32)

    def at(p, off):
        return bld.gep(p, [off], inbounds=True, source_etype=ty)
    if by_cols:  # C[:, lo:hi] = op(A) @ op(B)[:, lo:hi]
        mnk = (ir.Constant(I32, m), width, ir.Constant(I32, kk))
        pb, pc = at(pb, bld.mul(lo, const_i64(kk)) if tb else lo), at(pc, lo)
    else:  # C[lo:hi, :] = op(A)[lo:hi, :] @ op(B)
        mnk = (width, ir.Constant(I32, n), ir.Constant(I32, kk))
        pa, pc = at(pa, lo if ta else bld.mul(lo, const_i64(kk))), at(pc, bld.mul(lo, const_i64(n)))
    i32 = lambda v: ir.Constant(I32, v)  # noqa: E731
    bld.call(gemm, [i32(CBLAS_ROW_MAJOR), i32(CBLAS_TRANS if ta else CBLAS_NO_TRANS),
                    i32(CBLAS_TRANS if tb else CBLAS_NO_TRANS), *mnk,
                    constant(ty, 1.0), pa, i32(lda), pb, i32(ldb), constant(ty, 0.0), pc, i32(n)])


def emit_blas_with_consumer(low, k: Kernel, b: ir.IRBuilder, pa, pb, pc, consumer) -> None:
    """Row blocks of C claimed from a counter by the GEMM's threads: gemm on the block, then the consumer's
    main nest on the same rows (`part(a, b, c, counter, consumer buffers...)`)."""
    (base_a, _), (base_b, _) = k.operands
    _, m, n, kk = dims(k)
    row_bytes = n * int(np.dtype(k.matmul.dtype.numpy).itemsize)
    # rows cut for grid_threads(), not the run's limit: the same blocks (and bits) at every thread limit
    grid = max(1, min(grid_threads(), m // 8)) if m * n * kk >= GEMM_THREAD_MIN_MNK else 1
    threads = min(grid, low.prog.num_threads)
    rows = max(8, CONSUMER_BLOCK_BYTES // row_bytes // 8 * 8)
    rows = min(rows, -(-m // grid // 8) * 8 or 8)  # at least one block per thread
    blocks = -(-m // rows)
    rows = -(-(-(-m // blocks)) // 8) * 8  # even blocks
    main = consumer.emit_main()
    keys, writes, _ = consumer.main_buffers()
    own = [key for key in keys if key is not k.matmul]
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}_gemm_rows",
                                       [("a", base_a), ("b", base_b), ("c", k.matmul)] + own,
                                       {("c", k.matmul)} | (writes - {k.matmul}), ret=None, extra=[PTR])
    views = ptrs[("a", base_a)], ptrs[("b", base_b)], ptrs[("c", k.matmul)]

    def block(lo, hi):
        gemm_block(low, k, bld, *views, lo, hi, by_cols=False)
        bld.call(main, [views[2] if key is k.matmul else ptrs[key] for key in keys] + [lo, hi])
    claim_blocks(func, bld, func.args[3 + len(own)], rows, m, block)
    part = low.dedupe(func)
    counter = b.alloca(I64, name="blocks")
    b.store(const_i64(0), counter)
    args = [pa, pb, pc] + [low.arena_offset(b, low.plan.error_slot) if isinstance(key, tuple) else low.pointer(b, key)
                           for key in own] + [counter]
    if threads > 1:
        from gradc.codegen.threads import fork_join
        fork_join(low, b, part, [args] * threads)
    else:
        b.call(part, args)


def emit_inline(low, k: Kernel) -> ir.Function:
    (base_a, ta), (base_b, tb) = k.operands
    c = k.matmul
    batch, m, n, kk = dims(k)
    ty = mem_type(c.dtype)
    size = int(np.dtype(c.dtype.numpy).itemsize)
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}", [("a", base_a), ("b", base_b), ("c", c)],
                                       {("c", c)})
    pa, pb, pc = ptrs[("a", base_a)], ptrs[("b", base_b)], ptrs[("c", c)]
    zero = constant(ty, 0)
    if isinstance(ty, ir.IntType):  # integer products wrap, as numpy's and PyTorch's
        def fmul(x, y, flags=()):
            return bld.mul(x, y)

        def fadd(x, y, flags=()):
            return bld.add(x, y)
    else:
        fmul, fadd = bld.fmul, bld.fadd

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
                        prod = fmul(a, load(b_at(bt, p, j)), flags=MUL_FLAGS)
                        bld.store(fadd(load(cp), prod, flags=MUL_FLAGS), cp, align=size)
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
                        prod = fmul(load(a_at(bt, i, p)), load(b_at(bt, p, j)), flags=MUL_FLAGS)
                        return [fadd(acc[0], prod, flags=("reassoc", "contract"))]
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
