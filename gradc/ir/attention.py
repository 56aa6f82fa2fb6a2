"""Fused attention primitives: `attention` and its backward `attention_grad` (flash-attention style).

    attention(q[N,Tq,D], k[N,Tk,D], v[N,Tk,Dv]) {scale, causal}      -> flat [out (N*Tq*Dv) | lse (N*Tq)]
    attention_grad(q, k, v, res, g) {scale, causal}                     -> flat [dq | dk | dv]

out = softmax(q k^T * scale [+ causal mask]) v and lse = the rows' log-sum-exp of the (masked) scores. Causal
keeps key j <= query i (PyTorch's top-left aligned tril, also for Tq != Tk): key 0 is visible to every row,
so no row is fully masked. The IR has single-result ops, so each result is ONE flat vector of its parts (as
`scan`'s): the front end slices `out` off; `attention_grad` reads the whole packed `res` (out and lse) and
the packed cotangent `g` (d out and d lse; the lse part is zero unless someone used lse), so no part is
copied. Only out and lse (N*Tq floats) are kept for the backward, which recomputes the probabilities per
block from lse: the T x T matrix is never stored.

The VJP of `attention` emits `attention_grad`. The VJP of `attention_grad` (second order) re-emits the
math of attention_grad as a composite of primitives and differentiates that with the ordinary AD pass, so
higher derivatives are plain IR again (they store T x T values, as the composite always did).
The numpy eval rules work per block of queries, so the interpreter and eager mode do not hold T x T
either. Native code: gradc/codegen/attention.py.
"""

from __future__ import annotations

import os

import numpy as np

from gradc.ir.core import ShapeError, TensorType
from gradc.ir.ops import OpDef, register

ATTRS = ("scale", "causal")
# query rows per block in the numpy rules, the native kernels' (a causal block reads keys < its last row + 1
# only, as native code does: a NaN in a key no query of the block sees stays out of every engine's result)
ATTENTION_BLOCK_Q = int(os.environ.get("GRADC_ATTENTION_BQ", 64))  # query rows per native block
ATTENTION_BLOCK_K = int(os.environ.get("GRADC_ATTENTION_BK", 64))  # keys per native block
EVAL_BLOCK = ATTENTION_BLOCK_Q


def _dims(types: list[TensorType], name: str) -> tuple[int, int, int, int, int]:
    q, k, v = types[:3]
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_float:
        raise ShapeError(f"{name} needs q, k, v of one floating dtype, got {q}, {k}, {v}")
    if q.rank != 3 or k.rank != 3 or v.rank != 3:
        raise ShapeError(f"{name} needs q, k, v of rank 3 (batch*heads, sequence, features), got {q}, {k}, {v}")
    n, tq, d = q.shape
    if k.shape[0] != n or v.shape[0] != n or k.shape[2] != d or v.shape[1] != k.shape[1]:
        raise ShapeError(f"{name}: q {q}, k {k}, v {v} do not fit (one batch, q and k one feature size, "
                         "k and v one sequence length)")
    if k.shape[1] == 0:
        raise ShapeError(f"{name} needs at least one key, got {k}")
    return n, tq, k.shape[1], d, v.shape[2]


def attention_shape(types: list[TensorType], attrs: dict) -> TensorType:
    n, tq, tk, d, dv = _dims(types, "attention")
    return TensorType((n * tq * dv + n * tq,), types[0].dtype)


def attention_grad_shape(types: list[TensorType], attrs: dict) -> TensorType:
    n, tq, tk, d, dv = _dims(types, "attention_grad")
    packed = TensorType((n * tq * dv + n * tq,), types[0].dtype)
    if len(types) != 5 or types[3] != packed or types[4] != packed:
        raise ShapeError(f"attention_grad needs the packed attention result and its cotangent of type {packed}, "
                         f"got {types[3:]}")
    return TensorType((n * tq * d + n * tk * d + n * tk * dv,), types[0].dtype)


def split_res(res: np.ndarray, n: int, tq: int, dv: int) -> tuple[np.ndarray, np.ndarray]:
    return res[:n * tq * dv].reshape(n, tq, dv), res[n * tq * dv:].reshape(n, tq)


def _visible(r0: int, r1: int, tk: int) -> np.ndarray:
    return np.arange(tk)[None, :] <= np.arange(r0, r1)[:, None]


