"""The op table's vocabulary (PyTorch's OpInfo, small): rows, samples, and the checks run on them.

A row is one public PyTorch name with sample inputs:

    row("torch.exp", unary())                             # a function
    row("Tensor.exp", unary())                            # a Tensor method (args[0] is self)
    row("torch.nn.functional.elu", unary(alpha=0.7))      # call kwargs go into the samples
    row("torch.nn.ELU", unary(), init={"alpha": 0.5})     # an nn module: init = constructor kwargs
    row("torch.sort", build(lambda rng: [(x,), ((x,), {"dim": 0})]), grad=False, errors=[Sample(...)])

Options (keywords of `row`): grad, native, node, errors, init, wrt, rtol/atol, grad_rtol/grad_atol (Row).
Areas are the sibling modules (pointwise.py, reductions.py, ...); registry.py lists them.

The name is looked up on torch (the reference) and on gradc with the leading "torch." dropped (so
"torch.nn.functional.elu" is gradc.nn.functional.elu). Sample arrays are numpy: float arrays become
float32 tensors for the value checks and float64 leaves requiring grad for the gradient checks; int
and bool arrays stay integer (labels, indices, masks). The checks:

  values   gradc eager == PyTorch (shapes, dtypes, values; NaN == NaN) on every sample
  grad     d sum(out * cotangent) / d inputs, gradc eager == PyTorch, float64 (and module parameters)
  native   gradc.value_and_grad (or gradc.compile when not differentiable) == gradc eager: one sample in
           float64 (values and gradients), the NaN/inf sample in float32 (values), batched (native.py)
  grad_fn  the result's grad_fn is named as PyTorch's (AddBackward0, ...)
  errors   each bad input raises in PyTorch, and gradc raises the same builtin exception type
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import gradc

# shapes hitting the vector tails 1, 7, 8, 9, 17, a scalar and an empty tensor
TAIL_SHAPES = ((), (1,), (7,), (9,), (3, 8), (2, 17), (0, 3))
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -2.5, 0.5, 1.5, 1e30], dtype=np.float32)


@dataclass(frozen=True)
class Sample:
    args: tuple
    kwargs: dict = field(default_factory=dict)
    special: bool = False  # NaN/inf/kinks: checked for values only


@dataclass
class Row:
    name: str
    samples: Callable[[np.random.Generator], list[Sample]]
    grad: bool = True  # differentiable: gradients are compared with PyTorch's
    native: bool = True  # traced/native vs eager
    errors: Callable[[np.random.Generator], list[Sample]] | None = None
    init: Any = field(default_factory=dict)  # nn module constructor kwargs, or a function of the nn package
    rtol: float = 1e-5
    atol: float = 1e-6
    grad_rtol: float = 1e-6
    grad_atol: float = 1e-9
    wrt: tuple | None = None  # positions of the float args that get gradients (default: all of them)
    node: bool = True  # check the result's grad_fn name against PyTorch's (False: a known difference)

    @property
    def is_module(self) -> bool:
        return self.name.split(".")[-1][:1].isupper() and ".nn." in self.name


def row(name: str, samples: Callable[[np.random.Generator], list[Sample]] | list[Sample], **options: Any) -> Row:
    """One op-table row; options: grad, native, errors, init, rtol, atol, grad_rtol, grad_atol."""
    spec = samples if callable(samples) else (lambda rng, _s=tuple(samples): list(_s))
    errors = options.pop("errors", None)
    if errors is not None and not callable(errors):
        errors = (lambda rng, _e=tuple(errors): list(_e))
    return Row(name, spec, errors=errors, **options)


def rows(names: str, samples: Any, **options: Any) -> list[Row]:
    """Several rows sharing samples: rows("torch.exp Tensor.exp", unary())."""
    return [row(n, samples, **options) for n in names.split()]


def both(name: str, samples: Any, **options: Any) -> list[Row]:
    """torch.NAME and Tensor.NAME with the same samples (args[0] is self)."""
    return rows(f"torch.{name} Tensor.{name}", samples, **options)


# ----------------------------------------------------------------------------- sample builders

def rand(rng: np.random.Generator, shape: tuple, lo: float = -3.0, hi: float = 3.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def ints(rng: np.random.Generator, shape: tuple, lo: int, hi: int) -> np.ndarray:
    return rng.integers(lo, hi, size=shape).astype(np.int64)


def unary(lo: float = -3.0, hi: float = 3.0, special: bool = True, shapes: tuple = TAIL_SHAPES,
          **kwargs: Any) -> Callable:
    """x of each tail shape (uniform in [lo, hi]), plus NaN/inf/zeros when `special`."""
    def make(rng: np.random.Generator) -> list[Sample]:
        out = [Sample((rand(rng, s, lo, hi),), dict(kwargs)) for s in shapes]
        if special:
            out.append(Sample((SPECIAL.copy(),), dict(kwargs), special=True))
        return out
    return make


def integers(lo: int = -5, hi: int = 6, shapes: tuple = ((7,), (3, 9)), **kwargs: Any) -> Callable:
    return lambda rng: [Sample((ints(rng, s, lo, hi),), dict(kwargs)) for s in shapes]


def binary(lo: float = -3.0, hi: float = 3.0, lo2: float | None = None, hi2: float | None = None,
           scalar: Any = 1.5, **kwargs: Any) -> Callable:
    """(x, y) pairs: same shape, broadcasting both ways, a 0-d y, an empty pair, and x with a Python number."""
    lo2, hi2 = lo if lo2 is None else lo2, hi if hi2 is None else hi2
    pairs = (((7,), (7,)), ((3, 1), (1, 9)), ((2, 17), (17,)), ((8,), ()), ((0, 3), (3,)))

    def make(rng: np.random.Generator) -> list[Sample]:
        out = [Sample((rand(rng, a, lo, hi), rand(rng, b, lo2, hi2)), dict(kwargs)) for a, b in pairs]
        if scalar is not None:
            out.append(Sample((rand(rng, (9,), lo, hi), scalar), dict(kwargs)))
        return out
    return make


def inplace_binary(lo: float = -3.0, hi: float = 3.0, lo2: float | None = None, hi2: float | None = None,
                   **kwargs: Any) -> Callable:
    """(x, y) pairs where y broadcasts to x's shape (in-place ops keep x's shape), and x with a number."""
    lo2, hi2 = lo if lo2 is None else lo2, hi if hi2 is None else hi2
    pairs = (((7,), (7,)), ((3, 9), (9,)), ((2, 17), ()), ((8, 1), (8, 1)))

    def make(rng: np.random.Generator) -> list[Sample]:
        out = [Sample((rand(rng, a, lo, hi), rand(rng, b, lo2, hi2)), dict(kwargs)) for a, b in pairs]
        return out + [Sample((rand(rng, (9,), lo, hi), 1.5), dict(kwargs))]
    return make


def reduction(variants: tuple = ({}, {"dim": 0}, {"dim": -1, "keepdim": True}, {"dim": 1}),
              shapes: tuple = ((3, 9), (2, 7, 1), (17, 8)), lo: float = -3.0, hi: float = 3.0) -> Callable:
    """x of a few shapes with each dim/keepdim variant (variants that do not fit a shape are dropped)."""
    def make(rng: np.random.Generator) -> list[Sample]:
        out = []
        for s in shapes:
            for kw in variants:
                dims = kw.get("dim", 0)
                dims = dims if isinstance(dims, tuple) else (dims,)
                if all(-len(s) <= d < len(s) for d in dims):
                    out.append(Sample((rand(rng, s, lo, hi),), dict(kw)))
        return out
    return make


def samples(*items: Any) -> list[Sample]:
    """Explicit samples: each item is (args_tuple, kwargs_dict) or args_tuple."""
    out = []
    for item in items:
        if isinstance(item, Sample):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict) and isinstance(item[0], tuple):
            out.append(Sample(item[0], item[1]))
        else:
            out.append(Sample(item if isinstance(item, tuple) else (item,)))
    return out


def build(fn: Callable[[np.random.Generator], list]) -> Callable:
    """Samples from a function of the rng returning items as `samples` takes them."""
    return lambda rng: samples(*fn(rng))


@dataclass(frozen=True)
class DType:
    """A dtype argument, resolved per library (torch.float64 / gradc.float64)."""
    name: str


# ----------------------------------------------------------------------------- running one side

def library(side: str) -> Any:
    if side == "torch":
        import torch
        return torch
    return gradc


def lookup(side: str, name: str) -> Any:
    lib = library(side)
    parts = name.split(".")
    if parts[0] == "torch":
        parts = parts[1:]
    if parts[0] == "Tensor":
        method = ".".join(parts[1:])
        if not callable(getattr(lib.Tensor, method, None)):  # a property (Tensor.T)
            return lambda self: getattr(self, method)
        return lambda self, *a, **k: getattr(self, method)(*a, **k)
    obj = lib
    for p in parts:
        obj = getattr(obj, p)
    return obj


def has_float_input(s: Sample) -> bool:
    return any(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in s.args)


def convert(side: str, value: Any, wide: bool, grad: bool, leaves: list) -> Any:
    """numpy arrays -> tensors of that library (float64 leaves requiring grad when `grad`)."""
    lib = library(side)
    if isinstance(value, np.ndarray):
        array = value.astype(np.float64) if wide and value.dtype.kind == "f" else value.copy()
        t = lib.from_numpy(np.ascontiguousarray(array))
        if grad and array.dtype.kind == "f":
            t.requires_grad_(True)
            leaves.append(t)
        return t
    if isinstance(value, DType):
        return getattr(lib, value.name)
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.ndarray) for v in value):
        return type(value)(convert(side, v, wide, grad, leaves) for v in value)
    return value


def make_module(side: str, r: Row, wide: bool, reference: Any = None) -> Any:
    """The row's module; gradc's gets the reference module's parameters (in its dtype)."""
    if side == "torch":
        import torch
        torch.manual_seed(0)  # the same initial parameters for every instance
    if callable(r.init):  # e.g. lambda nn: nn.Sequential(nn.Linear(9, 5), nn.ReLU())
        module = r.init(library(side).nn)
    else:
        module = lookup(side, r.name)(**r.init)
    if side == "torch":
        return module.double() if wide else module
    if reference is not None:
        params = dict(module.named_parameters())
        for name, p in reference.named_parameters():
            params[name]._data = p.detach().numpy().copy()
        buffers = dict(module.named_buffers())
        for name, b in reference.named_buffers():
            if name in buffers and buffers[name] is not None:
                buffers[name]._data = b.detach().numpy().copy()
    return module


