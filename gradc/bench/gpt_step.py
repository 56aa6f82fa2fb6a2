"""W8 "gpt-step" and its attention-only row, defined ONCE: model, data, numpy reference, each engine's step.

W8: nanoGPT (gradc.nn.gpt, bias=False) with vocab 65, T = 64, 4 layers, 4 heads, n_embd 128, batch 16,
no dropout, causal SDPA, exact GELU MLP, LayerNorm, tied embeddings; AdamW(lr 3e-4, betas (0.9, 0.95),
weight decay 0.1 on 2-d weights only); one whole step. Weights are nanoGPT's init (N(0, 0.02), LayerNorm
ones), laid out by PyTorch's parameter names, so the same arrays load into gradc, PyTorch and JAX.

* `W8.initial()` -> (idx, targets, state) and `W8.reference()`: a hand-written float64 numpy forward,
  backward and AdamW (the cross-check, as W6's); `STEPS` gives each engine's `TrainStep`;
* the attention row (`attention_*`): B 16, H 4, T 256, D 32, causal, loss = sum(sdpa(q, k, v) * cot),
  gradients wrt q, k, v; `attention_reference` is the numpy float64 forward + backward.

`gradc bench` (as a training workload), benchmarks/test_gpt_step.py and `python -m gradc.bench.gpt_step`
(a side-by-side table with ratios, peak memory at long T) all use these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradc.bench.train_step import TrainStep
from gradc.bench.workloads import Gemm
from gradc.nn.gpt import GPTConfig

CONFIG = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
BATCH = 16
LR, BETAS, EPS, WEIGHT_DECAY = 3e-4, (0.9, 0.95), 1e-8, 0.1
CHECK_STEPS = 3
ATTENTION = dict(B=16, H=4, T=256, D=32)

State = dict[str, np.ndarray]


class GPTState(dict):
    """W8's parameters by name; `steps` tells the bench engines which training step to build for them."""

    @property
    def steps(self) -> dict[str, Callable[..., TrainStep]]:
        return STEPS


def _names(cfg: GPTConfig) -> list[tuple[str, tuple[int, ...]]]:
    C, out = cfg.n_embd, [("transformer.wte.weight", (cfg.vocab_size, cfg.n_embd)),
                          ("transformer.wpe.weight", (cfg.block_size, cfg.n_embd))]
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        out += [(p + "ln_1.weight", (C,)), (p + "attn.c_attn.weight", (3 * C, C)), (p + "attn.c_proj.weight", (C, C)),
                (p + "ln_2.weight", (C,)), (p + "mlp.c_fc.weight", (4 * C, C)), (p + "mlp.c_proj.weight", (C, 4 * C))]
    return out + [("transformer.ln_f.weight", (C,))]


def initial(cfg: GPTConfig = CONFIG, batch: int = BATCH, seed: int = 0) -> tuple[np.ndarray, np.ndarray, GPTState]:
    rng = np.random.default_rng(seed)
    state = GPTState()
    for name, shape in _names(cfg):
        state[name] = np.ones(shape, np.float32) if len(shape) == 1 else \
            (0.02 * rng.standard_normal(shape)).astype(np.float32)
    idx = rng.integers(0, cfg.vocab_size, (batch, cfg.block_size))
    targets = np.roll(idx, -1, axis=1)
    return idx, targets, state


# ----------------------------------------------------------------------------- numpy reference (float64)

_ERF = np.vectorize(math.erf, otypes=[np.float64])  # the standard library's erf (no scipy dependency)


def _erf(x: np.ndarray) -> np.ndarray:
    return _ERF(np.asarray(x, np.float64))


def _ln(x, w):
    xc = x - x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
    xhat = xc * rstd
    return xhat * w, (xhat, rstd, w)


def _ln_back(dy, cache):
    xhat, rstd, w = cache
    dxhat = dy * w
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, (dy * xhat).reshape(-1, w.shape[0]).sum(0)


