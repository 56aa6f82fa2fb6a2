"""torch.cuda on a CPU-only library: nothing is available."""

from gradc.device import _Unavailable

_cuda = _Unavailable("cuda")
is_available = _cuda.is_available
is_built = _cuda.is_built
device_count = _cuda.device_count
manual_seed = _cuda.manual_seed
manual_seed_all = _cuda.manual_seed_all
synchronize = _cuda.synchronize


def _no_cuda(*args: object, **kwargs: object) -> None:
    raise AssertionError("Torch not compiled with CUDA enabled")


current_device = get_device_name = get_device_properties = set_device = _no_cuda
