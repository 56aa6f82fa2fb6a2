"""The Tensor and the one dispatch (`apply`) that serves both eager and traced execution.

A Tensor holds either a numpy array (eager) or an IR Value (inside `gradc.trace`). Every operation,
however it is spelled by the user, ends in `apply(primitive, *tensors, **attrs)`:
  - traced: the primitive is emitted into the current trace's Builder;
  - eager: the primitive's numpy eval rule runs, and if gradients are being recorded the result
    keeps a `Record` (primitive, attrs, input tensors). `backward()` turns the recorded ops into a
    Function and runs the AD pass on it (gradc.autograd), so eager mode has no gradient code of its own.

User-facing `grad_fn` nodes are named as PyTorch names them; one node may stand for several
primitives (`torch_op` groups them).
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
from typing import Any, Callable

import numpy as np

from gradc import eager_blas
from gradc.grad_mode import is_grad_enabled
from gradc.ir.builder import Builder, canonical_attr
from gradc.ir.core import DTYPE_BY_NUMPY, DType, TensorType, Value, dtype_of_numpy, float32
from gradc.ir.ops import OPS


class _State(threading.local):
    """Per-thread dispatch state; class defaults make reads cheap (no AttributeError path)."""
    traces: list = []  # replaced per thread on first push
    depth = 0  # > 0 inside a torch_op group


_local = _State()
_grouping = _local
_TYPES: dict[tuple, TensorType] = {}  # (shape, numpy dtype) -> TensorType of eager arrays


class TracerError(TypeError):
    """A traced value was used where a concrete value is needed (e.g. Python control flow)."""


# ----------------------------------------------------------------------------- tracing state

class Trace:
    """The Builder that traced ops go to, plus the constants captured from eager tensors."""

    def __init__(self) -> None:
        self.builder = Builder()
        self.captured: dict[int, tuple[Tensor, Value]] = {}

    def lift(self, t: Tensor) -> Value:
        if t._value is not None:
            return t._value
        key = id(t)
        if key not in self.captured:  # a closed-over eager tensor becomes a constant
            # t is kept alive with its constant: a freed temporary's id is reused by the next one
            self.captured[key] = (t, self.builder.emit("const", value=t._data, shape=t._data.shape, dtype=t.dtype))
        return self.captured[key][1]


def current_trace() -> Trace | None:
    stack = _local.traces
    return stack[-1] if stack else None


class tracing:
    """Context manager that makes `trace` the destination of traced ops."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace

    def __enter__(self) -> Trace:
        if "traces" not in _local.__dict__:
            _local.traces = []
        _local.traces.append(self.trace)
        return self.trace

    def __exit__(self, *exc: Any) -> None:
        _local.traces.pop()


# ----------------------------------------------------------------------------- graph nodes

class Node:
    """A user-facing grad_fn: PyTorch's name and `next_functions`.

    `next_functions` is built on first access from the input tensors, so that a long chain of
    recorded primitives costs nothing until someone walks it.
    """

    __slots__ = ("_name", "_next", "_inputs", "__weakref__")

    def __new__(cls, name: str = "", *args: Any, **kwargs: Any) -> Node:
        # Node("AddBackward0", ...) is an instance of a class named AddBackward0, as PyTorch's nodes are
        return object.__new__(node_class(name) if cls is Node and name else cls)

    def __init__(self, name: str, next_functions: tuple | None = None, inputs: tuple = ()) -> None:
        self._name = name
        self._next = next_functions
        self._inputs = inputs

    def name(self) -> str:
        return self._name

    @property
    def next_functions(self) -> tuple:
        if self._next is None:
            self._next = tuple(next_function(t) for t in self._inputs)
            self._inputs = ()
        return self._next

    def __repr__(self) -> str:
        return f"<{self._name} object at {hex(id(self))}>"


_NODE_CLASSES: dict[str, type] = {}


def node_class(name: str) -> type:
    """The Node subclass named `name` (one per name, made on first use)."""
    cls = _NODE_CLASSES.get(name)
    if cls is None:
        cls = _NODE_CLASSES[name] = type(name, (Node,), {"__slots__": (), "__module__": "gradc.autograd"})
    return cls


