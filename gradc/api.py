"""Transforms on plain Python functions of tensors: trace, compile, grad, value_and_grad, vjp, jacobian, hessian.

A function is traced once per specialization (argument shapes and dtypes, like `jax.jit`) into a Function,
optimized, differentiated by the AD pass where asked, and compiled to ONE native function (or run on the
reference interpreter with `set_backend("interp")`). Results are numpy arrays (0-d for scalars).
"""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Callable, Sequence

import numpy as np

from gradc.ir.core import Function, TensorType, Value, dtype_of_numpy
from gradc.ir.interp import run
from gradc.ir.passes.ad import ad
from gradc.tensor import Tensor, Trace, TracerError, tracing

__all__ = ["trace", "make_ir", "compile", "grad", "value_and_grad", "vjp", "jacobian", "hessian",
           "set_backend", "get_backend", "TracerError"]

STAGES = ("ir", "ad", "fused", "llvm", "asm")
_backend = os.environ.get("GRADC_BACKEND", "auto")


def set_backend(name: str) -> None:
    """Choose where compiled functions and eager backward run: "native", "interp" or "auto"."""
    global _backend
    if name not in ("native", "interp", "auto"):
        raise ValueError(f"backend must be 'native', 'interp' or 'auto', got {name!r}")
    _backend = name


def get_backend() -> str:
    return _backend


def native_available() -> bool:
    try:
        import gradc.codegen  # noqa: F401
        return hasattr(gradc.codegen, "compile_function")
    except ImportError:
        return False


# ----------------------------------------------------------------------------- arguments

def argument_array(arg: Any, position: int) -> np.ndarray:
    """A numpy array for one argument: Tensors give their data, Python numbers 0-d arrays."""
    if isinstance(arg, np.ndarray):
        array = arg
    elif isinstance(arg, Tensor):
        if arg.is_traced:
            raise TracerError(f"argument {position} is a traced tensor; nest transforms on Python functions instead")
        array = arg._data
    elif isinstance(arg, bool):
        array = np.asarray(arg)
    elif isinstance(arg, float):
        array = np.asarray(arg, dtype=np.float32)
    elif isinstance(arg, int):
        array = np.asarray(arg, dtype=np.int64)
    elif isinstance(arg, np.generic):
        array = np.asarray(arg)
    else:
        raise TypeError(f"argument {position} has type {type(arg).__name__}; gradc functions take numpy arrays, "
                        f"gradc Tensors and Python numbers")
    dtype_of_numpy(array.dtype)  # refuses float16, object, complex, ... with a clear TypeError
    return array


def argument_type(array: np.ndarray) -> TensorType:
    return TensorType(array.shape, dtype_of_numpy(array.dtype))


def param_names(fn: Callable, count: int) -> list[str]:
    try:
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        names = []
    if len(names) < count:  # *args: name the rest positionally
        names += [f"arg{i}" for i in range(len(names), count)]
    return names[:count]


# ----------------------------------------------------------------------------- tracing

def trace_types(fn: Callable, types: Sequence[TensorType], name: str | None = None) -> Function:
    """Trace fn on abstract arguments of the given types into a Function."""
    t = Trace()
    params = [Value(ty, name=n) for ty, n in zip(types, param_names(fn, len(types)))]
    with tracing(t):
        outputs = fn(*(Tensor._from_value(p) for p in params))
        single = not isinstance(outputs, (tuple, list))
        results = []
        for i, out in enumerate([outputs] if single else outputs):
            if not isinstance(out, Tensor):
                raise TypeError(f"{getattr(fn, '__name__', 'function')} returned a {type(out).__name__} as output "
                                f"{i}; traced functions must return gradc Tensors (or a tuple of them)")
            results.append(t.lift(out))
    fn_name = name or getattr(fn, "__name__", "f")
    if not fn_name.isidentifier():
        fn_name = "f"
    function = Function(fn_name, params, t.builder.ops, results, {"single_output": single})
    return function


def trace(fn: Callable, *example_args: Any) -> Function:
    """Trace fn on example arguments (arrays, Tensors or numbers) into an SSA Function."""
    arrays = [argument_array(a, i) for i, a in enumerate(example_args)]
    return trace_types(fn, [argument_type(a) for a in arrays])


def make_ir(fn: Callable) -> Callable[..., Function]:
    """`make_ir(fn)(*args)` gives fn's traced Function, which prints as IR text (like jax.make_jaxpr)."""
    return lambda *args: trace(fn, *args)


def optimize(fn: Function) -> Function:
    """The standard cleanup pipeline (simplify, cse, dce)."""
    try:
        from gradc.ir.passes import optimize as pipeline
    except ImportError:
        from gradc.ir.passes.dce import dce as pipeline
    return pipeline(fn)


# ----------------------------------------------------------------------------- specializations

