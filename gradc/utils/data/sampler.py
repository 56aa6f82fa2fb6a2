"""torch.utils.data samplers: Sampler, SequentialSampler, RandomSampler, SubsetRandomSampler,
WeightedRandomSampler, BatchSampler; and the permutation they draw."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence, Sized

import numpy as np

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler",
           "BatchSampler", "randperm", "draw_seed"]


def _rng(generator: Any) -> Any:
    from gradc.factories import generator as global_generator
    from gradc.random import Generator
    if generator is None:
        return global_generator()
    if isinstance(generator, (np.random.Generator, Generator)):
        return generator
    inner = getattr(generator, "numpy_generator", None) or getattr(generator, "_rng", None)
    if isinstance(inner, np.random.Generator):
        return inner
    raise TypeError(f"generator must be a numpy.random.Generator or a gradc Generator, got {type(generator).__name__}")


def draw_seed(generator: Any = None) -> int | None:
    """PyTorch's `torch.empty((), dtype=torch.int64).random_(generator=g).item()`: one 64-bit draw mod 2^63,
    which DataLoader iterators and an unseeded RandomSampler take from the stream; None for a numpy Generator."""
    if isinstance(generator, np.random.Generator):
        return None
    from gradc.factories import generator as stream
    return int(stream(generator).words64(1)[0]) % (1 << 63)


def randperm(n: int, generator: Any = None) -> list[int]:
    """A random permutation of range(n) as a list: gradc.randperm when gradc has one (PyTorch's stream),
    else numpy's, from `generator` (a numpy Generator, a gradc Generator) or gradc's global generator
    (seeded by gradc.manual_seed)."""
    if not isinstance(generator, np.random.Generator):
        import gradc
        perm = getattr(gradc, "randperm", None)
        if perm is not None:
            out = perm(n) if generator is None else perm(n, generator=generator)
            return [int(i) for i in out.tolist()]
    return _rng(generator).permutation(n).tolist()


class Sampler:
    """Iterates indices into a dataset."""

    def __init__(self, data_source: Sized | None = None) -> None:
        pass

    def __iter__(self) -> Iterator[int]:
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler):
    """A fresh permutation per iteration (or draws with replacement); num_samples may exceed the dataset."""

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: int | None = None,
                 generator: Any = None) -> None:
        self.data_source, self.replacement, self._num_samples, self.generator = \
            data_source, replacement, num_samples, generator
        if not isinstance(self.replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={self.replacement}")
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n = len(self.data_source)
        generator = self.generator
        if generator is None:  # as PyTorch: a fresh generator seeded from the global stream per pass
            from gradc.random import Generator
            generator = Generator().manual_seed(draw_seed())
        if self.replacement:
            for size in [32] * (self.num_samples // 32) + [self.num_samples % 32]:
                yield from (int(i) for i in _rng(generator).integers(0, n, size))
            return
        for _ in range(self.num_samples // n):
            yield from randperm(n, generator)
        yield from randperm(n, generator)[:self.num_samples % n]

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order."""

    def __init__(self, indices: Sequence[int], generator: Any = None) -> None:
        self.indices, self.generator = indices, generator

    def __iter__(self) -> Iterator[int]:
        for i in randperm(len(self.indices), self.generator):
            yield self.indices[i]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """num_samples indices drawn with probabilities proportional to weights."""

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True,
                 generator: Any = None) -> None:
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        w = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights, dtype=np.float64)
        if w.ndim != 1:
            raise ValueError(f"weights should be a 1d sequence but given weights have shape {tuple(w.shape)}")
        self.weights, self.num_samples, self.replacement, self.generator = w, num_samples, replacement, generator

    def __iter__(self) -> Iterator[int]:
        import gradc
        draws = gradc.multinomial(gradc.tensor(self.weights), self.num_samples, self.replacement,
                                  generator=self.generator).tolist()
        yield from (int(i) for i in draws)

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of batch_size indices from a sampler; the last one shorter unless drop_last."""

    def __init__(self, sampler: Sampler | Iterable[int], batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else (n + self.batch_size - 1) // self.batch_size
