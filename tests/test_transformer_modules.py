"""Attention, transformer layers, containers and a tied-embedding GPT against PyTorch (eager and compiled)."""

from __future__ import annotations

import numpy as np
import pytest

import gradc
import gradc.nn as gnn
from gradc.nn.gpt import GPTConfig, adamw_groups, make_gpt
from tests.transformer_helpers import check, rand

torch = pytest.importorskip("torch")

DTYPES = [np.float32, np.float64]


# ----------------------------------------------------------------------------- scaled_dot_product_attention

def _qkv(dtype, heads_k=3):
    return [rand(2, 3, 4, 8, dtype=dtype), rand(2, heads_k, 6, 8, dtype=dtype, seed=1),
            rand(2, heads_k, 6, 5, dtype=dtype, seed=2)]


def _bool_mask(shape, seed=0):
    mask = np.random.default_rng(seed).random(shape) > 0.4
    mask[..., 1, :] = False  # a fully masked row: PyTorch gives zeros there
    return mask


SDPA = {
    "plain": (lambda T, F, q, k, v: F.scaled_dot_product_attention(q, k, v), []),
    "causal_tq_ne_tk": (lambda T, F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), []),
    "bool_mask": (lambda T, F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                  [_bool_mask((4, 6))]),
    "bool_mask_per_batch": (lambda T, F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.3),
                            [_bool_mask((2, 1, 4, 6), 1)]),
    "float_mask": (lambda T, F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), ["float"]),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SDPA))
def test_sdpa_matches_torch(name, dtype):
    fn, extra = SDPA[name]
    extra = [rand(2, 1, 4, 6, dtype=dtype, seed=5) if isinstance(e, str) else e for e in extra]
    wrt = (0, 1, 2, 3) if name == "float_mask" else (0, 1, 2)
    check(fn, _qkv(dtype) + extra, wrt)


def test_sdpa_grouped_query_attention():
    check(lambda T, F, q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
          _qkv(np.float64, heads_k=1), (0, 1, 2))


def test_sdpa_bad_input():
    q, k, v = (gradc.tensor(a) for a in _qkv(np.float32))
    F = gradc.nn.functional
    with pytest.raises(RuntimeError, match="must match the size of tensor"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=gradc.ones(4, 5) > 0)
    with pytest.raises(RuntimeError, match="Explicit attn_mask should not be set when is_causal=True"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=gradc.ones(4, 6) > 0, is_causal=True)
    k2, v2 = (gradc.tensor(a) for a in _qkv(np.float32, heads_k=2)[1:])
    with pytest.raises(RuntimeError, match="Number of heads in key and value must divide"):
        F.scaled_dot_product_attention(q, k2, v2, enable_gqa=True)
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        gnn.MultiheadAttention(10, 3)
    with pytest.raises(AssertionError, match="embed_dim must be divisible by num_heads"):
        torch.nn.MultiheadAttention(10, 3)


# ----------------------------------------------------------------------------- modules against PyTorch

def _move(g, t):
    g.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})


def _compare(gm, tm, gargs, targs, gcall=None, tcall=None, dtype=np.float32):
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-10)
    out_t, out_g = (tcall or tm)(*targs), (gcall or gm)(*gargs)
    if isinstance(out_t, tuple):
        (out_t, w_t), (out_g, w_g) = out_t, out_g
        assert (w_t is None) == (w_g is None)
        if w_t is not None:
            np.testing.assert_allclose(w_g.detach().numpy(), w_t.detach().numpy(), **tol)
    np.testing.assert_allclose(out_g.detach().numpy(), out_t.detach().numpy(), **tol)
    (out_t * out_t).sum().backward()
    (out_g * out_g).sum().backward()
    grads = dict(gm.named_parameters())
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(grads[name].grad.numpy(), p.grad.numpy(), **tol, err_msg=name)


def _t(a):
    return gradc.tensor(a), torch.tensor(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention(batch_first, dtype):
    torch.manual_seed(0)
    wide = dtype == np.float64
    tm = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=torch.float64 if wide else None)
    gm = gnn.MultiheadAttention(8, 2, batch_first=batch_first, dtype=gradc.float64 if wide else None)
    assert list(tm.state_dict()) == list(gm.state_dict())
    _move(gm, tm)
    x = rand(3, 5, 8, dtype=dtype) if batch_first else rand(5, 3, 8, dtype=dtype)
    (gx, tx) = _t(x)
    padding = np.zeros((3, 5), bool)
    padding[:, -1] = True
    causal = np.triu(np.ones((5, 5), bool), 1)
    (gp, tp), (gc, tc) = _t(padding), _t(causal)
    _compare(gm, tm, (gx,), (tx,), lambda x: gm(x, x, x, key_padding_mask=gp, attn_mask=gc),
             lambda x: tm(x, x, x, key_padding_mask=tp, attn_mask=tc), dtype)
    tm.zero_grad()
    gm.zero_grad()
    _compare(gm, tm, (gx,), (tx,), lambda x: gm(x, x, x, average_attn_weights=False, need_weights=True),
             lambda x: tm(x, x, x, average_attn_weights=False), dtype)