def attention_forward(q, k, v):
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = q @ np.swapaxes(k, -1, -2) * scale
    T, S = s.shape[-2:]
    s = np.where(np.tril(np.ones((T, S), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p @ v, p


def attention_backward(do, q, k, v, p):
    scale = 1.0 / math.sqrt(q.shape[-1])
    dv = np.swapaxes(p, -1, -2) @ do
    dp = do @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k * scale, np.swapaxes(ds, -1, -2) @ q * scale, dv


def loss_and_grads(idx: np.ndarray, targets: np.ndarray, p: State, cfg: GPTConfig = CONFIG) -> tuple[float, State]:
    """Forward and hand-written backward of W8's GPT (float64)."""
    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    D = C // H
    g: State = {k: np.zeros_like(v) for k, v in p.items()}
    x = p["transformer.wte.weight"][idx] + p["transformer.wpe.weight"][:T]
    caches = []
    for i in range(cfg.n_layer):
        pre = f"transformer.h.{i}."
        h, ln1 = _ln(x, p[pre + "ln_1.weight"])
        qkv = h @ p[pre + "attn.c_attn.weight"].T
        q, k, v = (t.reshape(B, T, H, D).transpose(0, 2, 1, 3) for t in np.split(qkv, 3, axis=-1))
        o, prob = attention_forward(q, k, v)
        o2 = o.transpose(0, 2, 1, 3).reshape(B, T, C)
        x = x + o2 @ p[pre + "attn.c_proj.weight"].T
        h2, ln2 = _ln(x, p[pre + "ln_2.weight"])
        f = h2 @ p[pre + "mlp.c_fc.weight"].T
        phi = 0.5 * (1 + _erf(f / math.sqrt(2)))
        gelu = f * phi
        x = x + gelu @ p[pre + "mlp.c_proj.weight"].T
        caches.append((h, ln1, q, k, v, prob, o2, h2, ln2, f, phi, gelu))
    hf, lnf = _ln(x, p["transformer.ln_f.weight"])
    logits = (hf @ p["transformer.wte.weight"].T).reshape(B * T, -1)
    shifted = logits - logits.max(1, keepdims=True)
    e = np.exp(shifted)
    total = e.sum(1, keepdims=True)
    flat = targets.reshape(-1)
    rows = np.arange(B * T)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, flat]))
    dlogits = e / total
    dlogits[rows, flat] -= 1
    dlogits = (dlogits / (B * T)).reshape(B, T, -1)
    g["transformer.wte.weight"] += dlogits.reshape(B * T, -1).T @ hf.reshape(B * T, C)
    dx, g["transformer.ln_f.weight"] = _ln_back(dlogits @ p["transformer.wte.weight"], lnf)
    for i in reversed(range(cfg.n_layer)):
        pre = f"transformer.h.{i}."
        h, ln1, q, k, v, prob, o2, h2, ln2, f, phi, gelu = caches[i]
        dm = dx
        g[pre + "mlp.c_proj.weight"] = dm.reshape(-1, C).T @ gelu.reshape(-1, 4 * C)
        dgelu = dm @ p[pre + "mlp.c_proj.weight"]
        df = dgelu * (phi + f * np.exp(-0.5 * f * f) / math.sqrt(2 * math.pi))
        g[pre + "mlp.c_fc.weight"] = df.reshape(-1, 4 * C).T @ h2.reshape(-1, C)
        dh2, g[pre + "ln_2.weight"] = _ln_back(df @ p[pre + "mlp.c_fc.weight"], ln2)
        dx = dx + dh2
        g[pre + "attn.c_proj.weight"] = dx.reshape(-1, C).T @ o2.reshape(-1, C)
        do = (dx @ p[pre + "attn.c_proj.weight"]).reshape(B, T, H, D).transpose(0, 2, 1, 3)
        dq, dk, dv = attention_backward(do, q, k, v, prob)
        dqkv = np.concatenate([t.transpose(0, 2, 1, 3).reshape(B, T, C) for t in (dq, dk, dv)], axis=-1)
        g[pre + "attn.c_attn.weight"] = dqkv.reshape(-1, 3 * C).T @ h.reshape(-1, C)
        dh, g[pre + "ln_1.weight"] = _ln_back(dqkv @ p[pre + "attn.c_attn.weight"], ln1)
        dx = dx + dh
    np.add.at(g["transformer.wte.weight"], idx, dx)
    g["transformer.wpe.weight"][:T] += dx.sum(0)
    return loss, g


