"""Print a gradc Function in upstream MLIR dialects (func, arith, math, linalg, tensor), for MLIR tools.

Mapping (on tensors, destination-passing style with `tensor.empty` inits):
  elementwise ops      -> linalg.generic with identity maps and an arith/math body
  reduce_sum/max       -> linalg.reduce over a linalg.fill'ed init (0 or -inf / the integer minimum)
  matmul               -> linalg.matmul (rank 2); a batched matmul is a linalg.generic with a reduction dim
  broadcast_to         -> tensor.collapse_shape (drop expanded size-1 dims) + linalg.broadcast
  permute              -> linalg.transpose;   reshape -> tensor.reshape (tensor.collapse/expand_shape at rank 0)
  slice                -> tensor.extract_slice;   pad -> linalg.fill + tensor.insert_slice (interior = stride)
  gather               -> linalg.generic over the indices whose body does tensor.extract
  iota                 -> linalg.generic with linalg.index;   const -> arith.constant dense<...>
Every SSA name is unique in the function (names in nested regions never shadow outer ones).
"""

from __future__ import annotations

import struct
from typing import Callable, Sequence

import numpy as np

from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, bool_, float32, float64
from gradc.ir.ops import unwindow_taps
from gradc.ir.printer import param_names


def mlir_name(dtype) -> str:
    """MLIR's integers are signless: uint8 is i8, and its ops say unsigned (maxui, cmpi ult, extui, uitofp)."""
    return "i8" if dtype.name == "uint8" else dtype.short  # f32, f64, i64, i32, i16, i8, i1 are MLIR's names


def elem(t: TensorType) -> str:
    return mlir_name(t.dtype)


def ttype(t: TensorType) -> str:
    return "tensor<" + "".join(f"{d}x" for d in t.shape) + elem(t) + ">"


def float_literal(x: float, dtype) -> str:
    """An MLIR float literal; inf and nan as hexadecimal bit patterns (MLIR has no inf/nan keywords)."""
    x = float(x)
    if np.isfinite(x):
        return f"{x:.9e}" if dtype == float32 else f"{x:.17e}"
    if dtype == float32:
        return "0x%08X" % struct.unpack("<I", struct.pack("<f", x))[0]
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", x))[0]


def scalar_literal(x, dtype) -> str:
    if dtype.is_float:
        return float_literal(x, dtype)
    if dtype == bool_:
        return "true" if x else "false"
    return str(int(x))


def dense(value: np.ndarray, dtype) -> str:
    if value.ndim == 0:
        return scalar_literal(value.item(), dtype)
    return "[" + ", ".join(dense(v, dtype) for v in value) + "]"


class Printer:
    """Emits the body of one function; `self.names` maps gradc Values to SSA names."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[Value, str] = {}
        self.count = 0

    def fresh(self, prefix: str = "t") -> str:
        self.count += 1
        return f"%{prefix}{self.count}"

    def emit(self, line: str, indent: int = 1) -> None:
        self.lines.append("  " * indent + line)

    def constant(self, x, dtype) -> str:
        name = self.fresh("c")
        self.emit(f"{name} = arith.constant {scalar_literal(x, dtype)} : {mlir_name(dtype)}")
        return name

    def empty(self, t: TensorType) -> str:
        name = self.fresh("init")
        self.emit(f"{name} = tensor.empty() : {ttype(t)}")
        return name

    def filled(self, t: TensorType, x) -> str:
        value, init, name = self.constant(x, t.dtype), self.empty(t), self.fresh()
        self.emit(f"{name} = linalg.fill ins({value} : {elem(t)}) outs({init} : {ttype(t)}) -> {ttype(t)}")
        return name

    def generic(self, out: TensorType, inputs: Sequence[tuple[str, TensorType]],
                body: Callable[[list[str]], str], iterators: Sequence[str] | None = None,
                maps: Sequence[str] | None = None, init: str | None = None) -> str:
        """A linalg.generic; `body(scalar names)` emits the region's ops and returns the yielded name."""
        rank = len(out.shape)
        dims = ", ".join(f"d{i}" for i in range(rank))
        identity = f"affine_map<({dims}) -> ({dims})>"
        maps = list(maps or [identity] * (len(inputs) + 1))
        iterators = list(iterators or ["parallel"] * rank)
        init = init or self.empty(out)
        name = self.fresh()
        head = (f"{name} = linalg.generic {{indexing_maps = [{', '.join(maps)}], iterator_types = ["
                + ", ".join(f'"{i}"' for i in iterators) + "]}")
        if inputs:
            head += (f" ins({', '.join(n for n, _ in inputs)} : {', '.join(ttype(t) for _, t in inputs)})")
        self.emit(head + f" outs({init} : {ttype(out)}) {{")
        args = [self.fresh("a") for _ in range(len(inputs) + 1)]
        types = [elem(t) for _, t in inputs] + [elem(out)]
        self.emit("^bb0(" + ", ".join(f"{a}: {t}" for a, t in zip(args, types)) + "):")
        result = body(args)
        self.emit(f"  linalg.yield {result} : {elem(out)}")
        self.emit(f"}} -> {ttype(out)}")
        return name

    def scalar(self, op: str, operands: Sequence[str], ty: str, extra: str = "") -> str:
        """One scalar op inside a region: `%r = op operands : ty`."""
        name = self.fresh("s")
        self.emit(f"  {name} = {op} {', '.join(operands)}{extra} : {ty}")
        return name


