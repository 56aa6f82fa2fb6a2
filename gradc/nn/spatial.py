"""F.pad (constant, reflect, replicate, circular), F.interpolate (nearest, linear/bilinear), F.dropout2d.

All are layout primitives, selects and constant GEMMs: reflect/replicate borders are slices
concatenated (gradc.nn.windows.concat), interpolation is a constant matrix per spatial axis (each output
is an exact weighted sum of at most two inputs), channel dropout is one uniform draw per (N, C).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from gradc import functional as F
from gradc.nn.ops import _uniform
from gradc.nn.pooling import along_axis
from gradc.nn.windows import concat, flip_axis, pad_constant, slice_axis
from gradc.tensor import Tensor, apply, torch_op

PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_node(input: Tensor, pad: Sequence[int], mode: str = "constant", value: Any = None) -> str:
    return {"constant": "ConstantPadNdBackward0", "reflect": "ReflectionPad2DBackward0",
            "replicate": "ReplicationPad2DBackward0"}.get(mode, "CatBackward0")


@torch_op(_pad_node)
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:
    x = F.to_tensor(input)
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > x.ndim:
        raise RuntimeError(f"Padding length should be less than or equal to two times the input dimension but got "
                           f"padding length {len(pad)} and input of dimension {x.ndim}")
    if mode not in PAD_MODES:
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    # pad = (last_lo, last_hi, second_last_lo, ...)
    pairs = [(x.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]) for i in range(len(pad) // 2)]
    if mode == "constant":
        lo, hi = [0] * x.ndim, [0] * x.ndim
        for axis, a, b in pairs:
            lo[axis], hi[axis] = a, b
            if x.shape[axis] + a + b < 0:
                raise RuntimeError(f"The input size {x.shape[axis]}, plus negative padding {a} and {b} resulted "
                                   f"in a negative output size, which is invalid. Check dimension {axis} of your "
                                   f"input.")
        return pad_constant(x, lo, hi, 0.0 if value is None else value)
    if value:
        raise RuntimeError(f"Padding mode \"{mode}\" doesn't take in value argument")
    if len(pairs) > x.ndim - 1:
        raise NotImplementedError(f"Only 2D, 3D, 4D, 5D padding with non-constant padding are supported for now "
                                  f"(got {x.ndim}D input and padding of length {len(pad)})")
    out = x
    for axis, a, b in pairs:
        n = out.shape[axis]
        if min(a, b) < 0:
            raise RuntimeError(f"negative padding is not supported in {mode} mode")
        if mode == "reflect" and (a >= n or b >= n):
            raise RuntimeError(f"Argument #4: Padding size should be less than the corresponding input dimension, "
                               f"but got: padding ({a}, {b}) at dimension {axis} of input {list(x.shape)}")
        if mode == "circular" and (a > n or b > n):
            raise RuntimeError("Padding value causes wrapping around more than once.")
        pieces = []
        if mode == "reflect":
            left = flip_axis(slice_axis(out, axis, 1, a + 1), axis) if a else None
            right = flip_axis(slice_axis(out, axis, n - 1 - b, n - 1), axis) if b else None
        elif mode == "replicate":
            left = _repeat_edge(out, axis, 0, a) if a else None
            right = _repeat_edge(out, axis, n - 1, b) if b else None
        else:
            left = slice_axis(out, axis, n - a, n) if a else None
            right = slice_axis(out, axis, 0, b) if b else None
        pieces = [p for p in (left, out, right) if p is not None]
        out = concat(pieces, axis) if len(pieces) > 1 else out
    return out


def _repeat_edge(x: Tensor, axis: int, index: int, count: int) -> Tensor:
    edge = slice_axis(x, axis, index, index + 1)
    shape = list(edge.shape)
    shape[axis] = count
    return apply("broadcast_to", edge, shape=tuple(shape))


# ----------------------------------------------------------------------------- interpolate

def _nearest_matrix(size: int, out: int, scale: float) -> np.ndarray:
    src = np.minimum(np.floor(np.arange(out) * scale).astype(np.int64), size - 1)
    m = np.zeros((size, out))
    m[src, np.arange(out)] = 1.0
    return m


def _linear_matrix(size: int, out: int, scale: float, align_corners: bool) -> np.ndarray:
    dst = np.arange(out, dtype=np.float64)
    if align_corners:
        src = dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), size - 1)
    i1 = np.minimum(i0 + 1, size - 1)
    lam = src - i0
    m = np.zeros((size, out))
    np.add.at(m, (i0, np.arange(out)), 1.0 - lam)
    np.add.at(m, (i1, np.arange(out)), lam)
    return m


_LINEAR_MODES = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _interpolate_node(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                      *args: Any, **kwargs: Any) -> str:
    nd = input.ndim - 2
    return {"nearest": f"UpsampleNearest{nd}DBackward0", "linear": "UpsampleLinear1DBackward0",
            "bilinear": "UpsampleBilinear2DBackward0"}.get(mode, "ViewBackward0")


@torch_op(_interpolate_node)
def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    x = F.to_tensor(input)
    nd = x.ndim - 2
    if mode in ("nearest", "area", "nearest-exact") and align_corners is not None:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    if mode not in ("nearest",) + tuple(_LINEAR_MODES):
        raise NotImplementedError(f"gradc: interpolate mode {mode!r} is not supported (nearest, linear, bilinear)")
    if mode in _LINEAR_MODES and _LINEAR_MODES[mode] != nd:
        raise NotImplementedError(f"Got {x.ndim}D input, but {mode} mode needs {_LINEAR_MODES[mode] + 2}D input")
    if nd < 1:
        raise ValueError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {x.ndim}D) for the modes: "
                         f"nearest | linear | bilinear | bicubic | trilinear | area | nearest-exact (got {mode})")
    if antialias:
        raise NotImplementedError("gradc: interpolate(antialias=True) is not supported")
    if (size is None) == (scale_factor is None):
        raise ValueError("either size or scale_factor should be defined" if size is None else
                         "only one of size or scale_factor should be defined")
    spatial = x.shape[2:]
    if size is not None:
        out = tuple(int(s) for s in size) if isinstance(size, (list, tuple)) else (int(size),) * nd
        if len(out) != nd:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, but got input "
                             f"with spatial dimensions of {list(spatial)} and output size of {list(out)}. Please "
                             f"provide input tensor in (N, C, d1, d2, ...,dK) format and output size in (o1, o2, "
                             f"...,oK) format.")
        scales = [n / o for n, o in zip(spatial, out)]
    else:
        factors = tuple(scale_factor) if isinstance(scale_factor, (list, tuple)) else (scale_factor,) * nd
        if len(factors) != nd:
            raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but got "
                             f"input with spatial dimensions of {list(spatial)} and scale_factor of shape "
                             f"{list(factors)}.")
        out = tuple(int(math.floor(n * f)) for n, f in zip(spatial, factors))
        scales = [n / o if recompute_scale_factor else 1.0 / f for n, o, f in zip(spatial, out, factors)]
    y = x
    for i in range(nd):
        if mode == "nearest":
            m = _nearest_matrix(spatial[i], out[i], scales[i])
        else:
            m = _linear_matrix(spatial[i], out[i], scales[i], bool(align_corners))
        y = along_axis(y, 2 + i, m)
    return y


# ----------------------------------------------------------------------------- dropout2d

@torch_op("MulBackward0")
def dropout2d(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero whole channels (dims 0 and 1 of a 4-D input, dim 0 of an unbatched 3-D one) with probability p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    x = F.to_tensor(input)
    if x.ndim not in (3, 4):
        raise RuntimeError(f"dropout2d: Expected 3D or 4D input, but got {x.ndim}D input of size {list(x.shape)}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return F.mul(x, 0.0)
    lead = 2 if x.ndim == 4 else 1
    probe = x
    for axis in range(lead, x.ndim):
        probe = slice_axis(probe, axis, 0, 1)
    keep = F.compare("ge", _uniform(probe), p)
    scale = F.where(keep, F.to_tensor(1.0 / (1.0 - p), x), F.to_tensor(0.0, x))
    return F.mul(x, F.expand_to(scale, x.shape))
