"""torch.utils.data: datasets, samplers, collation and the DataLoader."""

from gradc.utils.data.collate import default_collate, default_convert
from gradc.utils.data.dataloader import DataLoader, get_worker_info
from gradc.utils.data.dataset import ConcatDataset, Dataset, IterableDataset, Subset, TensorDataset, random_split
from gradc.utils.data.distributed import DistributedSampler
from gradc.utils.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = ["Dataset", "IterableDataset", "TensorDataset", "ConcatDataset", "Subset", "random_split", "DataLoader",
           "DistributedSampler", "default_collate", "default_convert", "get_worker_info", "Sampler",
           "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "WeightedRandomSampler", "BatchSampler"]
