"""torch.nn.parallel: DistributedDataParallel over gradc.distributed (MPI)."""

from gradc.nn.parallel.distributed import DistributedDataParallel

__all__ = ["DistributedDataParallel"]
