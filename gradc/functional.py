"""Front-end operations with PyTorch names, written once for eager and traced tensors.

Each function validates and promotes its arguments the way PyTorch does (dtype promotion, numpy
broadcasting, negative dims), then emits primitives through `apply`. Broadcasting and dtype casts
become explicit `broadcast_to` / `cast` ops, so the IR has none implicit.
"""

from __future__ import annotations

import builtins
from collections import namedtuple
from typing import Any, Sequence

import numpy as np

from gradc.device import get_default_dtype
from gradc.ir.core import DType, bool_, float32, float64, int32, int64, uint8  # noqa: F401  (F.float64 for methods)
from gradc.promotion import (  # noqa: F401  (SCALAR_NAMES and promote_types are re-exported)
    SCALAR_NAMES,
    checked_number,
    promote_types,
    result_type,
    wrap_number,
)
from gradc.tensor import Tensor, apply, as_tensor_like, current_trace, torch_op

# ----------------------------------------------------------------------------- argument helpers

def to_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if isinstance(x, (bool, int, float, np.number)) or (isinstance(x, np.ndarray) and x.ndim == 0 and like):
        return as_tensor_like(x.item() if isinstance(x, (np.ndarray, np.number)) else x, like)
    return Tensor(x)


def cast(x: Tensor, dtype: DType) -> Tensor:
    return x if x.dtype == dtype else apply("cast", x, dtype=dtype)


def long_index(index: Tensor, message: str, error: type = RuntimeError) -> Tensor:
    """An index tensor as int64: PyTorch takes int32 indices too (widened here); other dtypes raise."""
    if index.dtype == int64:
        return index
    if index.dtype == int32:
        return cast(index, int64)
    raise error(message)