def test_multihead_attention_kdim_vdim_float_mask():
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(8, 2, kdim=5, vdim=6, batch_first=True)
    gm = gnn.MultiheadAttention(8, 2, kdim=5, vdim=6, batch_first=True)
    assert [n for n, _ in tm.named_parameters()] == [n for n, _ in gm.named_parameters()]
    _move(gm, tm)
    q, k, v, mask = (_t(rand(*s, dtype=np.float32, seed=i)) for i, s in
                     enumerate([(2, 3, 8), (2, 4, 5), (2, 4, 6), (4, 3, 4)]))
    _compare(gm, tm, (q[0],), (q[1],), lambda q: gm(q, k[0], v[0], attn_mask=mask[0], need_weights=False),
             lambda q: tm(q, k[1], v[1], attn_mask=mask[1], need_weights=False))
    with pytest.raises(RuntimeError, match="The shape of the 2D attn_mask is"):
        gm(q[0], k[0], v[0], attn_mask=gradc.ones(3, 5))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer(norm_first, activation):
    torch.manual_seed(0)
    kw = dict(dim_feedforward=16, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True)
    tl, gl = torch.nn.TransformerEncoderLayer(8, 2, **kw), gnn.TransformerEncoderLayer(8, 2, **kw)
    assert list(tl.state_dict()) == list(gl.state_dict())
    _move(gl, tl)
    gx, tx = _t(rand(2, 5, 8, dtype=np.float32))
    _compare(gl, tl, (gx,), (tx,))


