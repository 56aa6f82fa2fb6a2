"""The `scan` op: a loop in the IR, as JAX's lax.scan.

    %r = scan %consts..., %init..., %xs... {body = func @body(...) {...}, num_consts = C, num_carry = K,
                                            length = L, reverse = false} : f32[N]

`body` is a Function traced once: (consts..., carry..., x_t...) -> (new carry..., y_t...), x_t being
slice t of each xs along axis 0. The op's ONE result is the flat vector of the final carry followed by
the stacked ys ([L, *y_t.shape] each), all flattened in order (the IR has single-result ops; `unpack`
takes the parts out with slice + reshape). Carry, ys and the float operands share one float dtype;
integer consts and xs (labels) are allowed.

VJP (emitted as IR, so second order works): a second forward scan whose body also returns its carry-in
and the *residuals* stacks them per iteration ([L, *shape] each). The residuals are the loop-variant
values the backward step reads that are expensive to recompute (matmul, transcendental, reduction
results: `choose_residuals`); cheap arithmetic and layout ops between them and the backward are
recomputed there (an LSTM stacks its gate activations and tanh(c), so the reverse step runs no forward
GEMM and no exp). The adjoint is a reverse scan whose body is the AD pass's joint of `body`; its carry
holds the carry cotangents and the gradient accumulators of the float consts (loop-invariant operands:
the weights), its ys the cotangents of xs. The forward scan of the primal result and the stacking one
are run once (`share_forward_scans`: the stacking body extends the primal body).

Native code (codegen/scan_loop.py): a scan is ONE LLVM loop calling its body's fused kernels, which are
fused, planned and compiled once, so compile time does not depend on `length`. A body whose rows are
independent (`split_rows`: an RNN's batch) is compiled for one block of rows and each thread runs the whole
loop on its block. A scan whose body (or a
nested body) evaluates a `gather` is inlined `length` times by `unroll_scans` instead (the body's index
checks report through the outer error slot only when unrolled); GRADC_UNROLL_SCANS=1 unrolls every scan
(the reference the native loop is measured and tested against).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from gradc.ir.core import Function, ShapeError, TensorType, Value, float32
from gradc.ir.ops import OpDef, register

ATTRS = ("body", "num_consts", "num_carry", "length", "reverse")


# ----------------------------------------------------------------------------- types

def split(items: Sequence, num_consts: int, num_carry: int) -> tuple[list, list, list]:
    items = list(items)
    return items[:num_consts], items[num_consts:num_consts + num_carry], items[num_consts + num_carry:]


def part_types(body: Function, num_carry: int, length: int) -> list[TensorType]:
    """The types of the parts of a scan's flat result: final carries, then stacked ys."""
    carry = [r.type for r in body.results[:num_carry]]
    ys = [TensorType((length,) + r.type.shape, r.type.dtype) for r in body.results[num_carry:]]
    return carry + ys


def scan_shape(types: list[TensorType], attrs: dict) -> TensorType:
    body, nc, nk, length = attrs["body"], attrs["num_consts"], attrs["num_carry"], attrs["length"]
    if not isinstance(body, Function):
        raise ShapeError(f"scan: body must be a Function, got {type(body).__name__}")
    if not isinstance(length, int) or length < 0:
        raise ShapeError(f"scan: length must be a non-negative int, got {length!r}")
    if not 0 <= nc and 0 <= nk and nc + nk <= len(types):
        raise ShapeError(f"scan: {nc} consts and {nk} carries do not fit {len(types)} operands")
    consts, carry, xs = split(types, nc, nk)
    for i, x in enumerate(xs):
        if x.rank == 0 or x.shape[0] != length:
            raise ShapeError(f"scan: xs {i} has shape {list(x.shape)}, its leading axis must be length {length}")
    want = consts + carry + [TensorType(x.shape[1:], x.dtype) for x in xs]
    got = [p.type for p in body.params]
    if got != want:
        raise ShapeError(f"scan: body takes ({', '.join(map(str, got))}) but the operands give "
                         f"({', '.join(map(str, want))})")
    if len(body.results) < nk:
        raise ShapeError(f"scan: body returns {len(body.results)} values, fewer than its {nk} carries")
    for i, (r, c) in enumerate(zip(body.results, carry)):
        if r.type != c:
            raise ShapeError(f"scan: body returns carry {i} as {r.type}, but the carry is {c}")
    parts = part_types(body, nk, length)
    floats = [t.dtype for t in parts + types if t.dtype.is_float]
    dtype = floats[0] if floats else float32
    if any(d != dtype for d in floats) or any(not t.dtype.is_float for t in parts):
        raise ShapeError(f"scan: carry, ys and float operands must share one float dtype; got "
                         f"{sorted({str(t.dtype) for t in parts + types})}")
    return TensorType((sum(t.size for t in parts),), dtype)


