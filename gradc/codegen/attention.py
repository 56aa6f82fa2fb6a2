"""Native flash attention: the `attention` and `attention_grad` kernels (ir/attention.py has the semantics).

Forward, one task per (batch*head n, block of BQ queries), claimed from an atomic counter by gradc's pool:

    m = -inf, l = 0, O = 0                                  (O is the output rows themselves)
    for each block of BK keys (causal: only blocks starting at or before the last query of the block):
        S = scale * Q_blk K_blk^T                            (one ?gemm into a BQ x BK stack buffer)
        per row: m' = max(m, max S), a = e^(m - m'), P = e^(S - m') (0 for keys above the diagonal),
                 l = a l + sum P, O *= a
        O += P V_blk                                         (one ?gemm, beta 1)
    O /= l, lse = m + log l

Backward, one task per n (dK and dV of one head are written by one thread, no atomics), per query block
and visible key block: S again, P = e^(S - lse), dV += P^T dO, dP = dO V^T, dS = scale P (dP - delta) with
delta = rowsum(dO * O) - d lse, dQ += dS K, dK += dS^T Q (five ?gemm calls on BQ x BK blocks). Only P and dP
of one block pair live on the stack: nothing grows as T^2. Elementwise row loops (exp: the vectorizable
polynomial of codegen/math.py; the row sums are the only `reassoc` reductions) are unit-stride i64 loops
the loop vectorizer takes. BLAS on the small blocks measured faster than inline loops (see the closing note).
"""

from __future__ import annotations

from llvmlite import ir

from gradc.codegen.emitter import ScalarEmitter, constant, mem_type
from gradc.codegen.loops import I64, const_i64, for_range
from gradc.codegen.matmul import CBLAS_NO_TRANS, CBLAS_ROW_MAJOR, CBLAS_TRANS, I32, PTR, claim_blocks
from gradc.ir.attention import ATTENTION_BLOCK_K, ATTENTION_BLOCK_Q
from gradc.ir.passes.fuse import Kernel

BQ, BK = ATTENTION_BLOCK_Q, ATTENTION_BLOCK_K
SUM_FLAGS = ("reassoc", "contract")
THREAD_MIN_FLOPS = 1 << 20  # below this many multiply-adds a call stays on one thread


class _Ctx:
    """Typed helpers for one kernel function."""

    def __init__(self, low, bld: ir.IRBuilder, dtype):
        from gradc.codegen import blas
        self.low, self.b, self.ty = low, bld, mem_type(dtype)
        self.size = 4 if self.ty == ir.FloatType() else 8
        self.gemm = blas.declare_gemm(low.module, dtype.numpy, "openblas")
        self.em = ScalarEmitter(low, bld)

    def c(self, v: float) -> ir.Constant:
        return constant(self.ty, v)

    def at(self, p, off):
        off = const_i64(off) if isinstance(off, int) else off
        return self.b.gep(p, [off], inbounds=True, source_etype=self.ty)

    def load(self, p, off):
        return self.b.load(self.at(p, off), typ=self.ty, align=self.size)

    def store(self, x, p, off):
        self.b.store(x, self.at(p, off), align=self.size)

    def mul(self, x, y):
        return self.b.mul(x, const_i64(y) if isinstance(y, int) else y, flags=("nsw",))

    def add(self, x, y):
        return self.b.add(x, const_i64(y) if isinstance(y, int) else y, flags=("nsw",))

    def imin(self, x, y):
        y = const_i64(y) if isinstance(y, int) else y
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)

    def call_gemm(self, ta: bool, tb: bool, m, n, k, alpha: float, a, lda: int, b_, ldb: int, beta: float, c,
                  ldc: int) -> None:
        i32 = lambda v: ir.Constant(I32, v) if isinstance(v, int) else self.b.trunc(v, I32)  # noqa: E731
        self.b.call(self.gemm, [i32(CBLAS_ROW_MAJOR), i32(CBLAS_TRANS if ta else CBLAS_NO_TRANS),
                                i32(CBLAS_TRANS if tb else CBLAS_NO_TRANS), i32(m), i32(n), i32(k), self.c(alpha), a,
                                i32(max(1, lda)), b_, i32(max(1, ldb)), self.c(beta), c, i32(max(1, ldc))])

    def fill(self, p, count, value) -> None:
        for_range(self.b, 0, count, lambda j, _: self.store(value, p, j) or [], name="fill")

    def fill_range(self, p, lo, hi, value) -> None:
        """p[lo:hi] = value (no iteration when lo >= hi)."""
        for_range(self.b, lo, hi, lambda j, _: self.store(value, p, j) or [], name="fill")

    def visible(self, causal: bool, r0, i, c0, cols):
        """Keys of this block row i sees: causal keeps key c0 + j <= r0 + i (0 when it sees none: the
        masked keys [lim, cols) are filled from there)."""
        if not causal:
            return cols
        lim = self.imin(self.b.sub(self.add(self.add(r0, i), 1), c0), cols)
        return self.b.select(self.b.icmp_signed("<", lim, const_i64(0)), const_i64(0), lim)