def test_transformer_encoder_with_causal_mask_and_decoder_layer():
    torch.manual_seed(0)
    te = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), 2,
                                     norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    ge = gnn.TransformerEncoder(gnn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), 2, norm=gnn.LayerNorm(8))
    assert list(te.state_dict()) == list(ge.state_dict())
    _move(ge, te)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5)
    gx, tx = _t(rand(5, 2, 8, dtype=np.float32))
    _compare(ge, te, (gx,), (tx,), lambda x: ge(x, mask=gradc.tensor(mask.numpy()), is_causal=True),
             lambda x: te(x, mask=mask, is_causal=True))
    td = torch.nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
    gd = gnn.TransformerDecoderLayer(8, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
    assert list(td.state_dict()) == list(gd.state_dict())
    _move(gd, td)
    (gx, tx), (gm, tm) = _t(rand(2, 5, 8, dtype=np.float32)), _t(rand(2, 3, 8, dtype=np.float32, seed=1))
    _compare(gd, td, (gx, gm), (tx, tm))


# ----------------------------------------------------------------------------- containers and buffers

def test_containers_and_buffers():
    class Net(gnn.Module):
        def __init__(self):
            super().__init__()
            self.heads = gnn.ModuleDict({"a": gnn.Linear(3, 2), "b": gnn.Linear(3, 2)})
            self.scales = gnn.ParameterList([gradc.ones(2), gnn.Parameter(gradc.zeros(2))])
            self.extra = gnn.ParameterDict({"bias": gnn.Parameter(gradc.ones(2))})
            self.register_buffer("running", gradc.zeros(2))
            self.register_buffer("scratch", gradc.zeros(2), persistent=False)

    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["heads.a.weight", "heads.a.bias", "heads.b.weight", "heads.b.bias", "scales.0", "scales.1",
                     "extra.bias"]
    assert isinstance(net.scales[0], gnn.Parameter) and len(net.scales) == 2 and "bias" in net.extra
    assert [n for n, _ in net.named_buffers()] == ["running", "scratch"]
    assert "scratch" not in net.state_dict() and "running" in net.state_dict()
    assert [n for n, _ in net.named_modules()] == ["", "heads", "heads.a", "heads.b", "scales", "extra"]
    assert list(net.heads.keys()) == ["a", "b"] and net.heads["a"] is list(net.heads.values())[0]
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 2


# ----------------------------------------------------------------------------- a GPT with tied weights

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def _gpts(cfg=CFG):
    torch.manual_seed(0)
    tg, gg = make_gpt(torch)(cfg), make_gpt(gradc)(cfg)
    _move(gg, tg)
    return tg, gg


def test_gpt_weight_tying_and_gradients_eager():
    tg, gg = _gpts()
    assert gg.transformer["wte"].weight is gg.lm_head.weight
    names = [n for n, _ in gg.named_parameters()]
    assert names == [n for n, _ in tg.named_parameters()] and "lm_head.weight" not in names
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    lt = tg.loss(tg(torch.tensor(idx)), torch.tensor(tgt))
    lt.backward()
    lg = gg.loss(gg(gradc.tensor(idx)), gradc.tensor(tgt))
    lg.backward()
    np.testing.assert_allclose(lg.item(), lt.item(), rtol=1e-5)
    grads = dict(gg.named_parameters())
    for name, p in tg.named_parameters():  # wte's gradient sums the embedding's and the head's
        np.testing.assert_allclose(grads[name].grad.numpy(), p.grad.numpy(), rtol=2e-4, atol=2e-5, err_msg=name)
    with gradc.no_grad():
        out = gg.generate(gradc.tensor(idx[:, :2]), 9, top_k=4)  # runs past block_size
    assert out.shape == (3, 11) and out.dtype == gradc.int64


def test_gpt_compile_step_adamw_groups_matches_torch():
    tg, gg = _gpts(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))  # one layer: compile time
    rng = np.random.default_rng(1)
    idx, tgt = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    topt = torch.optim.AdamW(adamw_groups(tg, 0.1), lr=1e-2, betas=(0.9, 0.95))
    step = gradc.compile_step(gg, gg.loss, gradc.optim.AdamW(adamw_groups(gg, 0.1), lr=1e-2, betas=(0.9, 0.95)))
    for _ in range(3):
        topt.zero_grad()
        lt = tg.loss(tg(torch.tensor(idx)), torch.tensor(tgt))
        lt.backward()
        topt.step()
        np.testing.assert_allclose(float(step(idx, tgt)), lt.item(), rtol=1e-4)
    state = gg.state_dict()
    for name, v in tg.state_dict().items():
        v = v.numpy()
        if name.endswith("attn.c_attn.bias"):  # the key bias has a zero true gradient: Adam amplifies noise
            v, state[name] = v[:16], state[name][:16]
        np.testing.assert_allclose(state[name], v, rtol=1e-3, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- the example

def _example():
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).parent.parent / "examples" / "train_char_gpt.py"
    spec = importlib.util.spec_from_file_location("train_char_gpt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_char_gpt_example_quick(capsys):
    assert _example().main(["--quick", "--no-bar", "--steps", "12", "--sample", "20"]) == 0  # 0: the loss fell
    out = capsys.readouterr().out
    assert "sample:" in out and "train loss" in out


def test_char_gpt_example_without_torch(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "torch", None)
    assert _example().main(["--quick", "--engine", "both"]) == 2
    assert 'pip install -e ".[compare]"' in capsys.readouterr().err


# ----------------------------------------------------------------------------- compiled modules

class _SelfAttention(gnn.Module):
    """MHA as a one-input module with its masks as buffers (what compile_step's model(x) needs)."""

    def __init__(self, mha, mask, padding):
        super().__init__()
        self.mha = mha
        self.register_buffer("mask", gradc.tensor(mask))
        self.register_buffer("padding", gradc.tensor(padding))

    def forward(self, x):
        return self.mha(x, x, x, attn_mask=self.mask, key_padding_mask=self.padding)[0]


def _compiled_grads(model, x):
    """Gradients of sum(model(x)^2) from compile_step: one SGD step with lr 1 moves each parameter by -grad."""
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    step = gradc.compile_step(model, lambda out, y: (out * out).sum(), gradc.optim.SGD(model.parameters(), lr=1.0))
    loss = float(step(x, np.zeros(1, np.float32)))
    return loss, {n: before[n] - p.detach().numpy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("which", ["mha", "encoder_norm_first", "encoder_post_norm"])
def test_modules_compiled_match_torch(which):
    torch.manual_seed(0)
    x = rand(2, 5, 8, dtype=np.float64)
    if which == "mha":
        tm = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
        gm = gnn.MultiheadAttention(8, 2, batch_first=True, dtype=gradc.float64)
        _move(gm, tm)
        mask, padding = np.triu(np.ones((5, 5), bool), 1), np.zeros((2, 5), bool)
        padding[1, -2:] = True
        out_t = tm(*(torch.tensor(x),) * 3, attn_mask=torch.tensor(mask), key_padding_mask=torch.tensor(padding))[0]
        model = _SelfAttention(gm, mask, padding)
    else:
        kw = dict(dim_feedforward=16, dropout=0.0, batch_first=True, norm_first=which == "encoder_norm_first",
                  activation="gelu" if which == "encoder_norm_first" else "relu")
        tm = torch.nn.TransformerEncoderLayer(8, 2, dtype=torch.float64, **kw)
        model = gnn.TransformerEncoderLayer(8, 2, dtype=gradc.float64, **kw)
        _move(model, tm)
        out_t = tm(torch.tensor(x))
    (out_t * out_t).sum().backward()
    loss, grads = _compiled_grads(model, x)
    # gradc's exact GELU decomposes erfc to 1.2e-7 relative (its derivative less closely): a float32-grade check
    rtol, atol = (1e-5, 1e-6) if which == "encoder_norm_first" else (1e-9, 1e-10)
    np.testing.assert_allclose(loss, (out_t * out_t).sum().item(), rtol=rtol)
    prefix = "mha." if which == "mha" else ""
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(grads[prefix + name], p.grad.numpy(), rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", [(9, 9), (7, 11), (11, 5)])
def test_sdpa_blocked_causal_path(monkeypatch, lengths, dtype):
    from gradc.nn import attention
    monkeypatch.setattr(attention, "CAUSAL_BLOCK", 4)
    monkeypatch.setattr(attention, "CAUSAL_BLOCKED_MIN", 2)
    L, S = lengths
    args = [rand(2, 3, L, 8, dtype=dtype), rand(2, 3, S, 8, dtype=dtype, seed=1), rand(2, 3, S, 5, dtype=dtype, seed=2)]
    check(lambda T, F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.4), args, (0, 1, 2))
