"""Convolutions (torch.nn.functional.conv1d/2d, conv_transpose1d/2d) as im2col + one GEMM.

Design (a) of issue 11: a convolution decomposes at trace time into zero padding, the layout-only
window trick of gradc.nn.windows (im2col), a reshape and a matmul on gradc's BLAS path (batched over
groups). The backward is the existing VJP rules (col2im = `unwindow`, window's adjoint primitive, which
native code evaluates in gather form inside its consumer's loop; the weight gradient is a GEMM), so second
order works. The bias is added to the GEMM's channels-last rows (see _im2col_gemm). A transposed
convolution is the convolution of the stride-dilated (interior-padded) input with the flipped,
in/out-swapped kernel.
"""

from __future__ import annotations

from typing import Any, Sequence

from gradc import functional as F
from gradc.nn.windows import flip_axis, pad_zeros, windows
from gradc.tensor import Tensor, apply, torch_op

_TYPE_NAMES = {"float32": "float", "float64": "double"}


def ntuple(value: Any, n: int, name: str = "argument") -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return tuple(int(value[0]) for _ in range(n))
        if len(value) != n:
            raise RuntimeError(f"expected {name} to be a single integer value or a list of {n} values to match "
                               f"the convolution dimensions, but got {name}={list(value)}")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def check_rank(x: Tensor, nd: int, name: str) -> bool:
    """True when x has a batch dim; raises PyTorch's error for a wrong rank."""
    if x.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {name}, but got "
                           f"input of size: {list(x.shape)}")
    return x.ndim == nd + 2


def _check_common(x: Tensor, weight: Tensor, stride, padding, dilation, nd: int) -> None:
    if weight.ndim != nd + 2:
        raise RuntimeError(f"weight should have at least three dimensions and be {nd + 2}-dimensional for a "
                           f"{nd}-d convolution, got weight of size {list(weight.shape)}")
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(d <= 0 for d in dilation):
        raise RuntimeError("non-positive dilation is not supported")
    if x.dtype != weight.dtype:
        raise RuntimeError(f"expected scalar type {F.SCALAR_NAMES[x.dtype]} but found "
                           f"{F.SCALAR_NAMES[weight.dtype]}")
    if not x.dtype.is_float:
        raise RuntimeError(f"\"conv\" not implemented for '{F.SCALAR_NAMES[x.dtype]}'")


def _check_bias(weight: Tensor, bias: Tensor | None, channels: int) -> None:
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != channels):
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be 1-dimensional with "
                           f"{channels} elements, but got bias of size {list(bias.shape)} instead")