# ----------------------------------------------------------------------------- scalar bodies

FLOAT_BINARY = {"add": "arith.addf", "sub": "arith.subf", "mul": "arith.mulf", "div": "arith.divf",
                "maximum": "arith.maximumf", "pow": "math.powf"}
INT_BINARY = {"add": "arith.addi", "sub": "arith.subi", "mul": "arith.muli", "maximum": "arith.maxsi"}
FLOAT_UNARY = {"exp": "math.exp", "log": "math.log", "tanh": "math.tanh", "sqrt": "math.sqrt",
               "abs": "math.absf", "neg": "arith.negf", "sin": "math.sin", "cos": "math.cos"}
FLOAT_PRED = {"lt": "olt", "le": "ole", "gt": "ogt", "ge": "oge", "eq": "oeq", "ne": "une"}
INT_PRED = {"lt": "slt", "le": "sle", "gt": "sgt", "ge": "sge", "eq": "eq", "ne": "ne"}
UINT_PRED = {"lt": "ult", "le": "ule", "gt": "ugt", "ge": "uge", "eq": "eq", "ne": "ne"}


def scalar_body(p: Printer, op, args: list[str]) -> str:
    """The region of an elementwise op: arith/math ops on the scalar block arguments."""
    x_type = op.inputs[-1].type if op.name == "where" else op.inputs[0].type if op.inputs else op.result.type
    ty = elem(x_type)
    is_float = x_type.dtype.is_float
    name = op.name
    unsigned = x_type.dtype.name == "uint8"
    if name == "maximum" and unsigned:
        return p.scalar("arith.maxui", args[:2], ty)
    if name in FLOAT_BINARY and is_float or name in INT_BINARY and not is_float:
        return p.scalar((FLOAT_BINARY if is_float else INT_BINARY)[name], args[:2], ty)
    if name == "div" or name == "pow":
        raise NotImplementedError(f"{name} on {x_type}")
    if name in FLOAT_UNARY and is_float:
        return p.scalar(FLOAT_UNARY[name], args[:1], ty)
    if name == "neg":
        return p.scalar("arith.subi", [p_const(p, 0, x_type.dtype), args[0]], ty)
    if name == "abs":
        return args[0] if unsigned else p.scalar("math.absi", args[:1], ty)
    if name == "recip":
        return p.scalar("arith.divf", [p_const(p, 1.0, x_type.dtype), args[0]], ty)
    if name == "sigmoid":  # 1 / (1 + exp(-x))
        e = p.scalar("math.exp", [p.scalar("arith.negf", args[:1], ty)], ty)
        return p.scalar("arith.divf", [p_const(p, 1.0, x_type.dtype),
                                       p.scalar("arith.addf", [p_const(p, 1.0, x_type.dtype), e], ty)], ty)
    if name == "erfc":  # 1 - erf (upstream MLIR has math.erfc; xDSL's math dialect has only math.erf)
        return p.scalar("arith.subf", [p_const(p, 1.0, x_type.dtype), p.scalar("math.erf", args[:1], ty)], ty)
    if name == "relu":  # maximumf propagates NaN, as gradc's relu does
        zero = p_const(p, 0, x_type.dtype)
        return p.scalar("arith.maximumf" if is_float else "arith.maxui" if unsigned else "arith.maxsi",
                        [args[0], zero], ty)
    if name == "stop_gradient":
        return args[0]
    if name == "compare":
        pred = (FLOAT_PRED if is_float else UINT_PRED if unsigned else INT_PRED)[op.attrs["pred"]]
        return p.scalar("arith.cmpf" if is_float else "arith.cmpi", [pred, *args[:2]], ty)
    if name == "where":
        return p.scalar("arith.select", args[:3], ty)
    if name == "cast":
        return cast_body(p, args[0], x_type.dtype, op.attrs["dtype"])
    raise NotImplementedError(f"no MLIR lowering for elementwise op {name!r}")


