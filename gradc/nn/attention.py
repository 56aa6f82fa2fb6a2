"""Scaled dot-product attention and nn.MultiheadAttention.

Without a mask and without dropout, SDPA is ONE fused `attention` primitive (gradc/ir/attention.py: flash
style natively, the backward recomputes the probabilities from the saved log-sum-exp, nothing T x T is kept);
GRADC_FUSED_ATTENTION=0 turns that off. Masks, dropout and broadcast batch dims use the composites below.

scaled_dot_product_attention follows PyTorch's math reference: scores = q k^T * scale, a boolean mask
(True = attend) becomes -inf where False, a float mask is added, is_causal keeps key j <= query i
(top-left aligned, also for T_q != T_k; refused together with attn_mask, as documented), and a row whose
scores are all -inf gives zeros (PyTorch's safe softmax) instead of NaN. MultiheadAttention keeps
PyTorch's parameter names (in_proj_weight or q/k/v_proj_weight, in_proj_bias, out_proj.*) so a state_dict
moves between the two, and PyTorch's opposite mask convention (True = do NOT attend).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradc import functional as F
from gradc import shape_ops as S
from gradc.ir.core import DType, bool_, float32
from gradc.nn import init, ops
from gradc.nn.layers import Linear
from gradc.nn.module import Module, Parameter
from gradc.tensor import Tensor, apply, torch_op

NEG_INF = float("-inf")
# causal attention over at least CAUSAL_BLOCKED_MIN queries runs per block of CAUSAL_BLOCK queries, each
# against only the keys it can see (j <= i): ~(n + 1) / 2n of the T x T work and memory for n blocks
CAUSAL_BLOCK = 64
CAUSAL_BLOCKED_MIN = 128
# SDPA without a mask and without dropout runs as the fused `attention` primitive (off: the composite)
FUSED = __import__("os").environ.get("GRADC_FUSED_ATTENTION", "1") != "0"


def _safe_softmax(scores: Tensor) -> Tensor:
    """softmax over the last axis; rows of all -inf give 0 (and no gradient), as PyTorch's _safe_softmax."""
    d = scores.ndim - 1
    shift = apply("stop_gradient", F.amax(scores, dim=d, keepdim=True))
    dead = F.compare("eq", shift, NEG_INF)
    shift = F.where(dead, 0.0, shift)
    e = F.exp(F.sub(scores, shift))
    total = F.sum(e, dim=d, keepdim=True)
    total = F.where(dead, 1.0, total)
    return F.div(e, total)


def _mask_scores(scores: Tensor, mask: Tensor) -> Tensor:
    try:
        shape = F.broadcast_shapes(mask.shape, scores.shape)
    except RuntimeError as e:
        raise RuntimeError(f"attn_mask of shape {list(mask.shape)} does not broadcast to the attention scores of "
                           f"shape {list(scores.shape)}: {e}") from None
    if shape != scores.shape:
        raise RuntimeError(f"attn_mask of shape {list(mask.shape)} does not broadcast to the attention scores of "
                           f"shape {list(scores.shape)}")
    if mask.dtype == bool_:
        return S.masked_fill(scores, F.compare("eq", mask, False), NEG_INF)
    return F.add(scores, F.cast(mask, scores.dtype))


def _causal_mask(L: int, S_: int) -> Tensor:
    row = apply("iota", shape=(L, S_), axis=0)
    col = apply("iota", shape=(L, S_), axis=1)
    return F.compare("le", col, row)