def broadcast_shapes(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    """numpy broadcasting with PyTorch's error message, which also names both shapes."""
    rank = builtins.max(len(a), len(b))
    pa, pb = (1,) * (rank - len(a)) + tuple(a), (1,) * (rank - len(b)) + tuple(b)
    out = []
    for i, (da, db) in enumerate(zip(pa, pb)):
        if da != db and 1 not in (da, db):
            raise RuntimeError(f"The size of tensor a ({da}) must match the size of tensor b ({db}) at "
                               f"non-singleton dimension {i} (shapes {list(a)} and {list(b)})")
        out.append(db if da == 1 else da)
    return tuple(out)


def expand_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    return x if x.shape == tuple(shape) else apply("broadcast_to", x, shape=tuple(shape))


_NUMBERS = (bool, int, float)
# numpy kinds of tensors that a Python number of each type leaves alone (its category is not higher)
_KEEPS_KIND = {bool: "biuf", int: "iuf", float: "f"}


def _eager_scalar(value: Any, like: Tensor) -> Tensor:
    """A Python number in like's dtype as a read-only eager tensor of like's shape (a stride-0 view)."""
    dtype = like._data.dtype
    base = wrap_number(value, like.dtype)
    view = np.ndarray(like._data.shape, dtype, base, strides=(0,) * like._data.ndim)
    view.flags.writeable = False
    return Tensor._from_array(view)


def _is_number(x: Any, anchored: bool) -> bool:
    return isinstance(x, (bool, int, float, np.number, np.bool_)) or (
        isinstance(x, np.ndarray) and x.ndim == 0 and anchored)


def promote(*args: Any, float_result: bool = False) -> list[Tensor]:
    """PyTorch's result dtype (gradc.promotion.result_type) and broadcast shape for all operands;
    float_result: integer results become the default float dtype (true division, pow)."""
    if len(args) == 2:  # fast paths for the eager (tensor, tensor) and (tensor, number) cases
        a, b = args
        if isinstance(a, Tensor) and a._data is not None and (not float_result or a._data.dtype.kind == "f"):
            if isinstance(b, Tensor):
                if b._data is not None and a._data.dtype == b._data.dtype and a._data.shape == b._data.shape:
                    return [a, b]
            elif type(b) in _NUMBERS and a._data.dtype.kind in _KEEPS_KIND[type(b)] and current_trace() is None:
                return [a, _eager_scalar(b, a)]
        elif (isinstance(b, Tensor) and b._data is not None and type(a) in _NUMBERS and b._data.dtype.kind == "f"
              and current_trace() is None):
            return [_eager_scalar(a, b), b]
    anchored = any(isinstance(a, Tensor) for a in args)
    items = [(a.item() if isinstance(a, (np.ndarray, np.number, np.bool_)) else a) if _is_number(a, anchored)
             else to_tensor(a) for a in args]
    dtype = result_type(items)
    if float_result and not dtype.is_float:
        dtype = get_default_dtype()
    tensors = [cast(t, dtype) if isinstance(t, Tensor) else Tensor._from_array(wrap_number(t, dtype))
               for t in items]
    shape: tuple[int, ...] = ()
    for t in tensors:
        shape = broadcast_shapes(shape, t.shape)
    return [expand_to(t, shape) for t in tensors]


def normalize_dim(dim: int, rank: int) -> int:
    if not -builtins.max(rank, 1) <= dim < builtins.max(rank, 1):
        raise IndexError(f"Dimension out of range (expected to be in range of [{-builtins.max(rank, 1)}, "
                         f"{builtins.max(rank, 1) - 1}], but got {dim})")
    return dim % builtins.max(rank, 1)


def normalize_dims(dim: Any, rank: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(rank))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return tuple(sorted({normalize_dim(d, rank) for d in dims})) if rank else ()


def scalar_like(value: float, like: Tensor) -> Tensor:
    return expand_to(as_tensor_like(value, like) if like._value is None else
                     apply("const", value=value, shape=(), dtype=like.dtype), like.shape)


# ----------------------------------------------------------------------------- elementwise

def _binary(prim: str, a: Any, b: Any, float_result: bool = False) -> Tensor:
    x, y = promote(a, b, float_result=float_result)
    return apply(prim, x, y)


add = torch_op("AddBackward0")(lambda a, b, alpha=1: _binary("add", a, b if alpha == 1 else mul(b, alpha)))
sub = torch_op("SubBackward0")(lambda a, b, alpha=1: _binary("sub", a, b if alpha == 1 else mul(b, alpha)))
rsub = torch_op("RsubBackward1")(lambda a, b: _binary("sub", b, a))


def rdiv(a: Tensor, b: Any) -> Tensor:
    """number / tensor: PyTorch computes reciprocal(a) * b (so the node is MulBackward0)."""
    return mul(reciprocal(a), b) if isinstance(b, (int, float, bool, np.number)) else div(b, a)
mul = torch_op("MulBackward0")(lambda a, b: _binary("mul", a, b))
div = torch_op("DivBackward0")(lambda a, b: _binary("div", a, b, float_result=True))
maximum = torch_op("MaximumBackward0")(lambda a, b: _binary("maximum", a, b))


def order_flip(x: Tensor) -> Tensor:
    """An order-reversing involution, so a minimum is flip(max(flip(.))): negation for floats (NaN stays NaN,
    the gradient passes through); for integers all-ones minus x (~x), since -x overflows at the type's minimum
    and wraps for unsigned types."""
    if x.dtype.is_float:
        return apply("neg", x)
    ones = int(np.iinfo(x.dtype.numpy).max) if np.iinfo(x.dtype.numpy).min == 0 else -1
    return apply("sub", scalar_like(ones, x), x)


@torch_op("MinimumBackward0")
def minimum(a: Any, b: Any) -> Tensor:
    x, y = promote(a, b)
    if x.dtype == bool_:
        return cast(minimum(cast(x, uint8), cast(y, uint8)), bool_)
    return order_flip(apply("maximum", order_flip(x), order_flip(y)))


def _pow_node(a: Any, b: Any) -> str:
    # PowBackward0: tensor ** number; PowBackward1: tensor ** tensor; PowBackward2: number ** tensor
    if not isinstance(a, Tensor):
        return "PowBackward2"
    return "PowBackward1" if isinstance(b, Tensor) else "PowBackward0"


@torch_op(_pow_node)
def pow(a: Any, b: Any) -> Tensor:
    x, y = promote(a, b, float_result=True)
    return apply("pow", x, y)


def _unary(prim: str, node: str, float_result: bool = True):
    @torch_op(node)
    def op(x: Any) -> Tensor:
        x = to_tensor(x)
        if float_result and not x.dtype.is_float:
            x = cast(x, float32)
        return apply(prim, x)
    op.__name__ = prim
    return op


neg = _unary("neg", "NegBackward0", float_result=False)
exp = _unary("exp", "ExpBackward0")
log = _unary("log", "LogBackward0")
sqrt = _unary("sqrt", "SqrtBackward0")
tanh = _unary("tanh", "TanhBackward0")
sigmoid = _unary("sigmoid", "SigmoidBackward0")
reciprocal = _unary("recip", "ReciprocalBackward0")
relu = _unary("relu", "ReluBackward0", float_result=False)
abs = _unary("abs", "AbsBackward0", float_result=False)


def compare(pred: str, a: Any, b: Any) -> Tensor:
    x, y = promote(a, b)
    return apply("compare", x, y, pred=pred)


def _check_fill(x: Any, *values: Any) -> None:
    """A Python int that stands for values of the integer tensor x (where, clamp bounds) must fit its dtype."""
    if isinstance(x, Tensor) and not x.dtype.is_float:
        for v in values:
            if isinstance(v, int):
                checked_number(v, x.dtype)


@torch_op("WhereBackward0")
def where(condition: Any, a: Any, b: Any) -> Tensor:
    _check_fill(a, b)
    _check_fill(b, a)
    c = to_tensor(condition)
    if c.dtype != bool_:
        c = compare("ne", c, 0)
    x, y = promote(a, b)
    shape = broadcast_shapes(c.shape, x.shape)
    return apply("where", expand_to(c, shape), expand_to(x, shape), expand_to(y, shape))


@torch_op(lambda x, min=None, max=None: "ClampBackward0" if isinstance(min, Tensor) or isinstance(max, Tensor)
          else "ClampBackward1")
def clamp(x: Tensor, min: Any = None, max: Any = None) -> Tensor:
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    _check_fill(x, min, max)
    out = x
    if min is not None:
        lo = promote(out, min)
        out = where(compare("lt", *lo), lo[1], lo[0])
    if max is not None:
        hi = promote(out, max)
        out = where(compare("gt", *hi), hi[1], hi[0])
    return out


# ----------------------------------------------------------------------------- reductions

def _keep(x: Tensor, reduced: Tensor, dims: tuple[int, ...], keepdim: bool) -> Tensor:
    if not keepdim:
        return reduced
    return apply("reshape", reduced, shape=tuple(1 if i in dims else d for i, d in enumerate(x.shape)))


@torch_op(lambda x, dim=None, keepdim=False, dtype=None: "SumBackward0" if dim is None else "SumBackward1")
def sum(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: DType | None = None) -> Tensor:
    x = to_tensor(x)
    if dtype is not None:
        x = cast(x, dtype)
    elif not x.dtype.is_float:  # bool and integers sum in int64, as PyTorch
        x = cast(x, int64)
    dims = normalize_dims(dim, x.ndim)
    return _keep(x, apply("reduce_sum", x, axes=dims), dims, keepdim)


@torch_op(lambda x, dim=None, keepdim=False, dtype=None: "MeanBackward0" if dim is None else "MeanBackward1")
def mean(x: Tensor, dim: Any = None, keepdim: bool = False, dtype: DType | None = None) -> Tensor:
    x = to_tensor(x)
    if dtype is not None:
        x = cast(x, dtype)
    if not x.dtype.is_float:
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a floating "
                           f"point or complex dtype. Got: {SCALAR_NAMES[x.dtype]}")
    dims = normalize_dims(dim, x.ndim)
    count = int(np.prod([x.shape[d] for d in dims], dtype=np.int64))
    total = apply("reduce_sum", x, axes=dims)
    return _keep(x, apply("mul", total, scalar_like(1.0 / count if count else float("nan"), total)), dims, keepdim)


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _argmax(x: Tensor, dim: int, keepdim: bool, best: Tensor) -> Tensor:
    # the first index holding the maximum, as numpy and PyTorch: max over (n-1-i) where x == best
    n = x.shape[dim]
    iota = apply("iota", shape=x.shape, axis=dim)
    wide_best = expand_to(apply("reshape", best, shape=tuple(1 if i == dim else d for i, d in enumerate(x.shape))),
                          x.shape)
    hit = apply("compare", x, wide_best, pred="eq")
    if x.dtype.is_float:  # a NaN maximum is found at the first NaN (NaN != NaN)
        hit = apply("where", apply("compare", x, x, pred="ne"), apply("compare", wide_best, wide_best, pred="ne"),
                    hit)
    flipped = apply("sub", scalar_like(n - 1, iota), iota)
    score = apply("where", hit, flipped, scalar_like(-1, iota))
    index = apply("sub", scalar_like(n - 1, best_index := apply("reduce_max", score, axes=(dim,))), best_index)
    return _keep(x, index, (dim,), keepdim)


