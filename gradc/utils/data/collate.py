"""default_collate / default_convert: samples -> a batch, as torch.utils.data's (tensors stack along a
new first dimension; numbers, numpy arrays, tuples, lists, dicts and namedtuples recurse)."""

from __future__ import annotations

import collections.abc
from typing import Any

import numpy as np

from gradc.tensor import Tensor

__all__ = ["default_collate", "default_convert"]

_FORMAT = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _from_numpy(array: np.ndarray) -> Tensor:
    from gradc.factories import from_numpy
    array = np.ascontiguousarray(array)
    try:
        return from_numpy(array)
    except TypeError:
        # dtypes this build of gradc lacks (uint8 images, int32 labels): the nearest supported one
        return from_numpy(array.astype(np.int64 if array.dtype.kind in "iu" else np.float32))


def _stack(batch: list[Tensor]) -> Tensor:
    shape = batch[0].shape
    if any(t.shape != shape for t in batch):
        raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(shape)} at entry 0 and "
                           f"{list(next(t.shape for t in batch if t.shape != shape))} at entry "
                           f"{next(i for i, t in enumerate(batch) if t.shape != shape)}")
    if any(t.requires_grad for t in batch):
        import gradc
        if hasattr(gradc, "stack"):
            return gradc.stack(batch, 0)
    return _from_numpy(np.stack([t._concrete("a batch element") for t in batch]))


def _numbers(batch: list, dtype: Any) -> Tensor:
    return _from_numpy(np.array(batch, dtype=dtype))


def default_collate(batch: list) -> Any:
    """Collate a list of samples into a batch (PyTorch's rules, including a tuple of fields -> a list)."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack(batch)
    if isinstance(elem, np.ndarray) or isinstance(elem, np.generic):
        if elem.dtype.kind in "SaUO":
            raise TypeError(_FORMAT.format(elem.dtype))
        if isinstance(elem, np.generic) or elem.ndim == 0:
            return _from_numpy(np.array(batch))
        return default_collate([_from_numpy(b) for b in batch])
    if isinstance(elem, bool):
        return _numbers(batch, np.bool_)
    if isinstance(elem, float):
        return _numbers(batch, np.float64)
    if isinstance(elem, int):
        return _numbers(batch, np.int64)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        try:
            return type(elem)({key: default_collate([d[key] for d in batch]) for key in elem})
        except TypeError:
            return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if not all(len(e) == size for e in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        transposed = list(zip(*batch))  # tuples, as PyTorch passes them (strings come back as a tuple)
        if isinstance(elem, tuple):
            return [default_collate(samples) for samples in transposed]
        try:
            return type(elem)([default_collate(samples) for samples in transposed])
        except TypeError:
            return [default_collate(samples) for samples in transposed]
    raise TypeError(_FORMAT.format(type(elem)))


def default_convert(data: Any) -> Any:
    """Without auto-batching: numpy arrays become tensors, containers recurse, the rest stays."""
    if isinstance(data, np.ndarray) and data.dtype.kind not in "SaUO":
        return _from_numpy(data)
    if isinstance(data, np.generic) and data.dtype.kind not in "SaUO":
        return _from_numpy(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        return type(data)({k: default_convert(v) for k, v in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, tuple):
        return [default_convert(d) for d in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        try:
            return type(data)([default_convert(d) for d in data])
        except TypeError:
            return [default_convert(d) for d in data]
    return data