def attention_weights(q: Tensor, k: Tensor, attn_mask: Any = None, is_causal: bool = False,
                      scale: float | None = None) -> Tensor:
    """softmax(q k^T * scale + mask) with PyTorch's mask rules; shape (..., L, S)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = F.matmul(F.mul(q, scale), F.transpose(k, -2, -1))  # scaling q: L*D products, not L*S
    if attn_mask is None:
        if is_causal:  # key 0 is always visible: no row is fully masked, a plain softmax suffices
            scores = _mask_scores(scores, _causal_mask(q.shape[-2], k.shape[-2]))
        return F.softmax(scores, -1)
    if is_causal:
        scores = _mask_scores(scores, _causal_mask(q.shape[-2], k.shape[-2]))
    scores = _mask_scores(scores, F.to_tensor(attn_mask))
    return _safe_softmax(scores)


@torch_op("ScaledDotProductFlashAttentionForCpuBackward0")
def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Any = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False) -> Tensor:
    """torch.nn.functional.scaled_dot_product_attention (the math definition, composite)."""
    q, k, v = F.to_tensor(query), F.to_tensor(key), F.to_tensor(value)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim < 2 or not t.dtype.is_float:
            raise RuntimeError(f"scaled_dot_product_attention: {name} must be a floating point tensor of at least "
                               f"2 dimensions, got {t.dtype.name} of shape {list(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{q.dtype.name} key.dtype: {k.dtype.name} and value.dtype: {v.dtype.name} instead.")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise RuntimeError(f"scaled_dot_product_attention: query {list(q.shape)}, key {list(k.shape)} and value "
                           f"{list(v.shape)} do not fit (query and key need one embedding size, key and value "
                           "one sequence length)")
    if enable_gqa and q.ndim >= 3 and k.shape[-3] != q.shape[-3]:
        hq, hk, hv = q.shape[-3], k.shape[-3], v.shape[-3]
        if hq % hk or hq % hv:
            raise RuntimeError("Number of heads in key and value must divide the number of heads in query")
        k = S.repeat_interleave(k, hq // hk, -3)
        v = S.repeat_interleave(v, hq // hv, -3)
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {dropout_p}")
    same_batch = q.ndim >= 3 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    if attn_mask is None and dropout_p == 0.0 and FUSED and same_batch:
        return fused_attention(q, k, v, is_causal, scale)
    if is_causal and dropout_p == 0.0 and q.shape[-2] >= CAUSAL_BLOCKED_MIN:
        return _blocked_causal(q, k, v, scale)
    weights = attention_weights(q, k, attn_mask, is_causal, scale)
    if dropout_p > 0.0:
        weights = ops.dropout(weights, dropout_p, True)
    return F.matmul(weights, v)


def fused_attention(q: Tensor, k: Tensor, v: Tensor, is_causal: bool, scale: float | None) -> Tensor:
    """SDPA without a mask as ONE `attention` primitive (ir/attention.py: flash-style natively, the backward
    recomputes the probabilities from the saved log-sum-exp) over the batch dims flattened."""
    lead, (L, E), (S_, Ev) = q.shape[:-2], q.shape[-2:], v.shape[-2:]
    n = int(np.prod(lead, dtype=np.int64))
    scale = 1.0 / math.sqrt(E) if scale is None else float(scale)
    packed = apply("attention", apply("reshape", q, shape=(n, L, E)), apply("reshape", k, shape=(n, S_, E)),
                   apply("reshape", v, shape=(n, S_, Ev)), scale=scale, causal=bool(is_causal))
    out = apply("slice", packed, starts=(0,), stops=(n * L * Ev,), steps=(1,))
    return apply("reshape", out, shape=tuple(lead) + (L, Ev))


def _blocked_causal(q: Tensor, k: Tensor, v: Tensor, scale: float | None) -> Tensor:
    """Causal attention per query block [r0, r1): its keys are the first min(r1, S) (top-left alignment)."""
    L, S_ = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs = []
    for r0 in range(0, L, CAUSAL_BLOCK):
        r1 = min(r0 + CAUSAL_BLOCK, L)
        keys = min(r1, S_)
        qb = S.narrow(q, -2, r0, r1 - r0)
        kb, vb = S.narrow(k, -2, 0, keys), S.narrow(v, -2, 0, keys)
        scores = F.matmul(F.mul(qb, scale), F.transpose(kb, -2, -1))
        row = F.add(apply("iota", shape=(r1 - r0, keys), axis=0), r0)
        visible = F.compare("le", apply("iota", shape=(r1 - r0, keys), axis=1), row)
        scores = _mask_scores(scores, visible)
        outs.append(F.matmul(F.softmax(scores, -1), vb))
    return outs[0] if len(outs) == 1 else S.cat(outs, -2)


# ----------------------------------------------------------------------------- MultiheadAttention

def _merge_masks(attn_mask: Any, key_padding_mask: Any, batch: int, heads: int, L: int, S_: int,
                 dtype: DType) -> Tensor | None:
    """PyTorch's MHA masks (True = masked out, or float added) as one float mask of shape (N, H, L, S)."""
    def as_float(mask: Any, what: str) -> Tensor:
        m = F.to_tensor(mask)
        if m.dtype == bool_:
            return F.cast(F.where(m, NEG_INF, 0.0), dtype)
        if not m.dtype.is_float:
            raise AssertionError(f"only bool and floating types of {what} are supported")
        return F.cast(m, dtype)

    merged = None
    if attn_mask is not None:
        m = as_float(attn_mask, "attn_mask")
        if m.ndim == 2:
            if m.shape != (L, S_):
                raise RuntimeError(f"The shape of the 2D attn_mask is {tuple(m.shape)}, but should be {(L, S_)}.")
            m = F.reshape(m, (1, 1, L, S_))
        elif m.ndim == 3:
            if m.shape != (batch * heads, L, S_):
                raise RuntimeError(f"The shape of the 3D attn_mask is {tuple(m.shape)}, but should be "
                                   f"{(batch * heads, L, S_)}.")
            m = F.reshape(m, (batch, heads, L, S_))
        else:
            raise RuntimeError(f"attn_mask's dimension {m.ndim} is not supported")
        merged = m
    if key_padding_mask is not None:
        kp = as_float(key_padding_mask, "key_padding_mask")
        if kp.shape != (batch, S_):
            raise AssertionError(f"expecting key_padding_mask shape of {(batch, S_)}, but got {tuple(kp.shape)}")
        kp = F.reshape(kp, (batch, 1, 1, S_))
        merged = kp if merged is None else F.add(merged, kp)
    return merged