def reference(idx: np.ndarray, targets: np.ndarray, state: State, steps: int = CHECK_STEPS,
              cfg: GPTConfig = CONFIG) -> tuple[list, State]:
    """Losses of `steps` AdamW steps (torch.optim.AdamW's formulas) and the final parameters, in float64."""
    from gradc.bench.train_step import adam_reference
    return adam_reference(lambda p: loss_and_grads(idx, targets, p, cfg), state, steps, LR, BETAS, EPS,
                          matrix_weight_decay=WEIGHT_DECAY)


def _gemms(cfg: GPTConfig = CONFIG, batch: int = BATCH) -> tuple[Gemm, ...]:
    """Each Linear's forward and two backward GEMMs, the head's, and the attention's batched ones."""
    N, C, V = batch * cfg.block_size, cfg.n_embd, cfg.vocab_size
    linears = [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)] * cfg.n_layer + [(C, V)]
    out = []
    for k, n in linears:
        out += [Gemm(N, k, n, "nt"), Gemm(n, N, k, "tn"), Gemm(N, n, k, "nn")]
    T, D, BH = cfg.block_size, C // cfg.n_head, batch * cfg.n_head
    for _ in range(cfg.n_layer):  # q k^T, p v forward; dp, dv, dq, dk backward
        out += [Gemm(T, D, T, "nt", BH), Gemm(T, T, D, "nn", BH), Gemm(T, D, T, "nt", BH), Gemm(T, T, D, "tn", BH),
                Gemm(T, T, D, "nn", BH), Gemm(T, T, D, "tn", BH)]
    return tuple(out)


