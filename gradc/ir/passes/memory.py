"""Memory planning: give every materialized value of a FusedProgram a home.

Params and results live in the caller's buffers; dense consts are module globals; every other
materialized value (and each threaded kernel's per-thread partial reduction accumulators, and a depth-split
GEMM's partial products: fuse.gemm_k_parts) gets an
offset in ONE arena; a program with a `gather` also gets a 16-byte *error slot* at the arena's end, where
kernels record an out-of-range index (the arena is per call, so two threads calling the same function never
share it). Offsets come from liveness over kernel order (a value lives from the kernel that
produces it to the last kernel that loads it, both inclusive, so a kernel never reads and writes
overlapping slots) and are reused first-fit, 64-byte aligned; a view (fuse.py) lives in its base's slot,
whose life extends to the view's last reader. A native scan loop's kernel also gets a
*scratch* region live only during that kernel: two carry buffers (double-buffered: iteration t reads one
and writes the other) and the body's own arena, planned once for the body (`Kernel.body_plan`).

Donation (in-place updates, e.g. a training step's new parameters): `donate_results` gives a result its
parameter's buffer when no kernel reads that parameter after the result is written and the writing nest
reads the parameter only at the element it writes (elementwise ops of the nest's shape in between).
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field

import numpy as np

from gradc.ir.core import Value
from gradc.ir.passes.fuse import EPILOGUE, MAIN, FusedProgram, gemm_k_parts, is_dense_const, reads_only_at_index

ALIGN = 64


@dataclass(frozen=True)
class Home:
    kind: str  # "param" | "result" | "arena" | "global"
    index: int  # param/result position or arena byte offset (0 for globals)
    offset: int = 0  # bytes into that buffer (a view: FusedProgram.views)


@dataclass
class MemoryPlan:
    home: dict = field(default_factory=dict)  # Value -> Home
    partials: dict = field(default_factory=dict)  # (kernel index, reduction or matmul Value) -> arena offset
    arena_bytes: int = 0
    error_slot: int | None = None  # arena offset of {i64 site + 1, i64 index} (programs with a gather)
    donated: dict = field(default_factory=dict)  # result index -> param index written in place
    scratch: dict = field(default_factory=dict)  # scan kernel index -> arena offset of its scratch region


def carry_bytes(body) -> int:
    """Bytes of one carry buffer of a scan kernel's body: every carry part, each 64-byte aligned."""
    return sum(align(nbytes(p)) for p in body.fn.results[:body.fn.meta["num_carry"]])


def scratch_layout(k) -> tuple[int, int, int]:
    """(offset of carry buffer A, of carry buffer B, of the body arena) inside a scan kernel's scratch (inside
    each row block's part of it: see scratch_stride)."""
    c = carry_bytes(k.body)
    return 0, c, 2 * c


def scratch_stride(k) -> int:
    """Bytes of one row block's scratch (carry buffers and body arena) of a scan kernel (k.parts blocks)."""
    return align(scratch_layout(k)[2] + k.body_plan.arena_bytes)