class AccumulateGrad(Node):
    __slots__ = ("variable",)

    def __init__(self, variable: Tensor) -> None:
        super().__init__("AccumulateGrad", ())
        self.variable = variable


# grad_fn names of single primitives recorded outside any torch_op (e.g. by create_graph=True)
PRIMITIVE_NODES = {
    "add": "AddBackward0", "sub": "SubBackward0", "mul": "MulBackward0", "div": "DivBackward0",
    "neg": "NegBackward0", "exp": "ExpBackward0", "log": "LogBackward0", "tanh": "TanhBackward0",
    "sqrt": "SqrtBackward0", "recip": "ReciprocalBackward0", "sigmoid": "SigmoidBackward0",
    "relu": "ReluBackward0", "abs": "AbsBackward0", "pow": "PowBackward1", "maximum": "MaximumBackward0",
    "where": "WhereBackward0", "cast": "ToCopyBackward0", "reduce_sum": "SumBackward1",
    "reduce_max": "AmaxBackward0", "reshape": "ViewBackward0", "permute": "PermuteBackward0",
    "broadcast_to": "ExpandBackward0", "slice": "SliceBackward0", "pad": "ConstantPadNdBackward0",
    "gather": "GatherBackward0", "matmul": "BmmBackward0",
}


# nodes whose Python-number operand still has a (None, 0) slot in next_functions, as in PyTorch
SCALAR_OPERAND_NODES = frozenset({"AddBackward0", "SubBackward0", "MulBackward0", "DivBackward0"})


class Record:
    """How a non-leaf tensor was computed: one primitive over input tensors (saved, with versions)."""

    __slots__ = ("opdef", "attrs", "inputs", "versions", "freed", "overwritten")

    def __init__(self, opdef: Any, attrs: dict, inputs: tuple) -> None:
        self.opdef = opdef
        self.attrs = attrs
        self.inputs = inputs
        self.versions = tuple(t._version for t in inputs)
        self.freed = False
        self.overwritten = 0  # the version the result was overwritten to in place (0: never)


def next_function(t: Any) -> tuple:
    if not isinstance(t, Tensor) or not t.requires_grad:
        return (None, 0)
    if t._record is not None:
        return (t.grad_fn, 0)
    if t._accumulate is None:
        t._accumulate = AccumulateGrad(t)
    return (t._accumulate, 0)


# ----------------------------------------------------------------------------- dispatch

QUIET_KINDS = frozenset({"layout", "index", "source"})  # ops that never raise numpy floating point warnings
EAGER_EVALS = {"matmul": eager_blas.matmul}  # eager-only eval rules (same values; see eager_blas.py)


def apply(name: str, *inputs: Tensor, **attrs: Any) -> Tensor:
    """Run one primitive on tensors: emit it when tracing, evaluate (and record) it when eager."""
    trace = current_trace()
    if trace is not None and (not inputs or any(t._value is not None for t in inputs)):
        b = trace.builder
        value = b.emit(name, *(trace.lift(t) for t in inputs), **attrs)
        if not is_grad_enabled() and value.dtype.is_float and OPS[name].vjp is not None:
            value = b.emit("stop_gradient", value)
        return Tensor._from_value(value)
    opdef = OPS[name]
    if attrs:
        attrs = {k: canonical_attr(k, v) for k, v in attrs.items()}
    result_type = opdef.shape([t._type() for t in inputs], attrs)
    evaluate = EAGER_EVALS.get(name, opdef.eval)
    if opdef.kind in QUIET_KINDS or _grouping.depth:
        data = evaluate(*(t._data for t in inputs), **attrs)
    else:
        with np.errstate(all="ignore"):  # NaN and inf are values, as in native code
            data = evaluate(*(t._data for t in inputs), **attrs)
    out = Tensor._from_array(np.asarray(data, dtype=result_type.dtype.numpy))
    if opdef.kind == "layout" and np.may_share_memory(out._data, inputs[0]._data):
        out._versions = inputs[0]._versions  # a view: changing either in place changes both (PyTorch)
    if (opdef.vjp is not None and result_type.dtype.is_float and is_grad_enabled()
            and any(t.requires_grad for t in inputs)):
        out.requires_grad = True
        out._record = Record(opdef, attrs, inputs)
    return out




