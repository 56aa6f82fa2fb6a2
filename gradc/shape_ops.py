"""Joining, splitting, masking and statistics ops a transformer needs, as composites of primitives.

cat pads each piece to the joined size along the axis and adds the pieces (each output element is one
piece's value plus exact zeros, so the result is exact); its VJP falls out of pad's (a slice). split,
chunk, unbind and narrow are slices; tril/triu and masked_fill are `where` over an iota comparison.
No new primitive is needed, so the fuser and the native lowering see only ops they know.
"""

from __future__ import annotations

import builtins
from typing import Any, Sequence

from gradc import functional as F
from gradc.ir.core import bool_, float32, float64
from gradc.tensor import Tensor, apply, torch_op

# ----------------------------------------------------------------------------- cat / stack

def _check_tensors(tensors: Any, name: str) -> list[Tensor]:
    if isinstance(tensors, Tensor):
        raise TypeError(f"{name}(): argument 'tensors' must be tuple of Tensors, not Tensor")
    tensors = [F.to_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"torch.{name}(): expected a non-empty list of Tensors")
    return tensors


@torch_op("CatBackward0")
def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """torch.cat: dtypes promote as PyTorch does; all other dimensions must match."""
    tensors = _check_tensors(tensors, "cat")
    rank = tensors[0].ndim
    if rank == 0:
        raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
    d = F.normalize_dim(dim, rank)
    for i, t in enumerate(tensors[1:], 1):
        if t.ndim != rank:
            raise RuntimeError(f"Tensors must have same number of dimensions: got {rank} and {t.ndim}")
        for axis in range(rank):
            if axis != d and t.shape[axis] != tensors[0].shape[axis]:
                raise RuntimeError(f"Sizes of tensors must match except in dimension {d}. Expected size "
                                   f"{tensors[0].shape[axis]} but got size {t.shape[axis]} for tensor number "
                                   f"{i} in the list.")
    dtype = F.result_type(tensors)
    if len(tensors) == 1:  # a new tensor, as PyTorch's cat of one
        return apply("reshape", F.cast(tensors[0], dtype), shape=tensors[0].shape)
    total = builtins.sum(t.shape[d] for t in tensors)
    out = None
    offset = 0
    for t in tensors:
        t = F.cast(t, dtype)
        n = t.shape[d]
        lo = tuple(offset if a == d else 0 for a in range(rank))
        hi = tuple(total - offset - n if a == d else 0 for a in range(rank))
        offset += n
        piece = apply("pad", t, lo=lo, hi=hi, interior=(0,) * rank)
        if dtype == bool_:
            out = piece if out is None else apply("where", piece, piece, out)
        else:
            out = piece if out is None else apply("add", out, piece)
    return out


concat = concatenate = cat


@torch_op("StackBackward0")
def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = _check_tensors(tensors, "stack")
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != tensors[0].shape:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} "
                               f"at entry 0 and {list(t.shape)} at entry {i}")
    d = F.normalize_dim(dim, tensors[0].ndim + 1)
    return cat([apply("reshape", t, shape=t.shape[:d] + (1,) + t.shape[d:]) for t in tensors], d)


# ----------------------------------------------------------------------------- split family

def _slice_dim(x: Tensor, d: int, start: int, stop: int) -> Tensor:
    return apply("slice", x, starts=tuple(start if a == d else 0 for a in range(x.ndim)),
                 stops=tuple(stop if a == d else s for a, s in enumerate(x.shape)), steps=(1,) * x.ndim)


