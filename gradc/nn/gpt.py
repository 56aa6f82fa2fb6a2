"""A nanoGPT-style model written once against a torch-like module (gradc or torch).

`make_gpt(torch)` and `make_gpt(gradc)` give the same architecture with the same parameter names: fused
qkv Linear split into heads with view/transpose, causal scaled_dot_product_attention, GELU MLP,
LayerNorm, and the token embedding tied to the output head. The W8 benchmark, the char-GPT example and
the tests share it, so the two engines always run the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True  # biases in the Linears and LayerNorms (nanoGPT's `bias`)


def make_gpt(torch: Any) -> type:
    """The GPT class for `torch` (the torch or gradc module): GPT(config)(idx) -> logits (B, T, vocab)."""
    nn, F = torch.nn, torch.nn.functional

    class CausalSelfAttention(nn.Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            if cfg.n_embd % cfg.n_head:
                raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head})")
            self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
            self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
            self.n_head, self.dropout = cfg.n_head, cfg.dropout

        def forward(self, x: Any) -> Any:
            B, T, C = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.dropout if self.training else 0.0)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class Block(nn.Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
            self.attn = CausalSelfAttention(cfg)
            self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
            self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias), gelu=nn.GELU(),
                                          c_proj=nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)))

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.ln_1(x))
            m = self.mlp
            return x + m["c_proj"](m["gelu"](m["c_fc"](self.ln_2(x))))

    class GPT(nn.Module):
        def __init__(self, cfg: GPTConfig) -> None:
            super().__init__()
            self.config = cfg
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd), wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias)))
            self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
            self.transformer["wte"].weight = self.lm_head.weight  # weight tying
            self.register_buffer("pos", torch.arange(cfg.block_size), persistent=False)
            self.apply(self._init_weights)  # nanoGPT's init: N(0, 0.02) weights, zero biases

        @staticmethod
        def _init_weights(module: Any) -> None:
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        def forward(self, idx: Any) -> Any:
            T = idx.shape[1]
            tr = self.transformer
            x = tr["wte"](idx) + tr["wpe"](self.pos[:T])
            for block in tr["h"]:
                x = block(x)
            return self.lm_head(tr["ln_f"](x))

        @staticmethod
        def loss(logits: Any, targets: Any) -> Any:
            return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))

        def generate(self, idx: Any, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None) -> Any:
            for _ in range(max_new_tokens):
                context = idx if idx.shape[1] <= self.config.block_size else idx[:, -self.config.block_size:]
                logits = self(context)[:, -1, :] / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
            return idx

    return GPT


def adamw_groups(model: Any, weight_decay: float) -> list[dict]:
    """nanoGPT's parameter groups: weight decay on 2-d weights only."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