class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention (no add_bias_kv / add_zero_attn)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, dtype: DType | None = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("gradc's MultiheadAttention does not support add_bias_kv or add_zero_attn")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads, self.dropout, self.batch_first = num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        np_dtype = (dtype or float32).numpy
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.zeros((3 * embed_dim, embed_dim), np_dtype))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = Parameter(np.zeros((embed_dim, embed_dim), np_dtype))
            self.k_proj_weight = Parameter(np.zeros((embed_dim, self.kdim), np_dtype))
            self.v_proj_weight = Parameter(np.zeros((embed_dim, self.vdim), np_dtype))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, np_dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def _projections(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        E = self.embed_dim
        b = self.in_proj_bias
        biases = (None, None, None) if b is None else S.split(b, E)
        if self._qkv_same_embed_dim:
            wq, wk, wv = S.split(self.in_proj_weight, E)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        if self._qkv_same_embed_dim and query is key is value:  # self-attention: one fused projection
            q, k, v = S.chunk(ops.linear(query, self.in_proj_weight, b), 3, -1)
            return q, k, v
        return (ops.linear(query, wq, biases[0]), ops.linear(key, wk, biases[1]),
                ops.linear(value, wv, biases[2]))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Any = None,
                need_weights: bool = True, attn_mask: Any = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer "
                               "module method `generate_square_subsequent_mask` to create this mask.")
        unbatched = query.ndim == 2
        if query.ndim not in (2, 3):
            raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D "
                                 "query tensor")
        if unbatched:
            query, key, value = (F.unsqueeze(t, 0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = F.unsqueeze(F.to_tensor(key_padding_mask), 0)
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (F.transpose(t, 0, 1) for t in (query, key, value))
        if query.shape[-1] != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {query.shape[-1]}")
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key shape {tuple(key.shape)} does not match value shape {tuple(value.shape)}")
        N, L, E = query.shape
        S_ = key.shape[1]
        H, D = self.num_heads, self.head_dim
        q, k, v = self._projections(query, key, value)
        q, k, v = (F.transpose(F.reshape(t, (N, t.shape[1], H, D)), 1, 2) for t in (q, k, v))
        mask = _merge_masks(attn_mask, key_padding_mask, N, H, L, S_, q.dtype)
        weights = attention_weights(q, k, mask)
        if self.dropout > 0.0 and self.training:
            weights = ops.dropout(weights, self.dropout, True)
        out = F.reshape(F.transpose(F.matmul(weights, v), 1, 2), (N, L, E))
        out = self.out_proj(out)
        if unbatched:
            out = F.squeeze(out, 0)
        elif not self.batch_first:
            out = F.transpose(out, 0, 1)
        if not need_weights:
            return out, None
        w = F.mean(weights, dim=1) if average_attn_weights else weights
        return out, (F.squeeze(w, 0) if unbatched else w)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"MultiheadAttention(\n  (out_proj): NonDynamicallyQuantizableLinear(in_features={self.embed_dim}, " \
               f"out_features={self.embed_dim}, bias={self.out_proj.bias is not None})\n)"
