"""Recurrent layers with PyTorch's semantics: nn.RNN (tanh/relu), nn.LSTM (with proj_size), nn.GRU and the
cells nn.RNNCell, nn.LSTMCell, nn.GRUCell.

Parameter names, shapes, gate order (LSTM: i, f, g, o; GRU: r, z, n), default init U(-1/sqrt(hidden),
1/sqrt(hidden)), flags and error messages follow torch.nn, so `load_state_dict(torch_model.state_dict())`
gives PyTorch's numbers. Each layer and direction first computes the input projection of all time steps as
ONE GEMM (x @ W_ih^T + b_ih over T * batch rows, as cuDNN and PyTorch do), then runs the recurrence as one
`gradc.scan` per layer and direction, traced (compile_step, gradc.compile, value_and_grad) and eager alike:
the IR holds the loop once, so an eager backward compiles one native loop (W9's eager step: 1.3 s to compile
its adjoint, where the unrolled Python loop's 1,733 kernels took 172 s).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

from gradc import functional as F
from gradc.ir.core import DType, float32
from gradc.nn import init, ops
from gradc.nn.module import Module, Parameter
from gradc.tensor import Tensor, apply, torch_op

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


# ----------------------------------------------------------------------------- stacking (private helpers)

def _concat(parts: list[Tensor], axis: int) -> Tensor:
    """Concatenate along axis as a balanced tree of pad + add (no concat primitive yet; depth log n, so the
    work is n log n and the VJP is slices)."""
    parts = list(parts)
    while len(parts) > 1:
        merged = []
        for i in range(0, len(parts) - 1, 2):
            a, b = parts[i], parts[i + 1]
            rank = a.ndim
            lo_a, hi_a = [0] * rank, [0] * rank
            lo_b, hi_b = [0] * rank, [0] * rank
            hi_a[axis], lo_b[axis] = b.shape[axis], a.shape[axis]
            zeros = (0,) * rank
            pa = apply("pad", a, lo=tuple(lo_a), hi=tuple(hi_a), interior=zeros)
            pb = apply("pad", b, lo=tuple(lo_b), hi=tuple(hi_b), interior=zeros)
            merged.append(F.add(pa, pb))
        if len(parts) % 2:
            merged.append(parts[-1])
        parts = merged
    return parts[0]


@torch_op("StackBackward0")
def _stack(parts: list[Tensor]) -> Tensor:
    return _concat([F.unsqueeze(p, 0) for p in parts], 0)


@torch_op("CatBackward0")
def _cat_last(parts: list[Tensor]) -> Tensor:
    return _concat(parts, parts[0].ndim - 1) if len(parts) > 1 else parts[0]


def _gates(x: Tensor, n: int) -> list[Tensor]:
    size = x.shape[-1] // n
    return [x[..., i * size:(i + 1) * size] for i in range(n)]


# ----------------------------------------------------------------------------- one time step of each kind

def _rnn_tanh_step(xw: Tensor, h: Tensor, c: Any, w_hh: Tensor, b_hh: Tensor | None, w_hr: Any) -> tuple:
    return F.tanh(F.add(xw, ops.linear(h, w_hh, b_hh))), None


def _rnn_relu_step(xw: Tensor, h: Tensor, c: Any, w_hh: Tensor, b_hh: Tensor | None, w_hr: Any) -> tuple:
    return F.relu(F.add(xw, ops.linear(h, w_hh, b_hh))), None


def _lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None, w_hr: Any) -> tuple:
    i, f, g, o = _gates(F.add(xw, ops.linear(h, w_hh, b_hh)), 4)
    c = F.add(F.mul(F.sigmoid(f), c), F.mul(F.sigmoid(i), F.tanh(g)))
    h = F.mul(F.sigmoid(o), F.tanh(c))
    if w_hr is not None:
        h = ops.linear(h, w_hr)
    return h, c


def _gru_step(xw: Tensor, h: Tensor, c: Any, w_hh: Tensor, b_hh: Tensor | None, w_hr: Any) -> tuple:
    x_r, x_z, x_n = _gates(xw, 3)
    h_r, h_z, h_n = _gates(ops.linear(h, w_hh, b_hh), 3)
    r = F.sigmoid(F.add(x_r, h_r))
    z = F.sigmoid(F.add(x_z, h_z))
    n = F.tanh(F.add(x_n, F.mul(r, h_n)))
    return F.add(n, F.mul(z, F.sub(h, n))), None  # (1 - z) * n + z * h


STEPS: dict[str, Callable] = {"RNN_TANH": _rnn_tanh_step, "RNN_RELU": _rnn_relu_step, "LSTM": _lstm_step,
                              "GRU": _gru_step}


def run_direction(mode: str, x: Tensor, h: Tensor, c: Any, weights: tuple, reverse: bool) -> tuple:
    """One layer, one direction over x (T, B, I): (outputs (T, B, H_out), h_T, c_T)."""
    w_ih, w_hh, b_ih, b_hh, w_hr = weights
    T, B = x.shape[0], x.shape[1]
    # the hoisted input GEMM; its bias is added inside the step, where the gate nest adds b_hh anyway: the
    # stacked projection is the GEMM's own buffer (no [T, B, G] bias pass), and the gradients of b_ih and
    # b_hh are one hoisted reduction of the gate gradients (CSE merges the two)
    xw = ops.linear(F.reshape(x, (T * B, x.shape[2])), w_ih, None)
    xw = F.reshape(xw, (T, B, w_ih.shape[0]))
    step = STEPS[mode]
    from gradc.loops import scan

    def body(carry: Any, xw_t: Tensor) -> tuple:
        if b_ih is not None:
            xw_t = F.add(xw_t, b_ih)
        h, c = step(xw_t, carry[0], carry[1] if len(carry) > 1 else None, w_hh, b_hh, w_hr)
        return ((h, c) if c is not None else (h,)), h
    final, outputs = scan(body, (h, c) if c is not None else (h,), xw, reverse=reverse)
    return outputs, final[0], (final[1] if len(final) > 1 else None)


# ----------------------------------------------------------------------------- the layers

def _check_dtype(name: str, x: Any, like: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, not {type(x).__name__}")
    if x.dtype != like.dtype:
        raise ValueError(f"{name} must have the type {like.dtype}, got type {x.dtype}")


class RNNBase(Module):
    """The shared multi-layer, optionally bidirectional recurrence of nn.RNN, nn.LSTM and nn.GRU."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: DType | None = None) -> None:
        super().__init__()
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          stacklevel=2)
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers),
                            ("proj_size", proj_size)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, proj_size
        directions = 2 if bidirectional else 1
        real_hidden = proj_size or hidden_size
        gate_size = GATES[mode] * hidden_size
        np_dtype = (dtype or float32).numpy
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = [("weight_ih", (gate_size, layer_input)), ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for name, shape in shapes:
                    setattr(self, name + suffix, Parameter(np.zeros(shape, dtype=np_dtype)))
                    self._flat_weights_names.append(name + suffix)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for name in self._flat_weights_names:
            init.uniform_(getattr(self, name), -stdv, stdv)

    def _weights(self, layer: int, direction: int) -> tuple:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        get = lambda name: getattr(self, name + suffix, None)  # noqa: E731
        return (get("weight_ih"), get("weight_hh"), get("bias_ih") if self.bias else None,
                get("bias_hh") if self.bias else None, get("weight_hr") if self.proj_size else None)

    def _initial_states(self, hx: Any, batch: int, batched: bool, like: Tensor) -> tuple[Tensor, Any]:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h_shape = (layers, batch, self.proj_size or self.hidden_size)
        c_shape = (layers, batch, self.hidden_size)
        lstm = self.mode == "LSTM"
        if hx is None:
            zeros = lambda shape: F.to_tensor(np.zeros(shape, dtype=like.dtype.numpy))  # noqa: E731
            return zeros(h_shape), zeros(c_shape) if lstm else None
        if lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("LSTM: hx must be a tuple (h_0, c_0) of two tensors")
            h, c = hx
            _check_dtype("hx", h, like)
            _check_dtype("cx", c, like)
            want = 3 if batched else 2
            if h.ndim != want or c.ndim != want:
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                                   f"({h.ndim}-D, {c.ndim}-D) tensors")
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"{type(self).__name__}: hx must be a Tensor, not a {type(hx).__name__}")
            h, c = hx, None
            _check_dtype("hx", h, like)
            want = 3 if batched else 2
            if h.ndim != want:
                kind = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got {h.ndim}-D tensor")
        if not batched:
            h = F.unsqueeze(h, 1)
            c = F.unsqueeze(c, 1) if c is not None else None
        if tuple(h.shape) != h_shape:
            which = "Expected hidden[0] size" if lstm else "Expected hidden size"
            raise RuntimeError(f"{which} {h_shape}, got {list(h.shape)}")
        if c is not None and tuple(c.shape) != c_shape:
            raise RuntimeError(f"Expected hidden[1] size {c_shape}, got {list(c.shape)}")
        return h, c

    def forward(self, input: Tensor, hx: Any = None) -> tuple:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, not {type(input).__name__}")
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.ndim}D instead")
        first = getattr(self, self._flat_weights_names[0])
        _check_dtype("input", input, first)
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.shape[-1]}")
        batched = input.ndim == 3
        x = input if batched else F.unsqueeze(input, 1)
        if batched and self.batch_first:
            x = F.transpose(x, 0, 1)
        if x.shape[0] == 0:
            raise RuntimeError(f"{name}: Expected sequence length to be larger than 0 in RNN")
        h0, c0 = self._initial_states(hx, x.shape[1], batched, first)
        directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = ops.dropout(x, self.dropout, True)
            outs = []
            for d in range(directions):
                k = layer * directions + d
                out, h, c = run_direction(self.mode, x, h0[k], c0[k] if c0 is not None else None,
                                          self._weights(layer, d), reverse=d == 1)
                outs.append(out)
                h_n.append(h)
                c_n.append(c)
            x = _cat_last(outs)
        output = x
        if batched and self.batch_first:
            output = F.transpose(output, 0, 1)
        h_n = _stack(h_n)
        c_n = _stack(c_n) if self.mode == "LSTM" else None
        if not batched:
            output = F.squeeze(output, 1)
            h_n = F.squeeze(h_n, 1)
            c_n = F.squeeze(c_n, 1) if c_n is not None else None
        return output, ((h_n, c_n) if self.mode == "LSTM" else h_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu), as torch.nn.RNN."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: DType | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, 0, device, dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity='{self.nonlinearity}'" if self.nonlinearity != "tanh" else "")


