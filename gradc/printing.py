"""PyTorch-style tensor printing: a port of torch/_tensor_str.py's rules to numpy arrays.

The output matches PyTorch's repr character for character for the dtypes gradc has: 4 decimals,
integer-valued floats as `1.`, scientific mode when the magnitudes span more than 1e3 (or leave
[1e-4, 1e8]), `...` summaries beyond 1000 elements, line wrapping at 80 columns, and the
`dtype=`, `requires_grad=True` and `grad_fn=<...>` suffixes. float64 and the small integer dtypes print
`dtype=torch.float64`, `dtype=torch.int32`, ... as PyTorch does, so that programs written with
`import gradc as torch` print what they would print under PyTorch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Iterator

import numpy as np


@dataclasses.dataclass
class PrintOptions:
    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: bool | None = None


PRINT_OPTS = PrintOptions()
_PROFILES = {"default": (4, 1000, 3, 80), "short": (2, 1000, 2, 80), "full": (4, math.inf, 3, 80)}


def set_printoptions(precision: int | None = None, threshold: float | None = None, edgeitems: int | None = None,
                     linewidth: int | None = None, profile: str | None = None,
                     sci_mode: bool | None = None) -> None:
    """torch.set_printoptions: the same options, profiles and defaults."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"unknown print profile {profile!r}; use one of {', '.join(_PROFILES)}")
        (PRINT_OPTS.precision, PRINT_OPTS.threshold, PRINT_OPTS.edgeitems,
         PRINT_OPTS.linewidth) = _PROFILES[profile]
    for name, value in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                        ("linewidth", linewidth)):
        if value is not None:
            setattr(PRINT_OPTS, name, value)
    PRINT_OPTS.sci_mode = sci_mode


def get_printoptions() -> dict[str, Any]:
    return dataclasses.asdict(PRINT_OPTS)


@contextlib.contextmanager
def printoptions(**kwargs: Any) -> Iterator[None]:
    """Temporarily change the print options (torch.printoptions)."""
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


class Formatter:
    """Chooses one width and one notation for all elements, as torch's _Formatter."""

    def __init__(self, data: np.ndarray) -> None:
        self.floating = data.dtype.kind == "f"
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1
        flat = data.reshape(-1)
        if not self.floating:
            for value in flat.tolist():
                self.max_width = max(self.max_width, len(f"{value}"))
            return
        values = flat[np.isfinite(flat) & (flat != 0)]
        if values.size == 0:
            return
        magnitudes = np.abs(values).astype(np.float64)
        low, high = float(magnitudes.min()), float(magnitudes.max())
        self.int_mode = bool(np.all(values == np.ceil(values)))
        p = PRINT_OPTS.precision
        if PRINT_OPTS.sci_mode is None:
            self.sci_mode = high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4
        else:
            self.sci_mode = PRINT_OPTS.sci_mode
        if self.sci_mode:
            widths = (len(f"{v:.{p}e}") for v in values.tolist())
        elif self.int_mode:
            widths = (len(f"{v:.0f}") + 1 for v in values.tolist())
        else:
            widths = (len(f"{v:.{p}f}") for v in values.tolist())
        self.max_width = max(self.max_width, max(widths))

    def format(self, value: Any) -> str:
        if self.floating:
            p = PRINT_OPTS.precision
            if self.sci_mode:
                text = f"{value:{self.max_width}.{p}e}"
            elif self.int_mode:
                text = f"{value:.0f}"
                if not (math.isinf(value) or math.isnan(value)):
                    text += "."
            else:
                text = f"{value:.{p}f}"
        else:
            text = f"{value}"
        return (self.max_width - len(text)) * " " + text


def _summarized(data: np.ndarray) -> np.ndarray:
    """The elements a summarized print shows (edge items of every dimension)."""
    e = PRINT_OPTS.edgeitems
    if data.ndim == 0:
        return data
    if data.ndim > 1 and not e:
        return data.reshape((0,) * data.ndim)
    if data.shape[0] > 2 * e:
        data = np.concatenate((data[:e], data[-e:]))
    if data.ndim == 1:
        return data
    return np.stack([_summarized(row) for row in data])


def _vector(data: np.ndarray, indent: int, summarize: bool, fmt: Formatter) -> str:
    per_line = max(1, math.floor((PRINT_OPTS.linewidth - indent) / (fmt.max_width + 2)))
    e = PRINT_OPTS.edgeitems
    if summarize and not e:
        items = ["..."]
    elif summarize and data.shape[0] > 2 * e:
        items = ([fmt.format(v) for v in data[:e].tolist()] + [" ..."]
                 + [fmt.format(v) for v in data[-e:].tolist()])
    else:
        items = [fmt.format(v) for v in data.tolist()]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(data: np.ndarray, indent: int, summarize: bool, fmt: Formatter) -> str:
    if data.ndim == 0:
        return fmt.format(data.item())
    if data.ndim == 1:
        return _vector(data, indent, summarize, fmt)
    e = PRINT_OPTS.edgeitems
    if summarize and data.shape[0] > 2 * e:
        rows = ([_nested(data[i], indent + 1, summarize, fmt) for i in range(e)] + ["..."]
                + [_nested(data[i], indent + 1, summarize, fmt) for i in range(data.shape[0] - e, data.shape[0])])
    else:
        rows = [_nested(row, indent + 1, summarize, fmt) for row in data]
    return "[" + ("," + "\n" * (data.ndim - 1) + " " * (indent + 1)).join(rows) + "]"


def array_str(data: np.ndarray, indent: int) -> str:
    """The bracketed body of a tensor's repr, for an array printed after `indent` columns."""
    if data.size == 0:
        return "[]"
    summarize = data.size > PRINT_OPTS.threshold
    return _nested(data, indent, summarize, Formatter(_summarized(data) if summarize else data))


def _with_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    parts = [text]
    last_line = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > PRINT_OPTS.linewidth:
            parts.append(",\n" + " " * indent + suffix)
            last_line = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line += len(suffix) + 2
    return "".join(parts) + ")"


def tensor_repr(t: Any) -> str:
    """repr(tensor) as PyTorch writes it; a traced tensor shows its IR type instead of values."""
    prefix = "tensor("
    indent = len(prefix)
    suffixes: list[str] = []
    if t._value is not None:
        body = f"<traced {t._value.type}>"
    else:
        data = t._data
        if data.size == 0:
            body = "[]"
            if data.ndim != 1:
                suffixes.append(f"size={tuple(data.shape)}")
            if t.dtype.name != "float32":
                suffixes.append(f"dtype=torch.{t.dtype.name}")
        else:
            if not PRINT_OPTS.edgeitems:
                suffixes.append(f"size={tuple(data.shape)}")
            if t.dtype.name not in ("float32", "int64", "bool"):  # PyTorch's "default" dtypes print no suffix
                suffixes.append(f"dtype=torch.{t.dtype.name}")
            body = array_str(data, indent)
    if t.grad_fn is not None:
        suffixes.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        suffixes.append("requires_grad=True")
    return _with_suffixes(prefix + body, suffixes, indent)
