"""Scans and product-style reductions: cumsum, cumprod, prod, all, any.

Composites of slice/pad/where/mul/add: a scan is Hillis-Steele doubling (log2(n) shifted combines),
a product is a pairwise tree (log2(n) halvings). Both are exact in structure for zeros and negative
numbers (no exp(sum(log))), and their gradients come from the primitives' VJP rules.
"""

from __future__ import annotations

from typing import Any, Callable

from gradc import functional as F
from gradc.ir.core import DType, bool_, int64
from gradc.tensor import Tensor, apply, torch_op


def slice_dim(x: Tensor, d: int, start: int, stop: int, step: int = 1) -> Tensor:
    starts = tuple(start if i == d else 0 for i in range(x.ndim))
    stops = tuple(stop if i == d else s for i, s in enumerate(x.shape))
    return apply("slice", x, starts=starts, stops=stops, steps=tuple(step if i == d else 1 for i in range(x.ndim)))


def pad_dim(x: Tensor, d: int, lo: int, hi: int) -> Tensor:
    return apply("pad", x, lo=tuple(lo if i == d else 0 for i in range(x.ndim)),
                 hi=tuple(hi if i == d else 0 for i in range(x.ndim)), interior=(0,) * x.ndim)


def _fill_head(x: Tensor, d: int, count: int, value: float) -> Tensor:
    """x with its first `count` entries along d replaced by `value`."""
    head = F.compare("lt", apply("iota", shape=x.shape, axis=d), count)
    return F.where(head, F.scalar_like(value, x) if x.dtype.is_float else value, x)


def _scan(x: Tensor, d: int, combine: Callable, identity: float) -> Tensor:
    n = x.shape[d]
    if n <= 1:
        return apply("reshape", x, shape=x.shape)  # a new tensor (and node), as PyTorch
    shift = 1
    while shift < n:
        shifted = pad_dim(slice_dim(x, d, 0, n - shift), d, shift, 0)
        if identity != 0:
            shifted = _fill_head(shifted, d, shift, identity)
        x = combine(x, shifted)
        shift *= 2
    return x


def _scan_input(x: Any, dim: int, dtype: DType | None) -> tuple[Tensor, int]:
    x = F.to_tensor(x)
    if dtype is not None:
        x = F.cast(x, dtype)
    elif not x.dtype.is_float:  # bool and integers accumulate in int64, as PyTorch's cumsum/cumprod/prod
        x = F.cast(x, int64)
    if x.ndim == 0:
        return x, -1
    return x, F.normalize_dim(dim, x.ndim)


@torch_op("CumsumBackward0")
def cumsum(x: Any, dim: int, dtype: DType | None = None) -> Tensor:
    x, d = _scan_input(x, dim, dtype)
    if d < 0:
        return apply("reshape", x, shape=x.shape)
    return _scan(x, d, F.add, 0)


@torch_op("CumprodBackward0")
def cumprod(x: Any, dim: int, dtype: DType | None = None) -> Tensor:
    x, d = _scan_input(x, dim, dtype)
    if d < 0:
        return apply("reshape", x, shape=x.shape)
    return _scan(x, d, F.mul, 1)


def _tree_product(x: Tensor, d: int) -> Tensor:
    while x.shape[d] > 1:
        n = x.shape[d]
        if n % 2:
            x = pad_dim(x, d, 0, 1)  # odd: pad the far end with a 1
            x = F.where(F.compare("lt", apply("iota", shape=x.shape, axis=d), n), x,
                        F.scalar_like(1, x) if x.dtype.is_float else 1)
            n += 1
        x = F.mul(slice_dim(x, d, 0, n, 2), slice_dim(x, d, 1, n, 2))
    return x


def _ones_of(empty_sum: Tensor) -> Tensor:
    # the product over nothing is 1; adding 0 * (the empty sum) keeps the input in the graph
    return F.add(F.mul(empty_sum, 0), 1)


@torch_op(lambda x, dim=None, keepdim=False, dtype=None: "ProdBackward0" if dim is None else "ProdBackward1")
def prod(x: Any, dim: int | None = None, keepdim: bool = False, dtype: DType | None = None) -> Tensor:
    x, _ = _scan_input(x, 0, dtype)
    if dim is None:
        flat = F.reshape(x, (-1,))
        if flat.shape[0] == 0:
            return _ones_of(apply("reduce_sum", flat, axes=(0,)))
        return F.reshape(_tree_product(flat, 0), ())
    d = F.normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        return apply("reshape", x, shape=x.shape)
    kept = tuple(1 if i == d else s for i, s in enumerate(x.shape))
    if x.shape[d] == 0:
        out = _ones_of(F.reshape(apply("reduce_sum", x, axes=(d,)), kept))
    else:
        out = _tree_product(x, d)
    return out if keepdim else F.reshape(out, tuple(s for i, s in enumerate(x.shape) if i != d))


def _truth_count(x: Any, dim: Any, keepdim: bool) -> tuple[Tensor, int]:
    x = F.to_tensor(x)
    ones = F.cast(x if x.dtype == bool_ else F.compare("ne", x, 0), int64)  # NaN counts as true
    dims = F.normalize_dims(dim, x.ndim)
    count = 1
    for d in dims:
        count *= x.shape[d]
    total = apply("reduce_sum", ones, axes=dims)
    if keepdim:
        total = apply("reshape", total, shape=tuple(1 if i in dims else s for i, s in enumerate(x.shape)))
    return total, count


def all(x: Any, dim: Any = None, keepdim: bool = False) -> Tensor:
    total, count = _truth_count(x, dim, keepdim)
    return F.compare("eq", total, count)


def any(x: Any, dim: Any = None, keepdim: bool = False) -> Tensor:
    total, _ = _truth_count(x, dim, keepdim)
    return F.compare("gt", total, 0)


FUNCTIONS = {"cumsum": cumsum, "cumprod": cumprod, "prod": prod, "all": all, "any": any}
METHODS = dict(FUNCTIONS)
INPLACE = ("cumsum", "cumprod")
