"""Native fork/join for large loop nests and GEMMs: a persistent process-wide pool of sleeping workers.

A kernel function `void k(ptr..., i64 begin, i64 end)` gets a thunk `ptr k_thunk(ptr ctx)` that unpacks a
context struct {ptr..., i64, i64} and calls it. The inner function fills one context per task in an array
on its stack and calls `gradc_parallel(thunk, contexts, stride, ntasks)`, which lives in a small module
compiled once per process (`ensure_pool`, disk-cached like kernels) and registered as a JIT symbol:

- workers sleep on a condition variable (never spin: on a loaded 2-core machine spinning threads steal
  the core the caller needs); starting them costs one pthread_create each, once per process;
- tasks are claimed from a shared counter by the workers AND the calling thread, so a worker that does
  not get a core only means the caller runs more tasks itself (and a forked child, whose workers are
  gone, runs them all);
- one job at a time: a second thread calling while a job is in flight runs its tasks inline.

Replaces pthread_create + pthread_join per threaded kernel (~35 us per fork measured on W2's GEMMs).
"""

from __future__ import annotations

import ctypes
import threading

from llvmlite import ir

from gradc.codegen.loops import I64

PTR = ir.PointerType()
I32 = ir.IntType(32)
PARALLEL = "gradc_parallel"
MAX_WORKERS = 63
SPIN_YIELDS = 200  # ~0.5 us each: an idle worker polls ~100 us before it sleeps


def declare_parallel(module: ir.Module) -> ir.Function:
    g = module.globals.get(PARALLEL)
    return g or ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64]), PARALLEL)


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
    """Run kernel(*per_thread_args[t]) for every t on the pool (the calling thread included); returns after all."""
    thunk, ctx_type = make_thunk(low.module, kernel)
    if any(t not in (PTR, I64) for t in ctx_type.elements):
        raise TypeError(f"thread contexts hold pointers and i64 only, got {ctx_type}")
    ntasks = len(per_thread_args)
    ctxs = b.alloca(ctx_type, size=ir.Constant(I64, ntasks))
    for t, args in enumerate(per_thread_args):
        for i, a in enumerate(args):
            b.store(a, b.gep(ctxs, [ir.Constant(I64, t), ir.Constant(I32, i)], inbounds=True))
    stride = 8 * len(ctx_type.elements)  # ptr and i64 fields only: no padding
    b.call(declare_parallel(low.module), [thunk, ctxs, ir.Constant(I64, stride), ir.Constant(I64, ntasks)])


# ----------------------------------------------------------------------------- the pool module