def _check_nonempty(name: str, x: Tensor, dims: Sequence[int]) -> None:
    for d in dims:
        if x.shape[d] == 0:
            raise IndexError(f"{name}(): Expected reduction dim {d} to have non-zero size.")


def _max_min(x: Tensor, dim: Any, keepdim: bool, sign: int, name: str | None = None) -> Any:
    x = to_tensor(x)
    if x.dtype == bool_:  # bools order as 0 < 1: reduce them as uint8
        out = _max_min(cast(x, uint8), dim, keepdim, sign, name)
        return cast(out, bool_) if dim is None else MaxResult(cast(out.values, bool_), out.indices)
    y = x if sign > 0 else order_flip(x)
    name = name or ("max" if sign > 0 else "min")
    if dim is None:
        if x.numel() == 0:
            raise RuntimeError(f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
                               "Specify the reduction dim with the 'dim' argument.")
        best = apply("reduce_max", y, axes=tuple(range(x.ndim)))
        return best if sign > 0 else order_flip(best)
    d = normalize_dim(dim, x.ndim)
    _check_nonempty(name, x, (d,))
    best = apply("reduce_max", y, axes=(d,))
    index = _argmax(y, d, False, best)
    # the values are picked at the index, so the gradient goes to that element only (as PyTorch)
    values = apply("gather", x, index, axis=d) if x.dtype.is_float else (
        best if sign > 0 else order_flip(best))
    return MaxResult(_keep(x, values, (d,), keepdim), _keep(x, index, (d,), keepdim))


