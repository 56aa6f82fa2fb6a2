"""The torch.nn.functional names of the CNN functions (re-exported by gradc.nn.functional)."""

from gradc.nn.conv import conv1d, conv2d, conv_transpose1d, conv_transpose2d
from gradc.nn.normalization import batch_norm, group_norm, instance_norm
from gradc.nn.pooling import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool1d,
    avg_pool2d,
    max_pool1d,
    max_pool2d,
)
from gradc.nn.spatial import dropout2d, interpolate, pad

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d", "avg_pool1d",
           "avg_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "batch_norm",
           "group_norm", "instance_norm", "pad", "interpolate", "dropout2d"]
