"""torch.cuda on a CPU-only library: nothing is available."""

from gradc.device import _Unavailable

_cuda = _Unavailable("cuda")
is_available = _cuda.is_available
is_built = _cuda.is_built
device_count = _cuda.device_count
manual_seed = _cuda.manual_seed
manual_seed_all = _cuda.manual_seed_all
synchronize = _cuda.synchronize