def p_const(p: Printer, x, dtype) -> str:
    name = p.fresh("k")
    p.emit(f"  {name} = arith.constant {scalar_literal(x, dtype)} : {mlir_name(dtype)}")
    return name


def cast_body(p: Printer, x: str, src, dst) -> str:
    if src == dst:
        return x
    s, d = mlir_name(src), mlir_name(dst)
    if src.is_float and dst.is_float:
        return p.scalar("arith.extf" if dst == float64 else "arith.truncf", [x], f"{s} to {d}")
    if dst == bool_:  # numpy: x != 0
        pred, cmp = ("une", "arith.cmpf") if src.is_float else ("ne", "arith.cmpi")
        return p.scalar(cmp, [pred, x, p_const(p, 0, src)], s)
    if dst.is_float:
        return p.scalar("arith.uitofp" if src.is_unsigned else "arith.sitofp", [x], f"{s} to {d}")
    if src.is_float:
        return p.scalar("arith.fptosi", [x], f"{s} to {d}")
    if s == d:  # int8 <-> uint8: the same bits
        return x
    if dst.bits < src.bits:
        return p.scalar("arith.trunci", [x], f"{s} to {d}")
    return p.scalar("arith.extui" if src.is_unsigned else "arith.extsi", [x], f"{s} to {d}")


# ----------------------------------------------------------------------------- structured ops

def print_op(p: Printer, op) -> str:
    """Emit one gradc op; returns the SSA name of its result."""
    out = op.result.type
    ins = [(p.names[v], v.type) for v in op.inputs]
    kind = op.opdef.kind
    name = op.name
    if kind == "elementwise":
        return p.generic(out, ins, lambda args: scalar_body(p, op, args))
    if name in ("reduce_sum", "reduce_max"):
        return reduce_op(p, op, ins[0])
    if name == "matmul":
        return matmul(p, ins[0], ins[1], out)
    if name == "broadcast_to":
        return broadcast(p, ins[0], out)
    if name == "permute":
        init, r = p.empty(out), p.fresh()
        p.emit(f"{r} = linalg.transpose ins({ins[0][0]} : {ttype(ins[0][1])}) outs({init} : {ttype(out)}) "
               f"permutation = [{', '.join(str(i) for i in op.attrs['perm'])}]")
        return r
    if name == "reshape":
        return reshape(p, ins[0], out)
    if name == "slice":
        r = p.fresh()
        sizes = ", ".join(str(d) for d in out.shape)
        p.emit(f"{r} = tensor.extract_slice {ins[0][0]}[{_ints(op.attrs['starts'])}] [{sizes}] "
               f"[{_ints(op.attrs['steps'])}] : {ttype(ins[0][1])} to {ttype(out)}")
        return r
    if name == "pad":
        base, r = p.filled(out, 0), p.fresh()
        x_t = ins[0][1]
        strides = [i + 1 for i in op.attrs["interior"]]
        p.emit(f"{r} = tensor.insert_slice {ins[0][0]} into {base}[{_ints(op.attrs['lo'])}] "
               f"[{_ints(x_t.shape)}] [{_ints(strides)}] : {ttype(x_t)} into {ttype(out)}")
        return r
    if name == "window":  # out[..., o, ..., k] = x[..., o*stride + k*dilation, ...]: an affine read
        a, rank = op.attrs["axis"], len(out.shape)
        dims = [f"d{i}" for i in range(rank)]
        src = dims[:-1]
        src[a] = f"d{a} * {op.attrs['stride']} + d{rank - 1} * {op.attrs['dilation']}"
        head = f"({', '.join(dims)})"
        maps = [f"affine_map<{head} -> ({', '.join(src)})>", f"affine_map<{head} -> ({', '.join(dims)})>"]
        return p.generic(out, ins, lambda args: args[0], maps=maps)
    if name == "unwindow":  # its definition: each tap inserted back into zeros, the taps added in order
        b = Builder()
        g = Value(op.inputs[0].type, name="g")
        total = unwindow_taps(b, g, **op.attrs)
        p.names[g] = ins[0][0]
        for sub in b.ops:
            p.names[sub.result] = print_op(p, sub)
        return p.names[total]
    if name == "gather":
        return gather(p, ins[0], ins[1], op.attrs["axis"], out)
    if name == "iota":
        def body(args: list[str]) -> str:
            i = p.fresh("i")
            p.emit(f"  {i} = linalg.index {op.attrs['axis']} : index")
            return p.scalar("arith.index_cast", [i], "index to i64")
        return p.generic(out, [], body)
    if name == "const":
        r = p.fresh("cst")
        value = np.asarray(op.attrs["value"])
        flat = value.reshape(-1)
        if value.shape == out.shape and value.ndim and not (flat == flat[0]).all():
            text = dense(value, out.dtype)
        else:  # a splat: one value for every element
            text = scalar_literal(flat[0] if flat.size else 0, out.dtype)
        p.emit(f"{r} = arith.constant dense<{text}> : {ttype(out)}")
        return r
    raise NotImplementedError(f"no MLIR lowering for op {name!r}")