_max_all = torch_op("MaxBackward1")(lambda x: _max_min(x, None, False, 1))
_min_all = torch_op("MinBackward1")(lambda x: _max_min(x, None, False, -1))


def _named(name: str, x: Any, values: Tensor) -> Tensor:
    # the values of a (values, indices) pair get the grad_fn PyTorch gives them
    from gradc.tensor import Node, next_function
    if values._record is not None and values._value is None:
        values.grad_fn = Node(name, (next_function(x),))
    return values


def max(x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    """torch.max: the maximum (ties share the gradient), or (values, indices) along `dim`;
    with a tensor second argument it is torch.maximum."""
    if isinstance(dim, Tensor):
        return maximum(x, dim)
    if dim is None:
        return _max_all(x)
    result = _max_min(x, dim, keepdim, 1)
    return MaxResult(_named("MaxBackward0", x, result.values), result.indices)


def min(x: Any, dim: Any = None, keepdim: bool = False) -> Any:
    if isinstance(dim, Tensor):
        return minimum(x, dim)
    if dim is None:
        return _min_all(x)
    result = _max_min(x, dim, keepdim, -1)
    return MaxResult(_named("MinBackward0", x, result.values), result.indices)


def _amax(x: Any, dim: Any, keepdim: bool, sign: int) -> Tensor:
    # ties share the gradient (reduce_max's rule), as PyTorch's amax/amin
    x = to_tensor(x)
    if x.dtype == bool_:
        return cast(_amax(cast(x, uint8), dim, keepdim, sign), bool_)
    dims = normalize_dims(None if dim == () else dim, x.ndim)
    name = "amax" if sign > 0 else "amin"
    if dim == () and x.numel() == 0:
        raise RuntimeError(f"{name}(): Expected reduction dim to be specified for input.numel() == 0. Specify "
                           "the reduction dim with the 'dim' argument.")
    _check_nonempty(name, x, dims)
    if sign > 0:
        return _keep(x, apply("reduce_max", x, axes=dims), dims, keepdim)
    return _keep(x, order_flip(apply("reduce_max", order_flip(x), axes=dims)), dims, keepdim)


amax = torch_op("AmaxBackward0")(lambda x, dim=(), keepdim=False: _amax(x, dim, keepdim, 1))
amin = torch_op("AminBackward0")(lambda x, dim=(), keepdim=False: _amax(x, dim, keepdim, -1))
AminmaxResult = namedtuple("AminmaxResult", ["min", "max"])


def aminmax(x: Any, *, dim: int | None = None, keepdim: bool = False) -> AminmaxResult:
    """torch.aminmax: (amin, amax) over one dim or all."""
    x = to_tensor(x)
    if x.numel() == 0:
        raise RuntimeError("aminmax(): cannot compute aminmax over an empty dimension as the operation has no "
                           "identity")
    node, dims = torch_op("AminmaxBackward0")(_amax), () if dim is None else dim
    return AminmaxResult(node(x, dims, keepdim, -1), node(x, dims, keepdim, 1))


def argmax(x: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    x = to_tensor(x)
    if x.dtype == bool_:
        raise RuntimeError("argmax(): does not support bool input")
    if dim is None:
        return _max_min(reshape(x, (-1,)), 0, False, 1, "argmax").indices
    return _max_min(x, dim, keepdim, 1, "argmax").indices


# ----------------------------------------------------------------------------- layout

def _resolve_shape(shape: Sequence[int], numel: int, current: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1], dtype=np.int64))
        if known == 0 or numel % known:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    if int(np.prod(shape, dtype=np.int64)) != numel or builtins.min(shape, default=0) < 0:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel} "
                           f"(input shape {list(current)})")
    return shape


