"""Activation functions (torch.nn.functional.elu, ...) and their modules (torch.nn.ELU, ...).

Composites of front-end ops with PyTorch's formulas and its gradient conventions at the kinks
(hardtanh passes no gradient at its bounds, leaky_relu takes the slope at 0, ...).
"""

from __future__ import annotations

from typing import Any

from gradc import functional as F
from gradc.nn.module import Module
from gradc.nn.ops import gelu
from gradc.pointwise import expm1, log1p
from gradc.tensor import Tensor, torch_op

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _softplus(x: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    scaled = F.mul(x, beta) if beta != 1 else x
    smooth = F.div(log1p(F.exp(F.minimum(scaled, threshold))), beta) if beta != 1 else log1p(
        F.exp(F.minimum(scaled, threshold)))
    return F.where(F.compare("gt", scaled, threshold), x, smooth)


softplus = torch_op("SoftplusBackward0")(_softplus)
silu = torch_op("SiluBackward0")(lambda x, inplace=False: F.mul(x, F.sigmoid(x)))
mish = torch_op("MishBackward0")(lambda x, inplace=False: F.mul(x, F.tanh(_softplus(x))))


def _elu(x: Tensor, alpha: float, scale: float = 1.0, input_scale: float = 1.0) -> Tensor:
    negative = F.mul(expm1(F.mul(F.minimum(x, 0.0), input_scale)), alpha * scale)
    positive = F.mul(x, scale) if scale != 1 else x
    return F.where(F.compare("gt", x, 0), positive, negative)


elu = torch_op("EluBackward0")(lambda x, alpha=1.0, inplace=False: _elu(x, alpha))
selu = torch_op("EluBackward0")(lambda x, inplace=False: _elu(x, SELU_ALPHA, SELU_SCALE))


@torch_op("CeluBackward0")
def celu(x: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    if alpha == 0:
        raise RuntimeError("ZeroDivisionError")
    return _elu(x, alpha, 1.0, 1.0 / alpha)


@torch_op("LeakyReluBackward0")
def leaky_relu(x: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return F.where(F.compare("gt", x, 0), x, F.mul(x, negative_slope))


def _hardtanh(x: Tensor, min_val: float, max_val: float) -> Tensor:
    # no gradient at or beyond the bounds, as PyTorch's hardtanh_backward
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    x = F.to_tensor(x)
    low = F.compare("le", x, min_val)
    high = F.compare("ge", x, max_val)
    return F.where(low, F.scalar_like(min_val, x), F.where(high, F.scalar_like(max_val, x), x))


hardtanh = torch_op("HardtanhBackward0")(
    lambda x, min_val=-1.0, max_val=1.0, inplace=False: _hardtanh(x, min_val, max_val))
relu6 = torch_op("HardtanhBackward0")(lambda x, inplace=False: _hardtanh(x, 0.0, 6.0))
hardsigmoid = torch_op("HardsigmoidBackward0")(
    lambda x, inplace=False: F.div(_hardtanh(F.add(x, 3.0), 0.0, 6.0), 6.0))
hardswish = torch_op("HardswishBackward0")(
    lambda x, inplace=False: F.mul(x, F.div(_hardtanh(F.add(x, 3.0), 0.0, 6.0), 6.0)))


@torch_op("LogSigmoidBackward0")
def logsigmoid(x: Tensor) -> Tensor:
    # -softplus(-x) = min(x, 0) - log1p(exp(-|x|)): no overflow on either side
    return F.sub(F.minimum(x, 0.0), log1p(F.exp(F.neg(F.abs(x)))))


softsign = torch_op("DivBackward0")(lambda x: F.div(x, F.add(F.abs(x), 1.0)))
tanhshrink = torch_op("SubBackward0")(lambda x: F.sub(x, F.tanh(x)))


@torch_op("ThresholdBackward0")
def threshold(x: Tensor, threshold: float, value: float, inplace: bool = False) -> Tensor:
    x = F.to_tensor(x)
    return F.where(F.compare("le", x, threshold), F.scalar_like(value, x), x)  # NaN passes through


@torch_op("HardshrinkBackward0")
def hardshrink(x: Tensor, lambd: float = 0.5) -> Tensor:
    x = F.to_tensor(x)
    return F.where(F.compare("le", F.abs(x), lambd), F.scalar_like(0.0, x), x)  # NaN passes through


@torch_op("SoftshrinkBackward0")
def softshrink(x: Tensor, lambd: float = 0.5) -> Tensor:
    x = F.to_tensor(x)
    if lambd < 0:
        raise RuntimeError(f"lambda must be greater or equal to 0, but found to be {lambd}.")
    zero = F.mul(x, 0.0)  # -0.0 and NaN pass through, as PyTorch's self * 0
    return F.where(F.compare("gt", x, lambd), F.sub(x, lambd), F.where(F.compare("lt", x, -lambd),
                                                                        F.add(x, lambd), zero))


# ----------------------------------------------------------------------------- modules

class _Activation(Module):
    """A module calling its function with the constructor's keyword arguments."""

    ARGS: tuple[str, ...] = ()
    DEFAULTS: tuple = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        names = self.ARGS + ("inplace",)
        values = dict(zip(names, (*self.DEFAULTS, False)))
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes at most {len(names)} arguments")
        values.update(zip(names, args))
        for key, value in kwargs.items():
            if key not in values:
                raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument '{key}'")
            values[key] = value
        for key, value in values.items():
            setattr(self, key, value)

    def forward(self, x: Tensor) -> Tensor:
        return type(self).FUNCTION(x, *(getattr(self, a) for a in self.ARGS))

    def extra_repr(self) -> str:
        return ", ".join(f"{a}={getattr(self, a)}" for a in self.ARGS)


def _module(name: str, function: Any, args: tuple[str, ...] = (), defaults: tuple = ()) -> type:
    return type(name, (_Activation,), {"FUNCTION": staticmethod(function), "ARGS": args, "DEFAULTS": defaults,
                                       "__doc__": f"torch.nn.{name}", "__module__": __name__})


ELU = _module("ELU", elu, ("alpha",), (1.0,))
SELU = _module("SELU", selu)
CELU = _module("CELU", celu, ("alpha",), (1.0,))
LeakyReLU = _module("LeakyReLU", leaky_relu, ("negative_slope",), (0.01,))
Hardtanh = _module("Hardtanh", hardtanh, ("min_val", "max_val"), (-1.0, 1.0))
ReLU6 = _module("ReLU6", relu6)
Hardswish = _module("Hardswish", hardswish)
Hardsigmoid = _module("Hardsigmoid", hardsigmoid)
Mish = _module("Mish", mish)
SiLU = _module("SiLU", silu)
LogSigmoid = _module("LogSigmoid", logsigmoid)
Softsign = _module("Softsign", softsign)
Tanhshrink = _module("Tanhshrink", tanhshrink)
Threshold = _module("Threshold", threshold, ("threshold", "value"), (None, None))
Softplus = _module("Softplus", softplus, ("beta", "threshold"), (1.0, 20.0))
Hardshrink = _module("Hardshrink", hardshrink, ("lambd",), (0.5,))
Softshrink = _module("Softshrink", softshrink, ("lambd",), (0.5,))

FUNCTIONS = {
    "softplus": softplus, "silu": silu, "mish": mish, "elu": elu, "selu": selu, "celu": celu,
    "leaky_relu": leaky_relu, "hardtanh": hardtanh, "relu6": relu6, "hardsigmoid": hardsigmoid,
    "hardswish": hardswish, "logsigmoid": logsigmoid, "softsign": softsign, "tanhshrink": tanhshrink,
    "threshold": threshold, "hardshrink": hardshrink, "softshrink": softshrink, "gelu": gelu,
}
MODULES = {cls.__name__: cls for cls in (ELU, SELU, CELU, LeakyReLU, Hardtanh, ReLU6, Hardswish, Hardsigmoid,
                                         Mish, SiLU, LogSigmoid, Softsign, Tanhshrink, Threshold, Softplus,
                                         Hardshrink, Softshrink)}
