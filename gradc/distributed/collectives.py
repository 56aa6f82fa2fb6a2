"""Collectives on gradc tensors (in place on their numpy data), with torch.distributed's names.

Before it communicates, every collective exchanges a small fingerprint (which collective, op, root,
dtype and shape) with all ranks, like PyTorch's TORCH_DISTRIBUTED_DEBUG=DETAIL check: ranks that
disagree all raise the same ValueError instead of exchanging mismatched buffers or hanging. DDP's
gradient allreduce skips this (its buckets are checked once, at construction).
"""

from __future__ import annotations

import enum
import zlib
from typing import Any, Sequence

import numpy as np

from gradc.distributed.process_group import _group, comm, mpi
from gradc.tensor import Tensor

__all__ = ["ReduceOp", "all_reduce", "broadcast", "all_gather", "reduce_scatter", "reduce", "gather",
           "all_gather_object", "broadcast_object_list", "Work"]


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"


_COLLECTIVE_CODES = {"all_reduce": 1, "broadcast": 2, "all_gather": 3, "reduce_scatter": 4, "reduce": 5, "gather": 6}
_OP_CODES = {op: i for i, op in enumerate(ReduceOp)}
_MAX_DIMS = 8
_DTYPE_NAMES = {np.dtype(t).num: np.dtype(t).name for t in
                (np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8)}


def mpi_op(op: ReduceOp) -> Any:
    MPI = mpi()
    return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD, ReduceOp.MIN: MPI.MIN,
            ReduceOp.MAX: MPI.MAX}[op]


def _reduce_op(op: Any) -> ReduceOp:
    if isinstance(op, ReduceOp):
        return op
    if isinstance(op, str) and op.upper() in ReduceOp.__members__:
        return ReduceOp[op.upper()]
    raise ValueError(f"unknown reduce op {op!r}; use gradc.distributed.ReduceOp.SUM, AVG, PRODUCT, MIN or MAX")


