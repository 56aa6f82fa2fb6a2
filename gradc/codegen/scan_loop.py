"""Native lowering of a `scan` kernel: ONE LLVM loop around a call of the body's compiled kernels.

The body is fused and memory-planned once (`Kernel.body`, `Kernel.body_plan`) and emitted as its own
internal `{name}_s{k}_inner(params..., results..., arena)` by a nested ModuleLowerer in the same module,
so its matmuls call BLAS / split over the thread pool and its loop nests vectorize exactly as in a
top-level function, and compile time does not depend on the trip count. Per iteration t the loop passes

    consts       the scan's operand buffers, unchanged
    carry in     carry buffer A or B of the kernel's arena scratch (double-buffered by iteration parity)
    x_t          xs + t * (bytes of one slice)   (xs are C-contiguous: slice t is one contiguous block)
    carry out    the other carry buffer
    y_t          the flat result's ys part + t * (bytes of one y_t)
    arena        the body's arena, inside the scratch

so nothing is allocated and no Python runs per iteration. The initial carry is copied into buffer A
before the loop and the final buffer into the flat result's carry parts after it (carries are small).

Row blocks (`Kernel.parts` > 1, fuse.scan_kernel / ir.scan.split_rows): the body is compiled for one block
of rows (single-threaded), the scratch holds one region per block, and `Kernel.threads` threads claim blocks
from a counter (one thread: all of them in turn, the same bits), each running the whole loop with every
pointer above offset to its block's rows (rows are the leading axis of each carry, x_t and y_t, so a block's
rows are one contiguous run of each).
"""

from __future__ import annotations

from llvmlite import ir

from gradc.codegen.loops import I64, const_i64, for_range
from gradc.ir.passes.fuse import Kernel
from gradc.ir.passes.memory import align, nbytes, scratch_layout, scratch_stride
from gradc.ir.scan import split

I8 = ir.IntType(8)
PTR = ir.PointerType()


def byte_offset(b: ir.IRBuilder, ptr: ir.Value, offset: ir.Value | int) -> ir.Value:
    off = const_i64(offset) if isinstance(offset, int) else offset
    return b.gep(ptr, [off], inbounds=True, source_etype=I8)


def emit_scan_loop(low, k: Kernel, b: ir.IRBuilder) -> None:
    """Emit kernel k (kind "scan") into the function `b` builds, inside ModuleLowerer `low`."""
    from gradc.codegen.lower import ModuleLowerer

    result = k.matmul
    attrs = result.op.attrs
    nc, nk = attrs["num_consts"], attrs["num_carry"]
    consts, init, xs = split(result.op.inputs, nc, nk)
    sub = ModuleLowerer(low.module, f"{low.name}_s{k.index}", k.body, k.body_plan)
    sub.bodies = low.bodies  # identical kernels of two loops (a VJP's two forward scans) are emitted once
    sub.emit()
    inner = low.module.globals[f"{sub.name}_inner"]
    inner.linkage = "internal"
    inner.attributes.add("noinline")  # one body per loop: inlining would only grow the entry function
    scratch = low.arena_offset(b, low.plan.scratch[k.index])
    ptrs = [low.pointer(b, v) for v in list(consts) + list(init) + list(xs)] + [low.pointer(b, result), scratch]
    if k.parts == 1:
        emit_rows(low, k, inner, b, ptrs, None)
        return
    # row blocks claimed from a counter by the pool's threads (the calling thread included), each one the
    # whole loop over its rows with its own scratch: a thread that gets no core leaves its blocks to the others
    from gradc.codegen.matmul import claim_blocks
    from gradc.codegen.threads import fork_join
    func = ir.Function(low.module, ir.FunctionType(ir.VoidType(), [PTR] * (len(ptrs) + 1)),
                       f"{low.name}_s{k.index}_rows")
    func.linkage = "internal"
    func.attributes.add("noinline")
    bld = ir.IRBuilder(func.append_basic_block("entry"))
    claim_blocks(func, bld, func.args[-1], 1, k.parts,
                 lambda lo, _hi: emit_rows(low, k, inner, bld, list(func.args[:-1]), lo))
    counter = b.alloca(I64, name="row_blocks")
    b.store(const_i64(0), counter)
    if k.threads > 1:
        fork_join(low, b, func, [ptrs + [counter]] * k.threads)
    else:  # the same blocks one after another: the same bits as with more threads
        b.call(func, ptrs + [counter])