def _shape_args(shape: tuple) -> tuple:
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


@torch_op("ViewBackward0")
def reshape(x: Tensor, *shape: Any) -> Tensor:
    x = to_tensor(x)
    new = _resolve_shape(_shape_args(shape), x.numel(), x.shape)
    return apply("reshape", x, shape=new)


view = reshape


@torch_op("PermuteBackward0")
def permute(x: Tensor, *dims: Any) -> Tensor:
    dims = tuple(normalize_dim(d, x.ndim) for d in _shape_args(dims))
    if sorted(dims) != list(range(x.ndim)):
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match "
                           f"the length of the desired ordering of dimensions i.e. input.dim() = {x.ndim} "
                           f"is not equal to len(dims) = {len(dims)}")
    return apply("permute", x, perm=dims)


@torch_op("TransposeBackward0")
def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    perm = list(range(x.ndim))
    a, b = normalize_dim(dim0, x.ndim), normalize_dim(dim1, x.ndim)
    perm[a], perm[b] = perm[b], perm[a]
    return apply("permute", x, perm=tuple(perm)) if x.ndim > 1 else apply("reshape", x, shape=x.shape)


@torch_op("TBackward0")
def t(x: Tensor) -> Tensor:
    if x.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {x.ndim}D")
    return apply("permute", x, perm=(1, 0)) if x.ndim == 2 else apply("reshape", x, shape=x.shape)


@torch_op("ExpandBackward0")
def expand(x: Tensor, *shape: Any) -> Tensor:
    shape = _shape_args(shape)
    lead = len(shape) - x.ndim
    target = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
    broadcast_shapes(x.shape, target)
    return apply("broadcast_to", x, shape=target)


@torch_op("UnsqueezeBackward0")
def unsqueeze(x: Tensor, dim: int) -> Tensor:
    d = normalize_dim(dim, x.ndim + 1)
    return apply("reshape", x, shape=x.shape[:d] + (1,) + x.shape[d:])


@torch_op(lambda x, dim=None: "SqueezeBackward0" if dim is None else
          "SqueezeBackward1" if isinstance(dim, int) else "SqueezeBackward2")
