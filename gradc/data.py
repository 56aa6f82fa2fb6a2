"""Mini-batches over numpy arrays (shuffled, seeded) and a dependency-free progress bar on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO

import numpy as np

from gradc.factories import generator

__all__ = ["DataLoader", "batches", "progress"]


class DataLoader:
    """Iterates (x[idx], y[idx], ...) mini-batches; a fresh permutation per epoch when shuffle=True.

    The permutation comes from `seed` when given (its own generator), else from gradc's generator
    (seeded by gradc.manual_seed). The last batch is smaller unless drop_last=True. Batches are
    C-contiguous copies, ready for compiled functions.
    """

    def __init__(self, *arrays: Any, batch_size: int = 32, shuffle: bool = True, drop_last: bool = False,
                 seed: int | None = None) -> None:
        if not arrays:
            raise ValueError("DataLoader needs at least one array")
        self.arrays = [np.asarray(a) for a in arrays]
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if a.ndim == 0 or len(a) != n:
                raise ValueError(f"array {i} has {len(a) if a.ndim else 0} items along axis 0, array 0 has {n}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self) -> int:
        n = len(self.arrays[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        n = len(self.arrays[0])
        order = (self.rng or generator()).permutation(n) if self.shuffle else np.arange(n)
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield tuple(np.ascontiguousarray(a[idx]) for a in self.arrays)


def batches(*arrays: Any, batch_size: int = 32, shuffle: bool = True, drop_last: bool = False,
            seed: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """One epoch of mini-batches (see DataLoader)."""
    return iter(DataLoader(*arrays, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed))


class progress:
    """`for b in progress(loader, desc="epoch 1"):` draws `desc [#####.....] 12/40 3.1 it/s` on stderr.

    `bar.postfix = "loss 0.123"` adds text; redraws at most every `interval` seconds; with
    `enabled=False` (or a non-terminal stream and `only_tty=True`) it draws nothing.
    """

    def __init__(self, iterable: Iterable[Any], total: int | None = None, desc: str = "", width: int = 30,
                 stream: TextIO | None = None, interval: float = 0.1, enabled: bool = True,
                 only_tty: bool = False) -> None:
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.width, self.interval = desc, width, interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and (not only_tty or getattr(self.stream, "isatty", lambda: False)())
        self.postfix = ""
        self.count = 0

    def line(self, elapsed: float) -> str:
        rate = self.count / elapsed if elapsed > 0 else 0.0
        if self.total:
            filled = int(self.width * self.count / self.total)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {self.count}/{self.total}"
        else:
            bar = f"{self.count}"
        text = f"{self.desc} {bar} {rate:.1f} it/s".strip()
        return f"{text} {self.postfix}".rstrip()

    def __iter__(self) -> Iterator[Any]:
        start = last = time.perf_counter()
        try:
            for item in self.iterable:
                yield item
                self.count += 1
                now = time.perf_counter()
                if self.enabled and now - last >= self.interval:
                    last = now
                    self.stream.write("\r" + self.line(now - start))
                    self.stream.flush()
        finally:
            if self.enabled:
                self.stream.write("\r" + self.line(time.perf_counter() - start) + "\n")
                self.stream.flush()