def emit_rows(low, k: Kernel, inner: ir.Function, b: ir.IRBuilder, ptrs: list, block: ir.Value | None) -> None:
    """The loop over all iterations for one row block (block None: all rows, k.parts == 1). ptrs: the consts,
    initial carries, xs, the flat result and the kernel's scratch region."""
    result = k.matmul
    attrs = result.op.attrs
    nc, nk, length, reverse = attrs["num_consts"], attrs["num_carry"], attrs["length"], attrs["reverse"]
    consts, init, xs = split(result.op.inputs, nc, nk)
    const_ptrs, init_ptrs, xs_ptrs = split(ptrs[:-2], nc, nk)
    out, scratch = ptrs[-2], ptrs[-1]
    body_fn = k.body.fn
    parts = k.parts

    def rows(nbytes_of_block: int) -> ir.Value | int:  # byte offset of this block's rows in a row-major value
        return 0 if block is None else b.mul(block, const_i64(nbytes_of_block), flags=("nsw",))

    def at(ptr: ir.Value, *offsets) -> ir.Value:
        for off in offsets:
            if not (isinstance(off, int) and off == 0):
                ptr = byte_offset(b, ptr, off)
        return ptr
    if block is not None:
        scratch = at(scratch, rows(scratch_stride(k)))
    off_a, off_b, off_arena = scratch_layout(k)
    buf_a, buf_b, arena = at(scratch, off_a), at(scratch, off_b), at(scratch, off_arena)
    carry_vals = body_fn.results[:nk]  # (one block's rows: 1/parts of each part of the flat result)
    carry_offs, pos = [], 0
    for v in carry_vals:
        carry_offs.append(pos)
        pos += align(nbytes(v))
    # byte offsets of the flat result's parts: the final carries, then each stacked ys
    part_offs, pos = [], 0
    for v in body_fn.results:
        part_offs.append(pos)
        pos += nbytes(v) * parts * (1 if len(part_offs) <= nk else length)
    memcpy = low.intrinsic("llvm.memcpy.p0.p0.i64", ir.VoidType(), [ir.PointerType()] * 2 + [I64, ir.IntType(1)])
    no = ir.Constant(ir.IntType(1), 0)
    for v, src, off in zip(carry_vals, init_ptrs, carry_offs):
        if nbytes(v):
            b.call(memcpy, [at(buf_a, off), at(src, rows(nbytes(v))), const_i64(nbytes(v)), no])
    x_bytes = [nbytes(x) // length if length else 0 for x in xs]  # one iteration's slice, all rows

    def iteration(i, _carried):
        t = b.sub(const_i64(length - 1), i, flags=("nsw",)) if reverse else i
        odd = b.trunc(i, ir.IntType(1))
        cin, cout = b.select(odd, buf_b, buf_a), b.select(odd, buf_a, buf_b)
        args = list(const_ptrs)
        args += [byte_offset(b, cin, off) for off in carry_offs]
        args += [at(p, b.mul(t, const_i64(n), flags=("nsw",)), rows(n // parts)) for p, n in zip(xs_ptrs, x_bytes)]
        args += [byte_offset(b, cout, off) for off in carry_offs]
        args += [at(out, b.add(const_i64(off), b.mul(t, const_i64(nbytes(v) * parts), flags=("nsw",)),
                               flags=("nsw",)), rows(nbytes(v)))
                 for v, off in zip(body_fn.results[nk:], part_offs[nk:])]
        b.call(inner, args + [arena])
        return []
    for_range(b, 0, length, iteration, name=f"scan{k.index}")
    final = buf_a if length % 2 == 0 else buf_b
    for v, off, dst in zip(carry_vals, carry_offs, part_offs):
        if nbytes(v):
            b.call(memcpy, [at(out, dst, rows(nbytes(v))), at(final, off), const_i64(nbytes(v)), no])
