"""Compare a function of tensors between PyTorch and gradc: values and gradients, eager and compiled."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

import gradc
import gradc.nn.functional as GF

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-9, atol=1e-10)}


def torch_side(fn: Callable, args: Sequence[np.ndarray], wrt: Sequence[int], cot: np.ndarray | None):
    import torch
    import torch.nn.functional as TF
    ts = [torch.tensor(a, requires_grad=i in wrt) for i, a in enumerate(args)]
    out = fn(torch, TF, *ts)
    if not wrt:
        return out.detach().numpy(), []
    cot_t = torch.tensor(cot)
    (out * cot_t).sum().backward()
    return out.detach().numpy(), [ts[i].grad.numpy() for i in wrt]


def eager_side(fn: Callable, args: Sequence[np.ndarray], wrt: Sequence[int], cot: np.ndarray | None):
    ts = [gradc.tensor(a, requires_grad=i in wrt) if a.dtype.kind == "f" else gradc.tensor(a)
          for i, a in enumerate(args)]
    out = fn(gradc, GF, *ts)
    if not wrt:
        return out.numpy(), []
    (out * gradc.tensor(cot)).sum().backward()
    return out.detach().numpy(), [ts[i].grad.numpy() for i in wrt]


def compiled_side(fn: Callable, args: Sequence[np.ndarray], wrt: Sequence[int], cot: np.ndarray):
    def loss(*ts):
        return (fn(gradc, GF, *ts) * gradc.tensor(cot)).sum()
    value, grads = gradc.value_and_grad(loss, argnums=tuple(wrt))(*args)
    forward = gradc.compile(lambda *ts: fn(gradc, GF, *ts))(*args)
    return np.asarray(forward), [np.asarray(g) for g in grads], float(value)


def check(fn: Callable, args: Sequence[np.ndarray], wrt: Sequence[int] = (0,), compiled: bool = True,
          seed: int = 0) -> None:
    """fn(lib, functional, *tensors) run by PyTorch, gradc eager and (if compiled) gradc native."""
    floats = [a for a in args if a.dtype.kind == "f"]
    dtype = floats[0].dtype.type if floats else np.float32
    tol = TOL[dtype]
    ref_out, _ = torch_side(fn, args, (), None)
    cot = np.random.default_rng(seed).standard_normal(np.shape(ref_out)).astype(ref_out.dtype) \
        if ref_out.dtype.kind == "f" else None
    ref_out, ref_grads = torch_side(fn, args, wrt, cot)
    out, grads = eager_side(fn, args, wrt, cot)
    np.testing.assert_allclose(out, ref_out, **tol, err_msg="eager value")
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        np.testing.assert_allclose(g, r, **tol, err_msg=f"eager grad {i}")
    if compiled and wrt:
        out, grads, value = compiled_side(fn, args, wrt, cot)
        np.testing.assert_allclose(out, ref_out, **tol, err_msg="compiled value")
        np.testing.assert_allclose(value, float((ref_out * cot).sum()), rtol=tol["rtol"] * 10, atol=1e-4)
        for i, (g, r) in enumerate(zip(grads, ref_grads)):
            np.testing.assert_allclose(g, r, **tol, err_msg=f"compiled grad {i}")


def rand(*shape: int, dtype: Any = np.float64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(dtype)
