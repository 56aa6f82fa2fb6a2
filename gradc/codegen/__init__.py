"""Native code generation: `compile_function(fn)` turns an IR Function into a callable `CompiledFunction`.

Path: in-memory kernel cache (key: symbol + printed IR + options) -> on-disk object cache (skips lowering,
optimization and codegen on a hit) -> lower (fuse, plan memory, emit `{symbol}_inner`) + runtime entry
(`{symbol}_entry`, see runtime.py) -> O3 optimization -> MCJIT -> CompiledFunction. After a process's first
compiles, optimization and codegen run in the compile server's worker process instead (compile_server.py:
llvmlite leaks ~90 KB per O3 run) and the object it returns is loaded like a disk-cache entry.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Callable, Sequence

from gradc.codegen import cache, compile_server, jit, runtime
from gradc.codegen.jit import STATS, KernelCache
from gradc.codegen.runtime import CompiledFunction
from gradc.ir.core import Function, TensorType

__all__ = ["compile_function", "compile_lowered", "CompiledFunction", "KERNELS", "STATS"]

KERNELS = KernelCache()
TIMES: dict[str, float] = {}  # seconds spent per compile phase in this process (benchmarks)

# bump when the entry/metadata format changes (also covered by the source digest in the disk key)
RUNTIME_ABI = 3  # 2: i64 entry codes, gather index errors; 3: threads through the gradc_parallel pool


def options() -> dict:
    """Everything besides the IR that changes the generated code (part of both cache keys)."""
    return {"opt": jit.OPT_LEVEL, "pipeline": dict(jit.PIPELINE), "abi": RUNTIME_ABI,
            "stack_arena_max": runtime.STACK_ARENA_MAX,
            "threads": os.environ.get("GRADC_NUM_THREADS", ""),
            # tuning overrides read by lower.py / matmul.py (env strings: no import on the disk-cache path)
            "tuning": [os.environ.get(v, "") for v in ("GRADC_SMALL_KERNEL_ELEMENTS", "GRADC_BLAS_MIN_MNK",
                                                       "GRADC_GEMM_THREAD_MIN_MNK", "GRADC_UNROLL_SCANS",
                                                       "GRADC_BLAS")],
            "typenums": [runtime.numpy_dtype(TensorType((), d)).num for d in _dtypes()]}


def _dtypes():
    from gradc.ir.core import DTYPES
    return DTYPES


def symbol_name(name: str) -> str:
    """A C identifier for the kernel symbols."""
    sym = re.sub(r"\W", "_", name or "gradc_kernel")
    return sym if sym and not sym[0].isdigit() else "k_" + sym


def compile_function(fn: Function, name: str | None = None, donate: dict[int, int] | None = None) -> CompiledFunction:
    """Compile `fn` (cached in memory and on disk); the result is called with one array per parameter.

    `donate` (result index -> param index): write those results into the argument arrays, in place, where
    the kernels allow it (`CompiledFunction.donated` says which; the others are fresh arrays as usual).
    The caller must not pass one array for two parameters when one of them is donated.
    """
    from gradc.ir.passes import optimize
    from gradc.ir.passes.calls import has_calls, strip_custom_vjp
    from gradc.ir.printer import print_function

    if has_calls(fn):  # native code has no calls: custom VJPs were used by AD, their values remain
        fn = optimize(strip_custom_vjp(fn))
    symbol = symbol_name(name or fn.name)
    text = print_function(fn)
    if donate:
        text += f"; donate {sorted(donate.items())}\n"
    opts = options()
    key = (symbol, text, repr(sorted(opts.items())))

    def lower_module():
        from gradc.codegen.lower import lower
        return lower(fn, symbol, donate=donate)

    return KERNELS.get_or_build(key, lambda: compile_lowered(
        fn.name, fn.param_types, fn.result_types, symbol, text, lower_module, opts))


def _with_entry(lowered, symbol: str) -> tuple[dict, str]:
    """Add the runtime entry to a lowered module and make its external symbols resolvable; returns
    (metadata, LLVM IR text)."""
    module = lowered.module
    meta = runtime.add_entry(module, symbol, lowered.param_types, lowered.result_types, lowered.arena_bytes,
                             getattr(lowered, "error_slot", None), getattr(lowered, "index_checks", None) or (),
                             lowered.plan.donated if hasattr(lowered, "plan") else None)
    meta.update(arena_bytes=int(lowered.arena_bytes), num_kernels=int(getattr(lowered, "num_kernels", 0)),
                fused_text=getattr(lowered, "fused_text", "") or "", externals=load_externals(module))
    return meta, loop_ids(str(module))


def load_externals(module) -> list[str]:
    """Load what the module's external symbols live in (gradc's pool, OpenBLAS, MKL) before it is linked
    (an unresolved symbol would be linked as address 0: a segfault at the call); returns their names."""
    externals = sorted(f.name for f in module.functions if f.is_declaration and not f.name.startswith("llvm."))
    _load_runtime_symbols({"externals": externals})
    return externals


def loop_ids(text: str) -> str:
    """llvmlite cannot write a self-referencing (distinct) node, which LLVM requires of a loop ID: the
    placeholder node of kept innermost loops (lower.INNER_LOOP_MARK) becomes `distinct !{self, unroll.disable}`."""
    from gradc.codegen.lower import INNER_LOOP_MARK

    def loop_id(m: re.Match) -> str:
        return f'{m.group(1)} = distinct !{{{m.group(1)}, !{{!"llvm.loop.unroll.disable"}}}}'
    return re.sub(rf'^(!\d+) = !{{ ?!"{re.escape(INNER_LOOP_MARK)}" ?}}$', loop_id, text, flags=re.M)


def _prepare(lowered, symbol: str) -> tuple[dict, object]:
    """Add the runtime entry to a lowered module, parse and optimize it; returns (metadata, llvm module)."""
    meta, ir_text = _with_entry(lowered, symbol)
    return meta, jit.optimize(jit.parse(ir_text))


def _compile_here(ir_text: str) -> jit.NativeCode:
    """Parse, optimize and generate code in this process."""
    t0 = time.perf_counter()
    llmod = jit.optimize(jit.parse(ir_text))
    t1 = time.perf_counter()
    code = jit.jit_module(llmod)
    _add_time("optimize_s", t1 - t0)
    _add_time("codegen_s", time.perf_counter() - t1)
    return code


def write_perf_map(code: jit.NativeCode, ir_text: str) -> None:
    """Name the kernels of freshly compiled code for `perf report` (GRADC_PERF_MAP=1, with GRADC_CACHE=0):
    one line per function in /tmp/perf-PID.map, perf's JIT symbol file; a function's size is the distance to
    the next one (MCJIT lays one module's functions out contiguously)."""
    names = re.findall(r"^define [^@]*@\"?([\w.$-]+)\"?\(", ir_text, flags=re.M)
    starts = sorted((code.address(n), n) for n in names)
    if not starts:
        return
    with open(f"/tmp/perf-{os.getpid()}.map", "a") as f:
        for (addr, name), (nxt, _) in zip(starts, starts[1:] + [(starts[-1][0] + 4096, "")]):
            f.write(f"{addr:x} {max(nxt - addr, 1):x} gradc:{name}\n")


def _add_time(phase: str, seconds: float) -> None:
    TIMES[phase] = TIMES.get(phase, 0.0) + seconds


_loaded_libraries: set[str] = set()


def _load_runtime_symbols(meta: dict) -> None:
    """Make the external symbols a kernel references resolvable before it is linked (BLAS).

    A disk-cache entry records the library path: loading it directly skips importing the scipy_openblas32
    package (~40 ms, most of a warm first call); if the file is gone, blas.load() finds it again.
    """
    if "gradc_parallel" in meta.get("externals", ()):
        from gradc.codegen import threads
        threads.ensure_pool()
    if any(name.startswith("gradc_mkl_") for name in meta.get("externals", ())):
        from gradc.codegen import mkl
        mkl.load()  # raises when MKL is gone: a disk-cache entry that calls it is then rebuilt
    if not any(name.startswith("scipy_") for name in meta.get("externals", ())):
        return
    t0 = time.perf_counter()
    path = meta.get("blas_path")
    if path and path in _loaded_libraries:
        return
    with _openblas_starts_one_thread():
        if path and os.path.isfile(path):
            import llvmlite.binding as llvm
            llvm.load_library_permanently(path)
        else:
            from gradc.codegen.matmul import blas_library
            path = blas_library()
            if path:
                import llvmlite.binding as llvm
                llvm.load_library_permanently(path)
            else:
                from gradc.codegen import blas
                path = blas.load()
            meta["blas_path"] = path
    _single_threaded_blas(path)
    _loaded_libraries.add(path)
    _add_time("blas_load_s", time.perf_counter() - t0)


@contextlib.contextmanager
def _openblas_starts_one_thread():
    """OpenBLAS starts its worker threads when loaded (OPENBLAS_NUM_THREADS), and each spins ~0.1 s of CPU
    before sleeping: measured +90 ms of CPU competing with a first call's compile on 2 cores. gradc's copy
    runs single-threaded anyway (below), so it is loaded with the variable at 1, then restored."""
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("OPENBLAS_NUM_THREADS", None)
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


def _single_threaded_blas(path: str) -> None:
    """gradc splits large GEMMs across its own threads (matmul.py); OpenBLAS's threads would fight them
    (and spin at barriers: 5x slower calls on a loaded machine), so gradc's OpenBLAS copy runs one thread."""
    import ctypes
    try:
        ctypes.CDLL(path).scipy_openblas_set_num_threads(ctypes.c_int(1))
    except (OSError, AttributeError):  # another build without the symbol: leave it as it is
        pass


def compile_lowered(display_name: str, param_types: Sequence[TensorType], result_types: Sequence[TensorType],
                    symbol: str, key_text: str, lower_module: Callable[[], object],
                    opts: dict | None = None) -> CompiledFunction:
    """Build a CompiledFunction from a lowering callback, through the on-disk cache (no in-memory cache)."""
    opts = options() if opts is None else opts
    disk_key = cache.entry_key(key_text, symbol, opts)
    hit = cache.load(disk_key)
    code = None
    if hit is not None:
        meta, obj = hit
        try:
            _load_runtime_symbols(meta)
            t0 = time.perf_counter()
            code = jit.load_object(obj)
            _add_time("disk_load_s", time.perf_counter() - t0)
            code.address(meta["entry"]), code.address(meta["inner"])  # metadata and object must agree
            code.global_address(meta["ndarray_type"])
        except Exception:  # an entry the linker rejects is as good as corrupt: recompile
            code = None
    if code is None:
        t0 = time.perf_counter()
        lowered = lower_module()
        t1 = time.perf_counter()
        meta, ir_text = _with_entry(lowered, symbol)
        code = compile_server.compile_ir(ir_text, _compile_here)
        if code.object_bytes:
            cache.store(disk_key, meta, code.object_bytes)
        _add_time("lower_s", t1 - t0)
        if os.environ.get("GRADC_PERF_MAP") == "1":
            write_perf_map(code, ir_text)

    def stages(stage: str) -> str:
        lowered = lower_module()
        if stage == "fused":
            return getattr(lowered, "fused_text", "") or ""
        _, llmod = _prepare(lowered, symbol)
        return str(llmod) if stage == "llvm" else jit.assembly(llmod)

    return CompiledFunction(display_name, param_types, result_types, code, meta, stages=stages)