def call(side: str, r: Row, s: Sample, wide: bool = False, grad: bool = False, module: Any = None) -> tuple:
    """(output, leaf tensors) of the row on one sample."""
    leaves: list = []
    args = tuple(convert(side, a, wide, grad and (r.wrt is None or i in r.wrt), leaves) for i, a in enumerate(s.args))
    kwargs = {k: convert(side, v, wide, grad, leaves) for k, v in s.kwargs.items()}
    fn = module if r.is_module else lookup(side, r.name)
    return fn(*args, **kwargs), leaves


def flat_outputs(out: Any) -> list:
    """Tensors as numpy arrays and other results as they are, in order."""
    if isinstance(out, (list, tuple)) and not _is_size(out):
        return [x for o in out for x in flat_outputs(o)]
    if hasattr(out, "detach") and hasattr(out, "shape"):
        return [np.asarray(out.detach().numpy())]
    return [tuple(out) if _is_size(out) else out]


def _is_size(out: Any) -> bool:
    return type(out).__name__ == "Size" or (isinstance(out, tuple) and all(isinstance(v, int) for v in out)
                                             and not hasattr(out, "_fields"))


def float_tensors(out: Any) -> list:
    if isinstance(out, (list, tuple)):
        return [x for o in out for x in float_tensors(o)]
    if hasattr(out, "requires_grad") and hasattr(out, "shape") and out.dtype in _float_dtypes():
        return [out]
    return []