def pool_module() -> ir.Module:
    """gradc_pool_init() and gradc_parallel(fn, ctxs, stride, n) over pthread mutex/condition variables."""
    mod = ir.Module("gradc_pool")
    i8 = ir.IntType(8)
    void = ir.VoidType()

    def fn(name, ret, args, linkage=None):
        f = ir.Function(mod, ir.FunctionType(ret, args), name)
        if linkage:
            f.linkage = linkage
        return f

    def glob(name, ty, init):
        g = ir.GlobalVariable(mod, ty, name)
        g.initializer = init
        g.linkage = "internal"
        g.align = 64
        return g
    opaque = ir.ArrayType(i8, 128)  # pthread_mutex_t / pthread_cond_t fit (initialized by pthread_*_init)
    mutex, cv_work, cv_done = (glob(n, opaque, ir.Constant(opaque, None)) for n in ("mutex", "cv_work", "cv_done"))
    state = {n: glob(n, I64, ir.Constant(I64, 0)) for n in ("stride", "ntasks", "next", "done", "gen", "busy",
                                                              "workers")}
    job_fn, job_ctxs = glob("job_fn", PTR, ir.Constant(PTR, None)), glob("job_ctxs", PTR, ir.Constant(PTR, None))
    lock = fn("pthread_mutex_lock", I32, [PTR])
    unlock = fn("pthread_mutex_unlock", I32, [PTR])
    wait = fn("pthread_cond_wait", I32, [PTR, PTR])
    broadcast = fn("pthread_cond_broadcast", I32, [PTR])
    mutex_init = fn("pthread_mutex_init", I32, [PTR, PTR])
    cond_init = fn("pthread_cond_init", I32, [PTR, PTR])
    create = fn("pthread_create", I32, [PTR, PTR, PTR, PTR])
    detach = fn("pthread_detach", I32, [I64])
    sched_yield = fn("sched_yield", I32, [])
    null = ir.Constant(PTR, None)
    c = lambda v: ir.Constant(I64, v)  # noqa: E731
    task_type = ir.FunctionType(PTR, [PTR])

    def get(b, name):
        return b.load(state[name], typ=I64)

    def put(b, name, value):
        b.store(value, state[name])

    init = fn("gradc_pool_init", I32, [])
    b = ir.IRBuilder(init.append_basic_block())
    for x in (mutex,):
        b.call(mutex_init, [x, null])
    for x in (cv_work, cv_done):
        b.call(cond_init, [x, null])
    b.ret(ir.Constant(I32, 0))

    # run_tasks(): with the mutex held, claim and run tasks until none is left; returns with the mutex held
    run = fn("gradc_pool_run_tasks", void, [], "internal")
    b = ir.IRBuilder(run.append_basic_block("entry"))
    head, body, done_blk = (run.append_basic_block(x) for x in ("claim", "run", "done"))
    b.branch(head)
    b.position_at_end(head)
    i = get(b, "next")
    b.cbranch(b.icmp_signed("<", i, get(b, "ntasks")), body, done_blk)
    b.position_at_end(body)
    put(b, "next", b.add(i, c(1)))
    f = b.load(job_fn, typ=task_type.as_pointer())  # typed: llvmlite reads the callee's type off it
    ctx = b.gep(b.load(job_ctxs, typ=PTR), [b.mul(i, get(b, "stride"))], source_etype=i8)
    b.call(unlock, [mutex])
    b.call(f, [ctx])
    b.call(lock, [mutex])
    d = b.add(get(b, "done"), c(1))
    put(b, "done", d)
    with b.if_then(b.icmp_signed("==", d, get(b, "ntasks"))):
        b.call(broadcast, [cv_done])
    b.branch(head)
    b.position_at_end(done_blk)
    b.ret_void()

    worker = fn("gradc_pool_worker", PTR, [PTR], "internal")
    b = ir.IRBuilder(worker.append_basic_block("entry"))
    b.call(lock, [mutex])
    seen = b.alloca(I64)
    b.store(get(b, "gen"), seen)
    spins = b.alloca(I64)
    sleep, wake = worker.append_basic_block("sleep"), worker.append_basic_block("wake")
    b.branch(sleep)
    b.position_at_end(sleep)
    # poll (yielding the core each time) for a short while before sleeping: the next kernel of the same call
    # usually follows within microseconds, and a condition-variable wake-up costs tens of them
    b.store(c(0), spins)
    poll, polled = worker.append_basic_block("poll"), worker.append_basic_block("polled")
    b.branch(poll)
    b.position_at_end(poll)
    idle = b.icmp_signed("==", get(b, "gen"), b.load(seen, typ=I64))
    n_spins = b.load(spins, typ=I64)
    spin_more = worker.append_basic_block("spin")
    b.cbranch(b.and_(idle, b.icmp_signed("<", n_spins, c(SPIN_YIELDS))), spin_more, polled)
    b.position_at_end(spin_more)
    b.store(b.add(n_spins, c(1)), spins)
    b.call(unlock, [mutex])
    b.call(sched_yield, [])
    b.call(lock, [mutex])
    b.branch(poll)
    b.position_at_end(polled)
    with b.if_then(b.icmp_signed("==", get(b, "gen"), b.load(seen, typ=I64))):
        b.call(wait, [cv_work, mutex])
    b.cbranch(b.icmp_signed("==", get(b, "gen"), b.load(seen, typ=I64)), sleep, wake)  # spurious wake-up
    b.position_at_end(wake)
    b.store(get(b, "gen"), seen)
    b.call(run, [])
    b.branch(sleep)

    par = fn(PARALLEL, void, [task_type.as_pointer(), PTR, I64, I64])
    f, ctxs, stride, n = par.args
    b = ir.IRBuilder(par.append_basic_block("entry"))
    tid = b.alloca(I64)
    b.call(lock, [mutex])
    inline, pooled = par.append_basic_block("inline"), par.append_basic_block("pooled")
    b.cbranch(b.icmp_signed("!=", get(b, "busy"), c(0)), inline, pooled)
    b.position_at_end(inline)  # another thread's job is in flight: run ours here, in order
    b.call(unlock, [mutex])
    pre = b.block
    ih, ib, ie = (par.append_basic_block(x) for x in ("i.head", "i.body", "i.exit"))
    b.branch(ih)
    b.position_at_end(ih)
    k = b.phi(I64)
    k.add_incoming(c(0), pre)
    b.cbranch(b.icmp_signed("<", k, n), ib, ie)
    b.position_at_end(ib)
    b.call(f, [b.gep(ctxs, [b.mul(k, stride)], source_etype=i8)])
    k.add_incoming(b.add(k, c(1)), b.block)
    b.branch(ih)
    b.position_at_end(ie)
    b.ret_void()

    b.position_at_end(pooled)
    put(b, "busy", c(1))
    want = b.select(b.icmp_signed("<", b.sub(n, c(1)), c(MAX_WORKERS)), b.sub(n, c(1)), c(MAX_WORKERS))
    sh, sb, se = (par.append_basic_block(x) for x in ("spawn", "spawn.one", "spawn.done"))
    b.branch(sh)
    b.position_at_end(sh)
    b.cbranch(b.icmp_signed("<", get(b, "workers"), want), sb, se)
    b.position_at_end(sb)
    rc = b.call(create, [tid, null, worker, null])
    ok_blk = par.append_basic_block("spawned")
    b.cbranch(b.icmp_signed("==", rc, ir.Constant(I32, 0)), ok_blk, se)  # no thread: the caller works alone
    b.position_at_end(ok_blk)
    b.call(detach, [b.load(tid, typ=I64)])
    put(b, "workers", b.add(get(b, "workers"), c(1)))
    b.branch(sh)
    b.position_at_end(se)
    b.store(f, job_fn)
    b.store(ctxs, job_ctxs)
    put(b, "stride", stride)
    put(b, "ntasks", n)
    put(b, "next", c(0))
    put(b, "done", c(0))
    put(b, "gen", b.add(get(b, "gen"), c(1)))
    b.call(broadcast, [cv_work])
    b.call(run, [])
    wh, wb, we = (par.append_basic_block(x) for x in ("join", "join.wait", "joined"))
    b.branch(wh)
    b.position_at_end(wh)
    b.cbranch(b.icmp_signed("<", get(b, "done"), get(b, "ntasks")), wb, we)
    b.position_at_end(wb)
    b.call(wait, [cv_done, mutex])
    b.branch(wh)
    b.position_at_end(we)
    put(b, "busy", c(0))
    b.call(unlock, [mutex])
    b.ret_void()
    return mod


