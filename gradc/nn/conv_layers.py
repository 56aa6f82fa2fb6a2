"""CNN modules with PyTorch's names, parameter/buffer names and shapes, default inits and reprs:
Conv1d/2d, ConvTranspose1d/2d, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, AdaptiveMaxPool2d,
BatchNorm1d/2d, GroupNorm, InstanceNorm2d, Dropout2d, Upsample."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradc import functional as F
from gradc.ir.core import DType, float32, int64
from gradc.nn import conv as C
from gradc.nn import init
from gradc.nn import normalization as N
from gradc.nn import pooling as P
from gradc.nn import spatial as S
from gradc.nn.layers import _DropoutNd
from gradc.nn.module import Module, Parameter
from gradc.tensor import Tensor

__all__ = ["Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "MaxPool1d", "MaxPool2d", "AvgPool1d",
           "AvgPool2d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "BatchNorm1d", "BatchNorm2d",
           "GroupNorm", "InstanceNorm2d", "Dropout2d", "Upsample"]


def _param(shape: tuple[int, ...], dtype: DType | None) -> Parameter:
    return Parameter(np.zeros(shape, dtype=(dtype or float32).numpy))


def _buffer(array: np.ndarray) -> Tensor:
    return Tensor._from_array(array)


# ----------------------------------------------------------------------------- convolutions

class _ConvNd(Module):
    _nd = 2
    _transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 output_padding: Any = 0, dtype: DType | None = None) -> None:
        super().__init__()
        nd = self._nd
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and any(s != 1 for s in C.ntuple(stride, nd)):
                raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode != "zeros":
            if padding_mode not in ("reflect", "replicate", "circular"):
                raise ValueError(f"padding_mode must be one of ['zeros', 'reflect', 'replicate', 'circular'], "
                                 f"but got padding_mode='{padding_mode}'")
            if self._transposed:
                raise ValueError(f'Only "zeros" padding mode is supported for {type(self).__name__}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = C.ntuple(kernel_size, nd)
        self.stride = C.ntuple(stride, nd)
        self.padding = padding if isinstance(padding, str) else C.ntuple(padding, nd)
        self.dilation = C.ntuple(dilation, nd)
        self.output_padding = C.ntuple(output_padding, nd)
        self.groups = groups
        self.padding_mode = padding_mode
        if self._transposed:
            shape = (in_channels, out_channels // groups) + self.kernel_size
        else:
            shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = _param(shape, dtype)
        if bias:
            self.bias = _param((out_channels,), dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * int(np.prod(self.kernel_size))
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

    def _input(self, x: Tensor) -> tuple[Tensor, Any]:
        if self.padding_mode == "zeros":
            return x, self.padding
        if isinstance(self.padding, str):
            lo, hi = C.resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, self._nd)
        else:
            lo = hi = self.padding
        pads = []
        for a, b in zip(reversed(lo), reversed(hi)):
            pads += [a, b]
        return S.pad(x, pads, mode=self.padding_mode), 0

    def forward(self, x: Tensor) -> Tensor:
        fn = C.conv1d if self._nd == 1 else C.conv2d
        x, padding = self._input(x)
        return fn(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self._transposed and self.output_padding != (0,) * self._nd:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    _nd = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: DType | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, dtype=dtype)


class Conv2d(_ConvNd):
    _nd = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device: Any = None, dtype: DType | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, dtype=dtype)


class _ConvTransposeNd(_ConvNd):
    _transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0,
                 output_padding: Any = 0, groups: int = 1, bias: bool = True, dilation: Any = 1,
                 padding_mode: str = "zeros", device: Any = None, dtype: DType | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, output_padding, dtype=dtype)

    def forward(self, x: Tensor, output_size: Any = None) -> Tensor:
        if output_size is not None:
            raise NotImplementedError("gradc: ConvTranspose forward(output_size=...) is not supported; "
                                      "use output_padding")
        fn = C.conv_transpose1d if self._nd == 1 else C.conv_transpose2d
        return fn(x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups,
                  self.dilation)


class ConvTranspose1d(_ConvTransposeNd):
    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    _nd = 2


# ----------------------------------------------------------------------------- pooling

class _MaxPoolNd(Module):
    _nd = 2

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x: Tensor) -> Any:
        fn = P.max_pool1d if self._nd == 1 else P.max_pool2d
        return fn(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    _nd = 1


class MaxPool2d(_MaxPoolNd):
    _nd = 2


class AvgPool1d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__()
        self.kernel_size = C.ntuple(kernel_size, 1)
        self.stride = C.ntuple(stride if stride is not None else kernel_size, 1)
        self.padding = C.ntuple(padding, 1)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x: Tensor) -> Tensor:
        return P.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, x: Tensor) -> Tensor:
        return P.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool1d(Module):
    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        return P.adaptive_avg_pool1d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(AdaptiveAvgPool1d):
    def forward(self, x: Tensor) -> Tensor:
        return P.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool2d(AdaptiveAvgPool1d):
    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, x: Tensor) -> Tensor:
        return P.adaptive_max_pool2d(x, self.output_size, self.return_indices)


# ----------------------------------------------------------------------------- normalization

class _BatchNorm(Module):
    _ranks: tuple[int, ...] = (2, 3)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: DType | None = None, *,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self._has_bias = affine and bias
        np_dtype = (dtype or float32).numpy
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype=np_dtype))
        else:
            self.register_parameter("weight", None)
        if self._has_bias:
            self.bias = Parameter(np.zeros(num_features, dtype=np_dtype))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", _buffer(np.zeros(num_features, dtype=np_dtype)))
            self.register_buffer("running_var", _buffer(np.ones(num_features, dtype=np_dtype)))
            self.register_buffer("num_batches_tracked", _buffer(np.zeros((), dtype=int64.numpy)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean._data[...] = 0
            self.running_var._data[...] = 1
            self.num_batches_tracked._data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.ndim not in self._ranks:
            raise ValueError(f"expected {' or '.join(f'{r}D' for r in self._ranks)} input (got {x.ndim}D input)")

    def forward(self, x: Tensor) -> Tensor:
        x = F.to_tensor(x)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            tracked = self.num_batches_tracked
            if tracked.is_traced:
                N.assign_buffer(tracked, F.add(tracked, 1))
                if self.momentum is None:  # cumulative average: 1 / (number of batches so far)
                    factor = F.reciprocal(F.cast(F.add(tracked, 1), x.dtype))
            else:
                tracked._data[...] += 1
                tracked._bump_version()
                if self.momentum is None:
                    factor = 1.0 / float(tracked._data)
        use_batch = self.training or not self.track_running_stats
        stats = (self.running_mean, self.running_var) if not self.training or self.track_running_stats \
            else (None, None)
        return N.batch_norm(x, stats[0], stats[1], self.weight, self.bias, use_batch, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self._has_bias}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    _ranks = (4,)


class GroupNorm(Module):
    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Any = None, dtype: DType | None = None, *, bias: bool = True) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self._has_bias = affine and bias
        np_dtype = (dtype or float32).numpy
        if affine:
            self.weight = Parameter(np.ones(num_channels, dtype=np_dtype))
        else:
            self.register_parameter("weight", None)
        if self._has_bias:
            self.bias = Parameter(np.zeros(num_channels, dtype=np_dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        return N.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self._has_bias}"


class InstanceNorm2d(_BatchNorm):
    _ranks = (3, 4)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = False,
                 track_running_stats: bool = False, device: Any = None, dtype: DType | None = None, *,
                 bias: bool = True) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype=dtype, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.to_tensor(x)
        self._check_input_dim(x)
        batched = x if x.ndim == 4 else F.unsqueeze(x, 0)
        use_input_stats = self.training or not self.track_running_stats
        out = N.instance_norm(batched, self.running_mean, self.running_var, self.weight, self.bias,
                              use_input_stats, self.momentum if self.momentum is not None else 0.1, self.eps)
        return out if x.ndim == 4 else F.squeeze(out, 0)


# ----------------------------------------------------------------------------- dropout, upsample

class Dropout2d(_DropoutNd):
    """Dropout of whole channels: Dropout's arguments and checks, one draw per (sample, channel)."""

    def forward(self, x: Tensor) -> Tensor:
        return S.dropout2d(x, self.p, self.training)


class Upsample(Module):
    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None) -> None:
        super().__init__()
        self.size, self.scale_factor, self.mode = size, scale_factor, mode
        self.align_corners, self.recompute_scale_factor = align_corners, recompute_scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return S.interpolate(x, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self) -> str:
        info = f"size={self.size}" if self.scale_factor is None else f"scale_factor={float(self.scale_factor)}"
        return info + f", mode='{self.mode}'"
