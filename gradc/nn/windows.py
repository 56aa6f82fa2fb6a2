"""Sliding windows, constant padding, flips and concatenation on layout primitives.

Convolution and pooling decompose into these at trace time (design (a) of issue 11). The new
primitives are `window` (gradc.ir.ops): out[..., o, ..., k] = x[..., o*stride + k*dilation, ...], a
strided view with a tap axis appended; native code evaluates it as index math (one multiply-add) inside
the loop that materializes the im2col matrix for the GEMM; and its VJP `unwindow` (col2im along one axis:
each element sums the taps that read it, in tap order, equal to one interior-padded tap per kernel
position summed), evaluated in gather form inside its consumer's loop. A first unwindow-less VJP (pads of
tap slices, summed) made the fusion pass materialize every tap: W7's col2im took 3-4 passes over memory.

A first version built the windows from broadcast_to + reshape + slice only (tile x, view it as rows of
length L + d: row k starts d elements later); it was exact but its reshapes of non-contiguous values
cost div/mod chains per element: conv2 of W7 took 309 ms forward (see the notes), hence the primitive.
"""

from __future__ import annotations

from typing import Sequence

from gradc.tensor import Tensor, apply


def move_axis_last(x: Tensor, axis: int) -> Tensor:
    if axis == x.ndim - 1:
        return x
    perm = tuple(i for i in range(x.ndim) if i != axis) + (axis,)
    return apply("permute", x, perm=perm)


def move_last_axis_to(x: Tensor, axis: int) -> Tensor:
    if axis == x.ndim - 1:
        return x
    perm = tuple(range(axis)) + (x.ndim - 1,) + tuple(range(axis, x.ndim - 1))
    return apply("permute", x, perm=perm)


def slice_axis(x: Tensor, axis: int, start: int, stop: int, step: int = 1) -> Tensor:
    starts = [0] * x.ndim
    stops = list(x.shape)
    steps = [1] * x.ndim
    starts[axis], stops[axis], steps[axis] = start, stop, step
    if (start, stop, step) == (0, x.shape[axis], 1):
        return x
    return apply("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))


def pad_zeros(x: Tensor, lo: Sequence[int], hi: Sequence[int]) -> Tensor:
    """Zero padding (negative amounts crop)."""
    crop_lo = [max(-a, 0) for a in lo]
    crop_hi = [max(-b, 0) for b in hi]
    if any(crop_lo) or any(crop_hi):
        x = apply("slice", x, starts=tuple(crop_lo), stops=tuple(d - c for d, c in zip(x.shape, crop_hi)),
                  steps=(1,) * x.ndim)
    lo = tuple(max(a, 0) for a in lo)
    hi = tuple(max(b, 0) for b in hi)
    if not any(lo) and not any(hi):
        return x
    return apply("pad", x, lo=lo, hi=hi, interior=(0,) * x.ndim)


def constant(value: float, shape: Sequence[int], like: Tensor) -> Tensor:
    c = apply("const", value=value, shape=(), dtype=like.dtype)
    return apply("broadcast_to", c, shape=tuple(shape)) if tuple(shape) else c


def pad_constant(x: Tensor, lo: Sequence[int], hi: Sequence[int], value: float) -> Tensor:
    """Padding with `value` (negative amounts crop): zeros are the pad primitive, other values a select."""
    padded = pad_zeros(x, lo, hi)
    if value == 0 or padded.shape == x.shape:
        return padded
    inside = pad_zeros(constant(1.0, x.shape, x), lo, hi)
    mask = apply("compare", inside, constant(0.5, padded.shape, padded), pred="gt")
    return apply("where", mask, padded, constant(value, padded.shape, padded))


def window_axis(x: Tensor, axis: int, size: int, stride: int, dilation: int) -> Tensor:
    """x with `axis` (length L) replaced by the window positions O, and a new last axis of `size` taps:
    out[..., o, ..., k] = x[..., o*stride + k*dilation, ...] (the `window` layout primitive)."""
    return apply("window", x, axis=axis, size=size, stride=stride, dilation=dilation)


def windows(x: Tensor, first_axis: int, sizes: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int]) -> Tensor:
    """(..., *S, ...) -> (..., *O, ..., *K): windows over the len(sizes) axes starting at first_axis."""
    n = len(sizes)
    out = x
    for i in range(n):
        # each call appends one tap axis at the end; the spatial axis stays in place
        out = window_axis(out, first_axis + i, sizes[i], strides[i], dilations[i])
    return out


def concat(pieces: Sequence[Tensor], axis: int) -> Tensor:
    """Concatenate along `axis` as a sum of zero-padded pieces (private: gradc has no concat primitive
    on this branch; each output element is one piece's value plus exact zeros)."""
    total = sum(p.shape[axis] for p in pieces)
    out = None
    offset = 0
    for p in pieces:
        lo = [0] * p.ndim
        hi = [0] * p.ndim
        lo[axis], hi[axis] = offset, total - offset - p.shape[axis]
        offset += p.shape[axis]
        placed = pad_zeros(p, lo, hi)
        out = placed if out is None else apply("add", out, placed)
    return out


def flip_axis(x: Tensor, axis: int) -> Tensor:
    """Reverse one (short) axis: the concatenation of its single-element slices in reverse order."""
    n = x.shape[axis]
    if n <= 1:
        return x
    return concat([slice_axis(x, axis, i, i + 1) for i in reversed(range(n))], axis)