def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    dims = normalize_dims(dim, x.ndim)
    return apply("reshape", x, shape=tuple(s for i, s in enumerate(x.shape) if not (i in dims and s == 1)))


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return reshape(x, (1,))
    a, b = normalize_dim(start_dim, x.ndim), normalize_dim(end_dim, x.ndim)
    return reshape(x, x.shape[:a] + (-1,) + x.shape[b + 1:])


@torch_op(lambda x, dim, index: "GatherBackward0")
def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """torch.gather restricted to an index with size 1 along `dim` (one pick per row)."""
    d = normalize_dim(dim, x.ndim)
    index = long_index(to_tensor(index), "gather(): Expected dtype int32/int64 for index")
    expected = x.shape[:d] + (1,) + x.shape[d + 1:]
    if index.shape != expected:
        raise RuntimeError(f"gradc.gather supports an index of shape {list(expected)} (one pick along dim "
                           f"{d}), got {list(index.shape)}")
    picked = apply("gather", x, apply("reshape", index, shape=x.shape[:d] + x.shape[d + 1:]), axis=d)
    return apply("reshape", picked, shape=expected)


def _index_parts(x: Tensor, key: Any) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = builtins.sum(k is not None and k is not Ellipsis for k in key)
    if used > x.ndim:
        raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
    expanded = []
    for k in key:
        if k is Ellipsis:
            expanded.extend([slice(None)] * (x.ndim - used))
        else:
            expanded.append(k)
    expanded.extend([slice(None)] * (x.ndim - builtins.sum(k is not None for k in expanded)))
    return tuple(expanded)


def _index_node(x: Tensor, key: Any) -> str:
    """PyTorch names an indexing result after its last effective step."""
    if isinstance(key, slice):
        return "SliceBackward0"
    for k in reversed(key if isinstance(key, tuple) else (key,)):
        if k is None:
            return "UnsqueezeBackward0"
        if isinstance(k, (int, np.integer)):
            return "SelectBackward0"
        if isinstance(k, slice) and k != slice(None):
            return "SliceBackward0"
    return "AliasBackward0"


@torch_op(_index_node)
def getitem(x: Tensor, key: Any) -> Tensor:
    starts, stops, steps, out_shape = [], [], [], []
    axis = 0
    for k in _index_parts(x, key):
        if k is None:
            out_shape.append(1)
            continue
        size = x.shape[axis]
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            if not -size <= k < size:
                raise IndexError(f"index {k} is out of bounds for dimension {axis} with size {size}")
            k = int(k) % size
            starts.append(k), stops.append(k + 1), steps.append(1)
        elif isinstance(k, slice):
            lo, hi, step = k.indices(size)
            if step < 1:
                raise ValueError("step must be greater than zero")
            hi = builtins.max(hi, lo)
            starts.append(lo), stops.append(hi), steps.append(step)
            out_shape.append(len(range(lo, hi, step)))
        else:
            raise IndexError(f"gradc supports indexing with ints, slices, None and ..., got {type(k).__name__}")
        axis += 1
    sliced = apply("slice", x, starts=tuple(starts), stops=tuple(stops), steps=tuple(steps))
    return apply("reshape", sliced, shape=tuple(out_shape))


# ----------------------------------------------------------------------------- matmul

def _matmul_node(a: Any, b: Any) -> str:
    ra, rb = to_tensor(a).ndim, to_tensor(b).ndim
    if ra == 1 and rb == 1:
        return "DotBackward0"
    if ra == 2 and rb == 1:
        return "MvBackward0"
    if ra == 1 and rb == 2:
        return "SqueezeBackward4"
    if ra == 2 and rb == 2:
        return "MmBackward0"
    return "UnsafeViewBackward0"


