"""torch.utils: data loading (gradc.utils.data)."""

from gradc.utils import data  # noqa: F401
