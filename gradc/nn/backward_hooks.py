"""Module full backward hooks and pre-hooks, with the semantics of torch.utils.hooks.BackwardHook.

One module call with such hooks passes its positional tensor inputs and its outputs through aliases
(grad_fn `BackwardHookFunctionBackward`, as in PyTorch). The input aliases form one hook group, the
output aliases another (gradc.autograd.hooks.HookGroup): the eager engine hands each group all its
gradients at once, so that
  - `pre_hook(module, grad_output)` runs when the outputs' gradients are known (None for an output no
    gradient reached) and may return a replacement grad_output;
  - `hook(module, grad_input, grad_output)` runs when the inputs' gradients are known, once per backward.
    grad_input has one entry per positional argument: the gradient for a tensor (zeros where none
    arrived or it does not require grad), None for anything else. It may return a replacement;
    None entries stop the gradient. If no input requires grad, the hooks run with grad_outputs and all-None
    grad_input, and must not return gradients (PyTorch's warning and error).

Traced code (gradc.grad, value_and_grad, compile_step) has no Python at run time: the aliases are
custom Functions whose traced backward calls the same code while AD runs, so the hooks run once per
trace, on traced tensors, and the gradients they return are compiled in. Every floating point traced
input counts as requiring grad there (a trace does not know which inputs are differentiated): an input
that no gradient reaches (a data batch) sees zeros in grad_input, or, when no input is reached at all,
the hooks run with all-None grad_input once AD is done, as PyTorch's do for inputs that need no grad.
A module whose traced float inputs (or outputs) mix dtypes raises NotImplementedError there.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gradc.autograd.function import Function
from gradc.autograd.hooks import HookGroup, join_group
from gradc.grad_mode import enable_grad, is_grad_enabled
from gradc.tensor import Node, Tensor, Trace, apply, current_trace, next_function, tracing

NO_INPUT_GRAD_WARNING = (
    "Full backward hook is firing when gradients are computed with respect to module outputs since no inputs "
    "require gradients. See https://docs.pytorch.org/docs/main/generated/torch.nn.Module.html"
    "#torch.nn.Module.register_full_backward_hook for more details.")
TENSOR_TYPES = {"float32": "FloatTensor", "float64": "DoubleTensor", "float16": "HalfTensor",
                "bfloat16": "BFloat16Tensor"}


def _type_name(t: Tensor) -> str:
    return "torch." + TENSOR_TYPES.get(t.dtype.name, f"{t.dtype.name}Tensor")


def _checked(g: Any, like: Tensor) -> Tensor | None:
    """A gradient a hook returned in place of `like`'s: same size and type (PyTorch's checks)."""
    if g is None:
        return None
    if not isinstance(g, Tensor):
        raise TypeError(f"expected Variable, but hook returned '{type(g).__name__}'")  # PyTorch's words
    if g.dtype != like.dtype:
        raise RuntimeError(f"hook 'hook' has changed the type of value (was {_type_name(like)} got {_type_name(g)})")
    if g.shape != like.shape:
        raise RuntimeError("hook 'hook' has changed the size of value")
    return g


def _zeros_like(t: Tensor) -> Tensor:
    if t.is_traced:
        return apply("const", value=0, shape=t.shape, dtype=t.dtype)
    return Tensor._from_array(np.zeros(t.shape, t.dtype.numpy))


class BackwardCall:
    """The hooks of one module call and the gradients gathered for them."""

    def __init__(self, module: Any, hooks: list, pre_hooks: list) -> None:
        self.module, self.hooks, self.pre_hooks = module, hooks, pre_hooks
        self.args: tuple = ()
        self.input_index: list[int] | None = None  # positions of tensor args; None: no input requires grad
        self.differentiable: list[int] = []  # those whose gradient flows (aliased)
        self.outputs: tuple = ()
        self.output_index: list[int] = []
        self.grad_outputs: tuple | None = None

    # --- forward
    def setup_inputs(self, args: tuple) -> tuple:
        self.args = args
        if not is_grad_enabled():
            return args
        traced = current_trace() is not None
        tensors = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        flows = [i for i in tensors if _flows(args[i], traced)]
        if not flows:
            return args
        self.input_index, self.differentiable = tensors, flows
        aliases = self._aliases([args[i] for i in flows], traced, _Inputs)
        new = list(args)
        for i, a in zip(flows, aliases):
            new[i] = a
        return tuple(new)

    def setup_outputs(self, result: Any) -> Any:
        if not isinstance(result, (Tensor, tuple)):
            warnings.warn("For backward hooks to be called, module output should be a Tensor or a tuple of Tensors "
                          f"but received {type(result)}", stacklevel=3)
            return result
        outs = result if isinstance(result, tuple) else (result,)
        traced = current_trace() is not None
        flows = [i for i, o in enumerate(outs) if isinstance(o, Tensor) and _flows(o, traced)]
        if not flows or not is_grad_enabled():
            return result
        self.outputs = outs
        self.output_index = flows
        aliases = self._aliases([outs[i] for i in flows], traced, _Outputs)
        new = list(outs)
        for i, a in zip(flows, aliases):
            new[i] = a
        return tuple(new) if isinstance(result, tuple) else new[0]

    def _aliases(self, tensors: list[Tensor], traced: bool, kind: type) -> list[Tensor]:
        if traced:
            if len({t.dtype for t in tensors}) > 1:  # one traced call packs them into one value
                raise NotImplementedError(f"{type(self.module).__name__}: inside gradc.grad / compile_step, full "
                                          "backward hooks need the module's floating point inputs (and outputs) "
                                          "to share one dtype")
            return list(kind.apply(self, *tensors))
        node = Node("BackwardHookFunctionBackward", tuple(next_function(t) for t in tensors))
        group = _Group(self, kind is _Inputs)
        for t in tensors:
            alias = apply("reshape", t, shape=t.shape)  # a node of its own, where the group's gradients are read
            alias.grad_fn = node
            group.members.append(alias)
            join_group(alias, group)
        return group.members

    # --- backward
    def outputs_arrived(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        """The gradients of the aliased outputs: pre-hooks, and the hooks if no input needs a gradient."""
        packed = [None] * len(self.outputs)
        for i, g in zip(self.output_index, grads):
            packed[i] = g
        grad_outputs = tuple(packed)
        for hook in self.pre_hooks:
            new = hook(self.module, grad_outputs)
            if new is None:
                continue
            if len(new) != len(grad_outputs):
                raise RuntimeError("Backward pre hook returned an invalid number of grad_output, got "
                                   f"{len(new)}, but expected {len(grad_outputs)}")
            grad_outputs = tuple(new)
        self.grad_outputs = grad_outputs
        if self.input_index is None:
            self.run_without_inputs()
        return [_checked(grad_outputs[i], self.outputs[i]) for i in self.output_index]

    def run_without_inputs(self) -> None:
        if self.hooks and self.grad_outputs is not None:
            warnings.warn(NO_INPUT_GRAD_WARNING, stacklevel=2)
            grad_inputs = (None,) * len(self.args)
            for hook in self.hooks:
                res = hook(self.module, grad_inputs, self.grad_outputs)
                if res is not None and not (isinstance(res, tuple) and all(g is None for g in res)):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should always "
                                       "return None or None for all gradients.")
        self.grad_outputs = None

    def inputs_arrived(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        """The gradients of the aliased inputs: the full backward hooks may replace them."""
        if self.grad_outputs is None:
            return grads  # it reached the inputs without passing through the outputs (PyTorch skips the hooks)
        packed: list[Any] = [None] * len(self.args)
        for i in self.input_index:
            packed[i] = _zeros_like(self.args[i])  # materialized, as PyTorch's BackwardHookFunction does
        for i, g in zip(self.differentiable, grads):
            if g is not None:
                packed[i] = g
        grad_inputs = tuple(packed)
        for hook in self.hooks:
            new = hook(self.module, grad_inputs, self.grad_outputs)
            if new is None:
                continue
            if len(new) != len(grad_inputs):
                raise RuntimeError("Backward hook returned an invalid number of grad_input, got "
                                   f"{len(new)}, but expected {len(grad_inputs)}")
            grad_inputs = tuple(new)
        self.grad_outputs = None
        return [_checked(grad_inputs[i], self.args[i]) for i in self.differentiable]


def _flows(t: Tensor, traced: bool) -> bool:
    """Whether a gradient can flow through t: requires_grad eagerly, any float traced value in a trace."""
    return (t.dtype.is_float and t.is_traced) if traced else t.requires_grad


class _Group(HookGroup):
    """The eager aliases of one call's inputs or outputs."""

    def __init__(self, call: BackwardCall, inputs: bool) -> None:
        self.call, self.inputs = call, inputs
        self.members = []

    def arrived(self, grads: list[Tensor | None]) -> list[Tensor | None]:
        return self.call.inputs_arrived(grads) if self.inputs else self.call.outputs_arrived(grads)


class _Inputs(Function):
    """Traced input aliases: identity forward; the traced backward runs the call's full backward hooks."""

    @staticmethod
    def forward(ctx: Any, call: BackwardCall, *xs: Tensor) -> tuple:
        ctx.call = call
        return xs

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple:
        return (None, *ctx.call.inputs_arrived(list(grads)))


class _Outputs(Function):
    """Traced output aliases: the traced backward runs the pre-hooks (None for outputs no gradient reached)."""

    @staticmethod
    def forward(ctx: Any, call: BackwardCall, *xs: Tensor) -> tuple:
        ctx.call = call
        ctx.set_materialize_grads(False)
        return xs

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple:
        call = ctx.call
        new = call.outputs_arrived(list(grads))
        if call.input_index is not None:  # if AD never reaches the inputs, the hooks run once it is done
            b = current_trace().builder
            b.after_ad.append(lambda: _unreached_inputs(call, b))
        return (None, *new)


def _unreached_inputs(call: BackwardCall, b: Any) -> None:
    if call.grad_outputs is None:
        return  # the inputs' backward ran
    trace = Trace()
    trace.builder = b
    with tracing(trace), enable_grad():
        call.run_without_inputs()
