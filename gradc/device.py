"""Devices on a CPU-only library: torch.device, the cuda/mps availability probes, the default dtype.

Every gradc tensor lives on the CPU. `device("cuda")` can be named (scripts build it before asking
`cuda.is_available()`), but putting a tensor there fails as PyTorch's CPU build fails.
"""

from __future__ import annotations

from typing import Any

from gradc.ir.core import DType, float32, float64

DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia",
                "xla", "lazy", "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")


class device:
    """torch.device: a type ("cpu", "cuda", ...) and an optional index."""

    __slots__ = ("type", "index")

    def __init__(self, type: Any, index: int | None = None) -> None:  # noqa: A002 (PyTorch's name)
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, int):
            type, index = "cuda", type
        elif isinstance(type, str) and ":" in type:
            type, _, number = type.partition(":")
            if not number.isdigit():
                raise RuntimeError(f"Invalid device string: '{type}:{number}'")
            index = int(number)
        if not isinstance(type, str) or type not in DEVICE_TYPES:
            raise RuntimeError(f"Expected one of {', '.join(DEVICE_TYPES)} device type at start of device "
                               f"string: {type}")
        self.type, self.index = type, index

    def __repr__(self) -> str:
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self) -> int:
        return hash((self.type, self.index))

    def __enter__(self) -> device:
        check_device(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


CPU = device("cpu")


def check_device(where: Any) -> None:
    """Accept None and any spelling of the CPU; refuse other devices as PyTorch's CPU build does."""
    if where is None:
        return
    d = where if isinstance(where, device) else device(where)
    if d.type == "cpu":
        return
    if d.type == "cuda":
        raise AssertionError("Torch not compiled with CUDA enabled")
    raise RuntimeError(f"gradc runs on the CPU only: device '{d}' is not available (it has no {d.type} backend)")


_default_dtype = [float32]
_deterministic = [False]


def set_default_device(where: Any) -> None:
    """torch.set_default_device: only the CPU exists here (None resets to it)."""
    check_device(where)


def get_default_device() -> device:
    return CPU


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Accepted: gradc's kernels are deterministic already (fixed-order multi-threaded sums)."""
    _deterministic[0] = bool(mode)


def are_deterministic_algorithms_enabled() -> bool:
    return _deterministic[0]


def get_default_dtype() -> DType:
    return _default_dtype[0]


def set_default_dtype(d: DType) -> None:
    if d not in (float32, float64):
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default_dtype[0] = d


class _Unavailable:
    """A namespace whose is_available() answers False (gradc.cuda, gradc.backends.mps)."""

    def __init__(self, name: str) -> None:
        self.__name__ = f"gradc.{name}"

    @staticmethod
    def is_available() -> bool:
        return False

    @staticmethod
    def is_built() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return 0

    @staticmethod
    def manual_seed(seed: int) -> None:
        return None

    manual_seed_all = manual_seed

    @staticmethod
    def synchronize(*args: Any) -> None:
        return None
