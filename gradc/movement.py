"""Reordering and scattering: take_along, flip, roll, movedim, tile, sort/argsort/argmin, one_hot,
scatter/scatter_add/index_add/index_copy.

All composites. `take_along` (per-row picks) is the registry's `gather` on a broadcast operand, so its
gradient is gather's one-hot VJP. Flip and roll are slices joined by pad + where (flip reverses the
index bits: O(size log n)), so their gradients stay about linear in the size. Sorting ranks every
element against every other along the sorted dim (O(n^2) per row: fine for the rows models sort,
documented); eagerly the permutation comes from numpy's stable sort (the same order), the values are
then picked with take_along so gradients are recorded. Scatters compare each destination position with
each index (O(K m) per row) and sum the hits.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

from gradc import functional as F
from gradc.ir.core import int64
from gradc.pointwise import logical_and, logical_or
from gradc.scans import pad_dim, slice_dim
from gradc.tensor import Tensor, apply, torch_op

SortResult = namedtuple("SortResult", ["values", "indices"])


def _to_last(x: Tensor, d: int) -> Tensor:
    if d == x.ndim - 1:
        return x
    return apply("permute", x, perm=tuple(i for i in range(x.ndim) if i != d) + (d,))


def _from_last(x: Tensor, d: int) -> Tensor:
    if d == x.ndim - 1:
        return x
    perm = list(range(x.ndim - 1))
    perm.insert(d, x.ndim - 1)
    return apply("permute", x, perm=tuple(perm))


def take_along(x: Tensor, d: int, index: Tensor) -> Tensor:
    """out[..., k, ...] = x[..., index[..., k, ...], ...] along d; index: x's shape with d of any size m,
    or 1-D of length m (the same picks in every row)."""
    m = index.shape[-1] if index.ndim == 1 else index.shape[d]
    if index.ndim == 1 and x.ndim > 1:
        index = F.expand_to(F.reshape(index, tuple(m if i == d else 1 for i in range(x.ndim))),
                            tuple(m if i == d else s for i, s in enumerate(x.shape)))
    xl, il = _to_last(x, d), _to_last(index, d)
    wide = F.expand_to(apply("reshape", xl, shape=xl.shape[:-1] + (1, xl.shape[-1])), il.shape + (xl.shape[-1],))
    return _from_last(apply("gather", wide, il, axis=wide.ndim - 1), d)


def _bounds_checked(index: Tensor, size: int) -> Tensor:
    """index itself, read through a gather from 0..size-1: compiled code then checks every index value
    against `size` (the gather primitive's bounds check), where a bare comparison would ignore it."""
    positions = apply("iota", shape=index.shape + (size,), axis=index.ndim)
    return apply("gather", positions, index, axis=index.ndim)


def _check_index_values(index: Tensor, size: int, d: int) -> None:
    if not index.is_traced and index._data.size:
        bad = index._data[(index._data < 0) | (index._data >= size)]
        if bad.size:
            raise RuntimeError(f"index {bad.flat[0]} is out of bounds for dimension {d} with size {size}")


# ----------------------------------------------------------------------------- flip, roll, movedim, tile

def join(d: int, head: Tensor, tail: Tensor) -> Tensor:
    """head followed by tail along d: each padded with zeros where the other lies, then chosen by position
    (exact, O(size), with pad/slice gradients)."""
    nh, nt = head.shape[d], tail.shape[d]
    a, b = pad_dim(head, d, 0, nt), pad_dim(tail, d, nh, 0)
    return apply("where", F.compare("lt", apply("iota", shape=a.shape, axis=d), nh), a, b)


def _reverse(x: Tensor, d: int) -> Tensor:
    """x reversed along d: padded in front to 2^k, viewed as k axes of size 2 (the index bits), each
    swapped (reversing i is flipping all its bits), then the padding sliced off the end."""
    n = x.shape[d]
    k = max(n - 1, 0).bit_length()
    y = pad_dim(x, d, (1 << k) - n, 0)
    outer, inner = y.shape[:d], y.shape[d + 1:]
    y = apply("reshape", y, shape=outer + (2,) * k + inner)
    for axis in range(d, d + k):
        y = join(axis, slice_dim(y, axis, 1, 2), slice_dim(y, axis, 0, 1))
    return slice_dim(apply("reshape", y, shape=outer + (1 << k,) + inner), d, 0, n)


@torch_op("FlipBackward0")
def flip(x: Any, dims: Any) -> Tensor:
    x = F.to_tensor(x)
    out = x
    for d in F.normalize_dims(dims, x.ndim):
        if x.shape[d] > 1:
            out = _reverse(out, d)
    return out if out is not x else apply("reshape", x, shape=x.shape)


def fliplr(x: Any) -> Tensor:
    return flip(x, (1,))


def flipud(x: Any) -> Tensor:
    return flip(x, (0,))


@torch_op("RollBackward0")
def roll(x: Any, shifts: Any, dims: Any = None) -> Tensor:
    x = F.to_tensor(x)
    if dims is None:
        flat = F.reshape(x, (-1,))
        shift = shifts if isinstance(shifts, int) else shifts[0]
        return F.reshape(roll(flat, shift, 0), x.shape)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}")
    out = x
    for shift, dim in zip(shifts, dims):
        d = F.normalize_dim(dim, x.ndim)
        n = x.shape[d]
        if n and shift % n:  # out[i] = x[(i - shift) % n]: the last `shift` entries move to the front
            cut = n - shift % n
            out = join(d, slice_dim(out, d, cut, n), slice_dim(out, d, 0, cut))
    return out if out is not x else apply("reshape", x, shape=x.shape)


