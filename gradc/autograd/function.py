"""torch.autograd.Function: user-written forward and backward, eager and traced.

`Fn.apply(*args)` runs the user's `forward` on gradient-stopped inputs and wraps each output in ONE
`custom_vjp` primitive whose operands are the tensor inputs, the saved tensors and the output itself.
Its VJP rule (`CallRule.vjp`) runs the user's `backward` on traced tensors, so the backward becomes IR in
whatever AD pass reaches it: the eager engine (which evaluates it), `value_and_grad`/`compile_step`
(which compile it natively), or AD of AD (create_graph, hessians). There is no per-class special case:
any caller-supplied VJP can use the same primitive.

With several differentiable outputs, each output is a `custom_vjp` part of the call (`PartRule`): its VJP
notes in the AD pass that this output received a cotangent, so that with `ctx.set_materialize_grads(False)`
the backward gets None, as in PyTorch, for outputs no gradient reached (zeros when materializing).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from gradc.grad_mode import enable_grad, is_grad_enabled, no_grad
from gradc.ir.ops import OPS, unbroadcast
from gradc.tensor import Node, Record, Tensor, Trace, apply, current_trace, next_function, tracing

__all__ = ["Function", "FunctionCtx", "once_differentiable", "Variable"]


class FunctionCtx:
    """The `ctx` of a custom Function: saved tensors and flags for its backward."""

    def __init__(self) -> None:
        self.to_save: tuple = ()
        self.saved_tensors: tuple = ()  # set to traced stand-ins while backward runs
        self.needs_input_grad: tuple = ()
        self.materialize_grads = True
        self.non_differentiable: set[int] = set()
        self.dirty: tuple = ()

    def save_for_backward(self, *tensors: Any) -> None:
        for t in tensors:
            if t is not None and not isinstance(t, Tensor):
                raise TypeError("save_for_backward can only save variables, but argument "
                                f"{tensors.index(t)} is of type {type(t).__name__}")
        self.to_save = tensors
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors: Any) -> None:
        self.save_for_backward(*tensors)

    def mark_non_differentiable(self, *tensors: Tensor) -> None:
        self.non_differentiable.update(id(t) for t in tensors)

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = bool(value)

    def mark_dirty(self, *tensors: Tensor) -> None:
        self.dirty = tensors


class CallRule:
    """The VJP rule of one `apply` call: runs the user's backward once, on traced values.

    With several differentiable outputs the call's value is their concatenation (flattened, in order),
    so one cotangent reaches the rule and the user's backward sees all output gradients at once.
    """

    def __init__(self, cls: type, ctx: FunctionCtx, args: tuple, outputs: list, differentiable: list[int],
                 traced: bool = False) -> None:
        self.cls, self.ctx, self.args, self.traced = cls, ctx, args, traced
        self.n_inputs = sum(isinstance(a, Tensor) for a in args)
        self.n_saved = sum(t is not None for t in ctx.to_save)
        self.outputs = [(o.shape, o.dtype) if isinstance(o, Tensor) else None for o in outputs]
        self.differentiable = differentiable  # output positions that the value holds
        self.operand_types: list = []  # set by apply
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        if self.traced:  # a traced call is AD'd where it stands; only eager adjoints are cached by this text
            return f"{self.cls.__qualname__}Backward#{id(self):x}"
        return f"{self.cls.__qualname__}Backward#{self.fingerprint()}"

    def fingerprint(self) -> str:
        """A hash of the IR this call's backward emits (constants included).

        Graphs are cached by their attributes' text, so two calls share a cached adjoint (and its native
        code) exactly when their backwards emit the same IR: a ctx attribute, a global read by backward
        or a saved shape that changes gives a new key, never a stale adjoint.
        """
        if self._fingerprint is None:
            from gradc.ir.builder import Builder
            from gradc.ir.core import Value
            b = Builder()
            params = [Value(t) for t in self.operand_types]
            g = Value(self.operand_types[-1])
            grads = self.vjp(b, g, None, *params)
            h = hashlib.sha1(f"{self.cls.__module__}.{self.cls.__qualname__}:{id(self.cls)}".encode())
            index = {v: i for i, v in enumerate(params + [g])}
            for op in b.ops:
                index[op.result] = len(index)
                h.update(f"{op.name}{[index[v] for v in op.inputs]}{op.result.type}".encode())
                for k, v in sorted(op.attrs.items()):
                    h.update(k.encode())
                    h.update(v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
            h.update(repr([index.get(v) for v in grads]).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def offsets(self) -> list[tuple[int, int]]:
        spans, at = [], 0
        for i in self.differentiable:
            n = int(np.prod(self.outputs[i][0], dtype=np.int64))
            spans.append((at, at + n))
            at += n
        return spans

    def _output_cotangents(self, b: Any, g: Any) -> list:
        """One cotangent per output: slices of the value's cotangent for the outputs a gradient reached,
        zeros for the others (None for all of them with set_materialize_grads(False), as in PyTorch)."""
        if len(self.differentiable) == 1:
            by_position = {self.differentiable[0]: g}
        else:
            reached = b.ad_notes.get(self)  # noted by the parts' VJPs; None: not inside an AD pass (fingerprint)
            by_position = {i: b.reshape_to(b.emit("slice", g, starts=(lo,), stops=(hi,), steps=(1,)),
                                           self.outputs[i][0])
                           for i, (lo, hi) in zip(self.differentiable, self.offsets())
                           if reached is None or i in reached}
        grads = []
        for i, spec in enumerate(self.outputs):
            if i in by_position:
                grads.append(Tensor._from_value(by_position[i]))
            elif spec is not None and self.ctx.materialize_grads:  # of the output's dtype, ints too (PyTorch)
                grads.append(Tensor._from_value(b.emit("const", value=0, shape=spec[0], dtype=spec[1])))
            else:
                grads.append(None)
        return grads

    def vjp(self, b: Any, g: Any, out: Any, *operands: Any) -> list:
        from gradc.api import TracerError
        trace = Trace()
        trace.builder = b  # the user's backward emits into the AD pass's builder
        ctx = self.ctx
        inputs = operands[:self.n_inputs]
        saved = iter(operands[self.n_inputs:self.n_inputs + self.n_saved])
        with tracing(trace), enable_grad():
            grad_outputs = self._output_cotangents(b, g)
            ctx.saved_tensors = tuple(None if t is None else Tensor._from_value(next(saved)) for t in ctx.to_save)
            try:
                grads = self.cls.backward(ctx, *grad_outputs)
            except TracerError as e:
                raise TracerError(f"{self.cls.__name__}.backward: {e}") from None
            finally:
                ctx.saved_tensors = ctx.to_save
            grads = grads if isinstance(grads, tuple) else (grads,)
            if len(grads) != len(self.args):
                raise RuntimeError(f"function {self.cls.__name__}Backward returned an incorrect number of gradients "
                                   f"(expected {len(self.args)}, got {len(grads)})")
            result = []
            tensors = iter(inputs)
            for j, (arg, gj) in enumerate(zip(self.args, grads)):
                if not isinstance(arg, Tensor):
                    continue
                x = next(tensors)
                result.append(self._gradient(b, trace, j, x, gj))
        return result + [None] * (len(operands) - len(result))

    def _gradient(self, b: Any, trace: Trace, j: int, x: Any, gj: Any) -> Any:
        if gj is None or not x.dtype.is_float:
            return None
        if not isinstance(gj, Tensor):
            gj = Tensor(np.asarray(gj, dtype=x.dtype.numpy))
        v = trace.lift(gj)
        if v.dtype != x.dtype:
            v = b.emit("cast", v, dtype=x.dtype)
        if v.shape != x.shape:
            try:
                shape = np.broadcast_shapes(v.shape, x.shape) if len(v.shape) >= len(x.shape) else None
            except ValueError:
                shape = None
            if shape != v.shape:
                raise RuntimeError(f"Function {self.cls.__name__}Backward returned an invalid gradient at index {j} - "
                                   f"got {list(v.shape)} but expected shape compatible with {list(x.shape)}")
            v = unbroadcast(b, v, x.shape)
        return v


class PartRule:
    """The VJP of output `index` of a multi-output call: notes that a cotangent reached this output and
    passes it on to the call's value (the flattened concatenation of the outputs) zero-padded."""

    def __init__(self, call: CallRule, index: int, span: tuple[int, int]) -> None:
        self.call, self.index, self.span = call, index, span

    def __repr__(self) -> str:
        return f"{self.call!r}.{self.index}"

    def vjp(self, b: Any, g: Any, out: Any, value: Any, part: Any) -> tuple:
        b.ad_notes.setdefault(self.call, set()).add(self.index)
        lo, hi = self.span
        flat = b.reshape_to(g, (hi - lo,))
        return b.emit("pad", flat, lo=(lo,), hi=(value.shape[0] - hi,), interior=(0,)), None