def _dims(op):
    q, k, v = op.inputs[:3]
    n, tq, d = q.shape
    return n, tq, k.shape[1], d, v.shape[2]


def emit_attention(low, k: Kernel, b: ir.IRBuilder) -> None:
    """Emit kernel k (kind "attention") at the builder of ModuleLowerer `low`'s entry function."""
    op = k.matmul.op
    n, tq, tk, d, dv = _dims(op)
    backward = op.name == "attention_grad"
    if tq == 0 or n == 0:
        if backward and k.matmul.type.size:  # no queries: dK and dV are zero
            memset = low.intrinsic("llvm.memset.p0.i64", ir.VoidType(), [PTR, ir.IntType(8), I64, ir.IntType(1)])
            b.call(memset, [low.pointer(b, k.matmul), ir.Constant(ir.IntType(8), 0),
                            const_i64(k.matmul.type.size * (4 if k.matmul.dtype.name == "float32" else 8)),
                            ir.Constant(ir.IntType(1), 0)])
        return
    tasks = n if backward else n * -(-tq // BQ)
    func = (_emit_backward if backward else _emit_forward)(low, k)
    work = n * tq * tk * (d + dv) * (3 if backward else 1)
    threads = max(1, min(low.prog.num_threads, tasks)) if work >= THREAD_MIN_FLOPS else 1
    counter = b.alloca(I64, name="tasks")
    b.store(const_i64(0), counter)
    args = [low.pointer(b, v) for v in k.operands] + [low.pointer(b, k.matmul), counter]
    if threads > 1:
        from gradc.codegen.threads import fork_join
        fork_join(low, b, func, [args] * threads)
    else:
        b.call(func, args)


def _emit_forward(low, k: Kernel) -> ir.Function:
    op = k.matmul.op
    n, tq, tk, d, dv = _dims(op)
    scale, causal = float(op.attrs["scale"]), bool(op.attrs["causal"])
    q, kk, v = op.inputs
    nqb = -(-tq // BQ)
    keys = [("q", q), ("k", kk), ("v", v), ("out", k.matmul)]  # (q, k and v may be one buffer: named keys)
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}_attention", keys, {keys[-1]}, extra=[PTR])
    cx = _Ctx(low, bld, k.matmul.dtype)
    pq, pk, pv, pres = (ptrs[key] for key in keys)
    s_buf = bld.alloca(cx.ty, size=const_i64(BQ * BK), name="S")
    s_buf.align = 64
    m_buf = bld.alloca(cx.ty, size=const_i64(BQ), name="m")
    l_buf = bld.alloca(cx.ty, size=const_i64(BQ), name="l")
    em = cx.em
    neg_inf = cx.c(float("-inf"))

    def task(t, _hi):
        nn = bld.sdiv(t, const_i64(nqb))
        r0 = cx.mul(bld.srem(t, const_i64(nqb)), BQ)
        r1 = cx.imin(cx.add(r0, BQ), tq)
        rows = bld.sub(r1, r0)
        row0 = cx.add(cx.mul(nn, tq), r0)  # global query row
        qp = cx.at(pq, cx.mul(row0, d))
        kp = cx.at(pk, cx.mul(nn, tk * d))
        vp = cx.at(pv, cx.mul(nn, tk * dv))
        op_ = cx.at(pres, cx.mul(row0, dv))
        lsep = cx.at(pres, cx.add(row0, n * tq * dv))
        cx.fill(m_buf, rows, neg_inf)
        cx.fill(l_buf, rows, cx.c(0.0))
        cx.fill(op_, cx.mul(rows, dv), cx.c(0.0))
        kend = cx.imin(r1, tk) if causal else const_i64(tk)
        nkb = bld.sdiv(cx.add(kend, BK - 1), const_i64(BK))

        def kblock(kb, _c):
            c0 = cx.mul(kb, BK)
            cols = cx.imin(bld.sub(kend, c0), BK)
            cx.call_gemm(False, True, rows, cols, d, scale, qp, d, cx.at(kp, cx.mul(c0, d)), d, 0.0, s_buf, BK)

            def row(i, _c):
                srow = cx.at(s_buf, cx.mul(i, BK))
                lim = cx.visible(causal, r0, i, c0, cols)
                (mx,) = for_range(bld, 0, lim, lambda j, acc: [em.maximum(acc[0], cx.load(srow, j))],
                                  carried=[neg_inf], name="mx")
                m_old = cx.load(m_buf, i)
                m_new = em.maximum(m_old, mx)
                alpha = bld.select(bld.fcmp_ordered("==", m_old, m_new), cx.c(1.0), em.exp(bld.fsub(m_old, m_new)))

                def pj(j, acc):
                    p = em.exp(bld.fsub(cx.load(srow, j), m_new))
                    cx.store(p, srow, j)
                    return [bld.fadd(acc[0], p, flags=SUM_FLAGS)]
                # visible keys, then the masked ones: exactly 0 (even if m is NaN), no exp computed for them
                (total,) = for_range(bld, 0, lim, pj, carried=[cx.c(0.0)], name="p")
                cx.fill_range(srow, lim, cols, cx.c(0.0))
                cx.store(bld.fadd(bld.fmul(cx.load(l_buf, i), alpha), total), l_buf, i)
                cx.store(m_new, m_buf, i)
                orow = cx.at(op_, cx.mul(i, dv))
                for_range(bld, 0, dv, lambda j, _: cx.store(bld.fmul(cx.load(orow, j), alpha), orow, j) or [],
                          name="rescale")
                return []
            for_range(bld, 0, rows, row, name="row")
            cx.call_gemm(False, False, rows, dv, cols, 1.0, s_buf, BK, cx.at(vp, cx.mul(c0, dv)), dv, 1.0, op_, dv)
            return []
        for_range(bld, 0, nkb, kblock, name="kb")

        def finish(i, _c):
            total = cx.load(l_buf, i)
            inv = bld.fdiv(cx.c(1.0), total)
            orow = cx.at(op_, cx.mul(i, dv))
            for_range(bld, 0, dv, lambda j, _: cx.store(bld.fmul(cx.load(orow, j), inv), orow, j) or [], name="norm")
            cx.store(bld.fadd(cx.load(m_buf, i), em.log(total)), lsep, i)
            return []
        for_range(bld, 0, rows, finish, name="fin")

    claim_blocks(func, bld, func.args[4], 1, n * nqb, task)
    return low.dedupe(func)


def _emit_backward(low, k: Kernel) -> ir.Function:
    op = k.matmul.op
    n, tq, tk, d, dv = _dims(op)
    scale, causal = float(op.attrs["scale"]), bool(op.attrs["causal"])
    q, kk, v, res, g = op.inputs
    nqb = -(-tq // BQ)
    keys = [(nm, x) for nm, x in zip(("q", "k", "v", "res", "g", "out"), (q, kk, v, res, g, k.matmul))]
    func, bld, ptrs = low.new_function(f"{low.name}_k{k.index}_attention_grad", keys, {keys[-1]}, extra=[PTR])
    cx = _Ctx(low, bld, k.matmul.dtype)
    pq, pk, pv, pres, pg, pout = (ptrs[key] for key in keys)
    p_buf = bld.alloca(cx.ty, size=const_i64(BQ * BK), name="P")
    dp_buf = bld.alloca(cx.ty, size=const_i64(BQ * BK), name="dP")
    p_buf.align = dp_buf.align = 64
    delta = bld.alloca(cx.ty, size=const_i64(BQ), name="delta")
    em = cx.em

    def task(nn, _hi):
        qp = cx.at(pq, cx.mul(nn, tq * d))
        kp = cx.at(pk, cx.mul(nn, tk * d))
        vp = cx.at(pv, cx.mul(nn, tk * dv))
        outp = cx.at(pres, cx.mul(nn, tq * dv))
        lsep = cx.at(pres, cx.add(cx.mul(nn, tq), n * tq * dv))
        dop = cx.at(pg, cx.mul(nn, tq * dv))
        dlsep = cx.at(pg, cx.add(cx.mul(nn, tq), n * tq * dv))
        dqp = cx.at(pout, cx.mul(nn, tq * d))
        dkp = cx.at(pout, cx.add(cx.mul(nn, tk * d), n * tq * d))
        dvp = cx.at(pout, cx.add(cx.mul(nn, tk * dv), n * tq * d + n * tk * d))
        cx.fill(dqp, tq * d, cx.c(0.0))
        cx.fill(dkp, tk * d, cx.c(0.0))
        cx.fill(dvp, tk * dv, cx.c(0.0))

        def qblock(qb, _c):
            r0 = cx.mul(qb, BQ)
            r1 = cx.imin(cx.add(r0, BQ), tq)
            rows = bld.sub(r1, r0)

            def delta_row(i, _c):
                r = cx.add(r0, i)
                (s,) = for_range(bld, 0, dv, lambda j, acc: [bld.fadd(acc[0], bld.fmul(
                    cx.load(dop, cx.add(cx.mul(r, dv), j)), cx.load(outp, cx.add(cx.mul(r, dv), j))),
                    flags=SUM_FLAGS)], carried=[cx.c(0.0)], name="dot")
                cx.store(bld.fsub(s, cx.load(dlsep, r)), delta, i)
                return []
            for_range(bld, 0, rows, delta_row, name="delta")
            kend = cx.imin(r1, tk) if causal else const_i64(tk)
            nkb = bld.sdiv(cx.add(kend, BK - 1), const_i64(BK))
            q_blk, do_blk = cx.at(qp, cx.mul(r0, d)), cx.at(dop, cx.mul(r0, dv))

            def kblock(kb, _c):
                c0 = cx.mul(kb, BK)
                cols = cx.imin(bld.sub(kend, c0), BK)
                k_blk, v_blk = cx.at(kp, cx.mul(c0, d)), cx.at(vp, cx.mul(c0, dv))
                cx.call_gemm(False, True, rows, cols, d, scale, q_blk, d, k_blk, d, 0.0, p_buf, BK)

                def prow(i, _c):
                    prow_ = cx.at(p_buf, cx.mul(i, BK))
                    lim = cx.visible(causal, r0, i, c0, cols)
                    lse = cx.load(lsep, cx.add(r0, i))

                    def pj(j, _c):
                        cx.store(em.exp(bld.fsub(cx.load(prow_, j), lse)), prow_, j)
                        return []
                    for_range(bld, 0, lim, pj, name="p")
                    cx.fill_range(prow_, lim, cols, cx.c(0.0))  # masked keys: exactly 0, no exp
                    return []
                for_range(bld, 0, rows, prow, name="prow")
                cx.call_gemm(True, False, cols, dv, rows, 1.0, p_buf, BK, do_blk, dv, 1.0,
                             cx.at(dvp, cx.mul(c0, dv)), dv)
                cx.call_gemm(False, True, rows, cols, dv, 1.0, do_blk, dv, v_blk, dv, 0.0, dp_buf, BK)

                def dsrow(i, _c):
                    base = cx.mul(i, BK)
                    dl = cx.load(delta, i)

                    def sj(j, _c):
                        at = cx.add(base, j)
                        ds = bld.fmul(cx.load(p_buf, at), bld.fsub(cx.load(dp_buf, at), dl))
                        cx.store(bld.fmul(ds, cx.c(scale)), dp_buf, at)
                        return []
                    for_range(bld, 0, cols, sj, name="ds")
                    return []
                for_range(bld, 0, rows, dsrow, name="dsrow")
                cx.call_gemm(False, False, rows, d, cols, 1.0, dp_buf, BK, k_blk, d, 1.0, cx.at(dqp, cx.mul(r0, d)), d)
                cx.call_gemm(True, False, cols, d, rows, 1.0, dp_buf, BK, q_blk, d, 1.0, cx.at(dkp, cx.mul(c0, d)), d)
                return []
            for_range(bld, 0, nkb, kblock, name="kb")
            return []
        for_range(bld, 0, nqb, qblock, name="qb")

    claim_blocks(func, bld, func.args[6], 1, n, task)
    return low.dedupe(func)
