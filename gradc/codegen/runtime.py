"""The per-call path of compiled functions: one ctypes call on one tuple, checks done in native code.

Measured on the 2-core dev box: `arr.ctypes.data` or `__array_interface__` costs ~3 us per array, while a
ctypes call taking ONE `py_object` costs ~0.7 us. So `add_entry` generates, beside the lowered kernel,
`i64 {name}_entry(ptr tuple)` that reads each array straight from CPython's tuple and numpy's array structs
(data, nd, dimensions, flags, descr->type_num/byteorder: a stable ABI, and verified against ctypes/numpy at
import time below), checks them against the specialization, and either calls `{name}_inner` and returns 0
or returns a nonzero code WITHOUT touching any data. Python then takes the slow path: it copies a
non-conforming array of the right dtype and shape (strided, F-order, negative strides, misaligned,
big-endian) or raises TypeError / ValueError naming what was expected and what came. The checks walk
constant tables in one loop (compact code: the unrolled form was the largest function of small models).
A gather index out of range, found while the kernels run, comes back as an INDEX code (with the gather
and the index) and is raised as IndexError, worded like the interpreter's.

The call goes through CFUNCTYPE, which releases the GIL: safe because the argument tuple (held by ctypes
for the duration of the call) keeps every array alive, and native code only reads their structs.
If the struct layout check fails (another Python or numpy ABI), every function uses a slower path that
checks in Python and passes data pointers through ctypes.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from typing import Callable, Sequence

import numpy as np
from llvmlite import ir

from gradc.ir.core import TensorType

# CPython 3.11+ (64-bit) PyTupleObject and numpy's PyArrayObject_fields / PyArray_Descr offsets
OB_TYPE = 8
TUPLE_SIZE, TUPLE_ITEMS = 16, 24
ARR_DATA, ARR_ND, ARR_DIMS, ARR_STRIDES, ARR_DESCR, ARR_FLAGS = 16, 24, 32, 40, 56, 64
DESCR_BYTEORDER, DESCR_TYPE_NUM = 26, 28
C_CONTIGUOUS, ALIGNED, WRITEABLE = 0x1, 0x100, 0x400

# failure codes returned by the entry: (argument index << 4) | reason; for INDEX (a gather index out of
# range, found while running): (index << 16) | (gather site << 4) | INDEX, index clamped to 48 bits
COUNT, NOT_ARRAY, DTYPE, BYTEORDER, RANK, SHAPE, LAYOUT, INDEX = range(1, 9)
INDEX_VALUE_MAX = 2 ** 47 - 1
REASONS = {COUNT: "wrong number of arguments", NOT_ARRAY: "not a numpy.ndarray", DTYPE: "wrong dtype",
           BYTEORDER: "non-native byte order", RANK: "wrong rank", SHAPE: "wrong shape",
           LAYOUT: "not C-contiguous, aligned (and writeable for outputs)", INDEX: "index out of range"}

# arenas up to this size live on the native stack of the calling thread; larger ones are per-thread arrays
STACK_ARENA_MAX = 64 * 1024
ARENA_ALIGN = 64
NUMPY_MIN_ALIGN = 16  # np.empty's guaranteed alignment (malloc)


def describe(code: int) -> str:
    """Human-readable text for an entry failure code."""
    reason = REASONS.get(code & 15, f"code {code}")
    if code & 15 == INDEX:
        return f"gather {(code >> 4) & 0xFFF}: index {code >> 16} out of range"
    return reason if code & 15 == COUNT else f"argument {(code >> 4) + 1}: {reason}"


def index_error(code: int, index_checks: Sequence) -> IndexError:
    """The IndexError for an INDEX entry code, worded like the interpreter's."""
    site, value = (code >> 4) & 0xFFF, code >> 16
    if site < len(index_checks):
        axis, size = index_checks[site]
        return IndexError(f"index {value} is out of bounds for dimension {axis} with size {size}")
    return IndexError(f"index {value} is out of bounds")


