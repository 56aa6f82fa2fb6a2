"""Neural network layers and functions (PyTorch's torch.nn subset)."""

from gradc.nn import functional

__all__ = ["functional"]