# ----------------------------------------------------------------------------- reference semantics

def eval_scan(*arrays: np.ndarray, body: Function, num_consts: int, num_carry: int, length: int,
              reverse: bool) -> np.ndarray:
    from gradc.ir.interp import run  # (interp sits beside ops in ir/; imported late: it imports the registry)

    consts, carry, xs = split(arrays, num_consts, num_carry)
    types = part_types(body, num_carry, length)
    ys = [np.empty(t.shape, t.dtype.numpy) for t in types[num_carry:]]
    for t in (reversed(range(length)) if reverse else range(length)):
        out = run(body, *consts, *carry, *(x[t] for x in xs))
        carry = out[:num_carry]
        for y, v in zip(ys, out[num_carry:]):
            y[t] = v
    dtype = scan_shape([_type(a) for a in arrays], dict(body=body, num_consts=num_consts, num_carry=num_carry,
                                                        length=length, reverse=reverse)).dtype
    return np.concatenate([np.ravel(a) for a in list(carry) + ys] or [np.zeros(0)]).astype(dtype.numpy)


def _type(a: np.ndarray) -> TensorType:
    from gradc.ir.core import dtype_of_numpy
    return TensorType(a.shape, dtype_of_numpy(a.dtype))


# ----------------------------------------------------------------------------- packing (IR helpers)

def unpack(b: Any, flat: Value, types: Sequence[TensorType]) -> list[Value]:
    """The parts of a flat scan result (slice + reshape each)."""
    parts, offset = [], 0
    for t in types:
        piece = b.emit("slice", flat, starts=(offset,), stops=(offset + t.size,), steps=(1,))
        parts.append(b.reshape_to(piece, t.shape))
        offset += t.size
    return parts


def concat(b: Any, parts: list[Value], axis: int) -> Value:
    """Concatenate along axis as a balanced tree of pad + add (the IR has no concat primitive)."""
    while len(parts) > 1:
        merged = []
        for i in range(0, len(parts) - 1, 2):
            x, y = parts[i], parts[i + 1]
            rank = len(x.shape)
            hi_x, lo_y = [0] * rank, [0] * rank
            hi_x[axis], lo_y[axis] = y.shape[axis], x.shape[axis]
            zero = (0,) * rank
            merged.append(b.add(b.emit("pad", x, lo=zero, hi=tuple(hi_x), interior=zero),
                                b.emit("pad", y, lo=tuple(lo_y), hi=zero, interior=zero)))
        if len(parts) % 2:
            merged.append(parts[-1])
        parts = merged
    return parts[0]


def pack(b: Any, parts: list[Value], dtype: Any) -> Value:
    flats = [b.reshape_to(p, (p.type.size,)) for p in parts if p.type.size]
    return concat(b, flats, 0) if flats else b.emit("const", value=0.0, shape=(0,), dtype=dtype)


def emit_scan(b: Any, body: Function, consts: Sequence[Value], init: Sequence[Value], xs: Sequence[Value],
              length: int, reverse: bool = False) -> tuple[list[Value], list[Value]]:
    """Emit a scan and unpack it: (final carries, stacked ys)."""
    flat = b.emit("scan", *consts, *init, *xs, body=body, num_consts=len(consts), num_carry=len(init),
                  length=length, reverse=bool(reverse))
    parts = unpack(b, flat, part_types(body, len(init), length))
    return parts[:len(init)], parts[len(init):]


def optimized(fn: Function) -> Function:
    """fn after the standard pipeline (simplify, cse, dce), marked so that passes do not redo it."""
    from gradc.ir.passes import optimize  # the body gets the same cleanup as any function
    out = optimize(fn)
    out.meta["optimized"] = True
    return out