def _struct_layout_ok() -> bool:
    """Do the hard-coded offsets read the same values as ctypes/numpy report, on varied sample arrays?"""
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8 or sys.version_info < (3, 11):
        return False
    try:
        ro = np.arange(6.0).reshape(2, 3)
        ro.flags.writeable = False
        samples = (np.zeros((3, 4), np.float32), np.arange(9, dtype=np.int64)[::-2], np.zeros((2, 3), ">f8"),
                   np.zeros((), np.bool_), np.asfortranarray(np.ones((2, 3))), ro, np.empty((0, 5), np.float32))
        rd = lambda addr, ty: ty.from_address(addr).value  # noqa: E731
        tup = tuple(samples)
        if rd(id(tup) + TUPLE_SIZE, ctypes.c_ssize_t) != len(tup):
            return False
        for k, a in enumerate(samples):
            addr = id(a)
            if rd(id(tup) + TUPLE_ITEMS + 8 * k, ctypes.c_void_p) != addr:
                return False
            if rd(addr + OB_TYPE, ctypes.c_void_p) != id(np.ndarray):
                return False
            if (rd(addr + ARR_DATA, ctypes.c_void_p) or 0) != a.ctypes.data:
                return False
            if rd(addr + ARR_ND, ctypes.c_int) != a.ndim:
                return False
            dims, strides = rd(addr + ARR_DIMS, ctypes.c_void_p), rd(addr + ARR_STRIDES, ctypes.c_void_p)
            if a.ndim and (tuple(rd(dims + 8 * i, ctypes.c_int64) for i in range(a.ndim)) != a.shape
                           or tuple(rd(strides + 8 * i, ctypes.c_int64) for i in range(a.ndim)) != a.strides):
                return False
            flags = rd(addr + ARR_FLAGS, ctypes.c_int)
            expect = (C_CONTIGUOUS * a.flags.c_contiguous | ALIGNED * a.flags.aligned | WRITEABLE * a.flags.writeable)
            if flags & (C_CONTIGUOUS | ALIGNED | WRITEABLE) != expect:
                return False
            descr = rd(addr + ARR_DESCR, ctypes.c_void_p)
            if rd(descr + DESCR_TYPE_NUM, ctypes.c_int) != a.dtype.num:
                return False
            if chr(rd(descr + DESCR_BYTEORDER, ctypes.c_ubyte)) != a.dtype.byteorder:
                return False
        return True
    except Exception:
        return False


STRUCT_LAYOUT_OK = _struct_layout_ok()
# the path new CompiledFunctions take; GRADC_RUNTIME=ctypes forces the slow pointer path (tests use it too)
USE_STRUCT_PATH = STRUCT_LAYOUT_OK and os.environ.get("GRADC_RUNTIME", "") != "ctypes"


def numpy_dtype(t: TensorType) -> np.dtype:
    return np.dtype(t.dtype.numpy)


def type_text(t: TensorType) -> str:
    return f"{t.dtype.name}[{','.join(map(str, t.shape))}]"


def declared_align(arg: ir.Argument) -> int:
    return int(getattr(arg.attributes, "align", None) or 0)


