"""torch.utils.data: datasets, samplers and the DataLoader."""
from gradc.utils.data.distributed import DistributedSampler  # noqa: F401