@dataclass(frozen=True)
class GPTWorkload:
    """W8 as a training-step workload for `gradc bench` (the interface of train_step.TrainWorkload)."""
    id: str = "W8"
    name: str = "gpt-step"
    stresses: str = "attention, fusion, many mid-size GEMMs"
    steps: int = CHECK_STEPS
    kind = "train"

    @property
    def step_engines(self) -> tuple[str, ...]:
        """The engines with a W8 training step."""
        return tuple(STEPS)

    @property
    def gemms(self) -> tuple[Gemm, ...]:
        return _gemms()

    def initial(self) -> tuple[np.ndarray, np.ndarray, GPTState]:
        return initial()

    def reference(self) -> tuple[list[float], State]:
        return reference(*initial(), self.steps)

    def check(self, losses: list[float], parameters: State, reference: tuple[list[float], State],
              rtol: float = 1e-3) -> tuple[bool, float, str]:
        """Losses and each parameter's movement from the initial weights (runner.check_movement): AdamW moves
        a weight whose gradient is float32 noise by a noise-driven fraction of lr, so elementwise checks of
        the parameters failed for JAX now and then (7e-3 on one element of a c_fc weight)."""
        from gradc.bench.runner import check_movement

        return check_movement(losses, parameters, reference, initial()[2], rtol)

    def make(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        idx, targets, state = initial()
        return [idx, targets], list(state.values())

    def min_bytes(self) -> int:
        data, params = self.make()
        return sum(a.nbytes for a in data) + 6 * sum(p.nbytes for p in params) + 4

    def ctypes_pointers(self) -> int:
        return 2 + 1 + 4 * len(_names(CONFIG)) + 1 + 4 * len(_names(CONFIG))

    def build(self, engine: Any, idx: np.ndarray, targets: np.ndarray, state: State) -> TrainStep:
        """The engine's step (`gradc bench` calls this for every training workload; GPTState names STEPS)."""
        return engine.train_step(idx, targets, state)


W8 = GPTWorkload()


# ----------------------------------------------------------------------------- engines

def _groups(model: Any) -> list[dict]:
    from gradc.nn.gpt import adamw_groups
    return adamw_groups(model, WEIGHT_DECAY)


def gradc_step(idx: np.ndarray, targets: np.ndarray, state: State, cfg: GPTConfig = CONFIG) -> TrainStep:
    """gradc.compile_step: the whole step (forward, adjoint, AdamW) as one native call."""
    import gradc
    from gradc.nn.gpt import make_gpt
    model = make_gpt(gradc)(cfg)
    model.load_state_dict(dict(state), strict=False)
    opt = gradc.optim.AdamW(_groups(model), lr=LR, betas=BETAS, eps=EPS)
    step = gradc.compile_step(model, model.loss, opt)
    return TrainStep(lambda: step(idx, targets), lambda: {k: v._data for k, v in model.named_parameters()})


def eager_step(lib_name: str, idx: np.ndarray, targets: np.ndarray, state: State,
               cfg: GPTConfig = CONFIG) -> TrainStep:
    """The plain eager loop (eager_loop.plain_step) with the model's loss and AdamW on `lib_name`."""
    from gradc.bench.eager_loop import library, load_state, plain_step, tensors
    from gradc.nn.gpt import make_gpt

    lib = library(lib_name)
    model = make_gpt(lib)(cfg)
    load_state(lib, model, state, strict=False)
    opt = lib.optim.AdamW(_groups(model), lr=LR, betas=BETAS, eps=EPS)
    ti, tt = tensors(lib, idx, targets)
    step = plain_step(model, model.loss, opt, [ti], tt)
    return TrainStep(step, lambda: {k: v.detach().numpy() for k, v in model.named_parameters()})


def torch_step(idx: np.ndarray, targets: np.ndarray, state: State, cfg: GPTConfig = CONFIG,
               compiled: bool = False) -> TrainStep:
    """PyTorch eager (the plain loop) or torch.compile of the model's loss: zero_grad, backward, AdamW step."""
    if not compiled:
        return eager_step("torch", idx, targets, state, cfg)
    import torch

    from gradc.nn.gpt import make_gpt
    model = make_gpt(torch)(cfg)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    opt = torch.optim.AdamW(_groups(model), lr=LR, betas=BETAS, eps=EPS)
    ti, tt = torch.from_numpy(idx), torch.from_numpy(targets)
    forward = torch.compile(lambda i, t: model.loss(model(i), t))

    def step() -> Any:
        opt.zero_grad()
        loss = forward(ti, tt)
        loss.backward()
        opt.step()
        return loss.detach()
    return TrainStep(step, lambda: {k: v.detach().numpy() for k, v in model.named_parameters()})


def gradc_eager_step(idx: np.ndarray, targets: np.ndarray, state: State, cfg: GPTConfig = CONFIG) -> TrainStep:
    """gradc eager: the identical plain loop on gradc (no compile_step)."""
    return eager_step("gradc", idx, targets, state, cfg)


def jax_step(idx: np.ndarray, targets: np.ndarray, state: State, cfg: GPTConfig = CONFIG) -> TrainStep:
    """jax.jit of the whole AdamW step (jax.numpy GPT, exact GELU, causal softmax), parameters donated."""
    import jax
    import jax.numpy as jnp
    B, T = idx.shape
    C, H = cfg.n_embd, cfg.n_head
    D = C // H
    b1, b2 = BETAS

    def ln(x, w):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5) * w

    def loss_fn(p, i, t):
        x = p["transformer.wte.weight"][i] + p["transformer.wpe.weight"][:T]
        mask = jnp.tril(jnp.ones((T, T), bool))
        for layer in range(cfg.n_layer):
            pre = f"transformer.h.{layer}."
            qkv = ln(x, p[pre + "ln_1.weight"]) @ p[pre + "attn.c_attn.weight"].T
            q, k, v = (a.reshape(B, T, H, D).transpose(0, 2, 1, 3) for a in jnp.split(qkv, 3, axis=-1))
            s = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(D), -jnp.inf)
            o = (jax.nn.softmax(s, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
            x = x + o @ p[pre + "attn.c_proj.weight"].T
            f = ln(x, p[pre + "ln_2.weight"]) @ p[pre + "mlp.c_fc.weight"].T
            x = x + jax.nn.gelu(f, approximate=False) @ p[pre + "mlp.c_proj.weight"].T
        logits = ln(x, p["transformer.ln_f.weight"]) @ p["transformer.wte.weight"].T
        logp = jax.nn.log_softmax(logits.reshape(B * T, -1), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, t.reshape(-1, 1), axis=1))

    def step(p, m, v, count, i, t):
        value, grads = jax.value_and_grad(loss_fn)(p, i, t)
        count = count + 1
        new_p, new_m, new_v = {}, {}, {}
        for k in p:
            w = p[k] * (1 - LR * WEIGHT_DECAY) if p[k].ndim >= 2 else p[k]
            new_m[k] = b1 * m[k] + (1 - b1) * grads[k]
            new_v[k] = b2 * v[k] + (1 - b2) * grads[k] * grads[k]
            denom = jnp.sqrt(new_v[k]) / jnp.sqrt(1 - b2 ** count) + EPS
            new_p[k] = w - (LR / (1 - b1 ** count)) * new_m[k] / denom
        return new_p, new_m, new_v, count, value

    jitted = jax.jit(step, donate_argnums=(0, 1, 2, 3))
    current = [{k: jnp.asarray(a) for k, a in state.items()}, {k: jnp.zeros_like(a) for k, a in state.items()},
               {k: jnp.zeros_like(a) for k, a in state.items()}, jnp.asarray(0.0, jnp.float32)]
    ji, jt = jnp.asarray(idx.astype(np.int32)), jnp.asarray(targets.astype(np.int32))

    def run() -> Any:
        *new, value = jitted(*current, ji, jt)
        current[:] = new
        return value.block_until_ready()
    return TrainStep(run, lambda: {k: np.asarray(a) for k, a in current[0].items()})


STEPS: dict[str, Callable[..., TrainStep]] = {"gradc-native": gradc_step, "gradc-eager": gradc_eager_step,
                                              "torch": torch_step,
                                              "torch-compile": lambda *a: torch_step(*a, compiled=True),
                                              "jax": jax_step}


# ----------------------------------------------------------------------------- the attention row

def attention_arrays(T: int = ATTENTION["T"], seed: int = 0) -> list[np.ndarray]:
    """q, k, v and the cotangent, float32, (B, H, T, D)."""
    rng = np.random.default_rng(seed)
    shape = (ATTENTION["B"], ATTENTION["H"], T, ATTENTION["D"])
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]


