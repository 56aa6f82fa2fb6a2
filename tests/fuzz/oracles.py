"""Independent ways to evaluate a generated graph and its gradients, and the comparison they share.

- `eager`: replays every op through gradc's eager `apply` and takes gradients with `autograd.grad`
  (the eager recording, GraphCapture and forward plan; natively compiled adjoint when asked).
- `torch_replay`: the same graph written with PyTorch ops, gradients by torch.autograd (an oracle that
  shares no code, eval rules or VJP rules with gradc).
- `directional_fd`: float64 central differences of sum_i <result_i, cotangent_i> along random directions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from gradc.ir.core import Function, Value
from gradc.ir.interp import run

RTOL32, RTOL64 = 2e-3, 1e-9


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float | None = None) -> None:
    """Same shape; exact for bool/int; floats within rtol of each value plus rtol of the array's largest
    magnitude (at least 0.1): errors of a few ulp carried through sums and cancellations; NaN where NaN."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind != "f":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    rtol = (RTOL32 if want.dtype == np.float32 else RTOL64) if rtol is None else rtol
    # floor 0.1: an exact 0 (x/x, cancelled gradient terms) is a few ulp of the summed terms elsewhere
    scale = max(float(np.max(np.abs(want[np.isfinite(want)]), initial=0.0)), 0.1)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=rtol * scale,
                               err_msg=what)


# ----------------------------------------------------------------------------------------- eager

def eager(fn: Function, args: Sequence[np.ndarray], wrt: Sequence[int], cts: Sequence[np.ndarray]):
    """(results, grads) through gradc eager tensors; grads are zeros where a param is unused."""
    import gradc
    from gradc.tensor import Tensor, apply

    leaves = [Tensor(np.array(a), requires_grad=(i in wrt)) for i, a in enumerate(args)]
    env: dict[Value, Tensor] = dict(zip(fn.params, leaves))
    for op in fn.ops:
        env[op.result] = apply(op.opdef.name, *(env[v] for v in op.inputs), **op.attrs)
    outs = [env[r] for r in fn.results]
    results = [o.detach().numpy() for o in outs]
    diff = [(o, c) for o, c in zip(outs, cts) if o.requires_grad]
    targets = [leaves[i] for i in wrt]
    grads = [np.zeros_like(args[i]) for i in wrt]
    if diff and targets:
        got = gradc.autograd.grad([o for o, _ in diff], targets, [Tensor(c) for _, c in diff], allow_unused=True)
        grads = [g.detach().numpy() if g is not None else z for g, z in zip(got, grads)]
    return results, grads


# ----------------------------------------------------------------------------------------- torch

def _torch_dtype(torch, dtype):
    return getattr(torch, dtype.name)  # gradc's dtype names are PyTorch's


def torch_replay(fn: Function, args: Sequence[np.ndarray], wrt: Sequence[int], cts: Sequence[np.ndarray],
                 second: Sequence[np.ndarray] | None = None):
    """(results, grads) of the graph written with PyTorch ops; with `second` (one array per gradient), also
    the gradient of sum_i <grad_i, second_i> (double backward): (results, grads, second-order grads)."""
    import torch

    leaves = [torch.tensor(np.array(a), requires_grad=(i in wrt)) for i, a in enumerate(args)]
    env = dict(zip(fn.params, leaves))
    for op in fn.ops:
        env[op.result] = torch_op(torch, op.opdef.name, [env[v] for v in op.inputs], op.attrs, op.result)
    outs = [env[r] for r in fn.results]
    results = [o.detach().numpy() for o in outs]
    diff = [(o, torch.tensor(c)) for o, c in zip(outs, cts) if o.requires_grad]
    targets = [leaves[i] for i in wrt]
    grads = [np.zeros_like(args[i]) for i in wrt]
    got = [None] * len(targets)
    if diff and targets:
        got = torch.autograd.grad([o for o, _ in diff], targets, [c for _, c in diff], allow_unused=True,
                                  create_graph=second is not None)
        grads = [g.numpy(force=True) if g is not None else z for g, z in zip(got, grads)]
    if second is None:
        return results, grads
    hv = [np.zeros_like(args[i]) for i in wrt]
    pairs = [(g, torch.tensor(v)) for g, v in zip(got, second) if g is not None and g.requires_grad]
    if pairs:
        got2 = torch.autograd.grad([g for g, _ in pairs], targets, [v for _, v in pairs], allow_unused=True)
        hv = [h.numpy(force=True) if h is not None else z for h, z in zip(got2, hv)]  # force: ZeroTensors
    return results, grads, hv