def optimize_bodies(fn: Function) -> Function:
    """fn with the body of every scan optimized (a parsed or hand-built body; front end and VJP bodies
    already are): the passes see into loops."""
    from gradc.ir.builder import Builder

    if not any(op.name == "scan" and not op.attrs["body"].meta.get("optimized") for op in fn.ops):
        return fn
    b = Builder()
    env: dict[Value, Value] = {p: p for p in fn.params}
    for op in fn.ops:
        attrs = dict(op.attrs)
        if op.name == "scan" and not attrs["body"].meta.get("optimized"):
            attrs["body"] = optimized(attrs["body"])
        env[op.result] = b.emit(op.name, *(env[v] for v in op.inputs), **attrs)
    return Function(fn.name, fn.params, b.ops, [env[r] for r in fn.results], dict(fn.meta))


# ----------------------------------------------------------------------------- VJP

def with_carry_history(body: Function, num_consts: int, num_carry: int) -> Function:
    """body that also returns its carry-in as extra ys (the residuals the backward body needs)."""
    carry_in = body.params[num_consts:num_consts + num_carry]
    meta = {"optimized": True} if body.meta.get("optimized") else {}  # (extra results change no op)
    return Function(f"{body.name}_hist", list(body.params), list(body.ops), list(body.results) + list(carry_in),
                    meta)


# elementwise ops a backward step recomputes from stacked residuals rather than stacking their results (a few
# instructions per element); every other computing op (exp, tanh, sigmoid, div, matmul, reductions, ...) is
# worth a stacked copy. Layout and source ops are index math: never stacked
RECOMPUTED = frozenset({"abs", "add", "cast", "compare", "maximum", "mul", "neg", "relu", "stop_gradient", "sub",
                        "where"})


def stacked(op: Any) -> bool:
    """True when a residual computed by op is stacked by the forward scan (see RECOMPUTED)."""
    kind = op.opdef.kind
    return kind not in ("layout", "source") and not (kind == "elementwise" and op.name in RECOMPUTED)


def choose_residuals(ops: Sequence, tangents: Sequence[Value], variant: Sequence[Value], outputs: Sequence[Value],
                     dtype: Any) -> list[Value]:
    """The values of a backward step (`ops`, a joint's forward replay followed by its adjoint) that the forward
    scan stacks: walking back from every primal value the adjoint part reads (and primal `outputs`) through
    recomputed ops, the first loop-variant values of a stacked op (and the scan's float dtype). `tangents`
    are the step's cotangent params, `variant` its per-iteration primal params (carry-in, x_t); values that
    depend on neither are loop-invariant and recomputed. Program order."""
    tangent, varies = set(tangents), set(variant)
    boundary: list[Value] = []
    for op in ops:
        if any(x in varies for x in op.inputs):
            varies.add(op.result)
        if any(x in tangent for x in op.inputs):
            tangent.add(op.result)
            boundary.extend(x for x in op.inputs if x not in tangent)
    boundary.extend(v for v in outputs if v not in tangent)
    chosen: set = set()
    seen: set = set()
    stack = boundary
    while stack:  # (explicit stack: no recursion along the dependency chain)
        v = stack.pop()
        if v in seen or v.op is None or v not in varies:
            continue
        seen.add(v)
        if stacked(v.op) and v.dtype == dtype:
            chosen.add(v)
        else:
            stack.extend(v.op.inputs)
    order = {op.result: i for i, op in enumerate(ops)}
    return sorted(chosen, key=order.__getitem__)


