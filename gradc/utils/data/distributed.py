"""DistributedSampler: each rank iterates its own shard of a dataset's indices (torch.utils.data's).

Index assignment is PyTorch's: an epoch's index list (shuffled or in order) is padded by repeating
its head to a multiple of the world size (or, with drop_last, cut to one), and rank r takes every
num_replicas-th index starting at r. The shuffle is numpy's permutation seeded by seed + epoch,
the same on every rank (PyTorch uses torch.randperm, so the shuffled order itself differs from
PyTorch's; the assignment around it does not).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """An iterable of dataset indices with __len__: usable directly or as a DataLoader's `sampler=`."""

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> None:
        if num_replicas is None or rank is None:
            from gradc import distributed as dist
            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler needs num_replicas and rank, or an initialized process "
                                   "group (gradc.distributed.init_process_group)")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas should be a positive integer, but got num_replicas={num_replicas}")
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.epoch, self.shuffle, self.seed, self.drop_last = 0, shuffle, seed, drop_last
        n = len(dataset)
        if drop_last and n % num_replicas != 0:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist()
        else:
            order = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(order)
            if padding <= len(order):
                order += order[:padding]
            elif order:
                order += (order * math.ceil(padding / len(order)))[:padding]
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle per epoch: call before each epoch's iteration, with the same epoch on every rank."""
        self.epoch = epoch