def _matmul_mismatch(a: tuple, b: tuple) -> str:
    """PyTorch's message for the kernel it would pick, followed by both shapes."""
    rows = int(np.prod(a[:-1], dtype=np.int64))
    if len(a) == 1 and len(b) == 1:
        text = (f"inconsistent tensor size, expected tensor [{a[0]}] and src [{b[0]}] to have the same number of "
                f"elements, but got {a[0]} and {b[0]} elements respectively")
    elif len(b) == 1:
        text = f"size mismatch, got input ({rows}), mat ({rows}x{a[-1]}), vec ({b[0]})"
    elif len(b) == 2:
        text = f"mat1 and mat2 shapes cannot be multiplied ({rows}x{a[-1]} and {b[0]}x{b[1]})"
    else:
        batch = int(np.prod(b[:-2], dtype=np.int64))
        text = (f"Expected size for first two dimensions of batch2 tensor to be: [{batch}, {a[-1]}] but got: "
                f"[{batch}, {b[-2]}].")
    return f"{text} (shapes {list(a)} and {list(b)})"


@torch_op(_matmul_node)
def matmul(a: Any, b: Any) -> Tensor:
    x, y = to_tensor(a), to_tensor(b)
    if x.ndim == 0 or y.ndim == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are {x.ndim}D and {y.ndim}D")
    if x.dtype == y.dtype and not x.dtype.is_float and x.dtype is not bool_:
        dtype = x.dtype  # integer products stay integer and wrap, as PyTorch's
    else:  # gradc is lenient where PyTorch wants one dtype: mixed operands promote, to a float at least
        dtype = promote_types(promote_types(x.dtype, y.dtype), float32)
    x, y = cast(x, dtype), cast(y, dtype)
    if x.shape[-1] != y.shape[-2 if y.ndim > 1 else -1]:
        raise RuntimeError(_matmul_mismatch(x.shape, y.shape))
    x2 = apply("reshape", x, shape=(1,) + x.shape) if x.ndim == 1 else x
    y2 = apply("reshape", y, shape=y.shape + (1,)) if y.ndim == 1 else y
    batch = broadcast_shapes(x2.shape[:-2], y2.shape[:-2])
    x2 = expand_to(x2, batch + x2.shape[-2:])
    y2 = expand_to(y2, batch + y2.shape[-2:])
    out = apply("matmul", x2, y2)
    shape = batch + (x2.shape[-2],) * (x.ndim > 1) + (y2.shape[-1],) * (y.ndim > 1)
    return out if out.shape == shape else apply("reshape", out, shape=shape)


mm = matmul


# ----------------------------------------------------------------------------- softmax family

@torch_op("LogSoftmaxBackward0")
def log_softmax(x: Tensor, dim: int = -1, dtype: DType | None = None) -> Tensor:
    x = cast(to_tensor(x), dtype) if dtype else to_tensor(x)
    d = normalize_dim(dim, x.ndim)
    if x.ndim == 0:
        return apply("sub", x, x)
    # max-shifted log-sum-exp: never overflows
    keep = tuple(1 if i == d else s for i, s in enumerate(x.shape))
    shift = apply("stop_gradient", apply("reduce_max", x, axes=(d,)))
    shifted = apply("sub", x, expand_to(apply("reshape", shift, shape=keep), x.shape))
    lse = apply("log", apply("reduce_sum", apply("exp", shifted), axes=(d,)))
    return apply("sub", shifted, expand_to(apply("reshape", lse, shape=keep), x.shape))


@torch_op("SoftmaxBackward0")
def softmax(x: Tensor, dim: int = -1, dtype: DType | None = None) -> Tensor:
    x = cast(to_tensor(x), dtype) if dtype else to_tensor(x)
    d = normalize_dim(dim, x.ndim)
    keep = tuple(1 if i == d else s for i, s in enumerate(x.shape))
    if x.ndim == 0:
        return apply("exp", apply("sub", x, x))
    shift = apply("stop_gradient", apply("reduce_max", x, axes=(d,)))
    e = apply("exp", apply("sub", x, expand_to(apply("reshape", shift, shape=keep), x.shape)))
    total = apply("reduce_sum", e, axes=(d,))
    return apply("div", e, expand_to(apply("reshape", total, shape=keep), x.shape))


@torch_op("ToCopyBackward0")
def cast_op(x: Tensor, dtype: DType) -> Tensor:
    """Tensor.to(dtype) / .float() / .double(): a copy in another dtype."""
    return apply("cast", x, dtype=dtype) if x.dtype != dtype else apply("reshape", x, shape=x.shape)
