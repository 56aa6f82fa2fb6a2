"""Native fork/join for large loop nests: pthread_create / pthread_join declared in the module.

The kernel function `void k(ptr..., i64 begin, i64 end)` gets a thunk `ptr k_thunk(ptr ctx)` that
unpacks a context struct {ptr..., i64, i64} and calls it. The inner function starts threads 1..T-1
on their ranges, runs range 0 itself, then joins in order. If pthread_create fails, that range runs
on the calling thread, so the result is the same either way. Symbols resolve from the process (glibc).
"""

from __future__ import annotations

from llvmlite import ir

from gradc.codegen.loops import I64

PTR = ir.PointerType()
I32 = ir.IntType(32)


def declare_pthread(module: ir.Module) -> tuple[ir.Function, ir.Function]:
    g = module.globals
    create = g.get("pthread_create") or ir.Function(
        module, ir.FunctionType(I32, [PTR, PTR, PTR, PTR]), "pthread_create")
    join = g.get("pthread_join") or ir.Function(module, ir.FunctionType(I32, [I64, PTR]), "pthread_join")
    return create, join


def make_thunk(module: ir.Module, kernel: ir.Function) -> tuple[ir.Function, ir.LiteralStructType]:
    """`ptr {kernel}_thunk(ptr ctx)`: call kernel with the arguments stored in *ctx."""
    ctx_type = ir.LiteralStructType([a.type for a in kernel.args])
    existing = module.globals.get(f"{kernel.name}_thunk")
    if existing is not None:  # a deduplicated kernel used by several threaded call sites
        return existing, ctx_type
    thunk = ir.Function(module, ir.FunctionType(PTR, [PTR]), f"{kernel.name}_thunk")
    thunk.linkage = "internal"
    b = ir.IRBuilder(thunk.append_basic_block("entry"))
    args = []
    for i, a in enumerate(kernel.args):
        field = b.gep(thunk.args[0], [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True,
                      source_etype=ctx_type)
        args.append(b.load(field, typ=a.type))
    b.call(kernel, args)
    b.ret(ir.Constant(PTR, None))
    return thunk, ctx_type


def fork_join(low, b: ir.IRBuilder, kernel: ir.Function, per_thread_args: list[list[ir.Value]]) -> None:
    """Run kernel(*per_thread_args[t]) for every t, t >= 1 on new threads, t == 0 here; then join."""
    create, join = declare_pthread(low.module)
    thunk, ctx_type = make_thunk(low.module, kernel)
    started = []
    for args in per_thread_args[1:]:
        ctx = b.alloca(ctx_type)
        for i, a in enumerate(args):
            b.store(a, b.gep(ctx, [ir.Constant(I32, 0), ir.Constant(I32, i)], inbounds=True))
        tid = b.alloca(I64)
        rc = b.call(create, [tid, ir.Constant(PTR, None), thunk, ctx])
        ok = b.icmp_signed("==", rc, ir.Constant(I32, 0))
        with b.if_then(b.not_(ok), likely=False):
            b.call(thunk, [ctx])  # no thread: run this range here
        started.append((ok, tid))
    b.call(kernel, per_thread_args[0])
    for ok, tid in started:
        with b.if_then(ok, likely=True):
            b.call(join, [b.load(tid, typ=I64), ir.Constant(PTR, None)])
