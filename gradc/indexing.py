"""Indexing with integer tensors and lists, boolean masks, index_select, topk, multinomial.

Picking rows by index is the `gather` primitive on a broadcast copy of the operand: the operand gets a
new axis of the index's length, and gather picks one element along the original axis for each position.
Its VJP is gather's (a `where` against an iota, summed back over the new axis by broadcast_to's VJP), so
repeated indices accumulate their gradients as PyTorch's IndexBackward0 does.
"""

from __future__ import annotations

import builtins
import warnings
from typing import Any

import numpy as np

from gradc import functional as F
from gradc.factories import generator as stream
from gradc.ir.core import bool_, int32, int64, uint8
from gradc.movement import _eager_permutation
from gradc.tensor import Tensor, apply, torch_op


def take_along(x: Tensor, d: int, index: Tensor) -> Tensor:
    """out[..., j, ...] = x[..., index[..., j, ...], ...] along axis d; index has x's shape with d of size m."""
    m = index.shape[d]
    wide_shape = x.shape[:d] + (m,) + x.shape[d:]
    wide = apply("broadcast_to", apply("reshape", x, shape=x.shape[:d] + (1,) + x.shape[d:]), shape=wide_shape)
    return apply("gather", wide, index, axis=d + 1)


def _normalized_index(index: Any, n: int, d: int, message: str | None) -> Tensor:
    idx = index if isinstance(index, Tensor) else Tensor(np.asarray(index, dtype=np.int64))
    idx = F.long_index(idx, "tensors used as indices must be long, int, byte or bool tensors", IndexError)
    if not idx.is_traced and idx._data.size:
        data = idx._data
        bad = data[(data < -n) | (data >= n)]
        if bad.size:
            raise IndexError(message or f"index {bad.flat[0]} is out of bounds for dimension {d} with size {n}")
    return F.where(F.compare("lt", idx, 0), F.add(idx, n), idx)


def _select(x: Tensor, d: int, idx: Tensor) -> Tensor:
    """x with axis d replaced by idx's axes: x.index_select(d, idx.flatten()) shaped like idx."""
    flat = F.reshape(idx, (-1,))
    m = flat.shape[0]
    shape = x.shape[:d] + (m,) + x.shape[d + 1:]
    spread = apply("reshape", flat, shape=(1,) * d + (m,) + (1,) * (x.ndim - d - 1))
    picked = take_along(x, d, apply("broadcast_to", spread, shape=shape))
    return apply("reshape", picked, shape=x.shape[:d] + idx.shape + x.shape[d + 1:])


@torch_op("IndexSelectBackward0")
def index_select(x: Tensor, dim: int, index: Tensor) -> Tensor:
    d = F.normalize_dim(dim, x.ndim)
    index = F.to_tensor(index)
    if index.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    index = F.long_index(index, "index_select(): Expected dtype int32 or int64 for index")
    idx = _normalized_index(F.reshape(index, (-1,)), x.shape[d] if x.ndim else 1, d, "index out of range in self")
    return _select(x, d, idx)


def _is_advanced(k: Any) -> bool:
    return isinstance(k, (Tensor, list, np.ndarray)) and not (isinstance(k, Tensor) and k.ndim == 0
                                                              and k.dtype in (int64, int32) and not k.is_traced)


def _boolean_mask(x: Tensor, mask: Tensor) -> Tensor:
    if mask.is_traced:
        raise IndexError("indexing with a boolean mask has a data-dependent shape: it works on eager tensors "
                         "only (use gradc.where or masked_fill inside traced code)")
    if mask.shape != x.shape[:mask.ndim]:
        for i, (a, b) in enumerate(zip(mask.shape, x.shape)):
            if a != b:
                raise IndexError(f"The shape of the mask {list(mask.shape)} at index {i} does not match the shape "
                                 f"of the indexed tensor {list(x.shape)} at index {i}")
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    rows = F.reshape(x, (-1,) + x.shape[mask.ndim:])
    picked = np.flatnonzero(mask._data).astype(np.int64)
    return _select(rows, 0, Tensor(picked))