def with_residuals(body: Function, num_consts: int, num_carry: int, ops: Sequence, residuals: Sequence[Value],
                   binding: dict) -> Function:
    """`with_carry_history(body)` that also returns `residuals` as extra ys. The residuals are values of `ops`
    (a joint's forward replay; `binding` maps its params to body's): their ops are replayed after body's own,
    each one equal to a body op (same op, operands, attributes) being that op, so body is a prefix of the
    result (`extends`) and the primal loop and the stacking loop run once (share_forward_scans)."""
    from gradc.ir.builder import Builder
    from gradc.ir.passes.cse import attr_key

    hist = with_carry_history(body, num_consts, num_carry)
    if not residuals:
        return hist
    key = lambda name, ins, attrs: (name, tuple(ins), tuple((k, attr_key(v)) for k, v in sorted(attrs.items())))  # noqa: E731
    table: dict = {}
    for op in body.ops:
        table.setdefault(key(op.name, op.inputs, op.attrs), op.result)
    needed: set = set()
    stack = list(residuals)
    while stack:
        v = stack.pop()
        if v in needed or v.op is None:
            continue
        needed.add(v)
        stack.extend(v.op.inputs)
    b = Builder()
    env = dict(binding)
    for op in ops:
        if op.result not in needed:
            continue
        ins = [env[x] for x in op.inputs]
        k = key(op.name, ins, op.attrs)
        if k not in table:
            table[k] = b.emit(op.name, *ins, **op.attrs)
        env[op.result] = table[k]
    return Function(f"{body.name}_res", hist.params, hist.ops + b.ops, hist.results + [env[r] for r in residuals],
                    dict(hist.meta))


def extends(big: Function, small: Function) -> bool:
    """True when big is small with more ops after small's and more results after small's (the same params):
    a scan of big computes a scan of small's flat result as its prefix."""
    from gradc.ir.passes import structure

    n, m = len(small.ops), len(small.results)
    if len(big.ops) < n or len(big.results) < m or [p.type for p in big.params] != [p.type for p in small.params]:
        return False
    return structure(Function(small.name, big.params, big.ops[:n], big.results[:m])) == structure(small)


def share_forward_scans(fn: Function) -> Function:
    """Run each forward loop once: a scan whose VJP history twin (same operands, body that also stacks its
    carries) is in fn becomes a prefix slice of the twin, which moves up to its place."""
    from gradc.ir.builder import Builder

    scans = [op for op in fn.ops if op.name == "scan"]
    if len(scans) < 2:
        return fn
    loop_key = lambda op: (tuple(op.inputs), op.attrs["num_consts"], op.attrs["num_carry"],  # noqa: E731
                           op.attrs["length"], op.attrs["reverse"])
    by_key: dict = {}
    for op in scans:
        by_key.setdefault(loop_key(op), []).append(op)
    twin_of: dict = {}
    for group in by_key.values():
        if len(group) < 2:
            continue
        sizes = {op: (len(op.attrs["body"].ops), len(op.attrs["body"].results)) for op in group}
        for op in group:
            if op in twin_of.values():
                continue
            longer = [o for o in group if o is not op and sizes[o] > sizes[op] and o not in twin_of
                      and extends(o.attrs["body"], op.attrs["body"])]
            if longer:
                twin_of[op] = max(longer, key=sizes.__getitem__)
    if not twin_of:
        return fn
    b = Builder()
    env: dict[Value, Value] = {p: p for p in fn.params}
    for op in fn.ops:
        if op.result in env:  # a twin emitted early
            continue
        ins = [env[v] for v in op.inputs]
        if op in twin_of:
            hist = twin_of[op]
            env[hist.result] = b.emit("scan", *ins, **hist.attrs)
            env[op.result] = b.emit("slice", env[hist.result], starts=(0,), stops=(op.result.type.size,),
                                    steps=(1,))
        else:
            env[op.result] = b.emit(op.name, *ins, **op.attrs)
    return Function(fn.name, fn.params, b.ops, [env[r] for r in fn.results], dict(fn.meta))


def hoistable(g: Value) -> tuple | None:
    """How a per-iteration gradient of a loop-invariant operand sums over iterations outside the loop:
    ("matmul", A, B) for g = A^T @ B with 2-D A (M, K), B (M, N) (a weight gradient: the sum over t is ONE
    GEMM over the stacked rows), ("reduce", X, axes) for g = reduce_sum(X) (a bias gradient), else None."""
    from gradc.ir.passes.fuse import is_swap_last2

    op = g.op
    if op is None:
        return None
    if (op.name == "permute" and len(g.shape) == 2 and op.inputs[0].op is not None
            and op.inputs[0].op.name == "matmul"):  # (A^T B)^T = B^T A: the VJP of a transposed weight
        inner = hoistable(op.inputs[0])
        return inner and inner[0] == "matmul" and ("matmul", inner[2], inner[1]) or None
    if op.name == "matmul" and len(g.shape) == 2:
        a, bm = op.inputs
        if (a.op is not None and a.op.name == "permute" and is_swap_last2(a.op.attrs["perm"])
                and len(a.op.inputs[0].shape) == 2 and len(bm.shape) == 2
                and a.op.inputs[0].shape[0] == bm.shape[0]):
            return ("matmul", a.op.inputs[0], bm)
    if op.name == "reduce_sum":
        return ("reduce", op.inputs[0], tuple(op.attrs["axes"]))
    return None