class Specialization:
    """One traced-and-compiled variant of a transformed function, for fixed argument types."""

    def __init__(self, traced: Function, joint: Function, run_fn: Callable, lower_stage: Callable) -> None:
        self.traced = traced
        self.joint = joint
        self.run = run_fn  # arrays -> tuple of result arrays
        self.call: Callable[..., Any] = run_fn  # arrays -> the user-facing result (set by the transform)
        self._lower_stage = lower_stage

    def as_text(self, stage: str = "ir") -> str:
        if stage == "ir":
            return str(self.traced)
        if stage == "ad":
            return str(self.joint)
        if stage in ("fused", "llvm", "asm"):
            return self._lower_stage(stage)
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")


class Transformed:
    """A transformed function: traces and compiles per specialization, then calls native code."""

    def __init__(self, fn: Callable, build: Callable[[Function], Function],
                 wrap: Callable[[Specialization], Callable[..., Any]], what: str) -> None:
        self.fn = fn
        self.build = build  # traced Function -> the Function that runs (forward or joint)
        self.wrap = wrap  # specialization -> its user-facing call (result arrays shaped as the transform says)
        self.what = what
        self.specializations: dict[tuple, Specialization] = {}
        self._call: Callable[..., Any] | None = None  # the last specialization's call: tried first
        self._lock = threading.Lock()
        self.__name__ = getattr(fn, "__name__", "f")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __repr__(self) -> str:
        return f"<gradc.{self.what} of {self.__name__}>"

    def specialize(self, arrays: list[np.ndarray]) -> Specialization:
        key = tuple((a.shape, a.dtype.str) for a in arrays)
        spec = self.specializations.get(key)
        if spec is None:
            with self._lock:
                spec = self.specializations.get(key)
                if spec is None:
                    spec = self._compile([argument_type(a) for a in arrays])
                    spec.call = self.wrap(spec)
                    self.specializations[key] = spec
        return spec

    def _compile(self, types: list[TensorType]) -> Specialization:
        traced = trace_types(self.fn, types)
        joint = optimize(self.build(optimize(traced)))
        backend = _backend
        if backend == "native" or (backend == "auto" and native_available()):
            from gradc.codegen import compile_function
            compiled = compile_function(joint)
            return Specialization(traced, joint, compiled, compiled.as_text)

        def interpret(*args: np.ndarray) -> tuple[np.ndarray, ...]:
            return tuple(run(joint, *args))

        def no_native(stage: str) -> str:
            raise RuntimeError(f"stage {stage!r} needs the native backend (current backend: {backend})")
        return Specialization(traced, joint, interpret, no_native)

    def lower(self, *args: Any) -> Specialization:
        """The specialization for these arguments; `.as_text(stage)` shows ir, ad, fused, llvm or asm."""
        return self.specialize([argument_array(a, i) for i, a in enumerate(args)])

    def __call__(self, *args: Any) -> Any:
        call = self._call
        # a Python int is int64 here (argument_array), while native code would also take it for a float
        # parameter: calls with ints take the checked path, so they behave as a fresh call does
        if call is not None and int not in map(type, args):
            try:  # fast path: native code checks the arguments against its specialization itself
                return call(*args)
            except (TypeError, ValueError):
                pass
        arrays = [argument_array(a, i) for i, a in enumerate(args)]
        spec = self.specialize(arrays)
        self._call = spec.call
        return spec.call(*arrays)


# ----------------------------------------------------------------------------- the transforms

def _argnums(argnums: int | Sequence[int]) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, int):
        return (argnums,), True
    argnums = tuple(argnums)
    if not argnums or not all(isinstance(a, int) for a in argnums):
        raise TypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
    return argnums, False


def _check_argnums(fn: Function, argnums: tuple[int, ...]) -> list[int]:
    wrt = []
    for a in argnums:
        if not -len(fn.params) <= a < len(fn.params):
            raise ValueError(f"argnums {a} is out of range for a function of {len(fn.params)} arguments")
        index = a % len(fn.params)
        if not fn.params[index].dtype.is_float:
            raise TypeError(f"grad requires real floating point inputs; argument {index} is {fn.params[index].type}")
        wrt.append(index)
    return wrt


def _scalar_output(fn: Function, what: str) -> None:
    if len(fn.results) != 1 or fn.results[0].type.shape != () or not fn.results[0].dtype.is_float:
        got = ", ".join(str(r.type) for r in fn.results)
        raise TypeError(f"{what} requires a function with one scalar floating point output; got {got}")


def compile(fn: Callable) -> Transformed:
    """A native forward function: results are numpy arrays (a tuple when fn returns a tuple)."""
    if hasattr(fn, "_gradc_compile"):  # a gradc.nn.Module: its parameters become inputs (gradc.train)
        return fn._gradc_compile()
    def wrap(spec: Specialization) -> Callable[..., Any]:
        run_fn = spec.run
        return (lambda *args: run_fn(*args)[0]) if spec.traced.meta.get("single_output", True) else run_fn
    return Transformed(fn, lambda traced: traced, wrap, "compile")


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0) -> Transformed:
    """A native fused forward+backward: returns (value, grad), grad a tuple when argnums is a tuple."""
    nums, single = _argnums(argnums)

    def build(traced: Function) -> Function:
        wrt = _check_argnums(traced, nums)  # an integer input is named before the (then integer) output
        _scalar_output(traced, "value_and_grad")
        return ad(traced, wrt, seed="ones")

    def wrap(spec: Specialization) -> Callable[..., Any]:
        run_fn = spec.run
        if single:
            return run_fn  # already (value, grad)

        def value_and_grads(*args: Any) -> tuple:
            results = run_fn(*args)
            return results[0], results[1:]
        return value_and_grads
    return Transformed(fn, build, wrap, "value_and_grad")