def nbytes(v: Value) -> int:
    return v.type.size * np.dtype(v.dtype.numpy).itemsize


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan_memory(prog: FusedProgram) -> MemoryPlan:
    """Assign params, results, globals and liveness-planned arena offsets."""
    plan = MemoryPlan()
    for i, p in enumerate(prog.fn.params):
        plan.home[p] = Home("param", i)
    for v, i in prog.result_home.items():
        plan.home[v] = Home("result", i)

    # (start kernel, end kernel, bytes, key) for everything that needs arena space
    requests: list[tuple[int, int, int, object]] = []
    last_use: dict[Value, int] = {}
    for k in prog.kernels:
        for v in k.reads:
            last_use[v] = max(last_use.get(v, -1), k.index)
    for v, (base, _) in prog.views.items():  # a view's readers read its base's buffer
        if v in last_use:
            last_use[base] = max(last_use.get(base, -1), last_use[v])
    position = {op.result: i for i, op in enumerate(prog.fn.ops)}
    # program order, not set order: offsets (and the fused text) must not depend on hashing
    for v in sorted(prog.materialized, key=lambda x: position.get(x, -1)):
        if v in plan.home or v in prog.views or v in prog.tiles:  # (a tile piece lives in its sum's buffer)
            continue
        if is_dense_const(v):
            plan.home[v] = Home("global", 0)
            continue
        start = prog.producer[v][0]
        if prog.kernels[start].consumer_of is not None:  # written while its matmul still reads A and B
            start = prog.kernels[start].consumer_of
        requests.append((start, max(start, last_use.get(v, start)), nbytes(v), v))
    for k in prog.kernels:
        if k.kind == "scan":
            k.body_plan = plan_memory(k.body)
            requests.append((k.index, k.index, k.parts * scratch_stride(k), ("scan", k.index)))
        if gemm_k_parts(k) > 1:  # the partial products of a depth-split GEMM (fuse.GEMM_K_PARTS)
            requests.append((k.index, k.index, (gemm_k_parts(k) - 1) * nbytes(k.matmul), (k.index, k.matmul)))
        if k.kind == "loop" and k.threads > 1:
            for r in k.reductions:
                if 0 in r.op.attrs["axes"]:
                    requests.append((k.index, k.index, (k.threads - 1) * nbytes(r), (k.index, r)))

    # first fit in start order; `live` holds (offset, offset + size, end) of placed requests that may still
    # overlap, sorted by offset: requests ending before the current start are dropped (starts only grow),
    # so planning stays near linear in the number of kernels (an unrolled RNN has thousands)
    live: list[tuple[int, int, int]] = []
    ends: list[int] = []  # a heap of the live requests' end kernels
    order = sorted(range(len(requests)), key=lambda i: (requests[i][0], -requests[i][2], i))
    for i in order:
        start, end, size, key = requests[i]
        size = align(max(size, 1))
        if ends and ends[0] < start:
            while ends and ends[0] < start:
                heapq.heappop(ends)
            live = [x for x in live if x[2] >= start]
        offset = 0
        for lo, hi, _ in live:
            if offset + size <= lo:
                break
            offset = max(offset, hi)
        bisect.insort(live, (offset, offset + size, end))
        heapq.heappush(ends, end)
        plan.arena_bytes = max(plan.arena_bytes, offset + size)
        if isinstance(key, Value):
            plan.home[key] = Home("arena", offset)
        elif key[0] == "scan":
            plan.scratch[key[1]] = offset
        else:
            plan.partials[key] = offset
    if any(op.name == "gather" for k in prog.kernels for op in k.ops):
        plan.error_slot = align(plan.arena_bytes)
        plan.arena_bytes = plan.error_slot + ALIGN
    place_views(prog, plan)
    return plan


def place_views(prog: FusedProgram, plan: MemoryPlan) -> None:
    """Home every view in its base's buffer, at its offset (again after donation moved a base)."""
    for v, (base, offset) in prog.views.items():
        h = plan.home[base]
        plan.home[v] = Home(h.kind, h.index, h.offset + offset * np.dtype(v.dtype.numpy).itemsize)


def donate_results(prog: FusedProgram, plan: MemoryPlan, donate: dict[int, int]) -> dict[int, int]:
    """Home each result of `donate` (result index -> param index) in its parameter's buffer where that is
    safe (see the module doc); returns the donations applied (also in plan.donated)."""
    fn = prog.fn
    last_gather = last_gather_kernel(prog)
    for r, p in sorted(donate.items()):
        v, param = fn.results[r], fn.params[p]
        if v.type != param.type or p in plan.donated.values():
            continue
        if v is param:  # passed through unchanged: the output is the input array itself
            plan.donated[r] = p
            continue
        if v.op is None or is_dense_const(v) or prog.result_home.get(v) != r:
            continue
        if any(total is v for total, _ in prog.tiles.values()):  # written by its pieces' kernel
            continue
        index, phase = prog.producer[v]
        kernel = prog.kernels[index]
        if index <= last_gather:  # an IndexError must leave the parameters untouched (lowering stops there)
            continue
        if kernel.kind != "loop" or not _reads_in_place(kernel, phase, param):
            continue
        if v.op.opdef.kind == "reduce" and param in kernel.phase_reads.get(MAIN, []):
            continue  # the accumulator is initialized before the nest that still reads the param
        if kernel.consumer_of is not None and param in prog.kernels[kernel.consumer_of].reads:
            continue  # its matmul's threads may still read the param while the consumer writes rows
        if any(param in later.reads or any(c is param for c, _ in later.copies) for later in prog.kernels[index + 1:]):
            continue
        plan.home[v] = Home("param", p)
        plan.donated[r] = p
    place_views(prog, plan)
    return plan.donated


def last_gather_kernel(prog: FusedProgram) -> int:
    """Index of the last kernel that evaluates a gather (its indices are checked), -1 if none."""
    return max((k.index for k in prog.kernels if any(op.name == "gather" for op in k.ops)), default=-1)


def _reads_in_place(kernel, phase: int, param: Value) -> bool:
    """True when `kernel` reads `param` no later than `phase` and, in `phase`, only at the element it writes."""
    if phase == MAIN and param in kernel.phase_reads.get(EPILOGUE, []):
        return False
    if param not in kernel.phase_reads.get(phase, []):
        return True
    domain = kernel.domain if phase == MAIN else kernel.epilogue_domain
    return reads_only_at_index(kernel.phase_ops.get(phase, []), param, domain)
