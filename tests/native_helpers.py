"""Test helper: JIT a `lower()` module directly (llvmlite binding + ctypes) and call its inner function.

Independent of gradc.codegen.runtime so lowering can be tested on its own; O3 with loop and SLP
vectorization like the real pipeline.
"""

from __future__ import annotations

import ctypes
import functools

import llvmlite.binding as llvm
import numpy as np

from gradc.codegen import load_externals
from gradc.codegen.lower import Lowered, lower
from gradc.ir.core import Function


@functools.cache
def _init() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    from gradc.codegen import threads
    threads.ensure_pool()  # threaded kernels call gradc_parallel
    try:
        from gradc.codegen import blas
        if blas.available():
            blas.load()
    except ImportError:
        pass


def _tm():
    target = llvm.Target.from_default_triple()
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(), opt=3, jit=True)


class Native:
    """A lowered Function compiled with MCJIT; call(*arrays) -> list of result arrays."""

    def __init__(self, fn: Function, num_threads: int | None = 1, name: str = "gradc_kernel"):
        _init()
        self.lowered: Lowered = lower(fn, name, num_threads=num_threads)
        load_externals(self.lowered.module)  # BLAS/MKL/pool symbols, as gradc.codegen does before linking
        mod = llvm.parse_assembly(str(self.lowered.module))
        mod.verify()
        tm = _tm()
        pto = llvm.create_pipeline_tuning_options(speed_level=3)
        pto.loop_vectorization = True
        pto.slp_vectorization = True
        pb = llvm.create_pass_builder(tm, pto)
        mpm = pb.getModulePassManager()
        mpm.run(mod, pb)
        self.optimized = str(mod)
        self.engine = llvm.create_mcjit_compiler(mod, _tm())
        self.engine.finalize_object()
        addr = self.engine.get_function_address(f"{name}_inner")
        n = len(fn.params) + len(fn.results) + 1
        self.cfunc = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n))(addr)
        self.fn = fn

    def __call__(self, *args):
        ins = [np.ascontiguousarray(np.asarray(a, dtype=p.dtype.numpy)) for a, p in zip(args, self.fn.params)]
        outs = [np.full(r.shape, 123, dtype=r.dtype.numpy) for r in self.fn.results]  # garbage-filled
        arena = np.empty(self.lowered.arena_bytes + 64, dtype=np.uint8)
        base = arena.ctypes.data
        arena_ptr = base + (-base) % 64
        self.cfunc(*[a.ctypes.data for a in ins], *[o.ctypes.data for o in outs], arena_ptr)
        return outs