def _array(tensor: Any, what: str) -> np.ndarray:
    """The numpy buffer a collective writes in place: an eager tensor's data (or a writeable ndarray)."""
    if isinstance(tensor, Tensor):
        array = tensor._concrete(what)
    elif isinstance(tensor, np.ndarray):
        array = tensor
    else:
        raise TypeError(f"{what} expects a gradc Tensor, got {type(tensor).__name__}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        if not isinstance(tensor, Tensor):
            raise ValueError(f"{what} needs a contiguous, writeable array")
        array = tensor._data = np.ascontiguousarray(array).copy()  # e.g. a read-only broadcast result
    if array.dtype == np.bool_:
        raise TypeError(f"{what} does not support bool tensors")
    return array


def _bump(tensor: Any) -> None:
    if isinstance(tensor, Tensor):
        tensor._bump_version()


def _describe(row: np.ndarray) -> str:
    ndim = int(row[4])
    shape = [int(d) for d in row[5:5 + min(ndim, _MAX_DIMS)]] + (["..."] if ndim > _MAX_DIMS else [])
    return f"{_DTYPE_NAMES.get(int(row[3]), 'dtype#' + str(int(row[3])))}{shape}"


def check_agreement(collective: str, array: np.ndarray, op: ReduceOp | None = None, root: int = -1) -> None:
    """All ranks call the same collective on the same dtype and shape (and op and root), or all raise."""
    c = comm()
    row = np.zeros(6 + _MAX_DIMS, dtype=np.int64)
    row[0] = _COLLECTIVE_CODES[collective]
    row[1] = -1 if op is None else _OP_CODES[op]
    row[2] = root
    row[3] = array.dtype.num
    row[4] = array.ndim
    row[5:5 + min(array.ndim, _MAX_DIMS)] = array.shape[:_MAX_DIMS]
    row[-1] = zlib.crc32(repr(array.shape).encode())
    rows = np.empty((c.Get_size(), row.size), dtype=np.int64)
    c.Allgather(row, rows)
    if (rows == rows[0]).all():
        return
    names = {v: k for k, v in _COLLECTIVE_CODES.items()}
    ops = {v: k.name for k, v in _OP_CODES.items()}
    parts = []
    for r, other in enumerate(rows):
        what = f"{names.get(int(other[0]), '?')}"
        if other[1] >= 0:
            what += f"(op={ops[int(other[1])]})"
        if other[2] >= 0:
            what += f"(src={int(other[2])})"
        parts.append(f"rank {r}: {what} on {_describe(other)}")
    raise ValueError(f"{collective}: the ranks called mismatched collectives or gave tensors of different sizes "
                     f"or dtypes, so nothing was communicated; " + "; ".join(parts))


class Work:
    """What async_op=True returns: wait() completes the operation (torch.distributed.Work)."""

    def __init__(self, request: Any, finish: Any = None) -> None:
        self._request, self._finish, self._done = request, finish, False

    def wait(self, timeout: Any = None) -> bool:
        if not self._done:
            self._request.Wait()
            if self._finish is not None:
                self._finish()
            self._done = True
        return True

    def is_completed(self) -> bool:
        return self._done


def all_reduce(tensor: Any, op: Any = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> Work | None:
    """Reduce `tensor` over all ranks, in place; AVG divides the sum by the world size (floats only)."""
    op = _reduce_op(op)
    array = _array(tensor, "all_reduce")
    if op is ReduceOp.AVG and not np.issubdtype(array.dtype, np.floating):
        raise ValueError("all_reduce with ReduceOp.AVG needs a floating point tensor")
    check_agreement("all_reduce", array, op)
    MPI = mpi()

    def finish() -> None:
        if op is ReduceOp.AVG:
            np.divide(array, _group.size, out=array)
        _bump(tensor)

    if async_op:
        return Work(comm().Iallreduce(MPI.IN_PLACE, array, mpi_op(op)), finish)
    comm().Allreduce(MPI.IN_PLACE, array, mpi_op(op))
    finish()
    return None


def _check_rank(value: int, what: str) -> int:
    size = _group.size
    if not isinstance(value, (int, np.integer)) or not 0 <= value < size:
        raise ValueError(f"{what}={value!r} is not a rank of the group (0..{size - 1})")
    return int(value)


def broadcast(tensor: Any, src: int = 0, group: Any = None, async_op: bool = False) -> Work | None:
    """Overwrite `tensor` on every rank with rank `src`'s."""
    comm()
    src = _check_rank(src, "src")
    array = _array(tensor, "broadcast")
    check_agreement("broadcast", array, root=src)
    if async_op:
        return Work(comm().Ibcast(array, root=src), lambda: _bump(tensor))
    comm().Bcast(array, root=src)
    _bump(tensor)
    return None


def all_gather(tensor_list: Sequence[Any], tensor: Any, group: Any = None, async_op: bool = False) -> Work | None:
    """tensor_list[r] = rank r's `tensor`, on every rank."""
    c = comm()
    array = _array(tensor, "all_gather")
    outputs = [_array(t, "all_gather") for t in tensor_list]
    if len(outputs) != c.Get_size():
        raise ValueError(f"all_gather: tensor_list has {len(outputs)} tensors, the world size is {c.Get_size()}")
    for i, out in enumerate(outputs):
        if out.shape != array.shape or out.dtype != array.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] is {out.dtype.name}{list(out.shape)}, the input "
                             f"tensor is {array.dtype.name}{list(array.shape)}")
    check_agreement("all_gather", array)
    gathered = np.empty((c.Get_size(),) + array.shape, dtype=array.dtype)
    c.Allgather(array, gathered)
    for t, out, part in zip(tensor_list, outputs, gathered):
        out[...] = part
        _bump(t)
    return None