def torch_op(torch, name: str, xs: list, attrs: dict, result: Value):
    """One IR op as PyTorch computes it."""
    simple = {"neg": torch.neg, "exp": torch.exp, "log": torch.log, "tanh": torch.tanh, "sqrt": torch.sqrt,
              "recip": torch.reciprocal, "sigmoid": torch.sigmoid, "relu": torch.relu, "abs": torch.abs,
              "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
              "maximum": torch.maximum, "matmul": torch.matmul, "where": torch.where, "sin": torch.sin,
              "cos": torch.cos, "erfc": torch.erfc}
    if name in simple:
        return simple[name](*xs)
    if name == "scan":
        return _torch_scan(torch, xs, **attrs)
    if name == "attention":
        return _torch_attention(torch, *xs, **attrs)
    if name == "attention_grad":
        return _torch_attention_grad(torch, *xs, **attrs)
    x = xs[0] if xs else None
    if name == "stop_gradient":
        return x.detach()
    if name == "custom_vjp":
        return attrs["rule"].torch(torch, *xs)
    if name == "compare":
        return getattr(torch, attrs["pred"])(*xs)
    if name == "cast":
        return x.to(_torch_dtype(torch, attrs["dtype"]))
    if name in ("reduce_sum", "reduce_max"):
        if not attrs["axes"]:  # torch reduces everything for dim=()
            return x.clone()
        f = torch.sum if name == "reduce_sum" else torch.amax
        return f(x, dim=tuple(attrs["axes"]))
    if name == "reshape":
        return x.reshape(attrs["shape"])
    if name == "permute":
        return x.permute(tuple(attrs["perm"]))
    if name == "broadcast_to":
        return x.broadcast_to(attrs["shape"])
    if name == "slice":
        return x[tuple(slice(a, z, s) for a, z, s in zip(attrs["starts"], attrs["stops"], attrs["steps"]))]
    if name == "pad":
        out = torch.zeros(result.shape, dtype=x.dtype)
        index = tuple(slice(a, a + (d - 1) * (i + 1) + 1 if d else a, i + 1)
                      for a, d, i in zip(attrs["lo"], x.shape, attrs["interior"]))
        out[index] = x
        return out
    if name == "window":  # torch's unfold: windows of `span` every `stride`, then every dilation-th tap
        span = (attrs["size"] - 1) * attrs["dilation"] + 1
        return x.unfold(attrs["axis"], span, attrs["stride"])[..., ::attrs["dilation"]]
    if name == "unwindow":  # torch's fold along one axis: each tap added back at o*stride + k*dilation
        out = torch.zeros(result.shape, dtype=x.dtype)
        a, d, st = attrs["axis"], attrs["dilation"], attrs["stride"]
        for k in range(attrs["size"]):
            index = (slice(None),) * a + (slice(k * d, k * d + (x.shape[a] - 1) * st + 1, st),)
            placed = torch.zeros(result.shape, dtype=x.dtype)
            placed[index] = x[..., k]
            out = out + placed
        return out
    if name == "gather":
        axis = attrs["axis"]
        return torch.gather(x, axis, xs[1].unsqueeze(axis)).squeeze(axis)
    if name == "iota":
        shape, axis = attrs["shape"], attrs["axis"]
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return torch.arange(shape[axis], dtype=torch.int64).reshape(view).broadcast_to(shape)
    if name == "const":
        return torch.tensor(np.asarray(attrs["value"], dtype=attrs["dtype"].numpy)).broadcast_to(attrs["shape"])
    raise NotImplementedError(f"no PyTorch replay for op {name!r}: add it to tests/fuzz/oracles.py")


def _torch_scores(torch, q, k, scale: float, causal: bool):
    s = q @ k.transpose(1, 2) * scale
    if causal:  # top-left aligned, as SDPA's is_causal
        s = s.masked_fill(~torch.ones(s.shape[1:], dtype=torch.bool).tril(), float("-inf"))
    return s