def same_padding(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """'same': total d*(k-1) per axis, the odd element on the high side (as PyTorch)."""
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    lo = tuple(t // 2 for t in total)
    return lo, tuple(t - a for t, a in zip(total, lo))


def resolve_padding(padding: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                    nd: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            return same_padding(kernel, dilation)
        raise RuntimeError(f"Invalid padding string: '{padding}'")
    p = ntuple(padding, nd, "padding")
    return p, p


def conv_nd(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any, dilation: Any,
            groups: int, nd: int, name: str) -> Tensor:
    """The shared body of conv1d/2d/3d: checks in PyTorch's order, then im2col + GEMM."""
    x, weight = F.to_tensor(x), F.to_tensor(weight)
    batched = check_rank(x, nd, name)
    stride_t = ntuple(stride, nd, "stride")
    dilation_t = ntuple(dilation, nd, "dilation")
    kernel = weight.shape[2:] if weight.ndim == nd + 2 else ()
    if isinstance(padding, str):
        _check_common(x, weight, stride_t, (0,) * nd, dilation_t, nd)
        lo, hi = resolve_padding(padding, kernel, stride_t, dilation_t, nd)
    else:
        lo, hi = resolve_padding(padding, kernel, stride_t, dilation_t, nd)
        _check_common(x, weight, stride_t, lo, dilation_t, nd)
    if not batched:
        x = apply("reshape", x, shape=(1,) + x.shape)
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    out_channels, group_channels = weight.shape[0], weight.shape[1]
    if out_channels % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size [{list(weight.shape)}] instead")
    if x.shape[1] != group_channels * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected input"
                           f"{list(x.shape)} to have {group_channels * groups} channels, but got {x.shape[1]} "
                           f"channels instead")
    _check_bias(weight, bias, out_channels)
    spatial = x.shape[2:]
    padded = [s + a + b for s, a, b in zip(spatial, lo, hi)]
    effective = [d * (k - 1) + 1 for k, d in zip(kernel, dilation_t)]
    if any(p < e for p, e in zip(padded, effective)):
        raise RuntimeError(f"Calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
                           f"Kernel size: ({' x '.join(map(str, effective))}). Kernel size can't be greater "
                           f"than actual input size")
    out = _im2col_gemm(x, weight, lo, hi, stride_t, dilation_t, groups, bias)
    return out if batched else apply("reshape", out, shape=out.shape[1:])


def _add_bias(y: Tensor, bias: Tensor | None, channel_axis: int) -> Tensor:
    if bias is None:
        return y
    shape = [1] * y.ndim
    shape[channel_axis] = bias.shape[0]
    return F.add(y, F.reshape(bias, tuple(shape)))


def _im2col_gemm(x: Tensor, weight: Tensor, lo, hi, stride, dilation, groups: int,
                 bias: Tensor | None = None) -> Tensor:
    """The convolution (plus bias) as im2col + GEMM; the result is a permuted view of the GEMM's
    channels-last rows, and the bias is added there (channels last): its gradient is then a reduction over
    the same channels-last loop that writes the cotangent for the weight-gradient GEMM (one pass, not a
    second one in NCHW order striding through the cotangent)."""
    nd = x.ndim - 2
    n, c = x.shape[:2]
    kernel = weight.shape[2:]
    cout = weight.shape[0]
    cols = windows(pad_zeros(x, (0, 0) + tuple(lo), (0, 0) + tuple(hi)), 2, kernel, stride, dilation)
    out_spatial = cols.shape[2:2 + nd]
    taps = 1
    for k in kernel:
        taps *= k
    positions = n
    for o in out_spatial:
        positions *= o
    cg, coutg = c // groups, cout // groups
    # columns ordered (*K, C), channels innermost: the im2col loop then reads and writes contiguous channel
    # runs of an NHWC producer (a GEMM result) and vectorizes; the small weight is permuted to match
    w_perm = (0,) + tuple(range(2, 2 + nd)) + (1,)  # (Cout, C, *K) -> (Cout, *K, C)
    if groups == 1:
        # (N, C, *O, *K) -> (N, *O, *K, C) -> (N*prod(O), prod(K)*C)
        perm = (0,) + tuple(range(2, 2 + 2 * nd)) + (1,)
        a = apply("reshape", apply("permute", cols, perm=perm), shape=(positions, c * taps))
        wk = apply("permute", weight, perm=w_perm) if nd else weight
        wm = apply("permute", apply("reshape", wk, shape=(cout, c * taps)), perm=(1, 0))
        y = apply("matmul", a, wm)  # (N*prod(O), Cout)
        y = _add_bias(apply("reshape", y, shape=(n,) + out_spatial + (cout,)), bias, nd + 1)
        return apply("permute", y, perm=(0, nd + 1) + tuple(range(1, nd + 1)))
    # grouped: (N, G, Cg, *O, *K) -> (G, N, *O, *K, Cg) -> (G, N*prod(O), prod(K)*Cg), batched GEMM over G
    split = apply("reshape", cols, shape=(n, groups, cg) + cols.shape[2:])
    perm = (1, 0) + tuple(range(3, 3 + 2 * nd)) + (2,)  # (G, N, *O, *K, Cg)
    a = apply("reshape", apply("permute", split, perm=perm), shape=(groups, positions, cg * taps))
    wk = apply("permute", weight, perm=w_perm)
    wm = apply("permute", apply("reshape", wk, shape=(groups, coutg, cg * taps)), perm=(0, 2, 1))
    y = apply("matmul", a, wm)  # (G, N*prod(O), Coutg)
    y = apply("reshape", y, shape=(groups, n) + out_spatial + (coutg,))
    y = apply("permute", y, perm=(1, 0, nd + 2) + tuple(range(2, nd + 2)))
    return _add_bias(apply("reshape", y, shape=(n, cout) + out_spatial), bias, 1)


@torch_op("ConvolutionBackward0")
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 1, "conv1d")


@torch_op("ConvolutionBackward0")
def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1) -> Tensor:
    return conv_nd(input, weight, bias, stride, padding, dilation, groups, 2, "conv2d")