def _part(call: Tensor, rule: PartRule, shape: tuple, traced: bool) -> Tensor:
    """Output `rule.index` of a multi-output call: a custom_vjp over the call and its slice of the value."""
    lo, hi = rule.span
    if traced:
        trace = current_trace()
        b = trace.builder
        value = trace.lift(call)
        piece = b.reshape_to(b.emit("slice", b.emit("stop_gradient", value), starts=(lo,), stops=(hi,), steps=(1,)),
                             shape)
        return Tensor._from_value(b.emit("custom_vjp", value, piece, rule=rule))
    piece = Tensor._from_array(call._data[lo:hi].reshape(shape))
    out = Tensor._from_array(piece._data)
    out.requires_grad = True
    out._record = Record(OPS["custom_vjp"], {"rule": rule}, (call, piece))
    return out


class FunctionMeta(type):
    """Gives each Function subclass PyTorch's node class name (`<Name>Backward`)."""

    def __init__(cls, name: str, bases: tuple, ns: dict) -> None:
        super().__init__(name, bases, ns)
        cls._backward_cls = type(f"{name}Backward", (Node,), {"__slots__": (), "__module__": "gradc.autograd"})


class Function(metaclass=FunctionMeta):
    """Subclass with static `forward(ctx, *args)` (or `forward(*args)` plus `setup_context`) and
    `backward(ctx, *grad_outputs)`; call with `Fn.apply(*args)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("Legacy autograd function with non-static forward method is deprecated. "
                           "Please use new-style autograd function with static forward method. (Example: "
                           "https://pytorch.org/docs/stable/autograd.html#torch.autograd.Function)")

    @staticmethod
    def forward(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Any) -> Any:
        return NotImplemented

    @staticmethod
    def backward(ctx: Any, *grad_outputs: Any) -> Any:
        raise NotImplementedError("You must implement either the backward or vjp method for your custom "
                                  "autograd.Function to use it with backward mode AD.")

    vjp = backward

    @classmethod
    def apply(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            args = args + tuple(kwargs.values())
        ctx = FunctionCtx()
        traced = current_trace() is not None and any(isinstance(a, Tensor) and a.is_traced for a in args)
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.dtype.is_float and (traced or a.requires_grad)
                                     for a in args)
        stopped = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        custom_setup = cls.setup_context is not Function.setup_context
        with (enable_grad() if traced else no_grad()):
            if custom_setup:
                output = cls.forward(*stopped)
                cls.setup_context(ctx, stopped, output)
            else:
                output = cls.forward(ctx, *stopped)
        single = not isinstance(output, tuple)
        outputs = [output] if single else list(output)
        tensors = [a for a in args if isinstance(a, Tensor)]
        records = is_grad_enabled() and any(a.requires_grad for a in tensors) or traced
        differentiable = [i for i, o in enumerate(outputs) if isinstance(o, Tensor) and o.dtype.is_float
                          and id(o) not in ctx.non_differentiable]
        if not records or not differentiable:
            return output
        if len({outputs[i].dtype for i in differentiable}) > 1:
            raise NotImplementedError(f"{cls.__name__}: gradc's custom Functions need their differentiable outputs "
                                      "to share one dtype")
        # a saved input is the caller's tensor (PyTorch saves that one), so double backward flows through it
        originals = {id(s): a for s, a in zip(stopped, args) if isinstance(a, Tensor)}
        saved = [originals.get(id(t), t) for t in ctx.to_save if t is not None]
        rule = CallRule(cls, ctx, args, outputs, differentiable, traced)
        value = _packed([outputs[i] for i in differentiable], traced)
        operands = (*tensors, *saved, value)
        rule.operand_types = [t._type() for t in operands]
        if traced:
            trace = current_trace()
            call = Tensor._from_value(trace.builder.emit("custom_vjp", *(trace.lift(t) for t in operands), rule=rule))
        else:
            call = Tensor._from_array(value._data)
            call.requires_grad = True
            call._record = Record(OPS["custom_vjp"], {"rule": rule}, operands)
        node = None if traced else cls._backward_cls(cls._backward_cls.__name__,
                                                     tuple(next_function(t) for t in tensors))
        results = list(outputs)
        for i, (lo, hi) in zip(differentiable, rule.offsets()):
            out = call
            if len(differentiable) > 1:
                out = _part(call, PartRule(rule, i, (lo, hi)), outputs[i].shape, traced)
            if node is not None:
                out.grad_fn = node
            results[i] = out
        return results[0] if single else tuple(results)


def _packed(values: list[Tensor], traced: bool) -> Tensor:
    """The call's value: its one differentiable output, or all of them flattened and concatenated."""
    if len(values) == 1:
        return values[0]
    if not traced:
        return Tensor._from_array(np.concatenate([v._data.reshape(-1) for v in values]))
    total = sum(v.numel() for v in values)
    at, packed = 0, None
    for v in values:  # concatenation as a sum of zero-padded pieces: existing primitives only
        n = v.numel()
        piece = apply("pad", apply("reshape", v, shape=(n,)), lo=(at,), hi=(total - at - n,), interior=(0,))
        packed = piece if packed is None else apply("add", packed, piece)
        at += n
    return packed


def once_differentiable(fn: Any) -> Any:
    """Accepted for compatibility: gradc's backward is traced, so double backward works anyway."""
    return fn


def Variable(data: Any, requires_grad: bool = False, volatile: bool = False) -> Tensor:  # noqa: N802 (PyTorch's name)
    """The pre-0.4 wrapper: today a tensor is its own Variable, as in PyTorch."""
    if not isinstance(data, Tensor):
        raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
    return data.requires_grad_() if requires_grad else data