def adjoint_body(body: Function, num_consts: int, num_carry: int,
                 dtype: Any = None) -> tuple[Function, list[int], dict, Function]:
    """(consts, acc..., ct_carry..., carry_in_t..., x_t..., ct_y_t..., residual_t...) -> (acc + g_consts,
    g_carry, g_x_t, factors_t...): one reverse step, and the forward body that stacks what it reads (its
    carry-in, then the residuals of `choose_residuals` in `dtype`, the scan's float dtype). acc are the
    gradients of the float consts (in `float_consts` order) that accumulate in the carry; the others are
    *hoisted* (see `hoistable`): the step returns their
    per-iteration factors as ys (or names an xs that already is one) and the caller sums them after the
    loop with one GEMM / reduction over the stacked factors (cuDNN's weight-gradient GEMM), so no
    weight-sized accumulator is read and written every iteration. Returns (fn, float_consts, hoisted, forward)
    with hoisted[const index] = (kind, ref, ref_or_axes), a ref being ("ys", k) or ("xs", j) of the scan."""
    from gradc.ir.builder import Builder, inline
    from gradc.ir.passes.ad import ad

    wrt = [i for i, p in enumerate(body.params) if p.dtype.is_float]
    joint = ad(body, wrt, seed="param")
    consts, carry, xs = split(body.params, num_consts, num_carry)
    float_consts = [i for i in range(num_consts) if body.params[i].dtype.is_float]
    float_xs = [num_consts + num_carry + j for j, p in enumerate(xs) if p.dtype.is_float]
    fresh = lambda vs, tag: [Value(v.type, name=f"{tag}{i}") for i, v in enumerate(vs)]  # noqa: E731
    p_consts = fresh(consts, "c")
    p_ctc = fresh(carry, "ctc")
    p_hist = fresh(carry, "h")
    p_x = fresh(xs, "x")
    p_cty = fresh(body.results[num_carry:], "cty")
    b = Builder()
    outs = inline(b, joint, p_consts + p_hist + p_x + p_ctc + p_cty)
    grads = dict(zip(wrt, outs[len(body.results):]))
    if dtype is None:
        dtype = next((v.dtype for v in list(body.results) + list(body.params) if v.dtype.is_float), float32)
    residuals = choose_residuals(b.ops, p_ctc + p_cty, p_hist + p_x, list(grads.values()), dtype)
    forward = with_residuals(body, num_consts, num_carry, b.ops, residuals,
                             dict(zip(p_consts + p_hist + p_x, body.params)))
    p_res = fresh(residuals, "r")
    if residuals:  # the step reads the stacked values instead of computing them (dead ops go in optimize)
        replay = Builder()
        env: dict[Value, Value] = dict(zip(residuals, p_res))
        for op in b.ops:
            if op.result not in env:
                env[op.result] = replay.emit(op.name, *(env.get(v, v) for v in op.inputs), **op.attrs)
        grads = {i: env.get(g, g) for i, g in grads.items()}
        b = replay
    xs_params = {v: j for j, v in enumerate(p_hist + p_x + p_cty + p_res)}
    const_params = set(p_consts)
    gx = [grads[i] for i in float_xs]
    factors: list[Value] = []

    def ref(v: Value) -> tuple:  # an xs of the scan, or a ys (the gradients of x_t come first)
        if v in xs_params:
            return ("xs", xs_params[v])
        if v in gx:
            return ("ys", gx.index(v))
        if v not in factors:
            factors.append(v)
        return ("ys", len(gx) + factors.index(v))
    hoisted: dict = {}
    for i in float_consts:
        how = hoistable(grads[i])
        if how is None or any(v in const_params for v in how[1:3] if isinstance(v, Value)):
            continue  # (a factor that is loop-invariant itself would be stacked for nothing)
        if how[0] == "matmul":
            hoisted[i] = ("matmul", ref(how[1]), ref(how[2]))
        else:
            hoisted[i] = ("reduce", ref(how[1]), how[2])
    acc_consts = [i for i in float_consts if i not in hoisted]
    p_acc = fresh([body.params[i] for i in acc_consts], "acc")
    new_acc = [b.add(a, grads[i]) for a, i in zip(p_acc, acc_consts)]
    new_ctc = [grads[num_consts + k] for k in range(num_carry)]
    fn = Function(f"{body.name}_adj", p_consts + p_acc + p_ctc + p_hist + p_x + p_cty + p_res, b.ops,
                  new_acc + new_ctc + gx + factors)
    return optimized(fn), acc_consts, hoisted, forward