def _float_dtypes() -> tuple:
    dts: list = [gradc.float32, gradc.float64]
    try:
        import torch
        dts += [torch.float32, torch.float64]
    except ImportError:
        pass
    return tuple(dts)


# ----------------------------------------------------------------------------- comparisons

def assert_same(got: list, want: list, rtol: float, atol: float, what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} outputs, PyTorch gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if isinstance(w, np.ndarray):
            assert isinstance(g, np.ndarray), f"{what}[{i}]: got {type(g).__name__}, want a tensor"
            assert g.shape == w.shape, f"{what}[{i}]: shape {g.shape}, want {w.shape}"
            assert g.dtype == w.dtype, f"{what}[{i}]: dtype {g.dtype}, want {w.dtype}"
            if w.dtype.kind == "f":
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, equal_nan=True, err_msg=f"{what}[{i}]")
            else:
                np.testing.assert_array_equal(g, w, err_msg=f"{what}[{i}]")
        elif isinstance(w, float):
            assert isinstance(g, (float, int)) and np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True), \
                f"{what}[{i}]: {g!r}, want {w!r}"
        else:
            assert g == w and type(g) is type(w), f"{what}[{i}]: {g!r}, want {w!r}"


def _rng(r: Row) -> np.random.Generator:
    # the same seed for a function and its method rows: same samples, shared compiled kernels
    base = r.name.split(".")[-1]
    return np.random.default_rng(zlib.crc32(base.encode()))


