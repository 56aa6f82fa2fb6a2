"""Fusion: group a Function's ops into kernels (loop nests) for native code.

Every value is either *materialized* (it has a buffer: a param, a result, an arena slot or a global
constant) or *fused* (recomputed wherever it is needed, at the index where it is needed). Layout ops
(broadcast_to, permute, reshape, slice, pad), iota, const, cast, compare, where and gather are index
math or scalar code inside the loop nest of their consumer, so they never cost a copy.

Materialized: function results, reductions, matmul results and the buffers matmul reads (a permute of
the last two axes and reshapes are peeled off: they become BLAS transpose flags / a view), dense consts.

Kernels (in execution order):
  loop    a row-major loop nest over `domain`; *stores* compute elementwise roots of shape `domain`,
          *reductions* accumulate `reduce_*` roots whose input has shape `domain`; an optional
          *epilogue* loop nest over one reduced shape runs after it (e.g. loss = sum / N). All roots
          over one iteration space share one kernel unless one needs another's reduction (multi-output
          fusion: W3's loss and both gradients are one pass over memory).
  matmul  C = op(A) @ op(B), batched over leading axes; A and B are materialized buffers. A large
          elementwise loop kernel that is C's first reader becomes its *consumer* (`Kernel.consumer_of`):
          it runs on each block of C's rows right after the GEMM wrote it, while the block is in cache
          (a weight gradient feeding its optimizer update never makes a round trip through memory);
          kernels between the two move before the matmul (they cannot read C).
  scan    a `scan` op lowered as a native loop (codegen/scan_loop.py): its operands and its flat result are
          buffers; `body` is the body's own FusedProgram (fused once, whatever the trip count).
  attention  a flash-attention op (`attention` / `attention_grad`, ir/attention.py; codegen/attention.py):
          operands and flat result are buffers.
  copy    results that are params or repeat another result (every output buffer is written).

Views: a materialized value that is a chain of reshapes and contiguous slices of another materialized value
(not a param or a constant, e.g. one part of a scan's flat result read by a GEMM or another scan) gets no
kernel and no buffer of its own: it is its base's buffer at an offset (`FusedProgram.views`).

Tiles: a materialized sum of pads that tile its shape (disjoint, covering it: a concatenation, e.g. an LSTM's
four gate gradients) gets no kernel of its own: each padded piece is stored straight into the sum's buffer
at its offset by the kernel computing it (`FusedProgram.tiles`), as piece + 0.0 (what the sum gives, signed
zeros included), and the pieces get no buffers.

A store root used inside its own kernel (or in an earlier one) is recomputed from its inputs; a kernel
after the one that stored it loads it. Reductions and matmuls are always loaded.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field

import numpy as np

from gradc.ir.core import Function, Value

MAIN, EPILOGUE = 0, 1
# a consumer kernel runs inside its matmul's row blocks when C is at least this big and the rows cost little
# to split: each row block re-packs all of op(B), so op(B) must be small (W6's dW1 = g^T x: x is 200 KB)
CONSUMER_MIN_ELEMENTS = 65_536
CONSUMER_MAX_B_BYTES = 256 * 1024
SCAN_ROWS_MIN_ELEMENTS = 200_000  # a native loop splits its rows over threads from this many carry elements
# times iterations (split_rows: W9's LSTM loops have 10^6; W5's RNN, 32 x 16 x 64, stays on one thread)
# roots (stores + reductions) of one loop kernel: LLVM's LoopIdiomRecognize is quadratic in a loop's stores
# (an unrolled 400-step RNN's 400 slices of its input in one kernel: 2 s of its 6 s O3 run)
MAX_LOOP_ROOTS = 64
MAX_FUSED_CONE = 128  # elementwise ops a fused value may recompute before it gets a buffer (cut_long_chains)
THREAD_MIN_ELEMENTS = 200_000  # below this a loop nest stays on one thread (set when each fork cost a
# pthread_create, ~20-50 us; the pool (codegen/threads.py) costs a few us, but W1-W5 gain nothing below)


# A GEMM with a small C and a long depth (a weight gradient: conv2's dW = dy^T cols is 64 x 288 over 36864
# positions) runs as GEMM_K_PARTS products over slices of the depth into C and arena scratch, summed in a
# fixed order afterwards, whatever the thread count (so 1 and N threads give the same bits). Column
# blocks, the other split, re-pack the whole op(A) per block: W7's conv2 weight gradient took 34-36 ms of
# CPU in 4 column blocks (2 threads), 24.4-24.7 ms in 4 depth parts, 24.7-24.9 ms whole (thread CPU time,
# medians of 12 interleaved calls).
GEMM_K_PARTS = 4
GEMM_K_SPLIT_MIN_MNK = int(os.environ.get("GRADC_GEMM_KSPLIT_MIN_MNK", 2 ** 21))
GEMM_K_SPLIT_MAX_SCRATCH = 1 << 20  # bytes of partial products


def gemm_k_parts(k: "Kernel") -> int:
    """How many depth parts the matmul kernel k runs as (1: one product); see GEMM_K_PARTS."""
    if k.kind != "matmul" or not k.matmul.dtype.is_float:
        return 1
    a, b = k.matmul.op.inputs
    if len(a.shape) != 2:
        return 1
    m, kk, n = a.shape[0], a.shape[1], b.shape[-1]
    scratch = (GEMM_K_PARTS - 1) * m * n * np.dtype(k.matmul.dtype.numpy).itemsize
    if (m * n * kk < GEMM_K_SPLIT_MIN_MNK or kk < GEMM_K_PARTS * max(m, n) or scratch > GEMM_K_SPLIT_MAX_SCRATCH
            or max(m, n, kk) >= 2 ** 31 or -(-kk // GEMM_K_PARTS) * (GEMM_K_PARTS - 1) >= kk):  # (no empty part)
        return 1
    return GEMM_K_PARTS


@dataclass(eq=False)
class Kernel:
    kind: str  # "loop" | "matmul" | "copy"
    index: int
    domain: tuple[int, ...] = ()
    stores: list[Value] = field(default_factory=list)
    reductions: list[Value] = field(default_factory=list)
    epilogue_domain: tuple[int, ...] | None = None
    epilogue: list[Value] = field(default_factory=list)
    matmul: Value | None = None  # the matmul result (kind "matmul")
    operands: tuple = ()  # matmul: ((base_a, trans_a), (base_b, trans_b)); attention: the operands' buffers
    copies: list[tuple[Value, int]] = field(default_factory=list)  # (value, result index)
    threads: int = 1
    body: "FusedProgram | None" = None  # kind "scan": the fused body (its memory plan: `body_plan`)
    parts: int = 1  # kind "scan": row blocks run on separate threads (body = one block's rows: split_rows)
    body_plan: object = None
    consumer_of: int | None = None  # loop kernel run per row block inside this matmul kernel (see module doc)
    reads: list[Value] = field(default_factory=list)  # materialized values loaded (filled by finish)
    ops: list = field(default_factory=list)  # fused ops evaluated, in program order (for text)
    phase_reads: dict = field(default_factory=dict)  # MAIN / EPILOGUE -> values loaded in that nest
    phase_ops: dict = field(default_factory=dict)  # MAIN / EPILOGUE -> ops evaluated in that nest

    @property
    def roots(self) -> list[Value]:
        if self.kind in ("matmul", "scan", "attention"):
            return [self.matmul]
        return self.stores + self.reductions + self.epilogue


@dataclass(eq=False)
class FusedProgram:
    fn: Function
    kernels: list[Kernel]
    materialized: set  # values with a buffer (params, roots, dense consts)
    producer: dict  # root value -> (kernel index, phase)
    result_home: dict  # value -> first result index holding it
    num_threads: int
    views: dict = field(default_factory=dict)  # value -> (base, element offset): read in place (module doc)
    tiles: dict = field(default_factory=dict)  # piece -> (sum, lo): stored into the sum's buffer (module doc)

    @property
    def num_kernels(self) -> int:
        return len(self.kernels)

    def is_loaded(self, v: Value, kernel: int, phase: int) -> bool:
        """True when kernel `kernel` reads v from its buffer rather than computing it."""
        if v.op is None or is_dense_const(v):
            return True
        if v not in self.materialized:
            return False
        return self.producer[v] < (kernel, phase)


def is_dense_const(v: Value) -> bool:
    return v.op is not None and v.op.name == "const" and isinstance(v.op.attrs["value"], np.ndarray)


def is_swap_last2(perm: tuple[int, ...]) -> bool:
    n = len(perm)
    return n >= 2 and tuple(perm) == tuple(range(n - 2)) + (n - 1, n - 2)


def view_base(v: Value) -> Value:
    """The buffer a chain of reshapes views (C-contiguous: same elements, same order)."""
    while v.op is not None and v.op.name == "reshape":
        v = v.op.inputs[0]
    return v


def contiguous_offset(shape: tuple[int, ...], starts: tuple, stops: tuple, steps: tuple) -> int | None:
    """Element offset of a slice of a C-contiguous array when the slice is one contiguous block, else None
    (empty slices: None). Contiguous: unit extents before some axis, full extents after it."""
    extents = [len(range(a, z, s)) for a, z, s in zip(starts, stops, steps)]
    if 0 in extents:
        return None
    k = next((i for i, e in enumerate(extents) if e != 1), len(extents))
    if any(e != d for e, d in zip(extents[k + 1:], shape[k + 1:])) or (k < len(extents) and steps[k] != 1):
        return None
    offset, stride = 0, 1
    for a, d in reversed(list(zip(starts, shape))):
        offset += a * stride
        stride *= d
    return offset


def find_views(fn: Function, materialized: set) -> dict:
    """{value: (base, element offset)} for the materialized values that are views (module doc)."""
    results = set(fn.results)
    views: dict = {}
    for op in fn.ops:
        v = op.result
        if v not in materialized or v in results or op.name not in ("reshape", "slice"):
            continue
        x, offset = v, 0
        while x.op is not None and x.op.name in ("reshape", "slice") and (x is v or x not in materialized):
            if x.op.name == "slice":
                a = x.op.attrs
                off = contiguous_offset(x.op.inputs[0].shape, a["starts"], a["stops"], a["steps"])
                if off is None:
                    break
                offset += off
            x = x.op.inputs[0]
        else:
            if x in views:  # a view of a view: the same base
                base, more = views[x]
                views[v] = (base, more + offset)
            elif x in materialized and x.op is not None and not is_dense_const(x):
                views[v] = (x, offset)
    return views


MAX_TILES = 64  # pieces of one tiled sum (their regions are checked pairwise)


def find_tiles(fn: Function, materialized: set, views: dict, skip: frozenset = frozenset()) -> dict:
    """{piece: (sum, lo)} for the materialized sums of pads that tile their shape (module doc). A piece is an
    elementwise value used only by its pad (interior 0), each pad and inner add used only in the sum."""
    uses: dict[Value, int] = {}
    for op in fn.ops:
        for x in op.inputs:
            uses[x] = uses.get(x, 0) + 1
    for r in fn.results:
        uses[r] = uses.get(r, 0) + 1
    results = set(fn.results)
    tiles: dict = {}
    sums: set = set()  # (a sum is never a piece of another: it has its own buffer)
    for op in fn.ops:
        total = op.result
        if op.name != "add" or total not in materialized or total in views or total in skip:
            continue
        leaves, stack = [], list(op.inputs)
        while stack and len(leaves) <= MAX_TILES:
            x = stack.pop()
            if x.op is not None and x.op.name == "add" and uses.get(x) == 1 and x not in materialized:
                stack.extend(x.op.inputs)
            else:
                leaves.append(x)
        pieces = []
        for leaf in leaves:
            if (stack or leaf.op is None or leaf.op.name != "pad" or any(leaf.op.attrs["interior"])
                    or uses.get(leaf) != 1 or leaf in materialized):
                break
            piece = leaf.op.inputs[0]
            if (piece.op is None or piece.op.opdef.kind != "elementwise" or uses.get(piece) != 1
                    or piece in results or piece in views or piece in tiles or piece in sums):
                break
            pieces.append((piece, tuple(leaf.op.attrs["lo"])))
        else:
            boxes = [(lo, tuple(a + d for a, d in zip(lo, p.shape))) for p, lo in pieces]
            disjoint = all(any(hi1[d] <= lo2[d] or hi2[d] <= lo1[d] for d in range(len(lo1)))
                           for i, (lo1, hi1) in enumerate(boxes) for lo2, hi2 in boxes[i + 1:])
            if len(pieces) >= 2 and disjoint and sum(p.type.size for p, _ in pieces) == total.type.size:
                for piece, lo in pieces:
                    tiles[piece] = (total, lo)
                sums.add(total)
    return tiles


def matmul_operand(v: Value) -> tuple[Value, bool]:
    """(base, transposed): peel one swap of the last two axes and any reshapes (views of a buffer)."""
    trans = False
    if v.op is not None and v.op.name == "permute" and is_swap_last2(v.op.attrs["perm"]):
        trans, v = True, v.op.inputs[0]
    while v.op is not None and v.op.name == "reshape":
        v = v.op.inputs[0]
    return v, trans


def default_threads() -> int:
    env = os.environ.get("GRADC_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"GRADC_NUM_THREADS must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"GRADC_NUM_THREADS must be a positive integer, got {env!r}")
        return n
    return os.cpu_count() or 1


def fuse(fn: Function, num_threads: int | None = None, _untiled: frozenset = frozenset()) -> FusedProgram:
    """Group fn's ops into loop, matmul and copy kernels (see the module docstring). `_untiled`: sums not
    tiled (their pieces landed in different kernels on a first attempt)."""
    num_threads = default_threads() if num_threads is None else max(1, int(num_threads))
    materialized: set = set(fn.params)
    operands: dict[Value, tuple] = {}
    for op in fn.ops:
        if op.opdef.kind == "attention":  # operands are read in place: reshapes are views of their buffer
            materialized.add(op.result)
            operands[op.result] = tuple(view_base(x) for x in op.inputs)
            materialized.update(operands[op.result])
        elif op.name == "scan":  # (lower() unrolled the scans it cannot loop natively)
            materialized.add(op.result)
            materialized.update(op.inputs)
        elif op.opdef.kind == "reduce" or is_dense_const(op.result):
            materialized.add(op.result)
        elif op.opdef.kind == "matmul":
            materialized.add(op.result)
            operands[op.result] = tuple(matmul_operand(x) for x in op.inputs)
            materialized.update(base for base, _ in operands[op.result])
    materialized.update(fn.results)
    for op in fn.ops:
        # a pad that grows its input (a slice's VJP; pads summed = concat, e.g. an LSTM's gate gradients) is
        # read at every output element, and a fused input would be recomputed there, the padding included
        # (a select after the computation): the input gets a buffer, written once by its own nest
        if op.name == "pad" and op.result.type.size > op.inputs[0].type.size and op.inputs[0].op is not None:
            materialized.add(op.inputs[0])
    cut = cut_long_chains(fn, materialized)
    materialized.update(cut)
    views = find_views(fn, materialized)
    tiles = find_tiles(fn, materialized, views, _untiled)
    materialized.update(tiles)
    tile_pieces: dict = {}
    for piece, (total, _) in tiles.items():
        tile_pieces.setdefault(total, []).append(piece)

    result_home: dict[Value, int] = {}
    copies: list[tuple[Value, int]] = []
    for i, r in enumerate(fn.results):
        if r in result_home or r.op is None or is_dense_const(r):
            copies.append((r, i))
        else:
            result_home[r] = i

    kernels: list[Kernel] = []
    producer: dict[Value, tuple[int, int]] = {}
    hard_memo: dict[Value, int] = {}
    # loop kernels with room for another root, by domain, in index order (indices kept for bisect): a scan of
    # every later kernel per value was quadratic in the graph's size
    open_loops: dict[tuple, tuple[list[int], list[Kernel]]] = {}

    def open_loop(domain: tuple, after: int) -> Kernel | None:
        """The first loop kernel over `domain` after kernel `after` with room for a root."""
        indices, ks = open_loops.get(domain, ((), ()))
        i = bisect.bisect_right(indices, after)
        return ks[i] if i < len(ks) else None

    def add_root(k: Kernel) -> None:
        if len(k.stores) + len(k.reductions) >= MAX_LOOP_ROOTS:
            indices, ks = open_loops[k.domain]
            i = bisect.bisect_left(indices, k.index)
            del indices[i], ks[i]

    def hard_dep(v: Value) -> int:
        """Latest kernel whose reduction/matmul result v's computation needs (-1: none); an explicit
        stack, not recursion: dependency chains are as long as the graph (an unrolled RNN)."""
        stack = [v]
        while stack:
            x = stack[-1]
            if x in hard_memo:
                stack.pop()
                continue
            if x.op is None or is_dense_const(x):
                hard_memo[x] = -1
            elif x in producer and (x.op.opdef.kind in ("reduce", "matmul", "scan", "attention") or x in cut):
                hard_memo[x] = producer[x][0]
            else:
                pending = [y for y in x.op.inputs if y not in hard_memo]
                if pending:
                    stack.extend(pending)
                    continue
                hard_memo[x] = max((hard_memo[y] for y in x.op.inputs), default=-1)
            stack.pop()
        return hard_memo[v]

    def epilogue_ok(v: Value, k: Kernel) -> bool:
        # an epilogue may read k's reductions and main-nest stores, never k's epilogue values
        def reads_epilogue(start: list) -> bool:
            seen: set = set()
            stack = list(start)
            while stack:
                x = stack.pop()
                if x in seen or x.op is None:
                    continue
                seen.add(x)
                if producer.get(x) == (k.index, EPILOGUE):
                    return True
                if x in producer and x.op.opdef.kind in ("reduce", "matmul", "scan", "attention"):
                    continue
                stack.extend(x.op.inputs)
            return False
        if k.kind != "loop" or v.op.opdef.kind == "reduce":
            return False
        if k.epilogue_domain is None:
            if not any(r.shape == v.shape for r in k.reductions):
                return False
        elif k.epilogue_domain != v.shape:
            return False
        return not reads_epilogue(list(v.op.inputs))

    for op in fn.ops:
        v = op.result
        if v not in materialized or is_dense_const(v):
            continue
        if v in views:  # (its base precedes it: written by an earlier kernel)
            producer[v] = producer[views[v][0]]
            continue
        if v in tile_pieces:  # written by its pieces' kernel (they precede it)
            producer[v] = max(producer[p] for p in tile_pieces[v])
            continue
        if op.opdef.kind == "matmul":
            deps = max((hard_dep(b) for b, _ in operands[v]), default=-1)
            deps = max(deps, *(producer.get(b, (-1, 0))[0] for b, _ in operands[v]))
            k = Kernel("matmul", len(kernels), domain=v.shape, matmul=v, operands=operands[v])
            kernels.append(k)
            producer[v] = (k.index, MAIN)
            continue
        if op.opdef.kind == "attention":
            k = Kernel("attention", len(kernels), domain=v.shape, matmul=v, operands=operands[v])
            kernels.append(k)
            producer[v] = (k.index, MAIN)
            continue
        if op.name == "scan":
            k = scan_kernel(op, len(kernels), num_threads)
            kernels.append(k)
            producer[v] = (k.index, MAIN)
            continue
        is_reduce = op.opdef.kind == "reduce"
        domain = op.inputs[0].shape if is_reduce else v.shape
        dep = max((hard_dep(x) for x in op.inputs), default=-1)
        target = open_loop(domain, dep)
        if target is not None:
            (target.reductions if is_reduce else target.stores).append(v)
            producer[v] = (target.index, MAIN)
            add_root(target)
            continue
        if dep >= 0 and epilogue_ok(v, kernels[dep]):
            k = kernels[dep]
            k.epilogue_domain = v.shape
            k.epilogue.append(v)
            producer[v] = (k.index, EPILOGUE)
            continue
        k = Kernel("loop", len(kernels), domain=domain)
        (k.reductions if is_reduce else k.stores).append(v)
        kernels.append(k)
        producer[v] = (k.index, MAIN)
        indices, ks = open_loops.setdefault(domain, ([], []))
        indices.append(k.index)
        ks.append(k)
        add_root(k)

    split = frozenset(total for total, pieces in tile_pieces.items()
                      if len({producer[p] for p in pieces}) > 1 or producer[pieces[0]][1] != MAIN)
    if split:  # a sum's pieces must be stored by one main nest (its readers load it after that kernel)
        return fuse(fn, num_threads, _untiled | split)
    if copies:
        kernels.append(Kernel("copy", len(kernels), copies=copies))
    prog = FusedProgram(fn, kernels, materialized, producer, result_home, num_threads, views, tiles)
    order = {op: i for i, op in enumerate(fn.ops)}
    for k in kernels:
        finish_kernel(prog, k, order)
    prog.kernels = attach_consumers(kernels, producer, views)
    return prog


def grid_threads() -> int:
    """The thread count that work split into blocks is cut for (GEMM blocks of C, a scan loop's row blocks):
    the machine's CPU count, not the run's thread limit.

    A BLAS computes a block of C with micro-kernels chosen by the block's width (OpenBLAS on an AMD EPYC:
    1,789 of 81,920 elements of a 256x384x320 product differed in the last bit between one call and two
    column halves), and a row block's GEMMs have other shapes, so blocks cut by GRADC_NUM_THREADS gave other
    bits at another thread limit. Cut by the machine, the blocks are the same at every limit, and the threads
    only decide who claims which block.
    """
    return max(1, os.cpu_count() or 1)


def scan_kernel(op, index: int, num_threads: int) -> Kernel:
    """The kernel of a native scan loop: its body fused once; with enough work per iteration and a body whose
    rows are independent (an RNN's batch: ir/scan.py split_rows), cut into `grid_threads()` blocks of rows,
    each one the whole loop on its rows, run by the threads (no synchronization per iteration)."""
    from gradc.ir.scan import loop_body, split_rows  # (scan.py imports the registry, which imports passes)
    body = loop_body(op)
    a = op.attrs
    k = Kernel("scan", index, domain=op.result.shape, matmul=op.result)
    carry_size = sum(r.type.size for r in body.results[:a["num_carry"]])
    blocks = grid_threads()
    if blocks > 1 and a["length"] * carry_size >= SCAN_ROWS_MIN_ELEMENTS:
        rows = split_rows(body, a["num_consts"], a["num_carry"], blocks)
        if rows is not None:
            k.parts, k.body = blocks, fuse(rows, 1)
            k.threads = min(num_threads, blocks)
            return k
    k.body = fuse(body, num_threads)
    return k


def cut_long_chains(fn: Function, materialized: set) -> set:
    """Elementwise values whose fused cone (ops recomputed wherever they are read) counts more than
    MAX_FUSED_CONE elementwise ops: materialized, so a kernel never recomputes an unbounded chain (an LSTM's cell state
    c_t and its adjoint are elementwise chains through all time steps; recomputing them made fusion quadratic)."""
    cost: dict[Value, int] = {}
    cut: set = set()
    for op in fn.ops:
        v = op.result
        if v in materialized:
            continue
        # (a sum over inputs: shared subexpressions count once per path, an overestimate that errs on the
        # side of a buffer; the threshold leaves the small workloads' kernels as they were)
        c = sum(cost.get(x, 0) for x in op.inputs if x not in materialized and x not in cut)
        if op.opdef.kind == "elementwise":
            c += 1
            if c > MAX_FUSED_CONE:
                cut.add(v)
                c = 0
        cost[v] = c
    return cut


def attach_consumers(kernels: list[Kernel], producer: dict, views: dict | None = None) -> list[Kernel]:
    """Make large elementwise first readers of matmul results their consumers (module doc); renumbers the
    kernels (and `producer`) when kernels move before a matmul. Runs on finished kernels (reads, ops). A
    kernel reading a view of C (`views`) reads C."""
    views = views or {}

    def reads(k: Kernel) -> set:
        return set(k.reads) | {views[v][0] for v in k.reads if v in views}
    for m in [k for k in kernels if k.kind == "matmul"]:
        at = kernels.index(m)
        reader = next((k for k in kernels[at + 1:] if m.matmul in reads(k)), None)
        if reader is None or m.matmul not in reader.reads or not _consumes_in_place(reader, m):
            continue  # (a reader of a view of C reads other rows than its own: not per row block)
        if any(views.get(v, (None,))[0] is m.matmul for v in reader.reads):
            continue
        between = kernels[at + 1:kernels.index(reader)]  # none of them reads C: they can run first
        kernels = kernels[:at] + between + [m] + kernels[at + 1 + len(between):]
        reader.consumer_of = m  # an index once renumbered below
    index_of = {}
    for i, k in enumerate(kernels):
        index_of[k.index] = i
        k.index = i
    for v, (old, phase) in list(producer.items()):
        producer[v] = (index_of[old], phase)
    for k in kernels:
        if k.consumer_of is not None:
            k.consumer_of = k.consumer_of.index
            if kernels[k.consumer_of + 1] is not k:  # (moves keep pairs adjacent; never run one apart)
                k.consumer_of = None
    return kernels


def _consumes_in_place(k: Kernel, m: Kernel) -> bool:
    """k may run per row block of m's result: a large elementwise nest over exactly that result's shape,
    reading it only at the element it computes, with no reduction or epilogue and a small op(B)."""
    c = m.matmul
    if k.kind != "loop" or k.reductions or k.epilogue or len(c.shape) != 2 or tuple(k.domain) != c.shape:
        return False
    (_, _), (base_b, _) = m.operands
    kk, n = c.op.inputs[0].shape[-1], c.shape[1]
    if c.type.size < CONSUMER_MIN_ELEMENTS or kk * n * np.dtype(base_b.dtype.numpy).itemsize > CONSUMER_MAX_B_BYTES:
        return False
    return reads_only_at_index(k.phase_ops[MAIN], c, c.shape)


def reads_only_at_index(ops: list, source: Value, domain: tuple[int, ...]) -> bool:
    """True when a nest over `domain` evaluating `ops` (program order) reads `source` only at the element it
    computes: every op that depends on source is elementwise over the whole domain (no broadcast, permute,
    slice, gather or reduction in between, which would read other elements)."""
    if source.shape != tuple(domain):
        return False
    tainted = {source}
    for op in ops:
        if any(x in tainted for x in op.inputs):
            if op.opdef.kind != "elementwise" or op.result.shape != tuple(domain):
                return False
            tainted.add(op.result)
    return True


def finish_kernel(prog: FusedProgram, k: Kernel, order: dict | None = None) -> None:
    """Fill k.reads and k.ops (per phase) by walking its roots the way lowering evaluates them."""
    if order is None:  # (op -> program position: built once per program by fuse, not per kernel)
        order = {op: i for i, op in enumerate(prog.fn.ops)}
    param_pos = {p: i for i, p in enumerate(prog.fn.params)}

    def position(v: Value) -> tuple[int, int]:
        return (-1, param_pos.get(v, 0)) if v.op is None else (order[v.op], 0)

    def walk(roots: list, phase: int) -> tuple[list, list]:
        reads: dict[Value, None] = {}
        ops: dict = {}
        seen: set = set()
        stack = list(roots)
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            if prog.is_loaded(v, k.index, phase):
                reads[v] = None
                continue
            ops[v.op] = None
            stack.extend(v.op.inputs)
        return sorted(reads, key=position), sorted(ops, key=order.__getitem__)

    if k.kind == "loop":
        k.phase_reads[MAIN], k.phase_ops[MAIN] = walk(k.stores + k.reductions, MAIN)
        k.phase_reads[EPILOGUE], k.phase_ops[EPILOGUE] = walk(k.epilogue, EPILOGUE)
        size = int(np.prod(k.domain, dtype=np.int64)) if k.domain else 1
        if prog.num_threads > 1 and k.domain and size >= THREAD_MIN_ELEMENTS and k.domain[0] >= 2:
            k.threads = min(prog.num_threads, k.domain[0])
    elif k.kind == "matmul":
        k.phase_reads[MAIN] = list(dict.fromkeys(base for base, _ in k.operands))
        k.phase_ops[MAIN] = [k.matmul.op]
    elif k.kind == "attention":
        k.phase_reads[MAIN] = list(dict.fromkeys(k.operands))
        k.phase_ops[MAIN] = [k.matmul.op]
    elif k.kind == "scan":
        k.phase_reads[MAIN] = list(dict.fromkeys(k.matmul.op.inputs))
        k.phase_ops[MAIN] = [k.matmul.op]
    else:
        k.phase_reads[MAIN] = list(dict.fromkeys(v for v, _ in k.copies))
    k.reads = list(dict.fromkeys(k.phase_reads.get(MAIN, []) + k.phase_reads.get(EPILOGUE, [])))
    k.ops = sorted(set(k.phase_ops.get(MAIN, []) + k.phase_ops.get(EPILOGUE, [])), key=order.__getitem__)


def value_names(fn: Function) -> dict:
    """The names print_function gives: %param_name for params, %i for the i-th op."""
    from gradc.ir.printer import param_names
    names = {p: f"%{n}" for p, n in zip(fn.params, param_names(fn.params))}
    names.update({op.result: f"%{i}" for i, op in enumerate(fn.ops)})
    return names


def format_op(op, names: dict) -> str:
    from gradc.ir.printer import IMPLIED_BY_RESULT_TYPE, format_attr
    text = f"{names[op.result]} = {op.name}"
    if op.inputs:
        text += " " + ", ".join(names[v] for v in op.inputs)
    shown = [k for k in op.opdef.attrs if k not in IMPLIED_BY_RESULT_TYPE.get(op.name, ())]
    if shown:
        text += " {" + ", ".join(f"{k} = {format_attr(op.attrs[k])}" for k in shown) + "}"
    return f"{text} : {op.result.type}"


def fused_text(prog: FusedProgram, plan=None) -> str:
    """Deterministic text: one block per kernel with its iteration space, buffers and ops."""
    names = value_names(prog.fn)

    def where(v: Value) -> str:
        if plan is None or v not in plan.home:
            return ""
        h = plan.home[v]
        at = f"+{h.offset}" if h.offset else ""
        return {"param": f" @in{h.index}{at}", "result": f" @out{h.index}{at}", "global": " @const",
                "arena": f" @arena+{h.index + h.offset}"}[h.kind]

    def dims(shape) -> str:
        return "[" + ",".join(str(d) for d in shape) + "]"

    lines = [f"fused @{prog.fn.name}: {len(prog.kernels)} kernel(s), threads <= {prog.num_threads}"
             + (f", arena {plan.arena_bytes} bytes" if plan is not None else "")]
    for k in prog.kernels:
        if k.kind == "loop":
            head = f"kernel {k.index}: loop {dims(k.domain)}, threads {k.threads}"
            if k.consumer_of is not None:
                head += f", per row block of kernel {k.consumer_of}"
        elif k.kind == "scan":
            a = k.matmul.op.attrs
            head = (f"kernel {k.index}: scan loop x {a['length']}{' reverse' if a['reverse'] else ''} over "
                    f"{k.body.num_kernels} body kernel(s)"
                    + (f", {k.parts} row blocks, threads {k.threads}" if k.parts > 1 else ""))
        elif k.kind == "attention":
            from gradc.ir.attention import ATTENTION_BLOCK_K, ATTENTION_BLOCK_Q
            a = k.matmul.op.attrs
            head = (f"kernel {k.index}: {k.matmul.op.name} (flash, blocks of {ATTENTION_BLOCK_Q} queries x "
                    f"{ATTENTION_BLOCK_K} keys){' causal' if a['causal'] else ''} -> {dims(k.matmul.shape)}")
            lines.append(head)
            lines.append("  in: " + ", ".join(f"{names[v]}: {v.type}{where(v)}" for v in k.reads))
            lines.append(f"  store: {names[k.matmul]}{where(k.matmul)}")
            continue
        elif k.kind == "matmul":
            (a, ta), (b, tb) = k.operands
            head = (f"kernel {k.index}: matmul {names[a]}{'^T' if ta else ''} @ {names[b]}{'^T' if tb else ''}"
                    f" -> {dims(k.matmul.shape)}")
        else:
            head = f"kernel {k.index}: copy"
        lines.append(head)
        for phase in (MAIN, EPILOGUE):
            if phase == EPILOGUE:
                if not k.epilogue:
                    break
                lines.append(f"  epilogue {dims(k.epilogue_domain)}:")
            reads = k.phase_reads.get(phase, [])
            if reads:
                lines.append("  in: " + ", ".join(f"{names[v]}: {v.type}{where(v)}" for v in reads))
            for op in k.phase_ops.get(phase, []):
                lines.append("    " + format_op(op, names))
            outs = [("store", k.stores), ("reduce", k.reductions)] if phase == MAIN else [("store", k.epilogue)]

            def dest(v: Value) -> str:
                if v in prog.tiles:
                    total, lo = prog.tiles[v]
                    return f"{names[v]} -> {names[total]}{list(lo)}{where(total)}"
                return f"{names[v]}{where(v)}"
            for label, values in outs:
                if values:
                    lines.append(f"  {label}: " + ", ".join(dest(v) for v in values))
        if k.kind in ("matmul", "scan"):
            lines.append(f"  store: {names[k.matmul]}{where(k.matmul)}")
        for v, i in k.copies:
            lines.append(f"  copy: {names[v]} -> @out{i}")
        if plan is not None:
            for (ki, r), off in sorted(plan.partials.items(), key=lambda t: t[1]):
                if ki == k.index:
                    lines.append(f"  partials of {names[r]}: {k.threads - 1} x {r.type} @arena+{off}")
    return "\n".join(lines) + "\n"