def grad(fn: Callable, argnums: int | Sequence[int] = 0) -> Transformed:
    """A native gradient function: d fn / d args[argnums] (a tuple when argnums is a tuple)."""
    nums, single = _argnums(argnums)

    def build(traced: Function) -> Function:
        wrt = _check_argnums(traced, nums)  # an integer input is named before the (then integer) output
        _scalar_output(traced, "grad")
        joint = ad(traced, wrt, seed="ones")
        return Function(joint.name, joint.params, joint.ops, joint.results[1:], dict(joint.meta))

    def wrap(spec: Specialization) -> Callable[..., Any]:
        run_fn = spec.run
        return (lambda *args: run_fn(*args)[0]) if single else run_fn
    return Transformed(fn, build, wrap, "grad")


def vjp(fn: Callable, *args: Any) -> tuple[Any, Callable]:
    """(fn(*args), vjp_fn) where vjp_fn(cotangent) gives one cotangent per argument (None for integer ones)."""
    arrays = [argument_array(a, i) for i, a in enumerate(args)]
    traced = optimize(trace(fn, *arrays))
    float_params = [i for i, p in enumerate(traced.params) if p.dtype.is_float]
    joint = optimize(ad(traced, float_params, seed="param"))
    forward = compile(fn)
    outputs = forward(*arrays)
    backward = compile_function_or_interp(joint)
    n_out = len(traced.results)

    def vjp_fn(*cotangents: Any) -> tuple:
        if len(cotangents) != n_out:
            if n_out > 1 and len(cotangents) == 1 and isinstance(cotangents[0], (tuple, list)):
                cotangents = tuple(cotangents[0])
            else:
                raise TypeError(f"vjp_fn takes {n_out} cotangent(s), got {len(cotangents)}")
        cts = [np.asarray(argument_array(c, n), dtype=r.dtype.numpy)
               for n, (c, r) in enumerate(zip(cotangents, traced.results))]
        for c, r in zip(cts, traced.results):
            if c.shape != r.type.shape:
                raise ValueError(f"cotangent has shape {list(c.shape)}, expected {list(r.type.shape)}")
        grads = backward(*arrays, *cts)[n_out:]
        by_param = dict(zip(float_params, grads))
        return tuple(by_param.get(i) for i in range(len(arrays)))
    return outputs, vjp_fn


def compile_function_or_interp(fn: Function, donate: dict[int, int] | None = None) -> Callable[..., list[np.ndarray]]:
    """Native code for fn (results in `donate` written into those arguments where possible), or the interpreter."""
    if _backend == "native" or (_backend == "auto" and native_available()):
        from gradc.codegen import compile_function
        return compile_function(fn, donate=donate)
    return lambda *args: run(fn, *args)


def _basis_rows(shape: tuple[int, ...], dtype: Any):
    size = int(np.prod(shape, dtype=np.int64))
    for k in range(size):
        row = np.zeros(size, dtype=dtype)
        row[k] = 1
        yield row.reshape(shape)


def jacobian(fn: Callable, argnums: int = 0) -> Callable[..., np.ndarray]:
    """Reverse-mode Jacobian: an array of shape output.shape + args[argnums].shape."""
    def jac(*args: Any) -> np.ndarray:
        arrays = [argument_array(a, i) for i, a in enumerate(args)]
        traced = optimize(trace(fn, *arrays))
        if len(traced.results) != 1:
            raise TypeError("jacobian needs a function with one output")
        (index,) = _check_argnums(traced, (argnums,))
        joint = compile_function_or_interp(optimize(ad(traced, [index], seed="param")))
        out_type = traced.results[0].type
        rows = [joint(*arrays, ct)[1] for ct in _basis_rows(out_type.shape, out_type.dtype.numpy)]
        return np.stack(rows).reshape(out_type.shape + arrays[index].shape)
    return jac


def hessian(fn: Callable, argnums: int = 0) -> Callable[..., np.ndarray]:
    """The Hessian by reverse-over-reverse: AD of the adjoint Function (Hessian-vector products)."""
    def hess(*args: Any) -> np.ndarray:
        arrays = [argument_array(a, i) for i, a in enumerate(args)]
        traced = optimize(trace(fn, *arrays))
        (index,) = _check_argnums(traced, (argnums,))
        _scalar_output(traced, "hessian")
        gradient = optimize(ad(traced, [index], seed="ones"))
        gradient = Function("gradient", gradient.params, gradient.ops, gradient.results[1:])
        hvp = compile_function_or_interp(optimize(ad(gradient, [index], seed="param")))
        x_type = traced.params[index].type
        rows = [hvp(*arrays, v)[1] for v in _basis_rows(x_type.shape, x_type.dtype.numpy)]
        return np.stack(rows).reshape(x_type.shape + x_type.shape)
    return hess
