"""LLVM JIT for gradc: host target machine, O3 optimization, MCJIT engines and the in-memory kernel cache.

- One target machine per use: a TargetMachine handed to an MCJIT engine is owned (and freed) by that engine,
  so every engine gets a fresh one and the optimizer gets its own.
- Optimization uses the new pass builder at speed level 3 with loop and SLP vectorization set explicitly.
- `NativeCode` owns one MCJIT engine; the machine code lives exactly as long as that object.
- `KernelCache` is a bounded LRU of compiled functions with one build per key under concurrency; evicting an
  entry only drops the cache's reference, so a compiled function a caller still holds keeps working and its
  code is freed when the last reference goes.
- LLVM state (the global context used by parsing, the pass managers, codegen) is not thread-safe, so every
  LLVM operation runs under `LLVM_LOCK`; calling already compiled code never takes it.
- This module imports only the stdlib and llvmlite: the compile server's worker (compile_server.py) loads
  it by file path to optimize and emit objects (`object_code`) that the parent loads with `load_object`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from typing import Callable, Hashable

import llvmlite
import llvmlite.binding as llvm

LLVM_LOCK = threading.RLock()

# debug counters, read by tests and benchmarks (a second process that loads from disk compiles nothing)
STATS = {"compiled": 0, "loaded": 0}

OPT_LEVEL = 3
# new-pass-builder tuning (part of the cache keys); vectorization is set explicitly, never left to defaults
PIPELINE = {"loop_vectorization": True, "slp_vectorization": True, "loop_interleaving": True, "loop_unrolling": True}


@functools.cache
def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


@functools.cache
def host_cpu() -> tuple[str, str]:
    """The host CPU name and its feature string, as LLVM sees them."""
    _initialize()
    return llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


def versions() -> dict[str, str]:
    """Versions that change the generated code: llvmlite and the LLVM it wraps."""
    return {"llvmlite": llvmlite.__version__, "llvm": ".".join(map(str, llvm.llvm_version_info))}


def code_identity() -> dict[str, str]:
    """What must agree for two processes to generate the same code: llvmlite/LLVM versions, CPU, features,
    and the CPU count (blocks of work are cut for it: fuse.grid_threads)."""
    cpu, features = host_cpu()
    return {**versions(), "cpu": cpu, "features": features, "cpus": str(os.cpu_count() or 1)}


def target_machine() -> llvm.TargetMachine:
    """A fresh host target machine at O3, set up for JIT code (never reuse one given to an engine)."""
    _initialize()
    cpu, features = host_cpu()
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=cpu, features=features, opt=OPT_LEVEL, reloc="default",
                                        codemodel="jitdefault", jit=True)


def parse(ir_text: str) -> llvm.ModuleRef:
    """Parse and verify LLVM IR text into a module for the host triple and data layout."""
    with LLVM_LOCK:
        _initialize()
        tm = target_machine()
        mod = llvm.parse_assembly(ir_text)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
        return mod


def optimize(mod: llvm.ModuleRef) -> llvm.ModuleRef:
    """Run the O3 module pipeline (loop + SLP vectorization on) in place; returns `mod`."""
    with LLVM_LOCK:
        tm = target_machine()
        pto = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
        for option, value in PIPELINE.items():
            setattr(pto, option, value)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        return mod


def object_code(mod: llvm.ModuleRef) -> bytes:
    """Relocatable object for an (optimized) module: byte-identical to the one MCJIT generates for it."""
    with LLVM_LOCK:
        return target_machine().emit_object(mod)


def assembly(mod: llvm.ModuleRef) -> str:
    """Host assembly text for an (optimized) module."""
    with LLVM_LOCK:
        return target_machine().emit_assembly(mod)


class NativeCode:
    """Owns one MCJIT engine (and so the machine code in it); `object_bytes` is the relocatable object."""

    def __init__(self, engine: llvm.ExecutionEngine, object_bytes: bytes | None):
        self._engine = engine
        self.object_bytes = object_bytes
        self._pinned = False

    def pin(self) -> None:
        """Never free this code, not even at interpreter exit (background threads may be running in it)."""
        self._pinned = True

    def address(self, symbol: str) -> int:
        addr = self._engine.get_function_address(symbol)
        if not addr:
            raise LookupError(f"symbol {symbol!r} not found in compiled code")
        return addr

    def global_address(self, symbol: str) -> int:
        addr = self._engine.get_global_value_address(symbol)
        if not addr:
            raise LookupError(f"global {symbol!r} not found in compiled code")
        return addr

    @property
    def closed(self) -> bool:
        return self._engine is None

    def close(self) -> None:
        """Free the machine code now; any function pointer into it becomes invalid."""
        if self._pinned:
            return
        engine, self._engine = self._engine, None
        if engine is not None:
            with LLVM_LOCK:
                engine.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: llvmlite may already be torn down
            pass


def jit_module(mod: llvm.ModuleRef) -> NativeCode:
    """Generate machine code for an optimized module in a new engine; keeps the object bytes for caching."""
    with LLVM_LOCK:
        engine = llvm.create_mcjit_compiler(mod, target_machine())
        objects: list[bytes] = []
        engine.set_object_cache(notify_func=lambda _mod, buf: objects.append(bytes(buf)))
        engine.finalize_object()
        STATS["compiled"] += 1
        return NativeCode(engine, objects[0] if objects else None)


def load_object(object_bytes: bytes, compiled: bool = False) -> NativeCode:
    """Load an object into a new engine without optimizing or generating code; `compiled`: it was just
    generated for this process (by the compile server) and counts as a compile, not as a cache load."""
    with LLVM_LOCK:
        _initialize()
        tm = target_machine()
        mod = llvm.parse_assembly("")
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        engine = llvm.create_mcjit_compiler(mod, tm)
        engine.set_object_cache(getbuffer_func=lambda _mod: object_bytes)
        engine.finalize_object()
        STATS["compiled" if compiled else "loaded"] += 1
        return NativeCode(engine, object_bytes)


def _default_cache_size() -> int:
    try:
        return max(1, int(os.environ.get("GRADC_KERNEL_CACHE_SIZE", "256")))
    except ValueError:
        return 256


class KernelCache:
    """Bounded LRU of compiled functions; `get_or_build` builds each key once, concurrent callers wait."""

    def __init__(self, maxsize: int | None = None):
        self.maxsize = maxsize if maxsize is not None else _default_cache_size()
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def _lookup(self, key: Hashable) -> object | None:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def get_or_build(self, key: Hashable, build: Callable[[], object]) -> object:
        with self._lock:
            hit = self._lookup(key)
            if hit is not None:
                return hit
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                hit = self._lookup(key)
                if hit is not None:
                    return hit
            try:
                value = build()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            evicted = []
            with self._lock:  # publish and retire the key lock together: no window for a second build
                self._building.pop(key, None)
                self._entries[key] = value
                while len(self._entries) > self.maxsize:
                    evicted.append(self._entries.popitem(last=False))
            del evicted  # outside the lock: the last reference frees the engine's code (if no caller holds it)
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