def sum_hoisted(b: Any, how: tuple, xs: list[Value], ys: list[Value], length: int) -> Value:
    """The sum over iterations of one hoisted gradient (see adjoint_body), from the stacked factors."""
    pick = lambda r: xs[r[1]] if r[0] == "xs" else ys[r[1]]  # noqa: E731
    if how[0] == "matmul":
        a, m = pick(how[1]), pick(how[2])  # [L, M, K], [L, M, N]
        a2 = b.reshape_to(a, (length * a.shape[1], a.shape[2]))
        m2 = b.reshape_to(m, (length * m.shape[1], m.shape[2]))
        return b.emit("matmul", b.emit("permute", a2, perm=(1, 0)), m2)
    x = pick(how[1])
    return b.emit("reduce_sum", x, axes=(0,) + tuple(a + 1 for a in how[2]))


def vjp_scan(b: Any, g: Value, out: Value, *inputs: Value, body: Function, num_consts: int, num_carry: int,
             length: int, reverse: bool) -> tuple:
    consts, init, xs = split(inputs, num_consts, num_carry)
    types = part_types(body, num_carry, length)
    g_parts = unpack(b, g, types)
    g_carry, g_ys = g_parts[:num_carry], g_parts[num_carry:]
    adj, acc_consts, hoisted, forward = adjoint_body(body, num_consts, num_carry, out.dtype)
    _, ys_h = emit_scan(b, forward, consts, init, xs, length, reverse)
    n_ys = len(types) - num_carry
    hist, res = ys_h[n_ys:n_ys + num_carry], ys_h[n_ys + num_carry:]
    zeros = [b.scalar(0.0, consts[i]) for i in acc_consts]
    adj_xs = hist + list(xs) + g_ys + res
    carry, ys = emit_scan(b, adj, consts, zeros + g_carry, adj_xs, length, not reverse)
    g_consts = dict(zip(acc_consts, carry[:len(acc_consts)]))
    g_init = carry[len(acc_consts):]
    n_gx = sum(1 for x in xs if x.dtype.is_float)
    gxs = ys[:n_gx]
    for i, how in hoisted.items():
        g_consts[i] = sum_hoisted(b, how, adj_xs, ys, length)
    gx_iter = iter(gxs)
    g_xs = [next(gx_iter) if x.dtype.is_float else None for x in xs]
    return tuple([g_consts.get(i) for i in range(num_consts)] + g_init + g_xs)


SCAN = register(OpDef("scan", -1, "scan", scan_shape, eval_scan, vjp_scan, attrs=ATTRS))


# ----------------------------------------------------------------------------- native lowering support

def has_gather(body: Function) -> bool:
    """True when body or any nested scan body evaluates a gather (an explicit stack over nesting)."""
    stack = [body]
    while stack:
        fn = stack.pop()
        for op in fn.ops:
            if op.name == "gather":
                return True
            if op.name == "scan":
                stack.append(op.attrs["body"])
    return False


def native_scan(op: Any) -> bool:
    """True when the scan op lowers as a native loop (see the module doc); otherwise it is unrolled."""
    import os
    return os.environ.get("GRADC_UNROLL_SCANS", "") != "1" and not has_gather(op.attrs["body"])


