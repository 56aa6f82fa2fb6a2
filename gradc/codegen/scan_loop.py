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
"""

from __future__ import annotations

from llvmlite import ir

from gradc.codegen.loops import I64, const_i64, for_range
from gradc.ir.passes.fuse import Kernel
from gradc.ir.passes.memory import align, nbytes, scratch_layout
from gradc.ir.scan import split

I8 = ir.IntType(8)


def byte_offset(b: ir.IRBuilder, ptr: ir.Value, offset: ir.Value | int) -> ir.Value:
    off = const_i64(offset) if isinstance(offset, int) else offset
    return b.gep(ptr, [off], inbounds=True, source_etype=I8)


def emit_scan_loop(low, k: Kernel, b: ir.IRBuilder) -> None:
    """Emit kernel k (kind "scan") into the function `b` builds, inside ModuleLowerer `low`."""
    from gradc.codegen.lower import ModuleLowerer

    result = k.matmul
    attrs = result.op.attrs
    nc, nk, length, reverse = attrs["num_consts"], attrs["num_carry"], attrs["length"], attrs["reverse"]
    consts, init, xs = split(result.op.inputs, nc, nk)
    body_fn = k.body.fn
    sub = ModuleLowerer(low.module, f"{low.name}_s{k.index}", k.body, k.body_plan)
    sub.bodies = low.bodies  # identical kernels of two loops (a VJP's two forward scans) are emitted once
    sub.emit()
    inner = low.module.globals[f"{sub.name}_inner"]
    inner.linkage = "internal"
    inner.attributes.add("noinline")  # one body per loop: inlining would only grow the entry function

    scratch = low.plan.scratch[k.index]
    off_a, off_b, off_arena = scratch_layout(k)
    buf_a = low.arena_offset(b, scratch + off_a)
    buf_b = low.arena_offset(b, scratch + off_b)
    arena = low.arena_offset(b, scratch + off_arena)
    carry_vals = body_fn.results[:nk]
    carry_offs, at = [], 0
    for v in carry_vals:
        carry_offs.append(at)
        at += align(nbytes(v))
    out = low.pointer(b, result)
    # byte offsets of the flat result's parts: the final carries, then each stacked ys
    part_offs, at = [], 0
    for v in body_fn.results:
        part_offs.append(at)
        at += nbytes(v) * (1 if len(part_offs) <= nk else length)
    memcpy = low.intrinsic("llvm.memcpy.p0.p0.i64", ir.VoidType(), [ir.PointerType()] * 2 + [I64, ir.IntType(1)])
    no = ir.Constant(ir.IntType(1), 0)
    for v, src, off in zip(carry_vals, init, carry_offs):
        if nbytes(v):
            b.call(memcpy, [byte_offset(b, buf_a, off), low.pointer(b, src), const_i64(nbytes(v)), no])
    const_ptrs = [low.pointer(b, c) for c in consts]
    xs_ptrs = [low.pointer(b, x) for x in xs]
    x_bytes = [nbytes(x) // length if length else 0 for x in xs]

    def iteration(i, _carried):
        t = b.sub(const_i64(length - 1), i, flags=("nsw",)) if reverse else i
        odd = b.trunc(i, ir.IntType(1))
        cin, cout = b.select(odd, buf_b, buf_a), b.select(odd, buf_a, buf_b)
        args = list(const_ptrs)
        args += [byte_offset(b, cin, off) for off in carry_offs]
        args += [byte_offset(b, p, b.mul(t, const_i64(n), flags=("nsw",))) for p, n in zip(xs_ptrs, x_bytes)]
        args += [byte_offset(b, cout, off) for off in carry_offs]
        args += [byte_offset(b, out, b.add(const_i64(off), b.mul(t, const_i64(nbytes(v)), flags=("nsw",)),
                                           flags=("nsw",)))
                 for v, off in zip(body_fn.results[nk:], part_offs[nk:])]
        b.call(inner, args + [arena])
        return []
    for_range(b, 0, length, iteration, name=f"scan{k.index}")
    final = buf_a if length % 2 == 0 else buf_b
    for v, off, dst in zip(carry_vals, carry_offs, part_offs):
        if nbytes(v):
            b.call(memcpy, [byte_offset(b, out, dst), byte_offset(b, final, off), const_i64(nbytes(v)), no])