@torch_op("IndexBackward0")
def _advanced_getitem(x: Tensor, key: Any) -> Tensor:
    """PyTorch's rules: the advanced indices (integer tensors/lists) broadcast together; their result dims
    replace the indexed dims in place when those are adjacent (after ints select), else they go first."""
    items = key if isinstance(key, tuple) else (key,)
    if any(isinstance(k, Tensor) and k.dtype == uint8 for k in items):
        warnings.warn("indexing with dtype torch.uint8 is now deprecated, please use a dtype torch.bool instead.",
                      UserWarning, stacklevel=3)
        items = tuple(F.cast(k, bool_) if isinstance(k, Tensor) and k.dtype == uint8 else k for k in items)
    for k in items:
        if isinstance(k, Tensor) and k.dtype == bool_ or isinstance(k, np.ndarray) and k.dtype == np.bool_:
            if len(items) != 1:
                raise IndexError("gradc supports a boolean mask only as the whole index (x[mask])")
            return _boolean_mask(x, F.to_tensor(k))
    markers = {}  # a distinct full slice per advanced (or int) item: the basic part keeps those axes
    basic = []
    for k in items:
        if _is_advanced(k):  # (ints stay basic: PyTorch selects them first, unlike numpy)
            marker = slice(None)
            markers[id(marker)] = k
            basic.append(marker)
        else:
            basic.append(k)
    parts = F._index_parts(x, tuple(basic))
    in_axes, out_axes, indices = [], [], []
    for i, k in enumerate(parts):
        if isinstance(k, slice) and id(k) in markers:
            in_axes.append(builtins.sum(p is not None for p in parts[:i]))
            out_axes.append(builtins.sum(p is None or isinstance(p, slice) for p in parts[:i]))
            indices.append(markers[id(k)])
    y = F.getitem(x, tuple(basic))
    idx = [_normalized_index(k, x.shape[a], a, None) for k, a in zip(indices, in_axes)]
    shape = ()
    for t in idx:
        shape = F.broadcast_shapes(shape, t.shape)
    adjacent = out_axes == list(range(out_axes[0], out_axes[0] + len(out_axes)))
    at = out_axes[0] if adjacent else 0
    if not adjacent:  # bring the indexed axes to the front, in order
        rest = [a for a in range(y.ndim) if a not in out_axes]
        y = F.permute(y, out_axes + rest)
        out_axes = list(range(len(out_axes)))
    sizes = [y.shape[a] for a in out_axes]
    linear = None  # row-major position inside the merged indexed axes
    for t, size in zip(idx, sizes):
        t = F.expand_to(t, shape)
        linear = t if linear is None else F.add(F.mul(linear, size), t)
    merged = 1
    for size in sizes:
        merged *= size
    y = F.reshape(y, y.shape[:at] + (merged,) + y.shape[at + len(sizes):])
    return _select(y, at, linear)


def getitem(x: Tensor, key: Any) -> Tensor:
    """Tensor.__getitem__: basic indexing as before, plus one integer-tensor/list index or a boolean mask."""
    items = key if isinstance(key, tuple) else (key,)
    if any(_is_advanced(k) for k in items):
        return _advanced_getitem(x, key)
    if any(isinstance(k, Tensor) for k in items):  # a 0-d eager integer tensor is a Python int
        key = tuple(int(k.item()) if isinstance(k, Tensor) else k for k in items)
    return F.getitem(x, key)


# ----------------------------------------------------------------------------- generation helpers

TopK = __import__("collections").namedtuple("topk", ["values", "indices"])


def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> TopK:
    """Values (differentiable, picked by gather) and indices; indices are found eagerly (forward only)."""
    x = F.to_tensor(x)
    d = F.normalize_dim(dim, x.ndim)
    n = x.shape[d] if x.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"selected index k out of range (k = {k}, size of dim {d} = {n})")
    if x.dtype == bool_:
        raise RuntimeError("topk does not support bool dtypes on CPU")
    data = x._concrete("topk")
    if data.ndim:
        order = np.moveaxis(_eager_permutation(np.moveaxis(data, d, -1), largest), -1, d)
        indices = np.ascontiguousarray(np.take(order, np.arange(k), axis=d)).astype(np.int64)
    else:
        indices = np.zeros((), np.int64)
    idx = Tensor(indices)
    return TopK(take_along(x, d, idx) if x.ndim else x, idx)


def multinomial(probs: Tensor, num_samples: int, replacement: bool = False, *, generator: Any = None) -> Tensor:
    """Samples category indices from rows of non-negative weights (gradc's seeded generator or `generator`)."""
    data = F.to_tensor(probs)._concrete("multinomial")
    if data.ndim not in (1, 2):
        raise RuntimeError("prob_dist must be 1 or 2 dim")
    if (data < 0).any() or not np.isfinite(data).all():
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    rows = data.reshape(-1, data.shape[-1]).astype(np.float64)
    if not replacement and num_samples > rows.shape[1]:
        raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    rng = stream(generator)
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for r, w in enumerate(rows):
        total = w.sum()
        if total <= 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
        out[r] = _sample_row(rng, w, num_samples, replacement)
    return Tensor(out.reshape(data.shape[:-1] + (num_samples,)))


def _sample_row(rng: Any, weights: np.ndarray, num_samples: int, replacement: bool) -> np.ndarray:
    """Inverse-CDF draws from gradc's generator (uniforms in [0, 1)); without replacement a drawn category's
    weight drops to zero before the next draw."""
    w = weights.copy()
    if replacement:
        cdf = np.cumsum(w)
        u = rng.random(size=(num_samples,), dtype=np.float64) * cdf[-1]
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(w) - 1)
    picked = np.empty(num_samples, dtype=np.int64)
    for i in range(num_samples):
        cdf = np.cumsum(w)
        k = int(np.searchsorted(cdf, rng.random(size=(1,), dtype=np.float64)[0] * cdf[-1], side="right"))
        k = min(k, len(w) - 1)
        while w[k] == 0:  # a zero-weight category is never drawn (searchsorted lands past it on ties)
            k -= 1
        picked[i] = k
        w[k] = 0.0
    return picked
