"""torch.utils.data.DataLoader: batches from a map-style or iterable dataset, PyTorch's argument rules.

Loading runs in the calling process: num_workers, pin_memory, prefetch_factor and friends are accepted
and checked, but no worker processes are started (get_worker_info() is always None). A TensorDataset
(or a Subset of one) with the default collate is batched by one fancy index per tensor instead of
per-sample indexing.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

from gradc.tensor import Tensor
from gradc.utils.data.collate import _from_numpy, default_collate, default_convert
from gradc.utils.data.dataset import Dataset, IterableDataset, Subset, TensorDataset
from gradc.utils.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler, draw_seed

__all__ = ["DataLoader", "get_worker_info"]


def get_worker_info() -> None:
    """None: gradc loads data in the main process."""
    return None


class DataLoader:
    """Iterates batches of `dataset`: samples chosen by a sampler, grouped by a batch sampler, collated."""

    def __init__(self, dataset: Dataset | Iterable, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Sampler | Iterable | None = None, batch_sampler: Sampler | Iterable | None = None,
                 num_workers: int = 0, collate_fn: Callable[[list], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn: Callable | None = None,
                 multiprocessing_context: Any = None, generator: Any = None, *, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, pin_memory_device: str = "", in_order: bool = True) -> None:
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                             "multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                             "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None.")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        self.dataset, self.num_workers, self.pin_memory, self.timeout = dataset, num_workers, pin_memory, timeout
        self.worker_init_fn, self.prefetch_factor, self.persistent_workers = \
            worker_init_fn, prefetch_factor, persistent_workers
        self.multiprocessing_context, self.pin_memory_device, self.in_order = \
            multiprocessing_context, pin_memory_device, in_order
        self._iterable = isinstance(dataset, IterableDataset)
        if self._iterable:
            if shuffle not in (None, False):
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle option, but got "
                                 f"shuffle={shuffle}")
            if sampler is not None:
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified sampler option, but got "
                                 f"sampler={sampler}")
            if batch_sampler is not None:
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified batch_sampler option, but "
                                 f"got batch_sampler={batch_sampler}")
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and "
                                 "drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with "
                             "drop_last")
        if sampler is None:
            if self._iterable:
                sampler = None
            elif shuffle:
                sampler = RandomSampler(dataset, generator=generator)
            else:
                sampler = SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and not self._iterable:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        elif batch_size is not None and self._iterable and (not isinstance(batch_size, int) or batch_size <= 0):
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        self.batch_size, self.drop_last = batch_size, drop_last
        self.sampler, self.batch_sampler, self.generator = sampler, batch_sampler, generator
        self._auto_collation = batch_sampler is not None or (self._iterable and batch_size is not None)
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        if self._iterable:
            n = len(self.dataset)  # TypeError for an iterable dataset without __len__, as PyTorch's
            if self.batch_size is not None:
                n = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
            return n
        return len(self.batch_sampler if self._auto_collation else self.sampler)

    def __iter__(self) -> Iterator[Any]:
        # PyTorch's iterator draws a base seed for its workers first: the same draw keeps the streams in step
        self._base_seed = draw_seed(self.generator)
        if self._iterable:
            return self._iter_iterable()
        if not self._auto_collation:
            return (self.collate_fn(self.dataset[i]) for i in self.sampler)
        return self._iter_batches()

    def _iter_batches(self) -> Iterator[Any]:
        # a TensorDataset (or Subsets of one, as random_split makes) with the default collate: one fancy index
        # per tensor gives what default_collate of the samples gives, a list of stacked tensors
        base, maps = self.dataset, []
        while type(base) is Subset:
            maps.append(np.asarray(base.indices, dtype=np.int64))
            base = base.dataset
        fast = (type(base) is TensorDataset and self.collate_fn is default_collate
                and all(type(t) is Tensor and t._value is None and not t.requires_grad for t in base.tensors))
        for indices in self.batch_sampler:
            if fast:
                idx = np.asarray(indices, dtype=np.int64)
                for m in maps:
                    idx = m[idx]
                yield [_from_numpy(t._data[idx]) for t in base.tensors]
            else:
                getitems = getattr(self.dataset, "__getitems__", None)
                samples = getitems(list(indices)) if getitems is not None else [self.dataset[i] for i in indices]
                yield self.collate_fn(samples)

    def _iter_iterable(self) -> Iterator[Any]:
        if self.batch_size is None:
            yield from (self.collate_fn(x) for x in self.dataset)
            return
        batch: list = []
        for x in self.dataset:
            batch.append(x)
            if len(batch) == self.batch_size:
                yield self.collate_fn(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate_fn(batch)