def row_samples(r: Row) -> list[Sample]:
    return r.samples(_rng(r))


def check_values(r: Row) -> int:
    """gradc eager == PyTorch on every sample; returns the number of samples checked."""
    checked = 0
    for i, s in enumerate(row_samples(r)):
        tmod = make_module("torch", r, False) if r.is_module else None
        gmod = make_module("gradc", r, False, tmod) if r.is_module else None
        want, _ = call("torch", r, s, module=tmod)
        got, _ = call("gradc", r, s, module=gmod)
        assert_same(flat_outputs(got), flat_outputs(want), r.rtol, r.atol, f"{r.name} sample {i}")
        checked += 1
    return checked


def _cotangents(outs: list, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 1.5, size=tuple(o.shape)) for o in outs]


def _eager_gradients(side: str, r: Row, s: Sample, seed: int) -> tuple[list, float]:
    tmod = make_module("torch", r, True) if r.is_module else None
    module = tmod
    if side == "gradc" and r.is_module:
        module = make_module("gradc", r, True, make_module("torch", r, True))
    out, leaves = call(side, r, s, wide=True, grad=True, module=module)
    outs = [o for o in float_tensors(out) if o.requires_grad]
    if not outs:
        raise AssertionError(f"{r.name}: {side} output does not require grad")
    lib = library(side)
    cts = _cotangents(outs, seed)
    total = None
    for o, c in zip(outs, cts):
        term = (o * lib.from_numpy(c)).sum()
        total = term if total is None else total + term
    params = list(module.parameters()) if module is not None else []
    total.backward()
    grads = []
    for t in leaves + params:
        g = t.grad
        if g is not None and side == "torch":
            g = g.detach() + 0  # a ZeroTensor (the gradient of sign, ...) becomes an ordinary one
        grads.append(np.zeros(tuple(t.shape)) if g is None else np.asarray(g.detach().numpy(), dtype=np.float64))
    return grads, float(total.detach().numpy())