def eval_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, causal: bool) -> np.ndarray:
    n, tq, _ = q.shape
    out = np.empty((n, tq, v.shape[2]), q.dtype)
    lse = np.empty((n, tq), q.dtype)
    kt = np.swapaxes(k, 1, 2)
    for r0 in range(0, tq, EVAL_BLOCK):
        r1 = min(r0 + EVAL_BLOCK, tq)
        kend = min(r1, k.shape[1]) if causal else k.shape[1]
        s = (q[:, r0:r1] @ kt[:, :, :kend]) * q.dtype.type(scale)
        vis = _visible(r0, r1, kend) if causal else True
        s = np.where(vis, s, -np.inf)
        m = s.max(axis=-1, keepdims=True)
        p = np.where(vis, np.exp(s - m), 0)  # masked keys are exactly 0, even in a row of NaN (native skips them)
        total = p.sum(axis=-1, keepdims=True)
        out[:, r0:r1] = (p @ v[:, :kend]) / total
        lse[:, r0:r1] = (m + np.log(total))[..., 0]
    return np.concatenate([out.ravel(), lse.ravel()])


def eval_attention_grad(q, k, v, res, g, scale: float, causal: bool) -> np.ndarray:
    n, tq, d = q.shape
    tk, dv = k.shape[1], v.shape[2]
    out, lse = split_res(res, n, tq, dv)
    dout, dlse = split_res(g, n, tq, dv)
    sc = q.dtype.type(scale)
    dq = np.empty_like(q)
    dk = np.zeros_like(k)
    dvv = np.zeros_like(v)
    kt = np.swapaxes(k, 1, 2)
    for r0 in range(0, tq, EVAL_BLOCK):
        r1 = min(r0 + EVAL_BLOCK, tq)
        ke = min(r1, tk) if causal else tk
        s = (q[:, r0:r1] @ kt[:, :, :ke]) * sc
        vis = _visible(r0, r1, ke) if causal else True
        p = np.where(vis, np.exp(s - lse[:, r0:r1, None]), 0)
        do = dout[:, r0:r1]
        dvv[:, :ke] += np.swapaxes(p, 1, 2) @ do
        dp = do @ np.swapaxes(v[:, :ke], 1, 2)
        delta = (do * out[:, r0:r1]).sum(-1) - dlse[:, r0:r1]
        ds = p * (dp - delta[..., None]) * sc
        dq[:, r0:r1] = ds @ k[:, :ke]
        dk[:, :ke] += np.swapaxes(ds, 1, 2) @ q[:, r0:r1]
    return np.concatenate([dq.ravel(), dk.ravel(), dvv.ravel()])


# ----------------------------------------------------------------------------- IR of the rules

def parts(b, flat, shapes: list[tuple[int, ...]]) -> list:
    """The consecutive parts of a flat value, each sliced and reshaped to its shape."""
    out, at = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        piece = b.emit("slice", flat, starts=(at,), stops=(at + size,), steps=(1,))
        out.append(b.reshape_to(piece, shape))
        at += size
    return out


def pack(b, values: list):
    flat = [b.reshape_to(x, (x.type.size,)) for x in values]
    total = sum(x.type.size for x in flat)
    acc, at = None, 0
    for x in flat:
        placed = b.emit("pad", x, lo=(at,), hi=(total - at - x.type.size,), interior=(0,))
        acc = placed if acc is None else b.add(acc, placed)
        at += x.type.size
    return acc


def vjp_attention(b, g, res, q, k, v, scale, causal):
    grads = b.emit("attention_grad", q, k, v, res, g, scale=scale, causal=causal)
    return tuple(parts(b, grads, [q.shape, k.shape, v.shape]))


def causal_visible(b, shape):
    """Key j visible to query i: j <= i (top-left aligned)."""
    return b.compare(b.emit("iota", shape=shape, axis=2), b.emit("iota", shape=shape, axis=1), pred="le")


def masked_exp(b, s, shift, causal: bool):
    """exp(s - shift), exactly 0 at masked keys; masked scores are replaced by 0 before the exp, so neither
    the value nor the gradient sees an inf there."""
    if not causal:
        return b.exp(b.sub(s, shift))
    vis = causal_visible(b, s.shape)
    zero = b.constant(0.0, s.type)
    return b.where(vis, b.exp(b.sub(b.where(vis, s, zero), shift)), zero)