_pool_lock = threading.Lock()
_pool = None  # the NativeCode of the pool module: alive for the rest of the process


def ensure_pool() -> None:
    """Compile (or load from the disk cache) the pool module once and make `gradc_parallel` resolvable."""
    global _pool
    if _pool is not None:
        return
    with _pool_lock:
        if _pool is not None:
            return
        import llvmlite.binding as llvm

        from gradc.codegen import cache, jit
        text = str(pool_module())
        key = cache.entry_key(text, "gradc_pool", {"opt": jit.OPT_LEVEL})
        hit = cache.load(key)
        code = None
        if hit is not None:
            try:
                code = jit.load_object(hit[1])
                jit.STATS["loaded"] -= 1  # the counters count kernels; the pool is runtime support
            except Exception:
                code = None
        if code is None:
            code = jit.jit_module(jit.parse(text))  # no O3: ~10 ms saved, and this code only waits and calls
            jit.STATS["compiled"] -= 1
            if code.object_bytes:
                cache.store(key, {"pool": 1}, code.object_bytes)
        ctypes.CFUNCTYPE(ctypes.c_int)(code.address("gradc_pool_init"))()
        llvm.add_symbol(PARALLEL, code.address(PARALLEL))
        code.pin()  # workers poll inside this code until the process is gone
        _pool = code
