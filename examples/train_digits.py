"""Train an MLP on scikit-learn's digits (1797 8x8 images) with gradc's compiled training step.

    python examples/train_digits.py                   # gradc: forward + backward + Adam in one native call
    python examples/train_digits.py --plot curves.png # + loss and accuracy curves (PyTorch's too if installed)
    python examples/train_digits.py --engine torch    # PyTorch eager, same initial weights and batches

Needs the `examples` extra: pip install -e ".[examples]" (scikit-learn, matplotlib for --plot); the PyTorch
engine also needs the `compare` extra: pip install -e ".[examples,compare]". A missing one is named in one
line with exit code 2. Exit code 1: an engine ended below 95% test accuracy.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from digits_training import plot, train

import gradc
import gradc.nn as nn
from gradc import extras


def load(seed: int) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return tuple(train_test_split(x, y, test_size=0.25, stratify=y, random_state=seed))


def make_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))


class GradcEngine:
    name = "gradc"

    def __init__(self, model: nn.Module, lr: float) -> None:
        self.model = model
        self.step = gradc.compile_step(model, nn.CrossEntropyLoss(), gradc.optim.Adam(model.parameters(), lr=lr))
        self.forward = gradc.compile(model)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.step(x, y))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x).argmax(axis=1)


class TorchEngine:
    name = "torch"

    def __init__(self, model: nn.Module, lr: float) -> None:
        import torch
        self.torch = torch
        self.model = torch.nn.Sequential(*[{"Linear": lambda m: torch.nn.Linear(m.in_features, m.out_features),
                                            "ReLU": lambda m: torch.nn.ReLU()}[type(m).__name__](m) for m in model])
        self.model.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
        self.loss = torch.nn.CrossEntropyLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        self.opt.zero_grad()
        loss = self.loss(self.model(self.torch.from_numpy(x)), self.torch.from_numpy(y))
        loss.backward()
        self.opt.step()
        return loss.item()

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x)).argmax(dim=1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=("gradc", "torch", "both"), default="gradc")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PATH",
                        help="save the loss and accuracy curves as a PNG (also runs PyTorch when it is installed)")
    parser.add_argument("--no-bar", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    extras.require("sklearn", "the digits data set")  # before any work: one line, exit code 2
    if args.plot:
        extras.require("matplotlib", "--plot")
    engines = ["gradc", "torch"] if args.engine == "both" else [args.engine]
    if "torch" in engines:
        extras.require("torch", f"--engine {args.engine}")
    elif args.plot:
        if extras.installed("torch"):
            engines.append("torch")
        else:
            print("--plot: gradc's curves only; the PyTorch curve needs gradc[compare] "
                  '(pip install -e ".[compare]")')

    data = load(args.seed)
    gradc.manual_seed(args.seed)
    model = make_model(args.hidden)
    initial = model.state_dict()
    print(f"digits: {len(data[0])} train / {len(data[1])} test images; MLP 64-{args.hidden}-{args.hidden}-10, "
          f"Adam lr={args.lr}, batch {args.batch_size}")
    histories = {}
    for name in engines:
        model.load_state_dict(initial)  # every engine starts from the same weights
        engine = GradcEngine(model, args.lr) if name == "gradc" else TorchEngine(model, args.lr)
        histories[name] = train(engine, data, args.epochs, args.batch_size, args.seed, not args.no_bar)
    if len(histories) == 2:
        ratio = histories["gradc"]["median_steps_per_s"] / histories["torch"]["median_steps_per_s"]
        print(f"gradc compile_step: {ratio:.1f}x PyTorch eager steps/s")
    if args.plot:
        plot(histories, args.plot)
    return 0 if all(h["acc"][-1] >= 0.95 for h in histories.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
