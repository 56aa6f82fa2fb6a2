"""torch.autograd.functional: vjp, jvp, jacobian, hessian of Python functions of eager tensors.

They run on the eager engine (so Python control flow in `func` is fine); jvp uses the double-vjp
identity J v = d/du <J^T u, v>, so it needs no forward-mode AD.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gradc.autograd import grad
from gradc.grad_mode import enable_grad
from gradc.tensor import Tensor

__all__ = ["vjp", "jvp", "jacobian", "hessian", "vhp", "hvp"]


def _as_tuple(x: Any) -> tuple[tuple, bool]:
    if isinstance(x, Tensor):
        return (x,), True
    if isinstance(x, (tuple, list)) and all(isinstance(t, Tensor) for t in x):
        return tuple(x), False
    raise TypeError(f"The inputs given to the function must be either a Tensor or a tuple of Tensors but got "
                    f"{type(x).__name__}.")


def _prepare(inputs: tuple) -> tuple:
    return tuple(t.detach().requires_grad_(t.dtype.is_float) if t.dtype.is_float else t.detach() for t in inputs)


def _zeros_like(t: Tensor) -> Tensor:
    return Tensor._from_array(np.zeros(t.shape, dtype=t.dtype.numpy))


def _grads(outputs: tuple, inputs: tuple, cotangents: tuple, create_graph: bool) -> tuple:
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return tuple(_zeros_like(x) for x in inputs)
    got = grad([o for o, _ in pairs], list(inputs), [c for _, c in pairs], retain_graph=True,
               create_graph=create_graph, allow_unused=True)
    return tuple(_zeros_like(x) if g is None else g for g, x in zip(got, inputs))


def _result(values: tuple, single: bool) -> Any:
    return values[0] if single else values


def vjp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(func(inputs), v^T J)."""
    xs, single_in = _as_tuple(inputs)
    with enable_grad():
        xs = _prepare(xs)
        outs, single_out = _as_tuple(func(*xs))
        if v is None:
            if len(outs) != 1 or outs[0].numel() != 1:
                raise RuntimeError("The vector v can only be None if the user-provided function returns a single "
                                   "Tensor with a single element.")
            v = (Tensor._from_array(np.ones(outs[0].shape, outs[0].dtype.numpy)),)
        vs, _ = _as_tuple(v)
        grads = _grads(outs, xs, vs, create_graph)
    detach = (lambda t: t) if create_graph else (lambda t: t.detach())
    return _result(tuple(detach(o) for o in outs), single_out), _result(tuple(detach(g) for g in grads), single_in)