@torch_op("PermuteBackward0")
def movedim(x: Any, source: Any, destination: Any) -> Tensor:
    x = F.to_tensor(x)
    src = (source,) if isinstance(source, int) else tuple(source)
    dst = (destination,) if isinstance(destination, int) else tuple(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(src)} dims) should "
                           f"contain the same number of dims as destination ({list(dst)} dims)")
    src = tuple(F.normalize_dim(s, x.ndim) for s in src)
    dst = tuple(F.normalize_dim(s, x.ndim) for s in dst)
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise RuntimeError("movedim: repeated dim in `source` or `destination`")
    rest = iter(i for i in range(x.ndim) if i not in src)
    where_from = dict(zip(dst, src))
    perm = tuple(where_from[i] if i in where_from else next(rest) for i in range(x.ndim))
    return apply("permute", x, perm=perm) if x.ndim else apply("reshape", x, shape=x.shape)


moveaxis = movedim


@torch_op(lambda x, *reps, dims=None: "RepeatBackward0")
def tile(x: Any, *reps: Any, dims: Any = None) -> Tensor:
    x = F.to_tensor(x)
    if dims is not None:
        reps = (dims,)
    reps = tuple(reps[0]) if len(reps) == 1 and isinstance(reps[0], (tuple, list)) else tuple(reps)
    rank = max(len(reps), x.ndim)
    reps = (1,) * (rank - len(reps)) + reps
    shape = (1,) * (rank - x.ndim) + x.shape
    if any(r < 0 for r in reps):
        raise RuntimeError(f"Trying to create tensor with negative dimension {min(reps)}: {list(reps)}")
    interleaved = apply("reshape", x, shape=tuple(v for s in shape for v in (1, s)))
    wide = F.expand_to(interleaved, tuple(v for r, s in zip(reps, shape) for v in (r, s)))
    return apply("reshape", wide, shape=tuple(r * s for r, s in zip(reps, shape)))


# ----------------------------------------------------------------------------- sorting

def _before(a: Tensor, b: Tensor, descending: bool) -> Tensor:
    """b sorts strictly before a (NaN is the largest value, as PyTorch)."""
    nan_a, nan_b = F.compare("ne", a, a), F.compare("ne", b, b)
    if descending:
        return logical_or(F.compare("gt", b, a), logical_and(nan_b, F.compare("eq", nan_a, False)))
    return logical_or(F.compare("lt", b, a), logical_and(nan_a, F.compare("eq", nan_b, False)))