def loop_body(op: Any) -> Function:
    """The body of a natively looped scan, ready to fuse: its own non-native scans unrolled, and
    `meta["num_carry"]` set (the body's first results are the carry)."""
    body = op.attrs["body"]
    if any(o.name == "scan" and not native_scan(o) for o in body.ops):
        from gradc.ir.passes import optimize
        body = optimize(unroll_scans(body, keep=native_scan))
    return Function(body.name, body.params, body.ops, body.results,
                    dict(body.meta, num_carry=op.attrs["num_carry"]))


def unroll_scans(fn: Function, keep: Any = None) -> Function:
    """fn with every scan (except those for which `keep(op)` is true) inlined `length` times, nested scans
    too; other ops are kept as they are. A slice taking exactly one part of an unrolled scan's flat result
    becomes that part itself (no packing)."""
    from gradc.ir.builder import Builder, inline

    if not any(op.name == "scan" and not (keep and keep(op)) for op in fn.ops):
        return fn
    b = Builder()
    env: dict[Value, Value] = {p: p for p in fn.params}
    users: dict[Value, list] = {}
    for op in fn.ops:
        for x in op.inputs:
            users.setdefault(x, []).append(op)
    results = set(fn.results)
    stack_of: dict[Value, list] = {}  # a stacked ys part -> its per-iteration values (slice t is value t)
    flat_of: dict[Value, Value] = {}  # a flattened part -> the part (unpack's reshape back gives the part)
    parts_of: dict[Value, dict] = {}  # scan result -> {(start, stop): flattened part}
    for op in fn.ops:
        ins = [env[v] for v in op.inputs]
        if op.name == "scan" and not (keep and keep(op)):
            a = op.attrs
            body = unroll_scans(a["body"])
            consts, carry, xs = split(ins, a["num_consts"], a["num_carry"])
            ys: list[list] = [[None] * a["length"] for _ in body.results[a["num_carry"]:]]
            for t in (reversed(range(a["length"])) if a["reverse"] else range(a["length"])):
                x_t = [stack_of[x][t] if x in stack_of else
                       b.reshape_to(b.emit("slice", x, starts=(t,) + (0,) * (len(x.shape) - 1),
                                           stops=(t + 1,) + x.shape[1:], steps=(1,) * len(x.shape)), x.shape[1:])
                       for x in xs]
                out = inline(b, body, consts + carry + x_t)
                carry = out[:a["num_carry"]]
                for j, y in enumerate(out[a["num_carry"]:]):
                    ys[j][t] = y
            stacked = [concat(b, [b.reshape_to(y, (1,) + y.shape) for y in col], 0) if col else
                       b.emit("const", value=0.0, shape=(0,) + r.type.shape, dtype=r.dtype)
                       for col, r in zip(ys, body.results[a["num_carry"]:])]
            for st, col in zip(stacked, ys):
                if col:
                    stack_of[st] = col
            pieces, offset, table = carry + stacked, 0, {}
            for p in pieces:
                table[(offset, offset + p.type.size)] = p
                offset += p.type.size
            flat = None
            if op.result not in results and all(
                    use.name == "slice" and (use.attrs["starts"][0], use.attrs["stops"][0]) in table
                    and use.attrs["steps"] == (1,) for use in users.get(op.result, [])):
                flat = Value(op.result.type)  # never emitted: every use takes one part
            else:
                flat = pack(b, pieces, op.result.dtype)
            env[op.result] = flat
            parts_of[flat] = table
        elif op.name == "slice" and ins[0] in parts_of:
            key = (op.attrs["starts"][0], op.attrs["stops"][0])
            part = parts_of[ins[0]].get(key) if op.attrs["steps"] == (1,) else None
            if part is None:
                env[op.result] = b.emit("slice", ins[0], **op.attrs)
            else:
                env[op.result] = b.reshape_to(part, (part.type.size,))
                flat_of[env[op.result]] = part
        elif op.name == "reshape" and ins[0] in flat_of and flat_of[ins[0]].shape == tuple(op.attrs["shape"]):
            env[op.result] = flat_of[ins[0]]  # unpack's slice + reshape: the part itself
        else:
            env[op.result] = b.emit(op.name, *ins, **op.attrs)
    return Function(fn.name, fn.params, b.ops, [env[r] for r in fn.results], dict(fn.meta))



# ----------------------------------------------------------------------------- row-parallel loops

