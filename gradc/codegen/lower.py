"""Lowering: a Function -> fused kernels -> one llvmlite module with `{name}_inner`.

    void {name}_inner(ptr in_0, ..., ptr in_{n-1}, ptr out_0, ..., ptr out_{m-1}, ptr arena)

Inputs are C-contiguous, native, element-aligned buffers (bool: 1 byte); outputs are fresh buffers the
runtime allocated; the arena is 64-byte aligned and `arena_bytes` long. Every output is fully written,
except donated ones (`donate`, see memory.py): those results are written into their parameter's buffer,
and a nest that reads the parameter and writes the result gets ONE pointer for both (no noalias pair).

Each kernel of the FusedProgram becomes an internal function with `noalias` buffer arguments (inlined
by O3 unless threaded); fused values are evaluated per element by `Evaluator` (memoized per index),
using each OpDef's scalar `lower` rule with `ScalarEmitter`. Reductions accumulate in a register over
the innermost loop when it is reduced (the only `reassoc` flag in the module), otherwise in memory.

Gather indices are checked without branching in the loop: each kernel that evaluates a gather carries the
unsigned maximum of its indices through the innermost loop (a negative index is a huge unsigned one, so
one `umax` reduction catches both ends; it vectorizes), loads from a clamped index (memory safety), and
after the loop records the first out-of-range index in the arena's error slot (`cmpxchg`, so threads of
one call agree), which the runtime entry turns into an IndexError code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from gradc.codegen import loops
from gradc.codegen.emitter import ScalarEmitter, constant, fold_constant, ll_type, mem_type
from gradc.codegen.loops import I64, const_i64, for_range, linear_index
from gradc.ir.core import Function, TensorType, Value
from gradc.ir.passes.fuse import EPILOGUE, MAIN, FusedProgram, Kernel, fuse, fused_text
from gradc.ir.passes.memory import Home, MemoryPlan, donate_results, last_gather_kernel, nbytes, plan_memory

PTR = ir.PointerType()
REDUCE_FLAGS = ("reassoc", "contract")
# loop kernels over fewer elements are compiled for size (`optsize`): O3 fully unrolled their short inner
# loops and vectorized the outer ones into masked gathers, many times the code for a few microseconds
SMALL_KERNEL_ELEMENTS = int(__import__("os").environ.get("GRADC_SMALL_KERNEL_ELEMENTS", 65536))
# a short innermost loop of KEEP_INNER_LOOP elements keeps its loop (no full unroll): O3 fully unrolled a
# 32-channel innermost loop and vectorized the next one out (3 taps of an im2col) into gathers and scatters,
# 3 lanes wide; kept, the loop vectorizer takes the contiguous channels (W7's im2col kernel 2.4x faster).
# Shorter loops are unrolled as before (a 2x2 pooling window); longer ones O3 never fully unrolls anyway
# (they keep its partial unrolling after vectorization)
KEEP_INNER_LOOP = range(16, 257)
INNER_LOOP_MARK = "gradc.keep_inner_loop"  # a placeholder node: codegen/__init__ makes it LLVM's loop ID


ERR = ("err",)  # buffer key of the error slot (see module doc)


@dataclass
class Lowered:
    module: ir.Module
    name: str
    arena_bytes: int
    param_types: list[TensorType]
    result_types: list[TensorType]
    fused_text: str
    num_kernels: int
    program: FusedProgram
    plan: MemoryPlan
    error_slot: int | None = None  # arena offset of {i64 site + 1, i64 index}, if any gather is checked
    index_checks: list | None = None  # per site: [axis, size] of the gather (for the IndexError message)


def lower(fn: Function, name: str = "gradc_kernel", num_threads: int | None = None,
          donate: dict[int, int] | None = None) -> Lowered:
    """Fuse, plan memory and emit fn as `{name}_inner` in a new llvmlite module (see module doc).

    `donate` (result index -> param index) asks for results written in place; `plan.donated` says which were.
    """
    if not name.isidentifier():
        raise ValueError(f"kernel name must be an identifier, got {name!r}")
    if any(op.name == "scan" for op in fn.ops):  # scans a native loop cannot take are unrolled (ir/scan.py)
        from gradc.ir.scan import native_scan, share_forward_scans, unroll_scans
        fn = share_forward_scans(fn)
        if not all(native_scan(op) for op in fn.ops if op.name == "scan"):
            from gradc.ir.passes import optimize
            fn = optimize(unroll_scans(fn, keep=native_scan))
    prog = fuse(fn, num_threads)
    plan = plan_memory(prog)
    if donate:
        donate_results(prog, plan, donate)
    module = ir.Module(name=name)
    low = ModuleLowerer(module, name, prog, plan)
    low.emit()
    text = fused_text(prog, plan)
    if low.gemm_providers:
        text += "gemm libraries: " + ", ".join(f"kernel {i} {p}" for i, p in sorted(low.gemm_providers.items())) + "\n"
    return Lowered(module, name, plan.arena_bytes, fn.param_types, fn.result_types,
                   text, prog.num_kernels, prog, plan, plan.error_slot, low.site_info)


def merge_groups(out_shape, in_shape) -> list[tuple[int, int]] | None:
    """For a reshape whose every input axis is the product of a run of consecutive output axes (a merge,
    e.g. (64,24,24,3,3,32) read from a (36864,288) buffer), the [lo, hi) output axes of each input axis."""
    groups, lo = [], 0
    for d in in_shape:
        hi, size = lo, 1
        while hi < len(out_shape) and (size < d or (out_shape[hi] == 1 and size == d and d != 1)):
            size *= out_shape[hi]
            hi += 1
        if size != d or (hi == lo and d != 1):
            return None
        groups.append((lo, hi))
        lo = hi
    if any(out_shape[i] != 1 for i in range(lo, len(out_shape))):
        return None
    return groups


def set_buffer_attrs(arg: ir.Argument, readonly: bool, alignment: int) -> None:
    arg.add_attribute("noalias")
    arg.add_attribute("captures(none)")
    if readonly:
        set.add(arg.attributes, "readonly")  # llvmlite's list of known attributes lacks it
    arg.attributes.align = alignment


def itemsize(v: Value) -> int:
    return int(np.dtype(v.dtype.numpy).itemsize)


class ModuleLowerer:
    def __init__(self, module: ir.Module, name: str, prog: FusedProgram, plan: MemoryPlan):
        self.module, self.name, self.prog, self.plan = module, name, prog, plan
        self.globals: dict[Value, ir.GlobalVariable] = {}
        self.bodies: dict[str, ir.Function] = {}
        self.sites: dict[Value, int] = {}  # gather value -> site number (error slot code - 1)
        self.site_info: list[list[int]] = []  # per site: [axis, size]
        self.gemm_providers: dict[int, str] = {}  # matmul kernel index -> the BLAS it calls
        self._inner_md = None

    def inner_loop_md(self):
        """The module's placeholder `llvm.loop` node of kept innermost loops (see KEEP_INNER_LOOP)."""
        if self._inner_md is None:
            self._inner_md = self.module.add_metadata([ir.MetaDataString(self.module, INNER_LOOP_MARK)])
        return self._inner_md

    def site(self, v: Value) -> int:
        if v not in self.sites:
            x = v.op.inputs[0]
            axis = v.op.attrs["axis"]
            self.sites[v] = len(self.site_info)
            self.site_info.append([int(axis), int(x.shape[axis])])
        return self.sites[v]

    def record_index_error(self, b: ir.IRBuilder, err: ir.Value, v: Value, umax: ir.Value) -> None:
        """If umax (unsigned max of gather v's indices) is out of range, record it in the error slot."""
        site = self.site(v)
        n = self.site_info[site][1]
        with b.if_then(b.icmp_unsigned(">=", umax, const_i64(n)), likely=False):
            old = b.cmpxchg(err, const_i64(0), const_i64(site + 1), "monotonic", "monotonic")
            with b.if_then(b.extract_value(old, 1)):  # only the first recorder (threads of one call) writes
                b.store(umax, b.gep(err, [const_i64(1)], inbounds=True, source_etype=I64), align=8)

    # ------------------------------------------------------------------ helpers
    def intrinsic(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        if name in self.module.globals:
            return self.module.globals[name]
        return ir.Function(self.module, ir.FunctionType(ret, args), name)

    def global_for(self, v: Value) -> ir.GlobalVariable:
        if v not in self.globals:
            data = np.ascontiguousarray(np.asarray(v.op.attrs["value"], dtype=v.dtype.numpy))
            raw = bytearray(data.tobytes())
            g = ir.GlobalVariable(self.module, ir.ArrayType(ir.IntType(8), len(raw)),
                                  f"{self.name}_const{len(self.globals)}")
            g.initializer = ir.Constant(g.value_type, raw)
            g.global_constant = True
            g.linkage = "internal"
            g.align = 64
            self.globals[v] = g
        return self.globals[v]

    def new_function(self, fname: str, buffers: list, writes: set, ints: int = 0,
                     ret: ir.Type | None = None, extra: list | None = None) -> tuple[ir.Function, ir.IRBuilder, dict]:
        """An internal function taking one noalias ptr per buffer key, then `extra` args, then `ints` i64 args."""
        fnty = ir.FunctionType(ret or ir.VoidType(), [PTR] * len(buffers) + list(extra or ()) + [I64] * ints)
        func = ir.Function(self.module, fnty, fname)
        func.linkage = "internal"
        # one function per kernel, never inlined: O3 time grows superlinearly with function size
        # (W5's 227 kernels inlined into one function took 22 s), and a call per kernel costs nanoseconds
        func.attributes.add("noinline")
        func.attributes.add("nounwind")
        ptrs = {}
        for arg, key in zip(func.args, buffers):
            if key is ERR:  # shared by the threads of one call (atomic writes only): no noalias
                arg.attributes.align = 8
                ptrs[key] = arg
                continue
            v = key if isinstance(key, Value) else key[1]
            set_buffer_attrs(arg, key not in writes, itemsize(v))
            ptrs[key] = arg
        return func, ir.IRBuilder(func.append_basic_block("entry")), ptrs

    def dedupe(self, func: ir.Function) -> ir.Function:
        """Reuse an identical earlier function (buffers are arguments, so an unrolled RNN's steps share
        kernels): drop `func` from the module and return the first function with the same body."""
        body = str(func).replace(f'@"{func.name}"', "@SELF", 1)
        first = self.bodies.setdefault(body, func)
        if first is not func:
            del self.module.globals[func.name]
        return first

    # ------------------------------------------------------------------ the inner function
    def emit(self) -> None:
        fn = self.prog.fn
        nargs = len(fn.params) + len(fn.results) + 1
        inner = self.inner_signature(f"{self.name}_inner", nargs)
        b = ir.IRBuilder(inner.append_basic_block("entry"))
        # with donated results, a bad gather index returns before any parameter is written in place
        stop_after = last_gather_kernel(self.prog) if self.plan.donated else -1
        segments = kernel_segments(self.prog.kernels, stop_after)
        for n, segment in enumerate(segments):
            if segment[0].index == stop_after + 1 and stop_after >= 0:
                self.args = inner.args
                slot = b.load(self.arena_offset(b, self.plan.error_slot), typ=I64, align=8)
                with b.if_then(b.icmp_unsigned("!=", slot, const_i64(0)), likely=False):
                    b.ret_void()
            if len(segments) == 1:
                self.args = inner.args
                self.emit_kernels(segment, b)
                continue
            part = self.inner_signature(f"{self.name}_inner_part{n}", nargs, internal=True)
            self.args = part.args
            pb = ir.IRBuilder(part.append_basic_block("entry"))
            self.emit_kernels(segment, pb)
            pb.ret_void()
            b.call(part, list(inner.args))
        self.args = inner.args
        b.ret_void()

    def inner_signature(self, fname: str, nargs: int, internal: bool = False) -> ir.Function:
        """`void fname(ptr params..., ptr results..., ptr arena)` with the buffers' alias and alignment facts."""
        fn = self.prog.fn
        func = ir.Function(self.module, ir.FunctionType(ir.VoidType(), [PTR] * nargs), fname)
        if internal:  # a segment stays a function of its own: O3 would inline a single-call function
            func.linkage = "internal"
            func.attributes.add("noinline")
            func.attributes.add("nounwind")
        written_params = set(self.plan.donated.values())
        for i, arg in enumerate(func.args):
            if i < len(fn.params):
                set_buffer_attrs(arg, i not in written_params, itemsize(fn.params[i]))
            elif i < nargs - 1:
                set_buffer_attrs(arg, False, itemsize(fn.results[i - len(fn.params)]))
            else:
                set_buffer_attrs(arg, False, 64)
        return func

    def emit_kernels(self, kernels: list[Kernel], b: ir.IRBuilder) -> None:
        """Each kernel's call (or loop, or copies) at the builder, in order."""
        consumers = {c.consumer_of: c for c in self.prog.kernels if c.consumer_of is not None}
        for k in kernels:
            if k.kind == "loop":
                if k.consumer_of is None:  # (a consumer is emitted with its matmul)
                    LoopKernelLowerer(self, k).emit_call(b)
            elif k.kind == "scan":
                from gradc.codegen.scan_loop import emit_scan_loop
                emit_scan_loop(self, k, b)
            elif k.kind == "attention":
                from gradc.codegen.attention import emit_attention
                emit_attention(self, k, b)
            elif k.kind == "matmul":
                from gradc.codegen.matmul import emit_matmul_call
                consumer = consumers.get(k.index)
                emit_matmul_call(self, k, b, consumer and LoopKernelLowerer(self, consumer))
            else:
                self.emit_copies(k, b)

    def pointer(self, b: ir.IRBuilder, v: Value) -> ir.Value:
        """The buffer holding materialized value v, as a ptr in the inner function."""
        if v in self.prog.tiles:  # a piece of a tiled sum: the sum's buffer (store_root adds the offset)
            v = self.prog.tiles[v][0]
        home: Home = self.plan.home[v]
        if home.kind == "arena":
            return self.arena_offset(b, home.index + home.offset)
        if home.kind == "param":
            ptr = self.args[home.index]
        elif home.kind == "result":
            ptr = self.args[len(self.prog.fn.params) + home.index]
        else:
            ptr = self.global_for(v)
        if home.offset:  # a view (fuse.py)
            ptr = b.gep(ptr, [const_i64(home.offset)], inbounds=True, source_etype=ir.IntType(8))
        return ptr

    def shared_buffers(self, reads: list, stores: list) -> tuple[list, set, dict]:
        """Buffer keys of a nest, written keys, and {donated result: its param} for results whose param the
        nest also reads: they share the param's argument (one pointer, so no two noalias arguments alias)."""
        params = self.prog.fn.params
        aliases = {}
        for v in stores:
            home = self.plan.home.get(v)
            if home is not None and home.kind == "param" and params[home.index] in reads:
                aliases[v] = params[home.index]
        own = [v for v in stores if v not in aliases]
        return reads + own, set(own) | set(aliases.values()), aliases

    def arena_offset(self, b: ir.IRBuilder, offset: int) -> ir.Value:
        return b.gep(self.args[-1], [const_i64(offset)], inbounds=True, source_etype=ir.IntType(8))

    def emit_copies(self, k: Kernel, b: ir.IRBuilder) -> None:
        memcpy = self.intrinsic("llvm.memcpy.p0.p0.i64", ir.VoidType(), [PTR, PTR, I64, ir.IntType(1)])
        for v, i in k.copies:
            if i in self.plan.donated:
                dst = self.args[self.plan.donated[i]]
                if v is self.prog.fn.params[self.plan.donated[i]]:
                    continue  # passed through in place
            else:
                dst = self.args[len(self.prog.fn.params) + i]
            if nbytes(v):
                b.call(memcpy, [dst, self.pointer(b, v), const_i64(nbytes(v)), ir.Constant(ir.IntType(1), 0)])


class Evaluator:
    """Evaluates fused values at an index inside one loop body (memoized per value and index)."""

    def __init__(self, low: ModuleLowerer, b: ir.IRBuilder, k: Kernel, phase: int, ptrs: dict):
        self.low, self.b, self.k, self.phase, self.ptrs = low, b, k, phase, ptrs
        self.em = ScalarEmitter(low, b)
        self.memo: dict = {}
        self.checks: dict[Value, ir.Value] = {}  # gather value -> unsigned max of its indices here
        # (loop variable, lo, hi): the innermost loop runs over [lo, hi) only, a segment between pad edges
        # (LoopKernelLowerer.segments): a pad indexed by it there is statically inside or outside its input
        self.inner: tuple | None = None

    @staticmethod
    def key(idx) -> tuple:
        return tuple(("c", i.constant) if isinstance(i, ir.Constant) else id(i) for i in idx)

    def load(self, v: Value, idx) -> ir.Value:
        if v in self.ptrs:
            base = self.ptrs[v]
        elif self.low.plan.home[v].kind == "global":
            base = self.low.global_for(v)
        else:
            raise AssertionError(f"kernel {self.k.index} has no buffer for {v}")
        mt = mem_type(v.dtype)
        ptr = self.b.gep(base, [linear_index(self.b, idx, v.shape)], inbounds=True, source_etype=mt)
        x = self.b.load(ptr, typ=mt, align=itemsize(v))
        if v.dtype.name == "bool":
            x = self.b.icmp_unsigned("!=", x, ir.Constant(mt, 0))
        return x

    def value(self, v: Value, idx) -> ir.Value:
        """v at idx. compute() is a generator that yields the (input, index) pairs it needs, driven here on
        an explicit stack: a fused chain (an unrolled loop's gradient sum) is as long as the graph."""
        key = (v, self.key(idx))
        if key in self.memo:
            return self.memo[key]
        stack = [(key, self.frame(v, idx))]
        sent = None
        while stack:
            top, gen = stack[-1]
            try:
                x, xidx = gen.send(sent)
            except StopIteration as done:
                self.memo[top] = sent = done.value
                stack.pop()
                continue
            xkey = (x, self.key(xidx))
            sent = self.memo.get(xkey)
            if sent is None:
                stack.append((xkey, self.frame(x, xidx)))
        return self.memo[key]

    def frame(self, v: Value, idx):
        if self.low.prog.is_loaded(v, self.k.index, self.phase):
            return self.load(v, idx)
        return (yield from self.compute(v, list(idx)))

    def compute(self, v: Value, idx: list):
        op = v.op
        name, attrs, x = op.name, op.attrs, op.inputs
        kind = op.opdef.kind
        if kind == "elementwise":
            args = []
            for i in x:
                args.append((yield (i, idx)))
            if all(isinstance(a, ir.Constant) for a in args):
                return fold_constant(op, args)
            self.em.unsigned = bool(x) and x[0].dtype.is_unsigned  # the operand's signedness (cast: the source)
            return op.opdef.lower(self.em, *args, **attrs)
        if name == "const":
            return fold_constant(op, [])
        if name == "iota":
            return idx[attrs["axis"]]
        if name == "broadcast_to":
            lead = len(v.shape) - len(x[0].shape)
            return (yield (x[0], [const_i64(0) if d == 1 else idx[lead + a] for a, d in enumerate(x[0].shape)]))
        if name == "permute":
            src = [None] * len(idx)
            for j, p in enumerate(attrs["perm"]):
                src[p] = idx[j]
            return (yield (x[0], src))
        if name == "reshape":
            return (yield (x[0], self.reshape_index(idx, v.shape, x[0].shape)))
        if name == "slice":
            src = [i if (a == 0 and s == 1) else self.b.add(const_i64(a), self.b.mul(i, const_i64(s), flags=("nsw",)),
                                                             flags=("nsw",))
                   for i, a, s in zip(idx, attrs["starts"], attrs["steps"])]
            return (yield (x[0], src))
        if name == "pad":
            return (yield from self.pad(v, idx))
        if name == "window":  # x[..., o*stride + k*dilation, ...] with the tap k the last index
            a, src = attrs["axis"], list(idx[:-1])
            src[a] = self.b.add(self.b.mul(src[a], const_i64(attrs["stride"]), flags=("nsw",)),
                                self.b.mul(idx[-1], const_i64(attrs["dilation"]), flags=("nsw",)), flags=("nsw",))
            return (yield (x[0], src))
        if name == "unwindow":
            return (yield from self.unwindow(v, idx))
        if name == "gather":
            return (yield from self.gather(v, idx))
        raise AssertionError(f"{name} must be materialized before kernel {self.k.index} reads it")

    def reshape_index(self, idx: list, out_shape, in_shape) -> list:
        b = self.b
        if [d for d in out_shape if d != 1] == [d for d in in_shape if d != 1]:
            real = [i for i, d in zip(idx, out_shape) if d != 1]
            it = iter(real)
            return [const_i64(0) if d == 1 else next(it) for d in in_shape]
        groups = merge_groups(out_shape, in_shape)
        if groups is not None:  # each input axis is a run of consecutive output axes: multiply-adds, no div
            return [linear_index(b, idx[lo:hi], out_shape[lo:hi]) for lo, hi in groups]
        flat = linear_index(b, idx, out_shape)
        src = []
        for a in range(len(in_shape)):
            inner = int(np.prod(in_shape[a + 1:], dtype=np.int64))
            q = flat if inner == 1 else b.udiv(flat, const_i64(inner))
            src.append(q if a == 0 else b.urem(q, const_i64(in_shape[a])))
        return src

    def pad(self, v: Value, idx: list) -> ir.Value:
        b, x = self.b, v.op.inputs[0]
        attrs = v.op.attrs
        zero = fold_constant_like(v, 0)
        if 0 in x.shape:
            return zero
        valid = ir.Constant(ir.IntType(1), 1)
        src = []
        last = None
        if self.inner is not None and idx and idx[-1] is self.inner[0] and attrs["interior"][-1] == 0:
            seg_lo, seg_hi = self.inner[1:]
            lo, d = attrs["lo"][-1], x.shape[-1]
            if seg_hi <= lo or seg_lo >= lo + d:  # the whole segment is padding
                return zero
            if lo <= seg_lo and seg_hi <= lo + d:  # the whole segment is inside: a unit-stride load
                last = idx[-1] if lo == 0 else b.sub(idx[-1], const_i64(lo), flags=("nsw",))
        for i, d, lo, step in zip(idx[:-1] if last is not None else idx, x.shape, attrs["lo"], attrs["interior"]):
            t = b.sub(i, const_i64(lo), flags=("nsw",))
            step += 1
            q = t if step == 1 else b.sdiv(t, const_i64(step))
            ok = b.and_(b.icmp_signed(">=", t, const_i64(0)), b.icmp_signed("<", q, const_i64(d)))
            if step != 1:
                ok = b.and_(ok, b.icmp_signed("==", b.srem(t, const_i64(step)), const_i64(0)))
            valid = b.and_(valid, ok)
            q = b.select(b.icmp_signed("<", q, const_i64(0)), const_i64(0), q)
            src.append(b.select(b.icmp_signed(">", q, const_i64(d - 1)), const_i64(d - 1), q))
        if last is not None:
            src.append(last)
        return b.select(valid, (yield (x, src)), zero)

    def unwindow(self, v: Value, idx: list):
        """col2im in gather form: element l sums g[..., o, ..., k] over the taps k with l = o*stride + k*dilation
        (a tap outside the windows adds an exact zero, as the padded taps of unwindow_taps do), in tap order."""
        b, x = self.b, v.op.inputs[0]
        a, size, stride, dilation = (v.op.attrs[n] for n in ("axis", "size", "stride", "dilation"))
        count = x.shape[a]
        zero = fold_constant_like(v, 0)
        total = None
        for k in range(size):
            t = b.sub(idx[a], const_i64(k * dilation), flags=("nsw",))
            q = t if stride == 1 else b.sdiv(t, const_i64(stride))
            ok = b.and_(b.icmp_signed(">=", t, const_i64(0)), b.icmp_signed("<", q, const_i64(count)))
            if stride != 1:
                ok = b.and_(ok, b.icmp_signed("==", b.srem(t, const_i64(stride)), const_i64(0)))
            q = b.select(b.icmp_signed("<", q, const_i64(0)), const_i64(0), q)
            q = b.select(b.icmp_signed(">", q, const_i64(count - 1)), const_i64(count - 1), q)
            src = list(idx)
            src[a] = q
            tap = b.select(ok, (yield (x, src + [const_i64(k)])), zero)
            total = tap if total is None else self.em.add(total, tap)
        return total

    def gather(self, v: Value, idx: list) -> ir.Value:
        b = self.b
        x, ind = v.op.inputs
        axis = v.op.attrs["axis"]
        j = yield (ind, idx)
        n = x.shape[axis]
        prev = self.checks.get(v)
        self.checks[v] = j if prev is None else b.call(
            self.low.intrinsic("llvm.umax.i64", I64, [I64, I64]), [prev, j])
        # the load uses a clamped index (memory safety); the caller reports the error after the loop
        j = b.select(b.icmp_signed("<", j, const_i64(0)), const_i64(0), j)
        j = b.select(b.icmp_signed(">", j, const_i64(n - 1)), const_i64(max(n - 1, 0)), j)
        return (yield (x, idx[:axis] + [j] + idx[axis:]))


def fold_constant_like(v: Value, value: float) -> ir.Constant:
    return constant(ll_type(v.dtype), False if v.dtype.name == "bool" else value)


def store_element(b: ir.IRBuilder, base: ir.Value, idx: list, v: Value, x: ir.Value) -> None:
    """Store element idx of v (bools are i1 in registers, one byte in memory)."""
    mt = mem_type(v.dtype)
    if v.dtype.name == "bool":
        x = b.zext(x, mt)
    b.store(x, b.gep(base, [linear_index(b, idx, v.shape)], inbounds=True, source_etype=mt), align=itemsize(v))


class LoopKernelLowerer:
    """One loop kernel: its main-nest function (over a range of axis 0), combine, epilogue, call site."""

    def __init__(self, low: ModuleLowerer, k: Kernel):
        self.low, self.k = low, k
        self.rank = len(k.domain)
        self.fname = f"{low.name}_k{k.index}"

    def identity(self, r: Value) -> ir.Constant:
        if r.op.name == "reduce_sum":
            return fold_constant_like(r, 0)
        if r.dtype.is_float:
            return ir.Constant(ll_type(r.dtype), float("-inf"))
        return fold_constant_like(r, np.iinfo(r.dtype.numpy).min)

    def combine(self, em: ScalarEmitter, r: Value, acc: ir.Value, x: ir.Value, reassoc: bool) -> ir.Value:
        if r.op.name == "reduce_sum":
            if r.dtype.is_float:
                return em.b.fadd(acc, x, flags=REDUCE_FLAGS if reassoc else ())
            return em.b.add(acc, x)
        em.unsigned = r.dtype.is_unsigned
        return em.maximum(acc, x)

    def kept(self, r: Value, idx: list) -> list:
        axes = r.op.attrs["axes"]
        return [i for a, i in enumerate(idx) if a not in axes]

    def reg_acc(self, r: Value) -> bool:
        return self.rank > 0 and (self.rank - 1) in r.op.attrs["axes"]

    def gathers(self, phase: int) -> list[Value]:
        """The gathers this kernel evaluates in a phase (their indices are checked)."""
        return [op.result for op in self.k.phase_ops.get(phase, []) if op.name == "gather"]

    # ------------------------------------------------------------------ main nest
    def main_buffers(self) -> tuple[list, set, dict]:
        k = self.k
        reads = [v for v in k.phase_reads[MAIN] if self.low.plan.home[v].kind != "global"]
        keys, writes, aliases = self.low.shared_buffers(reads, list(k.stores))
        accs = [("acc", r) for r in k.reductions]
        err = [ERR] if self.gathers(MAIN) else []
        return keys + accs + err, writes | set(accs), aliases

    def emit_main(self) -> ir.Function:
        k = self.k
        buffers, writes, aliases = self.main_buffers()
        func, b, ptrs = self.low.new_function(self.fname, buffers, writes, ints=2)
        ptrs.update({v: ptrs[p] for v, p in aliases.items()})
        if int(np.prod(k.domain, dtype=np.int64)) < SMALL_KERNEL_ELEMENTS:
            func.attributes.add("optsize")
        begin, end = func.args[-2], func.args[-1]
        ev_ptrs = {key: p for key, p in ptrs.items() if isinstance(key, Value)}
        # initialize the accumulators this call owns
        for r in k.reductions:
            acc = ptrs[("acc", r)]
            if self.rank == 0 or 0 in r.op.attrs["axes"]:
                lo, hi = const_i64(0), const_i64(r.type.size)
            else:
                row = int(np.prod(r.shape[1:], dtype=np.int64))
                lo, hi = b.mul(begin, const_i64(row)), b.mul(end, const_i64(row))
            ident = self.identity(r)
            mt = mem_type(r.dtype)

            def init(i, _c, acc=acc, ident=ident, mt=mt):
                b.store(ident, b.gep(acc, [i], inbounds=True, source_etype=mt), align=itemsize(r))
                return []
            for_range(b, lo, hi, init, name="init")

        def store_roots(ev: Evaluator, idx: list, carried: list) -> list:
            # every element is computed before any is stored: a donated result overwrites its param's element
            values = [ev.value(v, idx) for v in k.stores]
            terms = [ev.value(r.op.inputs[0], idx) for r in k.reductions]
            for v, x in zip(k.stores, values):
                self.store_root(b, ptrs[v], idx, v, x)
            out, regs = [], iter(carried)
            for r, x in zip(k.reductions, terms):
                if self.reg_acc(r):
                    out.append(self.combine(ev.em, r, next(regs), x, True))
                else:
                    self.accumulate(b, ev.em, ptrs[("acc", r)], r, self.kept(r, idx), x)
            return out

        sites = self.gathers(MAIN)

        def nest(axis: int, idx: list) -> None:
            if self.rank == 0:
                ev = Evaluator(self.low, b, k, MAIN, ev_ptrs)
                store_roots(ev, [], [])
                for v, j in ev.checks.items():
                    self.low.record_index_error(b, ptrs[ERR], v, j)
                return
            lo = begin if axis == 0 else const_i64(0)
            hi = end if axis == 0 else const_i64(k.domain[axis])
            if axis < self.rank - 1:
                for_range(b, lo, hi, lambda i, c: nest(axis + 1, idx + [i]) or [], name=f"i{axis}")
                return
            regs = [r for r in k.reductions if self.reg_acc(r)]
            init = [self.identity(r) for r in regs] + [const_i64(0)] * len(sites)

            def body(i, carried, segment=None):
                ev = Evaluator(self.low, b, k, MAIN, ev_ptrs)
                if segment is not None:
                    ev.inner = (i, *segment)
                out = store_roots(ev, idx + [i], carried[:len(regs)])
                for v, prev in zip(sites, carried[len(regs):]):  # umax of gather indices (no branch)
                    j = ev.checks.get(v)
                    out.append(prev if j is None else b.call(
                        self.low.intrinsic("llvm.umax.i64", I64, [I64, I64]), [prev, j]))
                return out
            cuts = self.segments()
            if not cuts:
                keep = k.domain[axis] in KEEP_INNER_LOOP
                final = for_range(b, lo, hi, body, carried=init, name=f"i{axis}",
                                  loop_md=self.low.inner_loop_md() if keep else None)
            else:  # one loop per segment between pad edges, in order (reductions carry on)
                final = init
                for s0, s1 in zip(cuts[:-1], cuts[1:]):
                    keep = s1 - s0 in KEEP_INNER_LOOP
                    start, stop = const_i64(s0), const_i64(s1)
                    if axis == 0:  # this call's rows [begin, end) of a 1-d kernel, within the segment
                        start = b.select(b.icmp_signed(">", lo, start), lo, start)
                        stop = b.select(b.icmp_signed("<", hi, stop), hi, stop)
                    final = for_range(b, start, stop,
                                      lambda i, c, seg=(s0, s1): body(i, c, seg), carried=final, name=f"i{axis}",
                                      loop_md=self.low.inner_loop_md() if keep else None)
            em = ScalarEmitter(self.low, b)
            for r, reg in zip(regs, final):
                self.accumulate(b, em, ptrs[("acc", r)], r, self.kept(r, idx + [None]), reg)
            for v, umax in zip(sites, final[len(regs):]):
                self.low.record_index_error(b, ptrs[ERR], v, umax)

        nest(0, [])
        b.ret_void()
        return self.low.dedupe(func)

    def store_root(self, b: ir.IRBuilder, ptr: ir.Value, idx: list, v: Value, x: ir.Value) -> None:
        """Store element idx of root v; a tile piece (fuse.py) goes to its sum's buffer at its offset, as
        x + 0.0 (the sum's value there: -0.0 becomes +0.0 as in the sum of pads)."""
        tile = self.low.prog.tiles.get(v)
        if tile is None:
            store_element(b, ptr, idx, v, x)
            return
        total, lo = tile
        if v.dtype.is_float:
            x = b.fadd(x, constant(ll_type(v.dtype), 0.0))
        idx = [i if a == 0 else b.add(i, const_i64(a), flags=("nsw",)) for i, a in zip(idx, lo)]
        store_element(b, ptr, idx, total, x)

    def segments(self) -> list[int]:
        """Edges along the innermost axis of the pads of the kernel's shape in its main nest (a concat is a
        sum of such pads, a slice's VJP one): [0, e1, ..., D], or [] when there are none. Each segment's
        loop then loads every pad's input unit-stride or not at all, instead of at a clamped index per
        element, which the vectorizer turned into scalar loads (W8's dq|dk|dv concat: 24 per 8 floats)."""
        k = self.k
        if len(k.domain) < 1 or k.domain[-1] < 2:
            return []
        size = k.domain[-1]
        edges = set()
        for op in k.phase_ops.get(MAIN, []):
            if op.name == "pad" and op.result.shape == tuple(k.domain) and op.attrs["interior"][-1] == 0:
                lo, d = op.attrs["lo"][-1], op.inputs[0].shape[-1]
                edges.update(e for e in (lo, lo + d) if 0 < e < size)
        return [0, *sorted(edges), size] if edges and len(edges) <= 8 else []

    def accumulate(self, b, em, acc, r: Value, kept: list, x) -> None:
        mt = mem_type(r.dtype)
        ptr = b.gep(acc, [linear_index(b, kept, r.shape)], inbounds=True, source_etype=mt)
        old = b.load(ptr, typ=mt, align=itemsize(r))
        b.store(self.combine(em, r, old, x, False), ptr, align=itemsize(r))

    # ------------------------------------------------------------------ epilogue and thread combine
    def emit_epilogue(self) -> tuple[ir.Function, list]:
        k = self.k
        reads = [v for v in k.phase_reads[EPILOGUE] if self.low.plan.home[v].kind != "global"]
        stores = list(k.epilogue)
        keys, writes, aliases = self.low.shared_buffers(reads, stores)
        buffers = keys + ([ERR] if self.gathers(EPILOGUE) else [])
        func, b, ptrs = self.low.new_function(f"{self.fname}_epi", buffers, writes)
        ptrs.update({v: ptrs[p] for v, p in aliases.items()})

        def body(idx):
            ev = Evaluator(self.low, b, k, EPILOGUE, ptrs)
            values = [ev.value(v, idx) for v in stores]  # all before any store (donated results)
            for v, x in zip(stores, values):
                store_element(b, ptrs[v], idx, v, x)
            for v, j in ev.checks.items():  # epilogues are small: a branch per element is fine
                self.low.record_index_error(b, ptrs[ERR], v, j)
        emit_nest(b, k.epilogue_domain, body)
        b.ret_void()
        return self.low.dedupe(func), buffers

    def emit_combine(self, r: Value) -> ir.Function:
        t = self.k.threads
        func, b, ptrs = self.low.new_function(f"{self.fname}_combine{self.k.reductions.index(r)}",
                                              [("home", r), ("part", r)], {("home", r)})
        home, part = ptrs[("home", r)], ptrs[("part", r)]
        mt = mem_type(r.dtype)
        n = r.type.size
        em = ScalarEmitter(self.low, b)

        def body(i, _c):
            p = b.gep(home, [i], inbounds=True, source_etype=mt)
            acc = b.load(p, typ=mt, align=itemsize(r))
            for s in range(t - 1):  # fixed order: results do not depend on thread timing
                q = b.gep(part, [b.add(i, const_i64(s * n), flags=("nsw",))], inbounds=True, source_etype=mt)
                acc = self.combine(em, r, acc, b.load(q, typ=mt, align=itemsize(r)), False)
            b.store(acc, p, align=itemsize(r))
            return []
        for_range(b, 0, n, body, name="c")
        b.ret_void()
        return self.low.dedupe(func)

    # ------------------------------------------------------------------ call site in the inner function
    def emit_call(self, b: ir.IRBuilder) -> None:
        k, low = self.k, self.low
        main = self.emit_main()
        buffers, _, _ = self.main_buffers()
        d0 = k.domain[0] if k.domain else 1

        def args_for(t: int, lo: int, hi: int) -> list:
            out = []
            for key in buffers:
                if isinstance(key, Value):
                    out.append(low.pointer(b, key))
                    continue
                if key is ERR:
                    out.append(low.arena_offset(b, low.plan.error_slot))
                    continue
                r = key[1]
                if t == 0 or 0 not in r.op.attrs["axes"]:
                    out.append(low.pointer(b, r))
                else:
                    base = low.plan.partials[(k.index, r)] + (t - 1) * nbytes(r)
                    out.append(low.arena_offset(b, base))
            return out + [const_i64(lo), const_i64(hi)]

        if k.threads <= 1:
            b.call(main, args_for(0, 0, d0))
        else:
            from gradc.codegen.threads import fork_join
            chunk = -(-d0 // k.threads)
            ranges = [(min(t * chunk, d0), min((t + 1) * chunk, d0)) for t in range(k.threads)]
            fork_join(low, b, main, [args_for(t, lo, hi) for t, (lo, hi) in enumerate(ranges)])
            for r in k.reductions:
                if 0 in r.op.attrs["axes"]:
                    comb = self.emit_combine(r)
                    b.call(comb, [low.pointer(b, r), low.arena_offset(b, low.plan.partials[(k.index, r)])])
        if k.epilogue:
            epi, bufs = self.emit_epilogue()
            b.call(epi, [low.arena_offset(b, low.plan.error_slot) if v is ERR else low.pointer(b, v) for v in bufs])


# kernels per segment function of the inner function: LLVM's O3 and code generation grew superlinearly with
# one straight-line function of thousands of kernel calls (an unrolled 400-step RNN: 2,811 calls)
SEGMENT_KERNELS = 128


def kernel_segments(kernels: list[Kernel], stop_after: int) -> list[list[Kernel]]:
    """The kernels in runs of at most SEGMENT_KERNELS, a run starting after the last gather kernel (the inner
    function checks the index error slot there, between segments); one run for a small program."""
    out: list[list[Kernel]] = []
    for k in kernels:
        if not out or len(out[-1]) >= SEGMENT_KERNELS or (stop_after >= 0 and k.index == stop_after + 1):
            out.append([])
        out[-1].append(k)
    return out or [[]]


def emit_nest(b: ir.IRBuilder, shape, body) -> None:
    """A full row-major loop nest over shape calling body(idx) in the innermost block."""
    def rec(axis: int, idx: list) -> None:
        if axis == len(shape):
            body(idx)
            return
        for_range(b, 0, shape[axis], lambda i, c: rec(axis + 1, idx + [i]) or [], name=f"e{axis}")
    rec(0, [])


__all__ = ["Lowered", "lower", "loops"]