def _traced_permutation(x: Tensor, descending: bool) -> Tensor:
    """Stable sort permutation along the last dim by ranking all pairs."""
    n = x.shape[-1]
    pair = x.shape + (n,)
    a = F.expand_to(apply("reshape", x, shape=x.shape + (1,)), pair)  # a[..., i, j] = x_i
    b = F.expand_to(apply("reshape", x, shape=x.shape[:-1] + (1, n)), pair)  # b[..., i, j] = x_j
    same = F.compare("eq", a, b) if not x.dtype.is_float else logical_or(
        F.compare("eq", a, b), logical_and(F.compare("ne", a, a), F.compare("ne", b, b)))
    earlier = F.compare("lt", apply("iota", shape=pair, axis=len(pair) - 1), apply("iota", shape=pair,
                                                                                    axis=len(pair) - 2))
    precedes = logical_or(_before(a, b, descending), logical_and(same, earlier))
    rank = apply("reduce_sum", F.cast(precedes, int64), axes=(len(pair) - 1,))  # (..., i): position of x_i
    # perm[..., k] = the i whose rank is k
    hit = F.compare("eq", F.expand_to(apply("reshape", rank, shape=x.shape[:-1] + (1, n)), pair),
                    apply("iota", shape=pair, axis=len(pair) - 2))
    return apply("reduce_sum", F.where(hit, apply("iota", shape=pair, axis=len(pair) - 1), 0),
                 axes=(len(pair) - 1,))


def _eager_permutation(data: np.ndarray, descending: bool) -> np.ndarray:
    """Stable sort permutation along the last axis, NaN the largest value (as PyTorch)."""
    nan = np.isnan(data) if data.dtype.kind == "f" else np.zeros(data.shape, bool)
    key = np.where(nan, 0, data)
    if data.dtype == np.bool_:
        key = key.astype(np.int64)
    if descending:
        # ~key reverses integer order without the overflow of -key at the type's minimum
        key = -key if key.dtype.kind == "f" else np.invert(key)
        return np.lexsort((key, ~nan)) if data.ndim == 1 else np.stack(
            [np.lexsort((k, ~m)) for k, m in zip(key.reshape(-1, key.shape[-1]), nan.reshape(-1, key.shape[-1]))]
        ).reshape(data.shape)
    flat_k, flat_m = key.reshape(-1, key.shape[-1]), nan.reshape(-1, key.shape[-1])
    return np.stack([np.lexsort((k, m)) for k, m in zip(flat_k, flat_m)]).reshape(data.shape) \
        if flat_k.shape[0] else np.zeros(data.shape, np.int64)