class LSTM(RNNBase):
    """Long short-term memory (gates i, f, g, o; optional projection h = W_hr h), as torch.nn.LSTM."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: DType | None = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit (gates r, z, n; n = tanh(x_n + r * (W_hn h + b_hn))), as torch.nn.GRU."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: DType | None = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         proj_size, device, dtype)


# ----------------------------------------------------------------------------- the cells

class RNNCellBase(Module):
    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool, dtype: DType | None) -> None:
        super().__init__()
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        gate_size = GATES[mode] * hidden_size
        np_dtype = (dtype or float32).numpy
        self.weight_ih = Parameter(np.zeros((gate_size, input_size), dtype=np_dtype))
        self.weight_hh = Parameter(np.zeros((gate_size, hidden_size), dtype=np_dtype))
        if bias:
            self.bias_ih = Parameter(np.zeros(gate_size, dtype=np_dtype))
            self.bias_hh = Parameter(np.zeros(gate_size, dtype=np_dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for p in self.parameters():
            init.uniform_(p, -stdv, stdv)

    def _check(self, input: Any, states: list[tuple[str, Any]]) -> tuple[Tensor, list[Tensor], bool]:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, not {type(input).__name__}")
        if input.ndim not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.ndim}D instead")
        _check_dtype("input", input, self.weight_ih)
        batched = input.ndim == 2
        x = input if batched else F.unsqueeze(input, 0)
        if x.shape[1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {x.shape[1]} expected {self.input_size}")
        out = []
        for i, (label, h) in enumerate(states):
            if h is None:
                out.append(F.to_tensor(np.zeros((x.shape[0], self.hidden_size), dtype=x.dtype.numpy)))
                continue
            _check_dtype(label, h, self.weight_ih)
            if h.ndim != input.ndim:
                raise ValueError(f"{name}: Expected {label} to be {input.ndim}D, got {h.ndim}D instead")
            h = h if batched else F.unsqueeze(h, 0)
            if h.shape[0] != x.shape[0]:
                raise RuntimeError(f"Input batch size {x.shape[0]} doesn't match hidden{i} batch size {h.shape[0]}")
            if h.shape[1] != self.hidden_size:
                raise RuntimeError(f"hidden{i} has inconsistent hidden_size: got {h.shape[1]}, expected "
                                   f"{self.hidden_size}")
            out.append(h)
        return x, out, batched

    def _step(self, x: Tensor, h: Tensor, c: Any) -> tuple:
        xw = ops.linear(x, self.weight_ih, self.bias_ih)
        return STEPS[self.mode](xw, h, c, self.weight_hh, self.bias_hh, None)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        return s


class RNNCell(RNNCellBase):
    """One Elman RNN step (tanh or relu), as torch.nn.RNNCell."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh",
                 device: Any = None, dtype: DType | None = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._check(input, [("hx", hx)])
        h, _ = self._step(x, h, None)
        return h if batched else F.squeeze(h, 0)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity}" if self.nonlinearity != "tanh" else "")


class LSTMCell(RNNCellBase):
    """One LSTM step: (h', c') from (input, (h, c)), as torch.nn.LSTMCell."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: DType | None = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Tensor]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError("LSTMCell: hx must be a tuple (h_0, c_0) of two tensors")
        h0, c0 = hx if hx is not None else (None, None)
        x, (h, c), batched = self._check(input, [("hx[0]", h0), ("hx[1]", c0)])
        h, c = self._step(x, h, c)
        return (h, c) if batched else (F.squeeze(h, 0), F.squeeze(c, 0))


class GRUCell(RNNCellBase):
    """One GRU step, as torch.nn.GRUCell."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: DType | None = None) -> None:
        super().__init__("GRU", input_size, hidden_size, bias, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        x, (h,), batched = self._check(input, [("hx", hx)])
        h, _ = self._step(x, h, None)
        return h if batched else F.squeeze(h, 0)