def torch_op(node_name: str | Callable[..., str]) -> Callable:
    """Decorate a front-end function so that its result gets ONE grad_fn named as in PyTorch.

    The function may emit any number of primitives; the node's next_functions are the tensor
    arguments' grad_fns, in argument order. Nested torch_ops inside it stay invisible.
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _grouping.depth or _local.traces:
                return fn(*args, **kwargs)
            _grouping.depth = 1
            try:
                with np.errstate(all="ignore"):  # once for all the primitives of this op
                    out = fn(*args, **kwargs)
            finally:
                _grouping.depth = 0
            if isinstance(out, Tensor) and out._record is not None:
                tensors = [a for a in itertools.chain(args, kwargs.values()) if isinstance(a, Tensor)]
                if any(out is t for t in tensors):  # a no-op still gives a new node, as in PyTorch
                    out = apply("reshape", out, shape=out.shape)
                name = node_name(*args, **kwargs) if callable(node_name) else node_name
                nexts = tuple(next_function(t) for t in tensors)
                if name in SCALAR_OPERAND_NODES and len(tensors) == 1 and any(
                        isinstance(a, (bool, int, float)) for a in args[:2]):
                    nexts += ((None, 0),)  # PyTorch wraps the number as a tensor operand without history
                out.grad_fn = Node(name, nexts)
            return out
        return wrapper
    return decorate


# ----------------------------------------------------------------------------- the Tensor

class Tensor:
    """A PyTorch-style tensor: numpy data (eager) or an IR value (traced), with autograd state."""

    __array_priority__ = 1000  # numpy defers to Tensor's reflected operators

    def __init__(self, data: Any = None, dtype: DType | None = None, requires_grad: bool = False) -> None:
        try:
            array = np.asarray(data if data is not None else [], dtype=dtype.numpy if dtype else None)
        except OverflowError:  # a Python int that the integer dtype cannot hold
            raise RuntimeError(f"value cannot be converted to type {dtype.name} without overflow") from None
        if dtype is None and array.dtype == np.float64 and not isinstance(data, (np.ndarray, np.generic)):
            array = array.astype(np.float32)  # Python floats default to float32, as in PyTorch
        self._init(np.asarray(array, dtype=array.dtype.newbyteorder("="), order="C"), None)
        if requires_grad:
            self._set_requires_grad()

    def _set_requires_grad(self) -> Tensor:
        """requires_grad=True given to a constructor (PyTorch words this error differently)."""
        if not self.dtype.is_float:
            raise RuntimeError("Only Tensors of floating point and complex dtype can require gradients")
        self.requires_grad = True
        return self

    def _init(self, data: np.ndarray | None, value: Value | None) -> None:
        if data is not None:
            dtype_of_numpy(data.dtype)  # refuses dtypes gradc does not support
        self._data = data
        self._value = value
        self._record: Record | None = None
        self._accumulate: AccumulateGrad | None = None
        self._versions = [0]  # the version counter; views (and detach) share their base's, as in PyTorch
        self.requires_grad = False
        self.grad: Tensor | None = None
        self._grad_fn: Node | None = None

    @property
    def _version(self) -> int:
        """How many in-place changes this tensor's memory has seen (shared by views of the same data)."""
        return self._versions[0]

    @_version.setter
    def _version(self, version: int) -> None:
        self._versions[0] = version

    @classmethod
    def _from_array(cls, data: np.ndarray) -> Tensor:
        t = cls.__new__(cls)
        t._init(data, None)
        return t

    @classmethod
    def _from_value(cls, value: Value) -> Tensor:
        t = cls.__new__(cls)
        t._init(None, value)
        return t

    def _type(self) -> TensorType:
        if self._value is not None:
            return self._value.type
        data = self._data
        key = (data.shape, data.dtype)
        t = _TYPES.get(key)
        if t is None:
            if len(_TYPES) > 4096:
                _TYPES.clear()
            t = _TYPES[key] = TensorType(data.shape, dtype_of_numpy(data.dtype))
        return t

    # --- properties
    @property
    def shape(self) -> tuple[int, ...]:
        data = self._data
        return data.shape if data is not None else self._value.type.shape

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    @property
    def dtype(self) -> DType:
        data = self._data
        if data is None:
            return self._value.type.dtype
        dtype = DTYPE_BY_NUMPY.get(data.dtype)
        return dtype if dtype is not None else dtype_of_numpy(data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def grad_fn(self) -> Node | None:
        if self._grad_fn is None and self._record is not None:
            r = self._record
            name = PRIMITIVE_NODES.get(r.opdef.name, f"{r.opdef.name.title().replace('_', '')}Backward0")
            self._grad_fn = Node(name, None, r.inputs)
        return self._grad_fn

    @grad_fn.setter
    def grad_fn(self, node: Node | None) -> None:
        self._grad_fn = node

    @property
    def is_leaf(self) -> bool:
        return self._record is None

    @property
    def is_traced(self) -> bool:
        return self._value is not None

    def _concrete(self, what: str) -> np.ndarray:
        if self._value is not None:
            raise TracerError(
                f"{what} needs a concrete value, but this tensor is traced ({self._value.type}); "
                "Python control flow and conversions on traced values are not supported inside "
                "gradc.trace/compile/grad: use gradc.where or pass the value as a static Python number")
        return self._data

    # --- conversion
    def numpy(self) -> np.ndarray:
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead.")
        return self._concrete("numpy()")

    def item(self) -> Any:
        data = self._concrete("item()")
        if data.size != 1:
            raise RuntimeError(f"a Tensor with {data.size} elements cannot be converted to Scalar")
        return data.reshape(()).item()

    def tolist(self) -> Any:
        return self._concrete("tolist()").tolist()

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self._concrete("conversion to a numpy array")
        return data if dtype is None else data.astype(dtype)

    def __bool__(self) -> bool:
        data = self._concrete("bool()")
        if data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        return bool(data.reshape(()))

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __hash__(self) -> int:
        return id(self)

    # --- autograd
    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and not self.dtype.is_float:
            raise RuntimeError("only Tensors of floating point dtype can require gradients")
        if not requires_grad and self._record is not None:
            raise RuntimeError("you can only change requires_grad flags of leaf variables. If you want to use "
                               "a computed variable in a subgraph that doesn't require differentiation use "
                               "var_no_grad = var.detach().")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self) -> Tensor:
        if self._value is not None:
            return Tensor._from_value(current_trace().builder.emit("stop_gradient", self._value)) \
                if self._value.dtype.is_float else self
        out = Tensor._from_array(self._data)  # shares memory and the version counter, as PyTorch's detach
        out._versions = self._versions
        return out

    def backward(self, gradient: Any = None, retain_graph: bool | None = None, create_graph: bool = False,
                 inputs: Any = None) -> None:
        from gradc.autograd import backward
        backward([self], None if gradient is None else [gradient], retain_graph, create_graph, inputs)

    def _bump_version(self) -> None:
        self._version += 1

    def __repr__(self) -> str:
        from gradc.printing import tensor_repr
        return tensor_repr(self)


def zero_grads(params: Any, set_to_none: bool = True) -> None:
    """Clear .grad of each tensor: drop it (set_to_none) or zero it in place, as PyTorch's zero_grad."""
    for p in params:
        if p.grad is None:
            continue
        if set_to_none:
            p.grad = None
        else:
            p.grad._data[...] = 0
            p.grad._bump_version()


def as_tensor_like(value: Any, like: Tensor | None = None) -> Tensor:
    """Python numbers and arrays become tensors; numbers take `like`'s dtype (PyTorch's promotion)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float)) and not isinstance(value, np.ndarray):
        if like is not None:
            dtype = like.dtype
            if isinstance(value, float) and not dtype.is_float:
                dtype = float32
            from gradc.promotion import checked_number
            return Tensor._from_array(checked_number(value, dtype))
    return Tensor(value)