def sort(x: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> SortResult:
    """(values, indices) along dim; ties keep their order (stable), NaN sorts as the largest value."""
    x = F.to_tensor(x)
    if x.ndim == 0:
        return SortResult(apply("reshape", x, shape=()), F.to_tensor(np.zeros((), np.int64)))
    d = F.normalize_dim(dim, x.ndim)
    xl = _to_last(x, d)
    if x.is_traced:
        perm = _traced_permutation(xl, descending)
    elif xl.shape[-1] == 0 or xl.numel() == 0:
        perm = F.to_tensor(np.zeros(xl.shape, np.int64))
    else:
        perm = F.to_tensor(_eager_permutation(xl._data, descending).astype(np.int64))
    values = _sorted_values(x, d, _from_last(perm, d), stable)
    return SortResult(values, _from_last(perm, d))


@torch_op(lambda x, d, perm, stable: "SortBackward1" if stable else "SortBackward0")
def _sorted_values(x: Tensor, d: int, perm: Tensor, stable: bool) -> Tensor:
    return take_along(x, d, perm) if x.numel() else apply("reshape", x, shape=x.shape)


def argsort(x: Any, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return sort(x, dim, descending, stable).indices


def msort(x: Any) -> Tensor:
    return sort(x, 0).values


def argmin(x: Any, dim: int | None = None, keepdim: bool = False) -> Tensor:
    x = F.to_tensor(x)
    if x.dtype == F.bool_:
        raise RuntimeError("argmin(): does not support bool input")
    if dim is None:
        return F._max_min(F.reshape(x, (-1,)), 0, False, -1, "argmin").indices
    return F._max_min(x, dim, keepdim, -1, "argmin").indices


# ----------------------------------------------------------------------------- one_hot

def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    idx = F.to_tensor(tensor)
    if idx.dtype != int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    if not idx.is_traced and idx._data.size:
        if idx._data.min() < 0:
            raise RuntimeError("Class values must be non-negative.")
        if num_classes == -1:
            num_classes = int(idx._data.max()) + 1
        elif idx._data.max() >= num_classes:
            raise RuntimeError("Class values must be smaller than num_classes.")
    if idx.is_traced and num_classes != -1:
        idx = _bounds_checked(idx, num_classes)
    if num_classes == -1:
        if idx.is_traced:
            raise RuntimeError("one_hot inside a traced function needs num_classes")
        raise RuntimeError("Can not infer total number of classes from empty tensor.")
    shape = idx.shape + (num_classes,)
    hit = F.compare("eq", apply("iota", shape=shape, axis=len(shape) - 1),
                    F.expand_to(apply("reshape", idx, shape=idx.shape + (1,)), shape))
    return F.cast(hit, int64)


# ----------------------------------------------------------------------------- scatter family

def _scatter_parts(x: Tensor, d: int, index: Tensor, src: Tensor, last_wins: bool = False) -> tuple[Tensor, Tensor]:
    """(sum of src over the hits, hit mask), both of x's shape: position k along d collects every src
    element whose index is k; with last_wins only the last of them along d (PyTorch's CPU loop writes
    duplicates in that order, so the last write stays)."""
    index = F.long_index(index, "scatter(): Expected dtype int64 for index")
    if index.ndim != x.ndim or (src.ndim and src.ndim != x.ndim):
        raise RuntimeError("Index tensor must have the same number of dimensions as self tensor")
    for i, s in enumerate(index.shape):
        if (i != d and s > x.shape[i]) or (src.ndim and s > src.shape[i]):
            raise RuntimeError(f"Expected index {list(index.shape)} to be smaller than self {list(x.shape)} "
                               f"apart from dimension {d} and to be smaller size than src {list(src.shape)}")
    _check_index_values(index, x.shape[d], d)
    if src.ndim:
        src = apply("slice", src, starts=(0,) * src.ndim, stops=index.shape, steps=(1,) * src.ndim)
    else:
        src = F.expand_to(src, index.shape)
    k = x.shape[d]
    il, sl = _to_last(index, d), _to_last(src, d)  # (P..., m)
    if index.is_traced:
        il = _bounds_checked(il, k)
    pair = il.shape[:-1] + (k, il.shape[-1])
    hit = F.compare("eq", apply("iota", shape=pair, axis=len(pair) - 2),
                    F.expand_to(apply("reshape", il, shape=il.shape[:-1] + (1, il.shape[-1])), pair))
    spread = F.expand_to(apply("reshape", sl, shape=sl.shape[:-1] + (1, sl.shape[-1])), pair)
    zero = F.scalar_like(0, spread) if spread.dtype.is_float else 0
    if last_wins and pair[-1] > 1:
        position = apply("iota", shape=pair, axis=len(pair) - 1)
        last = apply("reduce_max", F.where(hit, position, F.scalar_like(-1, position)), axes=(len(pair) - 1,))
        # the last hit's position, or -1 where none hits (no position equals -1)
        hit = F.compare("eq", position, F.expand_to(apply("reshape", last, shape=last.shape + (1,)), pair))
    summed = apply("reduce_sum", F.where(hit, spread, zero), axes=(len(pair) - 1,))
    count = apply("reduce_sum", F.cast(hit, int64), axes=(len(pair) - 1,))
    summed, count = _from_last(summed, d), _from_last(count, d)
    # positions the index does not reach (dims where it is smaller than x) get nothing
    pads = [(0, x.shape[i] - s if i != d else 0) for i, s in enumerate(summed.shape)]
    if any(hi for _, hi in pads):
        summed = apply("pad", summed, lo=(0,) * x.ndim, hi=tuple(h for _, h in pads), interior=(0,) * x.ndim)
        count = apply("pad", count, lo=(0,) * x.ndim, hi=tuple(h for _, h in pads), interior=(0,) * x.ndim)
    return summed, F.compare("gt", count, 0)


def _source(x: Tensor, src: Any) -> Tensor:
    return F.cast(F.to_tensor(src, x), x.dtype)


@torch_op(lambda x, dim, index, src=None, value=None, reduce=None: "ScatterBackward0" if isinstance(src, Tensor)
          else "ScatterBackward1")
def scatter(x: Tensor, dim: int, index: Tensor, src: Any = None, value: Any = None,
            reduce: str | None = None) -> Tensor:
    """out = x with out[..index[i].., ] = src[i] along dim (duplicates: the last along dim, as PyTorch's CPU
    kernel; its gradient goes to that one only, where PyTorch gives every duplicate one); reduce='add' is
    scatter_add, 'multiply' is not supported."""
    x, index = F.to_tensor(x), F.to_tensor(index)
    if src is None:
        src = value
    if reduce == "add":
        return scatter_add(x, dim, index, _source(x, src) if isinstance(src, Tensor) else
                           F.expand_to(_source(x, src), index.shape))
    if reduce is not None:
        raise RuntimeError(f"gradc supports scatter reduce='add' only, got {reduce!r}")
    d = F.normalize_dim(dim, x.ndim)
    summed, hit = _scatter_parts(x, d, index, _source(x, src), last_wins=True)
    return F.where(hit, summed, x)


@torch_op("ScatterAddBackward0")
def scatter_add(x: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    x, index = F.to_tensor(x), F.to_tensor(index)
    d = F.normalize_dim(dim, x.ndim)
    summed, _ = _scatter_parts(x, d, index, _source(x, src))
    return F.add(x, summed)


def _index_along(x: Tensor, d: int, index: Any, source: Tensor, name: str) -> Tensor:
    index = F.long_index(F.to_tensor(index), f"{name}(): Expected dtype int32/int64 for index")
    if index.ndim > 1:
        raise IndexError(f"{name}(): Index is supposed to be a vector")
    m = index.numel()
    if source.ndim and source.shape[d] != m:  # PyTorch: IndexError from index_copy, RuntimeError from index_add
        error = IndexError if name == "index_copy_" else RuntimeError
        raise error(f"{name}(): Number of indices ({m}) should be equal to source.size(dim): ({source.shape[d]}), "
                    f"for dim: {d}")
    expected = tuple(m if i == d else s for i, s in enumerate(x.shape))
    if source.shape != expected:
        raise RuntimeError(f"{name}(): Source/destination tensor must have same slice shapes. Destination "
                           f"slice shape: {list(x.shape)} at dimension {d} and source slice shape: "
                           f"{list(source.shape)} at dimension {d}.")
    index = F.reshape(index, (m,))
    _check_index_values(index, x.shape[d], d)
    return F.expand_to(F.reshape(index, tuple(m if i == d else 1 for i in range(x.ndim))), expected)


@torch_op("IndexAddBackward0")
def index_add(x: Tensor, dim: int, index: Any, source: Tensor, alpha: Any = 1) -> Tensor:
    x = F.to_tensor(x)
    d = F.normalize_dim(dim, x.ndim)
    source = _source(x, source)
    full = _index_along(x, d, index, source, "index_add_")
    summed, _ = _scatter_parts(x, d, full, source if alpha == 1 else F.mul(source, alpha))
    return F.add(x, summed)


@torch_op("IndexCopyBackward0")
def index_copy(x: Tensor, dim: int, index: Any, source: Tensor) -> Tensor:
    x = F.to_tensor(x)
    d = F.normalize_dim(dim, x.ndim)
    source = _source(x, source)
    full = _index_along(x, d, index, source, "index_copy_")
    summed, hit = _scatter_parts(x, d, full, source, last_wins=True)
    return F.where(hit, summed, x)


FUNCTIONS = {
    "flip": flip, "fliplr": fliplr, "flipud": flipud, "roll": roll, "movedim": movedim, "moveaxis": moveaxis,
    "tile": tile, "sort": sort, "argsort": argsort, "msort": msort, "argmin": argmin, "scatter": scatter,
    "scatter_add": scatter_add, "index_add": index_add, "index_copy": index_copy,
}
METHODS = dict(FUNCTIONS)
INPLACE = ("scatter", "scatter_add", "index_add", "index_copy")