class interpreted:
    """Eager backward on the reference interpreter: eager autograd tiers up to native code after a few
    uses of one graph shape, which would compile hundreds of kernels here; the native path has its own
    check (check_native), so the eager checks keep to the interpreter."""

    def __enter__(self) -> None:
        from gradc.api import get_backend
        self.saved = get_backend()
        gradc.set_backend("interp")

    def __exit__(self, *exc: Any) -> None:
        gradc.set_backend(self.saved)


def check_grad(r: Row) -> int:
    """float64 gradients of sum(out * cotangent) equal PyTorch's, for inputs and module parameters."""
    with interpreted():
        return _check_grad(r)


def _check_grad(r: Row) -> int:
    checked = 0
    for i, s in enumerate(row_samples(r)):
        if s.special or not (has_float_input(s) or r.is_module):
            continue
        want, want_total = _eager_gradients("torch", r, s, i)
        got, got_total = _eager_gradients("gradc", r, s, i)
        assert np.isclose(got_total, want_total, rtol=1e-6, atol=1e-9, equal_nan=True), \
            f"{r.name} sample {i}: value {got_total}, want {want_total}"
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_allclose(g, w, rtol=r.grad_rtol, atol=r.grad_atol, equal_nan=True,
                                       err_msg=f"{r.name} sample {i} gradient {k}")
        checked += 1
    return checked


def check_node(r: Row) -> int:
    """The first output's grad_fn is named as PyTorch names it (AddBackward0, ...), on every sample."""
    checked = 0
    with interpreted():
        for i, s in enumerate(row_samples(r)):
            if s.special or not (has_float_input(s) or r.is_module):
                continue
            names = []
            for side in ("torch", "gradc"):
                module = make_module(side, r, True, make_module("torch", r, True)) if r.is_module else None
                out, _ = call(side, r, s, wide=True, grad=True, module=module)
                first = out[0] if isinstance(out, (tuple, list)) else out
                fn = getattr(first, "grad_fn", None)
                names.append(None if fn is None else fn.name())
            assert names[1] == names[0], f"{r.name} sample {i}: grad_fn {names[1]}, PyTorch's is {names[0]}"
            checked += 1
    return checked


def native_sample(r: Row) -> Sample:
    candidates = [s for s in row_samples(r) if not s.special]
    sized = [s for s in candidates if any(isinstance(a, np.ndarray) and a.size > 1 for a in s.args)]
    return (sized or candidates or row_samples(r))[0]


def check_native(r: Row) -> int:
    """The traced function compiled (value_and_grad when differentiable, else compile) == gradc eager,
    on one ordinary sample, plus the values on the NaN/inf/zeros sample when the row has one."""
    from .native import NativeRunner
    return NativeRunner([r]).check(r)


def builtin_type(exc: BaseException) -> type:
    """The first builtin exception class PyTorch's exception is an instance of."""
    for cls in type(exc).__mro__:
        if cls.__module__ == "builtins":
            return cls
    return Exception


def check_errors(r: Row) -> int:
    """Each bad input raises in PyTorch, and gradc raises the same builtin exception type."""
    if r.errors is None:
        return 0
    checked = 0
    for i, s in enumerate(r.errors(_rng(r))):
        try:
            tmod = make_module("torch", r, False) if r.is_module else None
            call("torch", r, s, module=tmod)
        except Exception as e:  # noqa: BLE001  (any reference exception defines the expected type)
            expected = builtin_type(e)
        else:
            raise AssertionError(f"{r.name} bad input {i}: PyTorch did not raise")
        try:
            gmod = make_module("gradc", r, False) if r.is_module else None
            call("gradc", r, s, module=gmod)
        except expected:
            checked += 1
            continue
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"{r.name} bad input {i}: gradc raised {type(e).__name__}: {e}; PyTorch raises "
                                 f"{expected.__name__}") from e
        raise AssertionError(f"{r.name} bad input {i}: gradc did not raise (PyTorch raises {expected.__name__})")
    return checked