def attention_reference(q, k, v, cot) -> tuple[float, list[np.ndarray]]:
    q, k, v, cot = (a.astype(np.float64) for a in (q, k, v, cot))
    o, p = attention_forward(q, k, v)
    return np.asarray((o * cot).sum()), list(attention_backward(cot, q, k, v, p))


def attention_gradc(q, k, v, cot) -> Callable[[], Any]:
    import gradc
    import gradc.nn.functional as F
    c = gradc.tensor(cot)
    fn = gradc.value_and_grad(lambda q, k, v: (F.scaled_dot_product_attention(q, k, v, is_causal=True) * c).sum(),
                              argnums=(0, 1, 2))
    return lambda: fn(q, k, v)


def attention_torch(q, k, v, cot, compiled: bool = False) -> Callable[[], Any]:
    import torch
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    tc = torch.from_numpy(cot)

    def loss(q, k, v):
        return (torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True) * tc).sum()
    forward = torch.compile(loss) if compiled else loss

    def run():
        value = forward(tq, tk, tv)
        grads = torch.autograd.grad(value, (tq, tk, tv))
        return value.detach().numpy(), [g.numpy() for g in grads]
    return run


def attention_jax(q, k, v, cot) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp
    jc = jnp.asarray(cot)

    def loss(q, k, v):
        out = jax.nn.dot_product_attention(q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3),
                                           v.transpose(0, 2, 1, 3), is_causal=True)
        return (out.transpose(0, 2, 1, 3) * jc).sum()
    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    args = [jnp.asarray(a) for a in (q, k, v)]

    def run():
        value, grads = fn(*args)
        return np.asarray(value.block_until_ready()), [np.asarray(g) for g in grads]
    return run


ATTENTION_ENGINES: dict[str, Callable[..., Callable[[], Any]]] = {
    "gradc-native": attention_gradc, "torch": attention_torch,
    "torch-compile": lambda *a: attention_torch(*a, compiled=True), "jax": attention_jax}