def reduce_scatter(output: Any, input_list: Sequence[Any], op: Any = ReduceOp.SUM, group: Any = None,
                   async_op: bool = False) -> Work | None:
    """output on rank r = the reduction over ranks of their input_list[r]."""
    op = _reduce_op(op)
    c = comm()
    out = _array(output, "reduce_scatter")
    inputs = [_array(t, "reduce_scatter") for t in input_list]
    if len(inputs) != c.Get_size():
        raise ValueError(f"reduce_scatter: input_list has {len(inputs)} tensors, the world size is {c.Get_size()}")
    for i, x in enumerate(inputs):
        if x.shape != out.shape or x.dtype != out.dtype:
            raise ValueError(f"reduce_scatter: input_list[{i}] is {x.dtype.name}{list(x.shape)}, the output "
                             f"tensor is {out.dtype.name}{list(out.shape)}")
    if op is ReduceOp.AVG and not np.issubdtype(out.dtype, np.floating):
        raise ValueError("reduce_scatter with ReduceOp.AVG needs a floating point tensor")
    check_agreement("reduce_scatter", out, op)
    send = np.ascontiguousarray(np.stack(inputs)) if inputs else np.empty((0,), out.dtype)
    c.Reduce_scatter_block(send, out, op=mpi_op(op))
    if op is ReduceOp.AVG:
        np.divide(out, c.Get_size(), out=out)
    _bump(output)
    return None


def reduce(tensor: Any, dst: int = 0, op: Any = ReduceOp.SUM, group: Any = None, async_op: bool = False) -> None:
    """The reduction over ranks lands in `tensor` on rank `dst` (the others' are left as they were)."""
    op = _reduce_op(op)
    c = comm()
    dst = _check_rank(dst, "dst")
    array = _array(tensor, "reduce")
    check_agreement("reduce", array, op, root=dst)
    MPI = mpi()
    if c.Get_rank() == dst:
        c.Reduce(MPI.IN_PLACE, array, op=mpi_op(op), root=dst)
        if op is ReduceOp.AVG:
            np.divide(array, c.Get_size(), out=array)
        _bump(tensor)
    else:
        c.Reduce(array, None, op=mpi_op(op), root=dst)


def gather(tensor: Any, gather_list: Sequence[Any] | None = None, dst: int = 0, group: Any = None,
           async_op: bool = False) -> None:
    """gather_list[r] = rank r's `tensor` on rank `dst` (gather_list is given there only)."""
    c = comm()
    dst = _check_rank(dst, "dst")
    array = _array(tensor, "gather")
    is_root = c.Get_rank() == dst
    outputs = [_array(t, "gather") for t in gather_list] if is_root and gather_list is not None else None
    if is_root:
        if outputs is None or len(outputs) != c.Get_size():
            raise ValueError(f"gather: rank {dst} needs a gather_list of {c.Get_size()} tensors")
        for i, out in enumerate(outputs):
            if out.shape != array.shape or out.dtype != array.dtype:
                raise ValueError(f"gather: gather_list[{i}] is {out.dtype.name}{list(out.shape)}, the input "
                                 f"tensor is {array.dtype.name}{list(array.shape)}")
    check_agreement("gather", array, root=dst)
    gathered = np.empty((c.Get_size(),) + array.shape, dtype=array.dtype) if is_root else None
    c.Gather(array, gathered, root=dst)
    if is_root:
        for t, out, part in zip(gather_list, outputs, gathered):
            out[...] = part
            _bump(t)


def all_gather_object(object_list: list, obj: Any, group: Any = None) -> None:
    """object_list[r] = rank r's picklable `obj`, on every rank."""
    everyone = comm().allgather(obj)
    if len(object_list) != len(everyone):
        raise ValueError(f"all_gather_object: object_list has {len(object_list)} entries, the world size is "
                         f"{len(everyone)}")
    object_list[:] = everyone


def broadcast_object_list(object_list: list, src: int = 0, group: Any = None, device: Any = None) -> None:
    """Replace object_list's entries, on every rank, with rank `src`'s (picklable objects)."""
    src = _check_rank(src, "src")
    theirs = comm().bcast(list(object_list), root=src)
    if len(theirs) != len(object_list):
        raise ValueError(f"broadcast_object_list: rank {src} sent {len(theirs)} objects, this rank's list has "
                         f"{len(object_list)}")
    object_list[:] = theirs
