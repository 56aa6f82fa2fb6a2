"""Train a character-level GPT on the source of a Python standard-library module, then sample from it.

    python examples/train_char_gpt.py                   # gradc.compile_step: forward, backward, AdamW natively
    python examples/train_char_gpt.py --quick           # a tiny model and a few steps (a smoke test)
    python examples/train_char_gpt.py --engine both --plot gpt.png   # PyTorch eager beside it, same weights

The model is nanoGPT's (gradc.nn.gpt: fused qkv Linear, causal scaled_dot_product_attention, GELU MLP,
LayerNorm, tied token embedding and head), trained with AdamW (weight decay on 2-d weights only) on
batches drawn with one seed, so both engines see the same data. `--engine torch|both` and `--plot` need
PyTorch / matplotlib: pip install -e ".[compare]" (and matplotlib).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time

import numpy as np

import gradc
from gradc.nn.gpt import GPTConfig, adamw_groups, make_gpt


def load_text(module: str) -> str:
    return inspect.getsource(importlib.import_module(module))


class Corpus:
    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.data = np.array([self.index[c] for c in text], dtype=np.int64)
        split = int(0.9 * len(self.data))
        self.train, self.val = self.data[:split], self.data[split:]

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def batches(self, split: str, batch: int, block: int, seed: int):
        data = self.train if split == "train" else self.val
        rng = np.random.default_rng(seed)
        while True:
            start = rng.integers(0, len(data) - block - 1, batch)
            x = np.stack([data[s:s + block] for s in start])
            y = np.stack([data[s + 1:s + block + 1] for s in start])
            yield x, y


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    z -= z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(z)), targets.reshape(-1)].mean())


def bar(i: int, total: int, loss: float, rate: float, width: int = 30) -> str:
    done = int(width * i / total)
    return f"\r  [{'#' * done}{'.' * (width - done)}] {i:5d}/{total}  loss {loss:.4f}  {rate:6.1f} steps/s"


class GradcEngine:
    name = "gradc"

    def __init__(self, cfg: GPTConfig, state: dict, lr: float, wd: float) -> None:
        self.model = make_gpt(gradc)(cfg)
        self.model.load_state_dict(state)
        opt = gradc.optim.AdamW(adamw_groups(self.model, wd), lr=lr, betas=(0.9, 0.95))
        self.step = gradc.compile_step(self.model, self.model.loss, opt)
        self.forward = gradc.compile(self.model)  # logits natively, for the validation loss

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.step(x, y))

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> float:
        return cross_entropy(np.asarray(self.forward(x)), y)

    def sample(self, start: np.ndarray, n: int, seed: int) -> np.ndarray:
        gradc.manual_seed(seed)
        with gradc.no_grad():
            return self.model.generate(gradc.tensor(start), n, top_k=10).numpy()[0]


class TorchEngine:
    name = "torch"

    def __init__(self, cfg: GPTConfig, state: dict, lr: float, wd: float) -> None:
        import torch
        torch.set_num_threads(2)  # the same thread limit as gradc's pool on these machines
        self.torch = torch
        self.model = make_gpt(torch)(cfg)
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
        self.opt = torch.optim.AdamW(adamw_groups(self.model, wd), lr=lr, betas=(0.9, 0.95))

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.opt.zero_grad()
        loss = self.model.loss(self.model(self.torch.from_numpy(x)), self.torch.from_numpy(y))
        loss.backward()
        self.opt.step()
        return loss.item()

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> float:
        with self.torch.no_grad():
            return cross_entropy(self.model(self.torch.from_numpy(x)).numpy(), y)

    def sample(self, start: np.ndarray, n: int, seed: int) -> np.ndarray:
        self.torch.manual_seed(seed)
        with self.torch.no_grad():
            return self.model.generate(self.torch.from_numpy(start), n, top_k=10).numpy()[0]


def train(engine, corpus: Corpus, args, cfg: GPTConfig) -> dict:
    print(f"[{engine.name}]")
    batches = corpus.batches("train", args.batch_size, cfg.block_size, args.seed)
    val_x, val_y = next(corpus.batches("val", 4 * args.batch_size, cfg.block_size, args.seed + 1))
    history = {"step": [], "loss": [], "val": [], "steps_per_s": 0.0}
    start = time.perf_counter()
    first_step, train_time, loss = 0.0, 0.0, float("nan")
    for i in range(1, args.steps + 1):
        x, y = next(batches)
        t0 = time.perf_counter()
        loss = engine.train_step(x, y)
        if i == 1:
            first_step = time.perf_counter() - start  # includes compilation
        else:
            train_time += time.perf_counter() - t0
        history["step"].append(i)
        history["loss"].append(loss)
        rate = (i - 1) / train_time if train_time else 0.0
        if not args.no_bar:
            print(bar(i, args.steps, loss, rate), end="", flush=True)
        if i % args.eval_every == 0 or i == args.steps:
            history["val"].append((i, engine.evaluate(val_x, val_y)))
    history["steps_per_s"] = (args.steps - 1) / train_time if train_time else 0.0
    if not args.no_bar:
        print()
    print(f"  first step (with compilation) {first_step:.2f} s; then {history['steps_per_s']:.1f} steps/s; "
          f"train loss {history['loss'][0]:.3f} -> {loss:.3f}, val loss {history['val'][-1][1]:.3f}")
    text = corpus.decode(engine.sample(corpus.data[None, :1], args.sample, args.seed))
    print("  sample:\n" + "\n".join("    | " + line for line in text.splitlines()))
    return history


def plot(histories: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, h in histories.items():
        ax.plot(h["step"], h["loss"], label=f"{name} train ({h['steps_per_s']:.1f} steps/s)", alpha=0.7)
        steps, vals = zip(*h["val"])
        ax.plot(steps, vals, "o--", label=f"{name} val")
    ax.set(xlabel="step", ylabel="cross-entropy", title="char-level GPT")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("gradc", "torch", "both"), default="gradc")
    parser.add_argument("--module", default="difflib", help="the standard-library module whose source is the text")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--sample", type=int, default=200, help="characters to sample after training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny model for a few steps")
    parser.add_argument("--plot", metavar="PATH", help="save the loss curves as a PNG")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.block, args.layers, args.heads, args.embd = 30, 16, 1, 2, 32
        args.batch_size, args.eval_every, args.sample = 8, 10, 60
    engines = ["gradc", "torch"] if args.engine == "both" else [args.engine]
    if "torch" in engines:
        try:
            import torch  # noqa: F401
        except ImportError:
            print('--engine torch/both needs PyTorch: pip install -e ".[compare]"', file=sys.stderr)
            return 2

    corpus = Corpus(load_text(args.module))
    cfg = GPTConfig(vocab_size=len(corpus.chars), block_size=args.block, n_layer=args.layers, n_head=args.heads,
                    n_embd=args.embd)
    gradc.manual_seed(args.seed)
    state = make_gpt(gradc)(cfg).state_dict()  # every engine starts from these weights
    print(f"text: the source of {args.module} ({len(corpus.data)} characters, vocab {len(corpus.chars)}); GPT "
          f"{cfg.n_layer} layers x {cfg.n_head} heads, n_embd {cfg.n_embd}, block {cfg.block_size}, "
          f"batch {args.batch_size}, AdamW lr {args.lr}")
    histories = {}
    for name in engines:
        engine = (GradcEngine if name == "gradc" else TorchEngine)(cfg, state, args.lr, args.weight_decay)
        histories[name] = train(engine, corpus, args, cfg)
    if len(histories) == 2 and histories["torch"]["steps_per_s"]:
        print(f"gradc compile_step: {histories['gradc']['steps_per_s'] / histories['torch']['steps_per_s']:.1f}x "
              "PyTorch eager steps/s (noisy on a shared machine)")
    if args.plot:
        try:
            plot(histories, args.plot)
        except ImportError:
            print("--plot needs matplotlib: pip install matplotlib", file=sys.stderr)
            return 2
    fell = all(h["loss"][-1] < h["loss"][0] for h in histories.values())
    return 0 if fell else 1


if __name__ == "__main__":
    sys.exit(main())