def conv_transpose_nd(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any,
                      output_padding: Any, groups: int, dilation: Any, nd: int, name: str) -> Tensor:
    x, weight = F.to_tensor(x), F.to_tensor(weight)
    batched = check_rank(x, nd, name)
    stride_t = ntuple(stride, nd, "stride")
    pad_t = ntuple(padding, nd, "padding")
    out_pad = ntuple(output_padding, nd, "output_padding")
    dilation_t = ntuple(dilation, nd, "dilation")
    _check_common(x, weight, stride_t, pad_t, dilation_t, nd)
    if any(p < 0 for p in out_pad):
        raise RuntimeError("negative output_padding is not supported")
    if any(op >= s and op >= d for op, s, d in zip(out_pad, stride_t, dilation_t)):
        raise RuntimeError("output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={list(out_pad)} stride={list(stride_t)} dilation={list(dilation_t)}")
    if not batched:
        x = apply("reshape", x, shape=(1,) + x.shape)
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    cin, coutg = weight.shape[0], weight.shape[1]
    if cin % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size [{list(weight.shape)}] instead")
    if x.shape[1] != cin:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected input"
                           f"{list(x.shape)} to have {cin} channels, but got {x.shape[1]} channels instead")
    cout = coutg * groups
    _check_bias(weight, bias, cout)
    kernel = weight.shape[2:]
    out_spatial = [(s - 1) * st - 2 * p + d * (k - 1) + op + 1
                   for s, st, p, d, k, op in zip(x.shape[2:], stride_t, pad_t, dilation_t, kernel, out_pad)]
    if any(o <= 0 for o in out_spatial):
        raise RuntimeError(f"Given input size per channel: ({' x '.join(map(str, x.shape[2:]))}). Calculated "
                           f"output size per channel: ({' x '.join(map(str, out_spatial))}). Output size is too "
                           f"small")
    # the stride dilates the input; the padding becomes d*(k-1) - p on each side (+ output_padding high)
    dilated = apply("pad", x, lo=(0,) * x.ndim, hi=(0,) * x.ndim, interior=(0, 0) + tuple(s - 1 for s in stride_t))
    lo = tuple(d * (k - 1) - p for d, k, p in zip(dilation_t, kernel, pad_t))
    hi = tuple(a + op for a, op in zip(lo, out_pad))
    # weight (Cin, Coutg, *K) -> (G*Coutg, Cin/G, *K), spatially flipped
    cing = cin // groups
    w = apply("reshape", weight, shape=(groups, cing, coutg) + kernel)
    w = apply("permute", w, perm=(0, 2, 1) + tuple(range(3, 3 + nd)))
    w = apply("reshape", w, shape=(cout, cing) + kernel)
    for axis in range(2, 2 + nd):
        w = flip_axis(w, axis)
    src = pad_zeros(dilated, (0, 0) + lo, (0, 0) + hi)
    out = _im2col_gemm(src, w, (0,) * nd, (0,) * nd, (1,) * nd, dilation_t, groups, bias)
    return out if batched else apply("reshape", out, shape=out.shape[1:])


@torch_op("ConvolutionBackward0")
def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    return conv_transpose_nd(input, weight, bias, stride, padding, output_padding, groups, dilation, 1,
                             "conv_transpose1d")


@torch_op("ConvolutionBackward0")
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
                     output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    return conv_transpose_nd(input, weight, bias, stride, padding, output_padding, groups, dilation, 2,
                             "conv_transpose2d")
