"""Loop helpers for llvmlite IRBuilders: counted i64 loops with loop-carried values.

Loops are emitted in the plain form LLVM's loop passes canonicalize (preheader, header with phis,
body, latch with `add nuw nsw`), so the loop vectorizer sees a unit-step i64 induction variable.
"""

from __future__ import annotations

from typing import Callable, Sequence

from llvmlite import ir

I64 = ir.IntType(64)


def const_i64(n: int) -> ir.Constant:
    return ir.Constant(I64, int(n))


def for_range(builder: ir.IRBuilder, start: ir.Value | int, stop: ir.Value | int,
              body: Callable[[ir.Value, list], Sequence[ir.Value] | None],
              carried: Sequence[ir.Value] = (), name: str = "i", loop_md: ir.Value | None = None) -> list[ir.Value]:
    """Emit `for i in range(start, stop)`; body(i, carried) returns the next carried values.

    Returns the carried values after the loop (the initial ones when it runs zero times). `loop_md` is
    attached to the back edge as its `llvm.loop` metadata.
    """
    start = const_i64(start) if isinstance(start, int) else start
    stop = const_i64(stop) if isinstance(stop, int) else stop
    pre = builder.block
    header = builder.append_basic_block(f"{name}.head")
    loop = builder.append_basic_block(f"{name}.body")
    exit_ = builder.append_basic_block(f"{name}.exit")
    builder.branch(header)

    builder.position_at_end(header)
    i = builder.phi(I64, name=name)
    i.add_incoming(start, pre)
    phis = []
    for k, c in enumerate(carried):
        phi = builder.phi(c.type, name=f"{name}.acc{k}")
        phi.add_incoming(c, pre)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, stop), loop, exit_)

    builder.position_at_end(loop)
    new = body(i, list(phis))
    new = list(new) if new is not None else []
    if len(new) != len(phis):
        raise ValueError(f"loop body returned {len(new)} carried values, expected {len(phis)}")
    nxt = builder.add(i, const_i64(1), name=f"{name}.next", flags=("nuw", "nsw"))
    latch = builder.block
    for phi, val in zip(phis, new):
        phi.add_incoming(val, latch)
    i.add_incoming(nxt, latch)
    back = builder.branch(header)
    if loop_md is not None:
        back.set_metadata("llvm.loop", loop_md)

    builder.position_at_end(exit_)
    return list(phis)


def linear_index(builder: ir.IRBuilder, index: Sequence[ir.Value], shape: Sequence[int]) -> ir.Value:
    """Row-major offset of `index` in a C-contiguous array of `shape` (i64, nsw arithmetic)."""
    terms = []
    stride = 1
    for i, d in reversed(list(zip(index, shape))):
        if d != 1:  # a unit axis contributes nothing (its index may be a placeholder)
            terms.append(i if stride == 1 else builder.mul(i, const_i64(stride), flags=("nsw",)))
        stride *= d
    if not terms:
        return const_i64(0)
    offset = terms[-1]
    for t in reversed(terms[:-1]):
        offset = builder.add(offset, t, flags=("nsw",))
    return offset