def split(x: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    """torch.split: pieces of one size (the last may be smaller) or of the listed sizes."""
    d = F.normalize_dim(dim, x.ndim)
    n = x.shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size < 0:
            raise RuntimeError(f"split expects split_size be non-negative, but got split_size={size}")
        if size == 0:
            if n:
                raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got dimension size of {n}")
            return (x,)
        sizes = [size] * (n // size) + ([n % size] if n % size else [])
        sizes = sizes or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != n or builtins.min(sizes, default=0) < 0:
            raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size "
                               f"at dimension {d}), but got split_sizes={sizes}")
    out, start = [], 0
    for s in sizes:
        out.append(_slice_dim(x, d, start, start + s))
        start += s
    return tuple(out)


def chunk(x: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    d = F.normalize_dim(dim, x.ndim)
    n = x.shape[d]
    if n == 0:  # PyTorch gives `chunks` empty pieces
        return tuple(_slice_dim(x, d, 0, 0) for _ in range(chunks))
    return split(x, -(-n // chunks), dim)


def unbind(x: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    d = F.normalize_dim(dim, x.ndim)
    shape = x.shape[:d] + x.shape[d + 1:]
    return tuple(apply("reshape", _slice_dim(x, d, i, i + 1), shape=shape) for i in range(x.shape[d]))


@torch_op("SliceBackward0")
def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    d = F.normalize_dim(dim, x.ndim)
    n = x.shape[d]
    if not -n <= start <= n:
        raise IndexError(f"start out of range (expected to be in range of [{-n}, {n}], but got {start})")
    start = start % n if start < 0 else start
    if length < 0 or start + length > n:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({n}).")
    return _slice_dim(x, d, start, start + length)


# ----------------------------------------------------------------------------- masks

def _triangle(x: Tensor, diagonal: int, lower: bool) -> Tensor:
    if x.ndim < 2:
        raise RuntimeError(f"{'tril' if lower else 'triu'}: input tensor must have at least 2 dimensions")
    rows, cols = x.shape[-2:]
    row = apply("iota", shape=(rows, cols), axis=0)
    col = apply("iota", shape=(rows, cols), axis=1)
    # tril keeps col - row <= diagonal, triu keeps col - row >= diagonal
    offset = apply("sub", col, row)
    keep = F.compare("le" if lower else "ge", offset, diagonal)
    keep = F.expand_to(keep, x.shape)
    zero = F.scalar_like(False, x) if x.dtype == bool_ else F.scalar_like(0, x)
    return apply("where", keep, x, zero)


tril = torch_op("TrilBackward0")(lambda x, diagonal=0: _triangle(F.to_tensor(x), diagonal, True))
triu = torch_op("TriuBackward0")(lambda x, diagonal=0: _triangle(F.to_tensor(x), diagonal, False))


@torch_op(lambda x, mask, value: "MaskedFillBackward0")
def masked_fill(x: Tensor, mask: Any, value: Any) -> Tensor:
    """x where mask is False, value where it is True."""
    mask = F.to_tensor(mask)
    if mask.dtype != bool_:
        raise RuntimeError(f"masked_fill_ only supports boolean masks, but got mask with dtype "
                           f"{ {float32: 'float', float64: 'double'}.get(mask.dtype, mask.dtype.name)}")
    if isinstance(value, Tensor) and value.ndim != 0:
        raise RuntimeError(f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                           f"{value.ndim} dimension(s).")
    shape = F.broadcast_shapes(mask.shape, x.shape)  # out of place both broadcast; masked_fill_ keeps x's
    fill = F.cast(F.to_tensor(value, x), x.dtype)
    return apply("where", F.expand_to(mask, shape), F.expand_to(fill, shape), F.expand_to(x, shape))


# ----------------------------------------------------------------------------- layout helpers

@torch_op("RepeatBackward0")
def repeat(x: Tensor, *sizes: Any) -> Tensor:
    sizes = tuple(int(s) for s in F._shape_args(sizes))
    if len(sizes) < x.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions "
                           "of tensor")
    shape = (1,) * (len(sizes) - x.ndim) + x.shape
    interleaved = tuple(v for s in shape for v in (1, s))
    target = tuple(v for r, s in zip(sizes, shape) for v in (r, s))
    wide = apply("broadcast_to", apply("reshape", x, shape=interleaved), shape=target)
    return apply("reshape", wide, shape=tuple(r * s for r, s in zip(sizes, shape)))


def repeat_interleave(x: Tensor, repeats: int, dim: int) -> Tensor:
    """Each slice along dim repeated `repeats` times in place (integer repeats only)."""
    d = F.normalize_dim(dim, x.ndim)
    spread = apply("reshape", x, shape=x.shape[:d + 1] + (1,) + x.shape[d + 1:])
    wide = apply("broadcast_to", spread, shape=x.shape[:d + 1] + (repeats,) + x.shape[d + 1:])
    return apply("reshape", wide, shape=x.shape[:d] + (x.shape[d] * repeats,) + x.shape[d + 1:])


def contiguous(x: Tensor, memory_format: Any = None) -> Tensor:
    """gradc tensors are always dense: the tensor itself, as PyTorch returns a contiguous self."""
    return x


# ----------------------------------------------------------------------------- statistics

def _var(x: Tensor, dim: Any, correction: Any, keepdim: bool, unbiased: Any) -> Tensor:
    x = F.to_tensor(x)
    if not x.dtype.is_float:
        raise RuntimeError(f"std and var only support floating point and complex dtypes, got "
                           f"{F.SCALAR_NAMES[x.dtype]}")
    if isinstance(dim, bool):  # var(x, unbiased) positional form
        unbiased, dim = dim, None
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    dims = F.normalize_dims(dim, x.ndim)
    count = 1
    for a in dims:
        count *= x.shape[a]
    centered = F.sub(x, F.mean(x, dim=dims, keepdim=True))
    total = F.sum(F.mul(centered, centered), dim=dims, keepdim=keepdim)
    denom = builtins.max(count - correction, 0)
    return F.mul(total, 1.0 / denom if denom else float("inf"))


@torch_op("VarBackward0")
def var(x: Tensor, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *, correction: Any = None) -> Tensor:
    return _var(x, dim, correction, keepdim, unbiased)


@torch_op("StdBackward0")
def std(x: Tensor, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *, correction: Any = None) -> Tensor:
    return F.sqrt(_var(x, dim, correction, keepdim, unbiased))


@torch_op("LogsumexpBackward0")
def logsumexp(x: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    """max-shifted, the shift held constant (so the gradient is exactly softmax); all -inf gives -inf."""
    x = F.to_tensor(x)
    if not x.dtype.is_float:
        x = F.cast(x, float32)
    dims = F.normalize_dims(dim, x.ndim)
    shift = apply("stop_gradient", F.amax(x, dim=dims, keepdim=True))
    shift = F.where(F.compare("eq", F.abs(shift), float("inf")), 0.0, shift)
    total = F.sum(F.exp(F.sub(x, shift)), dim=dims, keepdim=True)
    out = F.add(F.log(total), shift)
    return out if keepdim else F.squeeze(out, dims) if dims else out


@torch_op(lambda x, p="fro", dim=None, keepdim=False, dtype=None: "NormBackward1")
def norm(x: Tensor, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None) -> Tensor:
    """Vector p-norms (p = 2/'fro', 1, inf, -inf, 0, any other number) over `dim` (all of x by default)."""
    x = F.to_tensor(x)
    if dtype is not None:
        x = F.cast(x, dtype)
    if not x.dtype.is_float:
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as input. Got "
                           f"{F.SCALAR_NAMES[x.dtype]}")
    dims = F.normalize_dims(dim, x.ndim)
    a = F.abs(x)
    if p in ("fro", 2, 2.0):
        return F.sqrt(F.sum(F.mul(x, x), dim=dims, keepdim=keepdim))
    if p == 1:
        return F.sum(a, dim=dims, keepdim=keepdim)
    if p == float("inf"):
        return F.amax(a, dim=dims, keepdim=keepdim)
    if p == -float("inf"):
        return F.neg(F.amax(F.neg(a), dim=dims, keepdim=keepdim))
    if p == 0:
        return F.sum(F.cast(F.compare("ne", x, 0.0), x.dtype), dim=dims, keepdim=keepdim)
    if isinstance(p, str):
        raise RuntimeError(f"norm: unsupported norm type {p!r} for a vector norm")
    return F.pow(F.sum(F.pow(a, float(p)), dim=dims, keepdim=keepdim), 1.0 / p)
