"""Train a small CNN on scikit-learn's digits (1797 8x8 images): gradc compile_step, gradc eager, PyTorch.

    python examples/train_digits_cnn.py                   # gradc: forward + backward + Adam in one native call
    python examples/train_digits_cnn.py --engine eager    # the same PyTorch-style loop run eagerly by gradc
    python examples/train_digits_cnn.py --engine torch    # PyTorch eager, same initial weights and batches
    python examples/train_digits_cnn.py --engine both --plot curves.png
    python examples/train_digits_cnn.py --quick           # a few epochs (a smoke run)

The model is written once against a `torch`-like module (gradc or torch): conv 1->16 3x3 (same), batch norm,
ReLU, max_pool 2, conv 16->32 3x3, ReLU, max_pool 2, dropout 0.1, fc 128->64, ReLU, fc 64->10. Needs the
`examples` extra: pip install -e ".[examples]" (scikit-learn; matplotlib for --plot); PyTorch for the
torch engine: pip install -e ".[compare]".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
from digits_training import plot, train

import gradc


def load(seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed))


def make_model(lib: Any) -> Any:
    nn = lib.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding="same"), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.1), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


class GradcEngine:
    name = "gradc"

    def __init__(self, model: Any, lr: float) -> None:
        self.model = model
        self.opt = gradc.optim.Adam(model.parameters(), lr=lr)
        self.step = gradc.compile_step(model, gradc.nn.CrossEntropyLoss(), self.opt)  # reads the lr every call
        self.forward = gradc.compile(model)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.train()
        return float(self.step(x, y))

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        return self.forward(x).argmax(axis=1)


class EagerEngine:
    """The plain PyTorch-style loop (zero_grad, forward, backward, step), run by gradc's eager tensors."""
    name = "eager"

    def __init__(self, model: Any, lr: float) -> None:
        self.model, self.loss = model, gradc.nn.CrossEntropyLoss()
        self.opt = gradc.optim.Adam(model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.train()
        self.opt.zero_grad()
        loss = self.loss(self.model(gradc.tensor(x)), gradc.tensor(y))
        loss.backward()
        self.opt.step()
        return loss.item()

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with gradc.no_grad():
            return self.model(gradc.tensor(x)).numpy().argmax(axis=1)


class TorchEngine:
    name = "torch"

    def __init__(self, model: Any, lr: float) -> None:
        import torch
        self.torch = torch
        self.model = make_model(torch)
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.model.train()
        self.opt.zero_grad()
        loss = self.loss(self.model(self.torch.from_numpy(x)), self.torch.from_numpy(y))
        loss.backward()
        self.opt.step()
        return loss.item()

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x)).argmax(dim=1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("gradc", "eager", "torch", "both"), default="gradc",
                        help="both = gradc compile_step and PyTorch")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="3 epochs (a smoke run; accuracy not checked)")
    parser.add_argument("--plot", metavar="PATH", help="save the engines' loss curves as a PNG (runs both)")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    engines = ["gradc", "torch"] if args.engine == "both" or args.plot else [args.engine]
    if "torch" in engines:
        try:
            import torch  # noqa: F401
        except ImportError:
            print('PyTorch is not installed: pip install -e ".[compare]" (or run with --engine gradc)')
            return 2
    epochs = 3 if args.quick else args.epochs
    data = load(args.seed)
    gradc.manual_seed(args.seed)
    model = make_model(gradc)
    initial = model.state_dict()
    print(f"digits: {len(data[0])} train / {len(data[1])} test images of 1x8x8; CNN conv16-bn-pool-conv32-pool-"
          f"fc64-fc10, Adam lr={args.lr}, batch {args.batch_size}")
    histories = {}
    cosine = lambda epoch: args.lr * 0.5 * (1 + np.cos(np.pi * (epoch - 1) / epochs))  # a steady final accuracy
    for name in engines:
        model.load_state_dict(initial)  # every engine starts from the same weights (and running stats)
        engine = {"gradc": GradcEngine, "eager": EagerEngine, "torch": TorchEngine}[name](model, args.lr)
        histories[name] = train(engine, data, epochs, args.batch_size, args.seed, not args.no_bar, cosine)
    if "gradc" in histories and "torch" in histories:
        ratio = histories["gradc"]["median_steps_per_s"] / histories["torch"]["median_steps_per_s"]
        print(f"gradc compile_step: {ratio:.1f}x PyTorch eager steps/s")
    if args.plot:
        plot(histories, args.plot)
    if args.quick:
        return 0
    return 0 if all(h["acc"][-1] >= 0.98 for h in histories.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