def _ints(xs: Sequence[int]) -> str:
    return ", ".join(str(int(x)) for x in xs)


def reduce_op(p: Printer, op, x: tuple[str, TensorType]) -> str:
    out = op.result.type
    if op.name == "reduce_sum":
        start, combine = 0, ("arith.addf" if out.dtype.is_float else "arith.addi")
    else:
        start = -np.inf if out.dtype.is_float else int(np.iinfo(out.dtype.numpy).min)
        combine = "arith.maximumf" if out.dtype.is_float else "arith.maxui" if out.dtype.name == "uint8" else \
            "arith.maxsi"
    init, r = p.filled(out, start), p.fresh()
    a, acc = p.fresh("a"), p.fresh("a")
    p.emit(f"{r} = linalg.reduce ins({x[0]} : {ttype(x[1])}) outs({init} : {ttype(out)}) "
           f"dimensions = [{_ints(op.attrs['axes'])}]")
    p.emit(f"  ({a}: {elem(out)}, {acc}: {elem(out)}) {{")
    s = p.scalar(combine, [a, acc], elem(out))
    p.emit(f"    linalg.yield {s} : {elem(out)}")
    p.emit("  }")
    return r


def matmul(p: Printer, a: tuple[str, TensorType], b: tuple[str, TensorType], out: TensorType) -> str:
    init = p.filled(out, 0)
    if len(out.shape) == 2:
        r = p.fresh()
        p.emit(f"{r} = linalg.matmul ins({a[0]}, {b[0]} : {ttype(a[1])}, {ttype(b[1])}) "
               f"outs({init} : {ttype(out)}) -> {ttype(out)}")
        return r
    # batched: batch dims b..., then m, n, and k as the reduction dim
    batch = len(out.shape) - 2
    d = [f"d{i}" for i in range(batch + 3)]
    bd, m, n, k = d[:batch], d[batch], d[batch + 1], d[batch + 2]
    head = f"({', '.join(d)})"
    maps = [f"affine_map<{head} -> ({', '.join(bd + [m, k])})>", f"affine_map<{head} -> ({', '.join(bd + [k, n])})>",
            f"affine_map<{head} -> ({', '.join(bd + [m, n])})>"]
    ty = elem(out)

    def body(args: list[str]) -> str:
        return p.scalar("arith.addf", [args[2], p.scalar("arith.mulf", args[:2], ty)], ty)
    return p.generic(out, [a, b], body, ["parallel"] * (batch + 2) + ["reduction"], maps, init=init)