def split_rows(body: Function, num_consts: int, num_carry: int, parts: int) -> Function | None:
    """body for 1/parts of the rows when every row of its carries, x_t and results depends only on the same
    row (an RNN's batch): axis 0 of each carry, x_t and result is that axis, B long, and the ops keep rows
    apart (elementwise, row @ loop-invariant matrix, slices / pads / reshapes / permutes / reductions that
    keep axis 0 whole, broadcasts of loop-invariant values along it). The loop then runs `parts` row blocks
    on separate threads with no synchronization per iteration. None when body does not qualify."""
    from gradc.ir.builder import Builder

    variant = body.params[num_consts:]
    if not variant or any(p.type.rank == 0 for p in variant):
        return None
    rows = variant[0].shape[0]
    if rows % parts or rows // parts == 0 or any(p.shape[0] != rows for p in variant):
        return None
    part = rows // parts
    cut = lambda shape: (part,) + tuple(shape[1:])  # noqa: E731
    params = list(body.params[:num_consts]) + [Value(TensorType(cut(p.shape), p.dtype), name=p.name)
                                               for p in variant]
    params = [Value(p.type, name=p.name) for p in params]
    env: dict[Value, Value] = dict(zip(body.params, params))
    batched = set(params[num_consts:])
    b = Builder()

    def rebatched(u: Value) -> Value | None:
        """A loop-invariant operand of a row-wise op, for the row block: a broadcast along axis 0 or a fill."""
        op = u.op
        if op is not None and op.name == "broadcast_to" and u.shape[0] == rows:
            src = op.inputs[0]
            lead = u.type.rank - src.type.rank
            if lead > 0 or src.shape[0] == 1:
                return b.emit("broadcast_to", env[src], shape=cut(u.shape))
        if op is not None and op.name == "const" and not isinstance(op.attrs["value"], np.ndarray) \
                and u.shape and u.shape[0] == rows:
            return b.emit("const", value=op.attrs["value"], shape=cut(u.shape), dtype=u.dtype)
        return None

    for op in body.ops:
        ins = [env[x] for x in op.inputs]
        if not any(x in batched for x in ins):  # loop-invariant: as it is
            env[op.result] = b.emit(op.name, *ins, **op.attrs)
            continue
        a, kind = op.attrs, op.opdef.kind
        if kind == "elementwise":
            if any(x.type.rank == 0 or x.shape[0] != rows for x in op.inputs):
                return None
            new = []
            for x, nx in zip(op.inputs, ins):
                if nx not in batched:
                    nx = rebatched(x)
                    if nx is None:
                        return None
                new.append(nx)
            out = b.emit(op.name, *new, **a)
        elif op.name == "matmul":
            x, w = ins
            if x not in batched or w in batched or x.type.rank != 2 or w.type.rank != 2:
                return None
            out = b.emit("matmul", x, w)
        elif op.name == "slice":
            if (a["starts"][0], a["stops"][0], a["steps"][0]) != (0, rows, 1):
                return None
            out = b.emit("slice", ins[0], starts=a["starts"], stops=cut(a["stops"]), steps=a["steps"])
        elif op.name == "pad":
            if (a["lo"][0], a["hi"][0], a["interior"][0]) != (0, 0, 0):
                return None
            out = b.emit("pad", ins[0], **a)
        elif op.name == "reshape":
            if not a["shape"] or a["shape"][0] != rows:
                return None
            out = b.emit("reshape", ins[0], shape=cut(a["shape"]))
        elif op.name == "permute":
            if a["perm"][0] != 0:
                return None
            out = b.emit("permute", ins[0], **a)
        elif op.name == "broadcast_to":
            if op.inputs[0].type.rank != len(a["shape"]) or op.inputs[0].shape[0] != rows:
                return None
            out = b.emit("broadcast_to", ins[0], shape=cut(a["shape"]))
        elif kind == "reduce":
            if 0 in a["axes"]:
                return None
            out = b.emit(op.name, ins[0], **a)
        else:  # (gather, nested scans, calls, attention, windows: not split)
            return None
        batched.add(out)
        env[op.result] = out
    results = [env[r] for r in body.results]
    if any(r not in batched for r in results):
        return None
    return Function(f"{body.name}_rows", params, b.ops, results, dict(body.meta))