def add_entry(module: ir.Module, name: str, param_types: Sequence[TensorType], result_types: Sequence[TensorType],
              arena_bytes: int, error_slot: int | None = None, index_checks: Sequence = (),
              donated: dict[int, int] | None = None) -> dict:
    """Add `i64 {name}_entry(ptr tuple)` (checks + call of `{name}_inner`) to `module`; returns call metadata.

    With an `error_slot` (arena offset of {i64 site + 1, i64 index}), the entry zeroes it before the call
    and returns an INDEX code if a kernel recorded an out-of-range gather index. `donated` (result index ->
    param index, see memory.py) params are written in place, so they must also be writeable.
    """
    donated = dict(donated or {})
    written = set(donated.values())
    inner = module.get_global(f"{name}_inner")
    types = list(param_types) + list(result_types)
    n = len(param_types)
    arena_mode = "none" if arena_bytes == 0 else "stack" if arena_bytes <= STACK_ARENA_MAX else "tuple"
    count = len(types) + (arena_mode == "tuple")
    aligns = [declared_align(a) for a in inner.args[:len(types)]]
    i8, i32, i64, ptr = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.PointerType()

    nd_type = ir.GlobalVariable(module, ptr, f"{name}_ndarray_type")
    nd_type.initializer = ir.Constant(ptr, None)
    # the expected arrays as constant tables walked by ONE loop: unrolled checks made the entry the largest
    # function of small models (W2: ~30 ms of O3 + codegen for the glue alone); the loop costs nanoseconds
    rows, dims_table = [], []
    for k, t in enumerate(types):
        need = C_CONTIGUOUS | ALIGNED | (WRITEABLE if k >= n or k in written else 0)
        extra_align = aligns[k] if aligns[k] > np.dtype(t.dtype.numpy).itemsize else 1
        rows += [np.dtype(t.dtype.numpy).num, t.rank, len(dims_table), need, extra_align - 1]
        dims_table += list(t.shape)
    row_len = 5

    def table(label, values):
        g = ir.GlobalVariable(module, ir.ArrayType(i64, max(len(values), 1)), f"{name}_{label}")
        g.initializer = ir.Constant(g.value_type, [int(v) for v in values] or [0])
        g.global_constant = True
        g.linkage = "internal"
        return g
    spec_tab, dims_tab = table("arg_table", rows), table("dims_table", dims_table)

    fn = ir.Function(module, ir.FunctionType(i64, [ptr]), f"{name}_entry")
    fn.attributes.add("nounwind")
    fn.attributes.add("optsize")  # keeps O3 from unrolling the check loops back into straight-line code
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    tup = fn.args[0]
    arena = ir.Constant(ptr, None)
    if arena_mode == "stack":  # static alloca in the entry block: one stack adjustment, per thread by nature
        arena = b.alloca(ir.ArrayType(i8, arena_bytes), name="arena")
        arena.align = ARENA_ALIGN
    data_slots = b.alloca(ptr, size=ir.Constant(i64, max(len(types), 1)), name="data")

    def field(base, offset, ty, label=""):
        return b.load(b.gep(base, [ir.Constant(i64, offset)], inbounds=True, source_etype=i8), name=label, typ=ty)

    def at(base, index, ty=i64):
        return b.load(b.gep(base, [index], inbounds=True, source_etype=ty), typ=ty)

    fail = fn.append_basic_block("fail")
    fail_code = ir.IRBuilder(fail).phi(i64, name="code")
    ir.IRBuilder(fail).ret(fail_code)

    def require(ok, code):
        good = fn.append_basic_block()
        fail_code.add_incoming(code, b.block)
        b.cbranch(ok, good, fail)
        b.position_at_end(good)

    const = lambda v: ir.Constant(i64, v)  # noqa: E731
    require(b.icmp_signed("==", field(tup, TUPLE_SIZE, i64, "nargs"), const(count)), const(COUNT))
    ndarray = b.load(nd_type, name="ndarray_type", typ=ptr)
    if types:
        pre = b.block
        head, body, done = (fn.append_basic_block(x) for x in ("arg", "check", "checked"))
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(i64, name="k")
        k.add_incoming(const(0), pre)
        b.cbranch(b.icmp_signed("<", k, const(len(types))), body, done)
        b.position_at_end(body)
        code = b.shl(k, const(4))
        row = b.mul(k, const(row_len), flags=("nsw",))
        spec = [at(spec_tab, b.add(row, const(j), flags=("nsw",))) for j in range(row_len)]
        type_num, rank, dims_at, need, align_mask = spec
        obj = b.load(b.gep(tup, [b.add(k, const(TUPLE_ITEMS // 8), flags=("nsw",))], inbounds=True,
                           source_etype=ptr), typ=ptr)
        require(b.icmp_unsigned("==", field(obj, OB_TYPE, ptr), ndarray), b.or_(code, const(NOT_ARRAY)))
        descr = field(obj, ARR_DESCR, ptr)
        require(b.icmp_signed("==", b.sext(field(descr, DESCR_TYPE_NUM, i32), i64), type_num),
                b.or_(code, const(DTYPE)))
        require(b.icmp_unsigned("!=", field(descr, DESCR_BYTEORDER, i8), ir.Constant(i8, ord(">"))),
                b.or_(code, const(BYTEORDER)))
        require(b.icmp_signed("==", b.sext(field(obj, ARR_ND, i32), i64), rank), b.or_(code, const(RANK)))
        dims = field(obj, ARR_DIMS, ptr)
        dpre = b.block
        dhead, dbody, ddone = (fn.append_basic_block(x) for x in ("dim", "dim.check", "dims.ok"))
        b.branch(dhead)
        b.position_at_end(dhead)
        d = b.phi(i64, name="d")
        d.add_incoming(const(0), dpre)
        b.cbranch(b.icmp_signed("<", d, rank), dbody, ddone)
        b.position_at_end(dbody)
        want = at(dims_tab, b.add(dims_at, d, flags=("nsw",)))
        require(b.icmp_signed("==", at(dims, d), want), b.or_(code, const(SHAPE)))
        d.add_incoming(b.add(d, const(1), flags=("nsw",)), b.block)
        b.branch(dhead)
        b.position_at_end(ddone)
        flags = b.and_(b.sext(field(obj, ARR_FLAGS, i32), i64), need)
        require(b.icmp_signed("==", flags, need), b.or_(code, const(LAYOUT)))
        ptr_k = field(obj, ARR_DATA, ptr)
        # the kernel may assume more alignment than numpy's ALIGNED flag (e.g. 64 bytes)
        require(b.icmp_unsigned("==", b.and_(b.ptrtoint(ptr_k, i64), align_mask), const(0)),
                b.or_(code, const(LAYOUT)))
        b.store(ptr_k, b.gep(data_slots, [k], inbounds=True, source_etype=ptr))
        k.add_incoming(b.add(k, const(1), flags=("nsw",)), b.block)
        b.branch(head)
        b.position_at_end(done)
    data = [b.load(b.gep(data_slots, [const(j)], inbounds=True, source_etype=ptr), typ=ptr, name=f"data{j}")
            for j in range(len(types))]
    if arena_mode == "tuple":
        arena = field(field(tup, TUPLE_ITEMS + 8 * len(types), ptr), ARR_DATA, ptr, "arena")
    if error_slot is None:
        b.call(inner, data + [arena])
        b.ret(ir.Constant(i64, 0))
    else:
        # (an int round trip: llvmlite types the stack alloca's pointer as [n x i8]* and refuses i64 stores)
        slot = b.inttoptr(b.add(b.ptrtoint(arena, i64), ir.Constant(i64, error_slot)), ptr)
        b.store(ir.Constant(i64, 0), slot, align=8)
        b.call(inner, data + [arena])
        site = b.load(slot, typ=i64, align=8)
        with b.if_then(b.icmp_unsigned("!=", site, ir.Constant(i64, 0)), likely=False):
            value = b.load(b.gep(slot, [ir.Constant(i64, 1)], inbounds=True, source_etype=i64), typ=i64, align=8)
            lim = ir.Constant(i64, INDEX_VALUE_MAX)
            neg = ir.Constant(i64, -INDEX_VALUE_MAX)
            value = b.select(b.icmp_signed(">", value, lim), lim, value)
            value = b.select(b.icmp_signed("<", value, neg), neg, value)
            site = b.select(b.icmp_unsigned(">", site, ir.Constant(i64, 0x1000)), ir.Constant(i64, 0x1000), site)
            site_bits = b.shl(b.sub(site, ir.Constant(i64, 1)), ir.Constant(i64, 4))
            code = b.or_(b.shl(value, ir.Constant(i64, 16)), site_bits)
            b.ret(b.or_(code, ir.Constant(i64, INDEX)))
        b.ret(ir.Constant(i64, 0))
    return {"entry": fn.name, "inner": inner.name, "ndarray_type": nd_type.name, "arena_mode": arena_mode,
            "aligns": aligns, "error_slot": error_slot, "index_checks": [list(c) for c in index_checks],
            "donated": sorted([int(r), int(p)] for r, p in donated.items())}


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype, align: int = ARENA_ALIGN) -> np.ndarray:
    """np.empty whose data pointer is a multiple of `align`."""
    dtype = np.dtype(dtype)
    nbytes = max(1, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    raw = np.empty(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes].view(dtype)[:int(np.prod(shape, dtype=np.int64))].reshape(shape)


_PY_SCALAR_KINDS = {bool: "b", int: "biuf", float: "f"}  # target dtype kinds a Python scalar may become


def _call_source(m: int, tuple_arena: bool, donated: tuple = ()) -> str:
    """Source of a __call__ specialized to m outputs: allocate, one native call, return (no loops).
    A donated output (result index, param index) is its argument array, written in place."""
    outs = "".join(f"o{j}, " for j in range(m))
    into = dict(donated)
    lines = ["def __call__(self, *args):"]
    if m:
        lines.append(f"    {''.join(f'e{j}, s{j}, d{j}, ' for j in range(m))}= self._specs")
        lines += [f"    o{j} = args[{into[j]}]" if j in into else f"    o{j} = e{j}(s{j}, d{j})" for j in range(m)]
    extra = ""
    if tuple_arena:
        lines += ["    try:", "        arena = self._tls.arena", "    except AttributeError:",
                  "        arena = self._new_arena()"]
        extra = "arena, "
    lines.append(f"    c = self._entry(args + ({outs}{extra}))")
    lines.append("    if c:")
    lines.append(f"        return self._slow(args, ({outs}), c)")
    lines.append(f"    return ({outs})")
    return "\n".join(lines) + "\n"


_CALL_CLASSES: dict[tuple, type] = {}
_CALL_CLASSES_LOCK = threading.Lock()


class CompiledFunction:
    """A native function for one (shapes, dtypes) specialization; owns the code that keeps it callable.

    Call with one array per parameter; returns a tuple with one fresh array per result (0-d results are
    0-d arrays), like the reference interpreter's list of results.
    """

    def __new__(cls, name: str, param_types: Sequence[TensorType], result_types: Sequence[TensorType],
                code, meta: dict, stages: Callable[[str], str] | None = None, fast: bool | None = None):
        # one subclass per (outputs, arena mode, path) whose __call__ is generated without loops
        if cls is not CompiledFunction:
            return super().__new__(cls)
        fast = USE_STRUCT_PATH if fast is None else fast
        m = len(result_types)
        donated = tuple(tuple(pair) for pair in meta.get("donated") or ())
        sig = (m, meta["arena_mode"] == "tuple", fast, donated)
        with _CALL_CLASSES_LOCK:
            sub = _CALL_CLASSES.get(sig)
            if sub is None:
                body: dict = {"__slots__": ()}
                if fast:
                    exec(_call_source(m, sig[1], donated), {}, body)
                else:
                    body["__call__"] = CompiledFunction._call_ctypes
                sub = _CALL_CLASSES[sig] = type("CompiledFunction", (CompiledFunction,), body)
        return super().__new__(sub)

    __slots__ = ("name", "param_types", "result_types", "code", "meta", "_entry", "_inner", "_specs", "_tls",
                 "_stages", "_stage_texts", "_np_types", "donated", "__weakref__")

    def __init__(self, name: str, param_types: Sequence[TensorType], result_types: Sequence[TensorType],
                 code, meta: dict, stages: Callable[[str], str] | None = None, fast: bool | None = None):
        self.name = name
        self.param_types = tuple(param_types)
        self.result_types = tuple(result_types)
        self.code = code  # NativeCode: the engine that owns the machine code
        self.meta = dict(meta)
        self._stages = stages
        self._stage_texts: dict[str, str] = {"fused": meta.get("fused_text", "")} if meta.get("fused_text") else {}
        self._tls = threading.local()
        self._np_types = tuple(numpy_dtype(t) for t in self.param_types)
        self.donated = {int(r): int(p) for r, p in meta.get("donated") or ()}  # result -> param, in place
        n = len(self.param_types)
        aligns = meta.get("aligns") or [0] * (n + len(self.result_types))
        specs = []
        for t, al in zip(self.result_types, aligns[n:]):
            dt = numpy_dtype(t)
            big = al > max(NUMPY_MIN_ALIGN, dt.itemsize)  # the kernel assumes more alignment than np.empty gives
            alloc = (lambda s, d, _a=al: aligned_empty(s, d, _a)) if big else np.empty
            specs += [alloc, t.shape, dt]
        self._specs = tuple(specs)
        ctypes.c_void_p.from_address(code.global_address(meta["ndarray_type"])).value = id(np.ndarray)
        self._entry = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.py_object)(code.address(meta["entry"]))
        argtypes = [ctypes.c_void_p] * (n + len(self.result_types) + 1)
        self._inner = ctypes.CFUNCTYPE(None, *argtypes)(code.address(meta["inner"]))

    # ---- slow paths -------------------------------------------------------------------------------------

    def _new_arena(self) -> np.ndarray:
        arena = aligned_empty((self.meta["arena_bytes"],), np.dtype(np.uint8), ARENA_ALIGN)
        self._tls.arena = arena
        return arena

    def _arena(self) -> np.ndarray:
        try:
            return self._tls.arena
        except AttributeError:
            return self._new_arena()

    def _conform_one(self, i: int, x: object) -> np.ndarray:
        t = self.param_types[i]
        want = self._np_types[i]
        what = f"argument {i + 1} of {self.name}: expected {type_text(t)}"
        if type(x) in _PY_SCALAR_KINDS:
            if want.kind not in _PY_SCALAR_KINDS[type(x)]:
                raise TypeError(f"{what}, got Python {type(x).__name__}")
            arr = np.asarray(x, dtype=want)
        elif isinstance(x, np.ndarray):
            arr = x if type(x) is np.ndarray else np.asarray(x)
        else:
            try:
                arr = np.asarray(x)
            except Exception:
                raise TypeError(f"{what}, got {type(x).__name__}") from None
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"{what}, got {type(x).__name__}")
        if arr.dtype.newbyteorder("=") != want:
            raise TypeError(f"{what}, got {arr.dtype.name}[{','.join(map(str, arr.shape))}] array")
        if arr.shape != t.shape:
            if arr.ndim != t.rank:
                raise ValueError(f"{what} (rank {t.rank}), got an array of rank {arr.ndim} with shape {arr.shape}")
            raise ValueError(f"{what}, got an array of shape {arr.shape}")
        aligns = self.meta.get("aligns") or ()
        align = max(aligns[i] if i < len(aligns) else 0, want.itemsize)
        if (arr.flags.c_contiguous and arr.flags.aligned and arr.dtype.isnative
                and (align <= want.itemsize or arr.ctypes.data % align == 0)
                and (arr.flags.writeable or i not in self.donated.values())):
            return arr.view(want) if arr.dtype.num != want.num else arr  # e.g. longlong vs long for int64
        fixed = aligned_empty(t.shape, want, align) if align > NUMPY_MIN_ALIGN else np.empty(t.shape, want)
        fixed[...] = arr  # converts byte order, strides and alignment; never reads the input wrongly
        return fixed

    def conform(self, args: Sequence[object]) -> tuple[np.ndarray, ...]:
        """The arguments as conforming arrays (copies where needed); TypeError/ValueError when impossible."""
        n = len(self.param_types)
        if len(args) != n:
            sig = ", ".join(type_text(t) for t in self.param_types)
            raise TypeError(f"{self.name}() takes {n} argument{'s' if n != 1 else ''} ({sig}), got {len(args)}")
        return tuple(self._conform_one(i, x) for i, x in enumerate(args))

    def _slow(self, args: tuple, outs: tuple, code: int = 0):
        if code & 15 == INDEX:  # the arguments conformed and the kernel ran into a bad gather index
            raise index_error(code, self.meta.get("index_checks") or ())
        fixed = self.conform(args)
        if self.donated:  # in place into the conformed copies (the caller sees them as the outputs)
            outs = tuple(fixed[self.donated[j]] if j in self.donated else o for j, o in enumerate(outs))
        extra = (self._arena(),) if self.meta["arena_mode"] == "tuple" else ()
        code = self._entry(fixed + outs + extra)
        if code & 15 == INDEX:
            raise index_error(code, self.meta.get("index_checks") or ())
        if code:
            raise RuntimeError(f"gradc internal error: {self.name} rejected conformed arguments ({describe(code)})")
        return outs

    def _call_ctypes(self, *args):
        """The fallback call path: checks in Python, data pointers through ctypes (used if the layout check fails)."""
        fixed = self.conform(args)
        specs = self._specs
        outs = tuple(fixed[self.donated[j // 3]] if j // 3 in self.donated else specs[j](specs[j + 1], specs[j + 2])
                     for j in range(0, len(specs), 3))
        arena = self._arena() if self.meta["arena_bytes"] else None
        slot = self.meta.get("error_slot")
        if slot is not None:
            err = arena[slot:slot + 16].view(np.int64)
            err[:] = 0
        self._inner(*[a.ctypes.data for a in fixed + outs], None if arena is None else arena.ctypes.data)
        if slot is not None and err[0]:
            value = int(np.clip(err[1], -INDEX_VALUE_MAX, INDEX_VALUE_MAX))
            raise index_error((value << 16) | (int(min(err[0], 0x1000)) - 1) << 4 | INDEX,
                              self.meta.get("index_checks") or ())
        return outs

    # ---- introspection ----------------------------------------------------------------------------------

    def as_text(self, stage: str) -> str:
        """Text of a compilation stage: "fused" (kernels), "llvm" (optimized LLVM IR) or "asm"."""
        if stage not in ("fused", "llvm", "asm"):
            raise ValueError(f"unknown stage {stage!r}; expected 'fused', 'llvm' or 'asm'")
        if stage not in self._stage_texts:
            if self._stages is None:
                raise ValueError(f"stage {stage!r} is not available for {self.name}")
            self._stage_texts[stage] = self._stages(stage)
        return self._stage_texts[stage]

    def __repr__(self) -> str:
        sig = ", ".join(type_text(t) for t in self.param_types)
        res = ", ".join(type_text(t) for t in self.result_types)
        return f"<gradc CompiledFunction {self.name}({sig}) -> ({res})>"