def broadcast(p: Printer, x: tuple[str, TensorType], out: TensorType) -> str:
    name, t = x
    lead = len(out.shape) - len(t.shape)
    kept = [i for i, d in enumerate(t.shape) if d == out.shape[lead + i]]
    if len(kept) < len(t.shape):  # drop the size-1 dims that get expanded
        groups: list[list[int]] = [[i] for i in kept]
        pending: list[int] = []
        for i in range(len(t.shape)):
            if i in kept:
                groups[kept.index(i)] = sorted(pending + groups[kept.index(i)])
                pending = []
            else:
                pending.append(i)
        if pending and groups:
            groups[-1] += pending
        collapsed = TensorType(tuple(t.shape[i] for i in kept), t.dtype)
        r = p.fresh()
        assoc = ", ".join("[" + _ints(g) + "]" for g in groups)
        p.emit(f"{r} = tensor.collapse_shape {name} [{assoc}] : {ttype(t)} into {ttype(collapsed)}")
        name, t = r, collapsed
    added = [i for i in range(len(out.shape)) if i < lead or i - lead not in kept]
    if not added:
        return name
    init, r = p.empty(out), p.fresh()
    p.emit(f"{r} = linalg.broadcast ins({name} : {ttype(t)}) outs({init} : {ttype(out)}) "
           f"dimensions = [{_ints(added)}]")
    return r


def reshape(p: Printer, x: tuple[str, TensorType], out: TensorType) -> str:
    name, t = x
    r = p.fresh()
    if t.shape == out.shape:
        return name
    if len(out.shape) == 0:
        p.emit(f"{r} = tensor.collapse_shape {name} [] : {ttype(t)} into {ttype(out)}")
    elif len(t.shape) == 0:
        p.emit(f"{r} = tensor.expand_shape {name} [] output_shape [{_ints(out.shape)}] : "
               f"{ttype(t)} into {ttype(out)}")
    else:
        shape = p.fresh("shape")
        p.emit(f"{shape} = arith.constant dense<[{_ints(out.shape)}]> : tensor<{len(out.shape)}xi64>")
        p.emit(f"{r} = tensor.reshape {name}({shape}) : ({ttype(t)}, tensor<{len(out.shape)}xi64>) -> {ttype(out)}")
    return r


def gather(p: Printer, x: tuple[str, TensorType], idx: tuple[str, TensorType], axis: int,
           out: TensorType) -> str:
    def body(args: list[str]) -> str:
        coords = []
        for i in range(len(out.shape)):
            c = p.fresh("i")
            p.emit(f"  {c} = linalg.index {i} : index")
            coords.append(c)
        k = p.scalar("arith.index_cast", [args[0]], "i64 to index")
        coords.insert(axis, k)
        v = p.fresh("s")
        p.emit(f"  {v} = tensor.extract {x[0]}[{', '.join(coords)}] : {ttype(x[1])}")
        return v
    return p.generic(out, [idx], body)


# ----------------------------------------------------------------------------- functions

def to_mlir(fn: Function) -> str:
    """The Function as `func.func` in upstream MLIR dialects; NotImplementedError for an op without a mapping.
    Scans are unrolled first (interim, as in native lowering; an scf.for mapping would keep the loop), and fused
    attention ops become their composites (upstream MLIR has no flash-attention op)."""
    from gradc.ir.attention import decompose_attention
    from gradc.ir.scan import unroll_scans
    fn = decompose_attention(unroll_scans(fn))
    p = Printer()
    for v, n in zip(fn.params, param_names(fn.params)):
        p.names[v] = f"%{n}"
    args = ", ".join(f"{p.names[v]}: {ttype(v.type)}" for v in fn.params)
    results = [ttype(r.type) for r in fn.results]
    ret = results[0] if len(results) == 1 else f"({', '.join(results)})"
    for op in fn.ops:
        if op.opdef.kind == "call":  # custom_vjp: its value is its last operand (the VJP rule is AD's business)
            p.names[op.result] = p.names[op.inputs[-1]]
            continue
        p.names[op.result] = print_op(p, op)
    p.emit(f"func.return {', '.join(p.names[r] for r in fn.results)} : {', '.join(results)}")
    return f"func.func @{fn.name}({args}) -> {ret} {{\n" + "\n".join(p.lines) + "\n}\n"