def composite_attention_grad(b, q, k, v, res, g, scale: float, causal: bool):
    """attention_grad's math in primitives (T x T values): the function the second-order VJP differentiates."""
    n, tq, d = q.shape
    tk, dv = k.shape[1], v.shape[2]
    out, lse = parts(b, res, [(n, tq, dv), (n, tq)])
    dout, dlse = parts(b, g, [(n, tq, dv), (n, tq)])
    swap = (0, 2, 1)
    s = b.mul(b.matmul(q, b.permute(k, perm=swap)), b.constant(scale, TensorType((n, tq, tk), q.dtype)))
    lse3 = b.broadcast_to(b.reshape_to(lse, (n, tq, 1)), (n, tq, tk))
    p = masked_exp(b, s, lse3, causal)
    grad_v = b.matmul(b.permute(p, perm=swap), dout)
    dp = b.matmul(dout, b.permute(v, perm=swap))
    delta = b.sub(b.reduce_sum(b.mul(dout, out), axes=(2,)), dlse)
    delta3 = b.broadcast_to(b.reshape_to(delta, (n, tq, 1)), (n, tq, tk))
    ds = b.mul(b.mul(p, b.sub(dp, delta3)), b.constant(scale, p.type))
    grad_q = b.matmul(ds, k)
    grad_k = b.matmul(b.permute(ds, perm=swap), q)
    return pack(b, [grad_q, grad_k, grad_v])


def vjp_attention_grad(b, gg, out, q, k, v, res, g, scale, causal):
    from gradc.ir.builder import Builder, inline
    from gradc.ir.core import Function, Value
    from gradc.ir.passes.ad import ad
    sub = Builder()
    params = [Value(x.type, name=nm) for x, nm in zip((q, k, v, res, g), ("q", "k", "v", "res", "g"))]
    flat = composite_attention_grad(sub, *params, scale=scale, causal=causal)
    joint = ad(Function("attention_grad_composite", params, sub.ops, [flat]))
    results = inline(b, joint, [q, k, v, res, g, gg])
    return tuple(results[1:])


register(OpDef("attention", 3, "attention", attention_shape, eval_attention, vjp_attention, attrs=ATTRS))
register(OpDef("attention_grad", 5, "attention", attention_grad_shape, eval_attention_grad, vjp_attention_grad,
               attrs=ATTRS))


def composite_attention(b, q, k, v, scale: float, causal: bool):
    """attention's math in primitives (T x T scores): for exporters that have no fused op (MLIR)."""
    n, tq, d = q.shape
    tk = k.shape[1]
    s = b.mul(b.matmul(q, b.permute(k, perm=(0, 2, 1))), b.constant(scale, TensorType((n, tq, tk), q.dtype)))
    if causal:
        m = b.reduce_max(b.where(causal_visible(b, s.shape), s, b.constant(float("-inf"), s.type)), axes=(2,))
    else:
        m = b.reduce_max(s, axes=(2,))
    e = masked_exp(b, s, b.broadcast_to(b.reshape_to(m, (n, tq, 1)), s.shape), causal)
    total = b.reduce_sum(e, axes=(2,))
    out = b.div(b.matmul(e, v), b.broadcast_to(b.reshape_to(total, (n, tq, 1)), (n, tq, v.shape[2])))
    return pack(b, [out, b.add(m, b.log(total))])


def decompose_attention(fn):
    """Function -> Function with every attention / attention_grad op replaced by its composite of primitives."""
    from gradc.ir.builder import Builder
    from gradc.ir.core import Function
    if not any(op.opdef.kind == "attention" for op in fn.ops):
        return fn
    b = Builder()
    env = {p: p for p in fn.params}
    rules = {"attention": composite_attention, "attention_grad": composite_attention_grad}
    for op in fn.ops:
        ins = [env[x] for x in op.inputs]
        if op.name in rules:
            env[op.result] = rules[op.name](b, *ins, **op.attrs)
        else:
            env[op.result] = b.emit(op.name, *ins, **op.attrs)
    return Function(fn.name, fn.params, b.ops, [env[r] for r in fn.results], dict(fn.meta))
