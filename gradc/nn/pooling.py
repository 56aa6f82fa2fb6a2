"""Pooling (max/avg, adaptive) as windows + reductions: IR, not Python loops.

Max pooling takes the windows of gradc.nn.windows (padding -inf) and picks, in each window, the FIRST
maximum (PyTorch's tie rule: it gets the whole gradient; with NaNs the last NaN, as PyTorch's CPU kernel): a
reduce_max over "taps from the end" of the hits finds the first one, and the output is the sum of the
window masked to that single tap, so the forward is exact and the VJP sends the gradient to one input.
Average pooling is a window sum times a constant divisor map (count_include_pad, ceil_mode and
divisor_override decide it). Adaptive pooling and interpolation are separable linear maps per axis
(constant matrices through the GEMM path; each output is an exact weighted sum).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from gradc import functional as F
from gradc.nn.conv import ntuple
from gradc.nn.windows import concat, constant, move_axis_last, move_last_axis_to, pad_constant, slice_axis, windows
from gradc.tensor import Tensor, apply, torch_op


def _pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = d * (k - 1) + 1
    numer = size + 2 * p - span + ((s - 1) if ceil_mode else 0)
    out = numer // s + 1
    if ceil_mode and (out - 1) * s >= size + p:  # the last window must start inside the input or left padding
        out -= 1
    return out


def _pool_args(x: Tensor, nd: int, kernel_size: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool,
               name: str):
    if x.ndim not in (nd + 1, nd + 2) or 0 in x.shape[1 if x.ndim == nd + 2 else 0:]:
        raise RuntimeError(f"non-empty {nd + 1}D or {nd + 2}D (batch mode) tensor expected for input")
    k = ntuple(kernel_size, nd, "kernel_size")
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else ntuple(stride, nd, "stride")
    p = ntuple(padding, nd, "padding")
    d = ntuple(dilation, nd, "dilation")
    if any(v <= 0 for v in k):
        raise RuntimeError(f"kernel size should be greater than zero, but got kernel_size={list(k)}")
    if any(v == 0 for v in s):
        raise RuntimeError("stride should not be zero")
    if any(v < 0 for v in s):
        raise RuntimeError(f"stride should be greater than zero, but got stride={list(s)}")
    if any(v <= 0 for v in d):
        raise RuntimeError(f"dilation should be greater than zero, but got dilation={list(d)}")
    if any(v < 0 for v in p):
        raise RuntimeError("negative padding is not supported")
    for kk, pp, dd in zip(k, p, d):
        if pp > (dd * (kk - 1) + 1) // 2:
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={pp}, "
                               f"kernel_size={kk} and dilation={dd}")
    spatial = x.shape[-nd:]
    out = tuple(_pool_output_size(n, kk, ss, pp, dd, ceil_mode) for n, kk, ss, pp, dd in zip(spatial, k, s, p, d))
    if any(o <= 0 for o in out):
        lead = x.shape[-nd - 1]
        raise RuntimeError(f"Given input size: ({'x'.join(map(str, (lead,) + spatial))}). Calculated output size: "
                           f"({'x'.join(map(str, (lead,) + out))}). Output size is too small")
    return k, s, p, d, out


def _as_batched(x: Tensor, nd: int) -> tuple[Tensor, bool]:
    if x.ndim == nd + 2:
        return x, True
    return apply("reshape", x, shape=(1,) + x.shape), False


def _windowed(x: Tensor, nd: int, k, s, p, d, out, fill: float, first: int = 2) -> Tensor:
    """(N, C, *S) -> (N, C, *O, *K) with `fill` in the padding (and in ceil_mode's overhang); with first=1,
    x is channels-last (N, *S, C) and the result (N, *O, C, *K)."""
    spatial = x.shape[first:first + nd]
    hi = [max((o - 1) * ss + dd * (kk - 1) + 1 - (n + pp), pp)
          for o, ss, dd, kk, n, pp in zip(out, s, d, k, spatial, p)]
    lo_all, hi_all = [0] * x.ndim, [0] * x.ndim
    lo_all[first:first + nd], hi_all[first:first + nd] = p, hi
    padded = pad_constant(x, tuple(lo_all), tuple(hi_all), fill)
    w = windows(padded, first, k, s, d)
    for i in range(nd):  # ceil_mode may give one window more than fits without the overhang: keep `out`
        w = slice_axis(w, first + i, 0, out[i])
    return w  # the tap axes stay separate (a merging reshape would cost div/mod per element)


def _keep(v: Tensor, w: Tensor, axes: tuple[int, ...]) -> Tensor:
    """A reduction over `axes` broadcast back to w's shape."""
    kept = tuple(1 if i in axes else d for i, d in enumerate(w.shape))
    return apply("broadcast_to", apply("reshape", v, shape=kept), shape=w.shape)


def first_max_mask(w: Tensor, ntaps: int = 1) -> Tensor:
    """Bool mask of the first maximum (row-major over the last `ntaps` axes); with NaNs, the last NaN
    (PyTorch's CPU kernel updates on `val > max || isnan(val)`)."""
    axes = tuple(range(w.ndim - ntaps, w.ndim))
    taps = int(np.prod(w.shape[w.ndim - ntaps:]))
    ws = apply("stop_gradient", w)
    hit = apply("compare", ws, _keep(apply("reduce_max", ws, axes=axes), w, axes), pred="eq")
    nan = apply("compare", ws, ws, pred="ne")
    tap = None  # the row-major tap number, from one iota per tap axis
    for axis in axes:
        i = apply("cast", apply("iota", shape=w.shape, axis=axis), dtype=w.dtype)
        tap = i if tap is None else apply("add", apply("mul", tap, constant(float(w.shape[axis]), w.shape, w)), i)
    rank = apply("sub", constant(float(taps), w.shape, w), tap)  # first tap scores highest
    nan_rank = apply("add", constant(float(taps + 1), w.shape, w), tap)  # any NaN beats any hit
    score = apply("where", nan, nan_rank, apply("where", hit, rank, constant(0.0, w.shape, w)))
    return apply("compare", score, _keep(apply("reduce_max", score, axes=axes), w, axes), pred="eq")


# windows of at most this many taps pool as one select chain over the taps (_max_pool_select_chain)
SELECT_CHAIN_MAX_TAPS = 9


def _max_pool_select_chain(xb: Tensor, nd: int, k, s, p, d, out) -> Tensor:
    """Max pooling as PyTorch's CPU kernel runs it, unrolled over the taps: best = tap 0, then for each
    later tap in row-major order best = tap where (tap > best or tap is NaN): the first maximum, the last
    NaN, and the output IS the selected element (-0.0 stays -0.0). Each tap is a slice of the windows, so
    the forward is one elementwise pass over the output (the first-max mask of first_max_mask took three
    reductions over the windows) and the VJP (where sends g to the selected branch, slices pad back,
    unwindow gathers) is one pass in gather form. Channels last when the source is (see
    _channels_last_source)."""
    last = _channels_last_source(xb, nd)
    src = apply("permute", xb, perm=(0,) + tuple(range(2, 2 + nd)) + (1,)) if last else xb
    w = _windowed(src, nd, k, s, p, d, out, -math.inf, first=1 if last else 2)
    lead = w.shape[:w.ndim - nd]
    best = None
    for tap in np.ndindex(*k):
        starts = (0,) * len(lead) + tuple(tap)
        t = apply("slice", w, starts=starts, stops=lead + tuple(i + 1 for i in tap), steps=(1,) * w.ndim)
        t = apply("reshape", t, shape=lead)
        if best is None:
            best = t
            continue
        take = apply("where", apply("compare", t, t, pred="ne"), apply("compare", t, t, pred="ne"),
                     apply("compare", t, best, pred="gt"))
        best = apply("where", take, t, best)
    if last:
        best = apply("permute", best, perm=(0, nd + 1) + tuple(range(1, nd + 1)))
    return best


def _channels_last_source(x: Tensor, nd: int) -> bool:
    """True when traced x is, through one-input elementwise ops (relu), a permute of a channels-last
    (N, *S, C) value; an NCHW (or channels-first CNHW, gradc's conv output) source keeps its spatial axes
    innermost: W7's pool on a channels-first conv output took 3x longer channels last (a stride of N*H*W)."""
    v = x._value
    while v is not None and v.op is not None:
        op = v.op
        if op.name == "permute":
            return tuple(op.attrs["perm"]) == (0, nd + 1) + tuple(range(1, nd + 1))
        if op.opdef.kind != "elementwise" or len(op.inputs) != 1:
            return False
        v = op.inputs[0]
    return False


def _max_pool(x: Tensor, nd: int, kernel_size, stride, padding, dilation, ceil_mode, return_indices, name):
    x = F.to_tensor(x)
    k, s, p, d, out = _pool_args(x, nd, kernel_size, stride, padding, dilation, ceil_mode, name)
    xb, batched = _as_batched(x, nd)
    if not return_indices and int(np.prod(k)) <= SELECT_CHAIN_MAX_TAPS:
        pooled = _max_pool_select_chain(xb, nd, k, s, p, d, out)
        return pooled if batched else apply("reshape", pooled, shape=pooled.shape[1:])
    if not return_indices and _channels_last_source(xb, nd):
        # channels last: the loops' inner axes then run along the channels of a channels-last producer (a
        # permuted (N, *S, C) value, e.g. a conv's GEMM rows), not across them with a stride of C elements
        xl = apply("permute", xb, perm=(0,) + tuple(range(2, 2 + nd)) + (1,))
        w = _windowed(xl, nd, k, s, p, d, out, -math.inf, first=1)
        mask = first_max_mask(w, nd)
        axes = tuple(range(w.ndim - nd, w.ndim))
        pooled = apply("reduce_sum", apply("where", mask, w, constant(0.0, w.shape, w)), axes=axes)
        pooled = apply("permute", pooled, perm=(0, nd + 1) + tuple(range(1, nd + 1)))
        return pooled if batched else apply("reshape", pooled, shape=pooled.shape[1:])
    w = _windowed(xb, nd, k, s, p, d, out, -math.inf)
    mask = first_max_mask(w, nd)
    axes = tuple(range(w.ndim - nd, w.ndim))
    pooled = apply("reduce_sum", apply("where", mask, w, constant(0.0, w.shape, w)), axes=axes)
    if not batched:
        pooled = apply("reshape", pooled, shape=pooled.shape[1:])
    if not return_indices:
        return pooled
    index = apply("reduce_sum", apply("where", mask, _tap_positions(xb, nd, k, s, p, d, out, w.shape),
                                      apply("const", value=0, shape=w.shape, dtype=F.int64)), axes=axes)
    if not batched:
        index = apply("reshape", index, shape=index.shape[1:])
    return pooled, index


def _tap_positions(x: Tensor, nd: int, k, s, p, d, out, shape) -> Tensor:
    """Flat input index (over the spatial dims) of every window tap, as PyTorch's return_indices."""
    spatial = x.shape[2:]
    grids = []
    for i in range(nd):
        o = np.arange(out[i])[:, None] * s[i] - p[i] + np.arange(k[i])[None, :] * d[i]  # (O_i, K_i)
        grids.append(o)
    flat = np.zeros(tuple(out) + tuple(k), dtype=np.int64)
    for i in range(nd):
        g = grids[i]
        sh = [1] * (2 * nd)
        sh[i], sh[nd + i] = out[i], k[i]
        flat = flat * spatial[i] + g.reshape(sh)
    return F.expand_to(Tensor(flat), shape)


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    return _max_pool_op(input, 1, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    return _max_pool_op(input, 2, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@torch_op(lambda x, nd, *a: "MaxPool2DWithIndicesBackward0" if nd == 2 else "SqueezeBackward1")
def _max_pool_op(x, nd, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    return _max_pool(x, nd, kernel_size, stride, padding, dilation, ceil_mode, return_indices, f"max_pool{nd}d")


def _avg_divisor(spatial, k, s, p, out, count_include_pad: bool) -> np.ndarray:
    sizes = []
    for n, kk, ss, pp, o in zip(spatial, k, s, p, out):
        start = np.arange(o) * ss - pp
        end = np.minimum(start + kk, n + pp)
        size = end - start
        if not count_include_pad:
            size = np.minimum(end, n) - np.maximum(start, 0)
        sizes.append(size)
    div = sizes[0].astype(np.float64)
    for sz in sizes[1:]:
        div = div[..., None] * sz
    return div


def _avg_pool(x, nd, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = F.to_tensor(x)
    k, s, p, d, out = _pool_args(x, nd, kernel_size, stride, padding, 1, ceil_mode, f"avg_pool{nd}d")
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    xb, batched = _as_batched(x, nd)
    w = _windowed(xb, nd, k, s, p, d, out, 0.0)
    total = apply("reduce_sum", w, axes=tuple(range(w.ndim - nd, w.ndim)))
    if divisor_override is not None:
        scale = np.full(tuple(out), 1.0 / divisor_override)
    else:
        scale = 1.0 / _avg_divisor(xb.shape[2:], k, s, p, out, count_include_pad)
    pooled = F.mul(total, Tensor(scale.astype(x.dtype.numpy)))
    return pooled if batched else apply("reshape", pooled, shape=pooled.shape[1:])


@torch_op("AvgPool2DBackward0")
def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    return _avg_pool(input, 1, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


@torch_op("AvgPool2DBackward0")
def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    return _avg_pool(input, 2, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


# ----------------------------------------------------------------------------- separable linear maps

def along_axis(x: Tensor, axis: int, matrix: np.ndarray) -> Tensor:
    """y[..., o, ...] = sum_i x[..., i, ...] matrix[i, o] along `axis` (a GEMM with a constant)."""
    t = move_axis_last(x, axis)
    lead = t.shape[:-1]
    rows = int(np.prod(lead))
    m = Tensor(np.ascontiguousarray(matrix, dtype=x.dtype.numpy))
    y = F.matmul(apply("reshape", t, shape=(rows, t.shape[-1])), m)
    return move_last_axis_to(apply("reshape", y, shape=lead + (matrix.shape[1],)), axis)


def adaptive_bounds(size: int, out: int) -> list[tuple[int, int]]:
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def _adaptive_avg_matrix(size: int, out: int) -> np.ndarray:
    m = np.zeros((size, out))
    for o, (a, b) in enumerate(adaptive_bounds(size, out)):
        m[a:b, o] = 1.0 / (b - a)
    return m


def _adaptive_out(output_size: Any, spatial: Sequence[int], nd: int) -> tuple[int, ...]:
    sizes = ntuple(output_size, nd, "output_size") if not isinstance(output_size, (list, tuple)) else \
        tuple(spatial[i] if v is None else int(v) for i, v in enumerate(output_size))
    if len(sizes) != nd:
        raise ValueError(f"output_size must be an int or a tuple of {nd} values")
    if any(v < 0 for v in sizes):
        raise RuntimeError(f"adaptive_avg_pool{nd}d: elements of output_size must be greater than or equal to 0 "
                           f"but received {list(sizes)}")
    return sizes


def _adaptive_check(x: Tensor, nd: int, name: str) -> None:
    if x.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{name}(): Expected {nd + 1}D or {nd + 2}D tensor, but got {list(x.shape)}")
    if 0 in x.shape[-nd:]:
        raise RuntimeError(f"{name}(): Expected input to have non-zero size for non-batch dimensions, but input "
                           f"has sizes {list(x.shape)} with dimension {x.shape.index(0)} being empty")


def _adaptive_avg(x: Tensor, output_size: Any, nd: int) -> Tensor:
    x = F.to_tensor(x)
    _adaptive_check(x, nd, f"adaptive_avg_pool{nd}d")
    out = _adaptive_out(output_size, x.shape[-nd:], nd)
    y = x
    for i in range(nd):
        axis = x.ndim - nd + i
        y = along_axis(y, axis, _adaptive_avg_matrix(x.shape[axis], out[i]))
    return y


@torch_op("AdaptiveAvgPool2DBackward0")
def adaptive_avg_pool1d(input: Tensor, output_size: Any) -> Tensor:
    return _adaptive_avg(input, output_size, 1)


@torch_op("AdaptiveAvgPool2DBackward0")
def adaptive_avg_pool2d(input: Tensor, output_size: Any) -> Tensor:
    return _adaptive_avg(input, output_size, 2)


def _adaptive_max_axis(x: Tensor, axis: int, out: int) -> Tensor:
    """First-max over each adaptive window along one axis (max pooling is separable: row-major first max
    is the first max of the per-row first maxima)."""
    pieces = []
    for a, b in adaptive_bounds(x.shape[axis], out):
        w = move_axis_last(slice_axis(x, axis, a, b), axis)
        mask = first_max_mask(w)
        picked = apply("reduce_sum", apply("where", mask, w, constant(0.0, w.shape, w)), axes=(w.ndim - 1,))
        pieces.append(apply("reshape", picked, shape=picked.shape[:axis] + (1,) + picked.shape[axis:]))
    return concat(pieces, axis)


@torch_op("AdaptiveMaxPool2DBackward0")
def adaptive_max_pool2d(input: Tensor, output_size: Any, return_indices: bool = False) -> Tensor:
    x = F.to_tensor(input)
    _adaptive_check(x, 2, "adaptive_max_pool2d")
    if return_indices:
        raise NotImplementedError("gradc: adaptive_max_pool2d(return_indices=True) is not supported")
    out = _adaptive_out(output_size, x.shape[-2:], 2)
    y = _adaptive_max_axis(x, x.ndim - 1, out[1])
    return _adaptive_max_axis(y, x.ndim - 2, out[0])