def _torch_attention(torch, q, k, v, scale: float, causal: bool):
    """[out | lse] flat: out from PyTorch's SDPA, lse as torch.logsumexp of the masked scores."""
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    lse = torch.logsumexp(_torch_scores(torch, q, k, scale, causal), dim=-1)
    return torch.cat([out.reshape(-1), lse.reshape(-1)])


def _torch_attention_grad(torch, q, k, v, res, g, scale: float, causal: bool):
    """[dq | dk | dv] flat from the packed (out, lse) and cotangent (d out, d lse), in PyTorch ops."""
    n, tq, _ = q.shape
    dv_ = v.shape[2]
    out, lse = res[:n * tq * dv_].reshape(n, tq, dv_), res[n * tq * dv_:].reshape(n, tq)
    do, dlse = g[:n * tq * dv_].reshape(n, tq, dv_), g[n * tq * dv_:].reshape(n, tq)
    s = q @ k.transpose(1, 2) * scale
    p = torch.exp(s - lse[..., None])
    if causal:  # masked keys are exactly 0 (gradc's rule), also in a row whose lse is NaN
        vis = torch.ones(s.shape[1:], dtype=torch.bool).tril()
        p = torch.where(vis, torch.exp(torch.where(vis, s, 0.0) - lse[..., None]), 0.0)
    delta = (do * out).sum(-1) - dlse
    ds = p * (do @ v.transpose(1, 2) - delta[..., None]) * scale
    return torch.cat([(ds @ k).reshape(-1), (ds.transpose(1, 2) @ q).reshape(-1), (p.transpose(1, 2) @ do).reshape(-1)])


def _torch_scan(torch, xs: list, body: Function, num_consts: int, num_carry: int, length: int, reverse: bool):
    """A scan as a PyTorch loop over the body's ops; the flat result (final carry, stacked ys) by torch.cat."""
    consts, carry, seqs = xs[:num_consts], xs[num_consts:num_consts + num_carry], xs[num_consts + num_carry:]
    ys: list = [[None] * length for _ in body.results[num_carry:]]
    for t in (reversed(range(length)) if reverse else range(length)):
        env = dict(zip(body.params, consts + carry + [x[t] for x in seqs]))
        for op in body.ops:
            env[op.result] = torch_op(torch, op.opdef.name, [env[v] for v in op.inputs], op.attrs, op.result)
        out = [env[r] for r in body.results]
        carry = out[:num_carry]
        for col, y in zip(ys, out[num_carry:]):
            col[t] = y
    stacked = [torch.stack(col) if col else torch.zeros((0,) + r.shape, dtype=_torch_dtype(torch, r.dtype))
               for col, r in zip(ys, body.results[num_carry:])]
    parts = [p.reshape(-1) for p in list(carry) + stacked]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


# ----------------------------------------------------------------------------------------- finite differences

def loss(fn: Function, args: Sequence[np.ndarray], cts: Sequence[np.ndarray]) -> float:
    outs = run(fn, *args)
    return sum(float(np.vdot(o.astype(np.float64), c.astype(np.float64)))
               for o, c in zip(outs, cts) if o.dtype.kind == "f")


def directional_fd(fn: Function, args: Sequence[np.ndarray], wrt: Sequence[int], cts: Sequence[np.ndarray],
                   grads: Sequence[np.ndarray], rng: np.random.Generator, directions: int = 2,
                   eps: float = 1e-6) -> None:
    """<grad, v> against (L(x + eps v) - L(x - eps v)) / 2 eps for random unit directions v (float64 graphs)."""
    for _ in range(directions):
        vs = {i: rng.normal(size=args[i].shape) for i in wrt}
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in vs.values())) or 1.0
        vs = {i: v / norm for i, v in vs.items()}
        shifted = []
        for sign in (1, -1):
            a = [np.array(x, copy=True) for x in args]
            for i, v in vs.items():
                a[i] = a[i] + sign * eps * v
            shifted.append(loss(fn, a, cts))
        fd = (shifted[0] - shifted[1]) / (2 * eps)
        ad = sum(float(np.vdot(g, vs[i])) for i, g in zip(wrt, grads))
        scale = max(1.0, sum(float(np.linalg.norm(g)) for g in grads))
        assert abs(fd - ad) <= 1e-5 * scale, f"directional derivative: finite differences {fd} vs AD {ad}"