def jvp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(func(inputs), J v) by the double-vjp identity."""
    xs, single_in = _as_tuple(inputs)
    with enable_grad():
        xs = _prepare(xs)
        outs, single_out = _as_tuple(func(*xs))
        if v is None:
            if len(xs) != 1 or xs[0].numel() != 1:
                raise RuntimeError("The vector v can only be None if the input to the user-provided function is a "
                                   "single Tensor with a single element.")
            v = (Tensor._from_array(np.ones(xs[0].shape, xs[0].dtype.numpy)),)
        vs, _ = _as_tuple(v)
        us = tuple(Tensor._from_array(np.zeros(o.shape, o.dtype.numpy)).requires_grad_() for o in outs)
        gs = _grads(outs, xs, us, create_graph=True)
        pairs = [(g, w) for g, w in zip(gs, vs) if g.requires_grad]
        if pairs:
            got = grad([g for g, _ in pairs], list(us), [w for _, w in pairs], retain_graph=True,
                       create_graph=create_graph, allow_unused=True)
        else:
            got = [None] * len(us)
        results = tuple(_zeros_like(o) if j is None else j for j, o in zip(got, outs))
    detach = (lambda t: t) if create_graph else (lambda t: t.detach())
    return _result(tuple(detach(o) for o in outs), single_out), _result(tuple(detach(r) for r in results), single_out)


def jacobian(func: Callable, inputs: Any, create_graph: bool = False, strict: bool = False, vectorize: bool = False,
             strategy: str = "reverse-mode") -> Any:
    """d func / d inputs: shape output.shape + input.shape (nested tuples for tuple inputs/outputs)."""
    xs, single_in = _as_tuple(inputs)
    with enable_grad():
        xs = _prepare(xs)
        outs, single_out = _as_tuple(func(*xs))
        per_output = []
        for o in outs:
            rows: list[list[Tensor]] = [[] for _ in xs]
            for k in range(o.numel()):
                basis = np.zeros(o.numel(), dtype=o.dtype.numpy)
                basis[k] = 1
                grads = _grads((o,), xs, (Tensor._from_array(basis.reshape(o.shape)),), create_graph)
                for i, g in enumerate(grads):
                    rows[i].append(g)
            from gradc import functional as F
            blocks = []
            for x, r in zip(xs, rows):
                if r:
                    stacked = F.reshape(_stack(r), o.shape + x.shape)
                else:
                    stacked = Tensor._from_array(np.zeros(o.shape + x.shape, dtype=x.dtype.numpy))
                blocks.append(stacked if create_graph else stacked.detach())
            per_output.append(_result(tuple(blocks), single_in))
    return _result(tuple(per_output), single_out)


def _stack(rows: list[Tensor]) -> Tensor:
    from gradc import functional as F
    parts = [F.reshape(r, (1,) + r.shape) for r in rows]
    out = parts[0]
    for p in parts[1:]:  # concatenation by padding and adding keeps this on the existing primitives
        out = _concat0(out, p)
    return out


def _concat0(a: Tensor, b: Tensor) -> Tensor:
    from gradc.tensor import apply
    rank = a.ndim
    lo_a, hi_a = (0,) * rank, (b.shape[0],) + (0,) * (rank - 1)
    lo_b, hi_b = (a.shape[0],) + (0,) * (rank - 1), (0,) * rank
    zero = (0,) * rank
    padded_a = apply("pad", a, lo=lo_a, hi=hi_a, interior=zero)
    return apply("add", padded_a, apply("pad", b, lo=lo_b, hi=hi_b, interior=zero))


def hessian(func: Callable, inputs: Any, create_graph: bool = False, strict: bool = False, vectorize: bool = False,
            outer_jacobian_strategy: str = "reverse-mode") -> Any:
    """The Hessian of a scalar function: the jacobian of its gradient."""
    xs, single_in = _as_tuple(inputs)

    def gradient(*args: Tensor) -> Any:
        out = func(*args)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise RuntimeError("The function given to hessian should return a single Tensor with a single element")
        grads = _grads((out,), args, (Tensor._from_array(np.ones(out.shape, out.dtype.numpy)),), create_graph=True)
        return grads[0] if single_in else grads

    return jacobian(gradient, xs[0] if single_in else xs, create_graph=create_graph)


def vhp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(func(inputs), v^T H) of a scalar function, by double backward."""
    xs, single_in = _as_tuple(inputs)
    with enable_grad():
        xs = _prepare(xs)
        out = func(*xs)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise RuntimeError("The function given to vhp should return a single Tensor with a single element")
        vs = _as_tuple(v)[0] if v is not None else tuple(Tensor._from_array(np.ones(x.shape, x.dtype.numpy))
                                                          for x in xs)
        grads = _grads((out,), xs, (Tensor._from_array(np.ones(out.shape, out.dtype.numpy)),), create_graph=True)
        products = _grads(grads, xs, vs, create_graph)
    detach = (lambda t: t) if create_graph else (lambda t: t.detach())
    return detach(out), _result(tuple(detach(p) for p in products), single_in)


def hvp(func: Callable, inputs: Any, v: Any = None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(func(inputs), H v): the Hessian of a twice-differentiable scalar function is symmetric."""
    return vhp(func, inputs, v, create_graph, strict)
