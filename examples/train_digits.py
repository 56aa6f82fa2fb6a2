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
import time

import numpy as np

import gradc
import gradc.nn as nn
from gradc import extras
from gradc.data import DataLoader, progress


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


def train(engine, data: tuple[np.ndarray, ...], epochs: int, batch_size: int, seed: int, bar: bool) -> dict:
    x_train, x_test, y_train, y_test = data
    loader = DataLoader(x_train, y_train, batch_size=batch_size, seed=seed)  # same batches for every engine
    history = {"loss": [], "acc": [], "steps_per_s": []}
    print(f"[{engine.name}]")
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        start = time.perf_counter()
        for x, y in progress(loader, desc=f"  epoch {epoch}", enabled=bar, only_tty=True):
            total += engine.train_step(x, y)
            steps += 1
        rate = steps / (time.perf_counter() - start)
        acc = float((engine.predict(x_test) == y_test).mean())
        history["loss"].append(total / steps)
        history["acc"].append(acc)
        history["steps_per_s"].append(rate)
        print(f"  epoch {epoch:3d}  loss {total / steps:.4f}  test acc {100 * acc:5.1f}%  {rate:8.0f} steps/s"
              + ("  (includes compilation)" if epoch == 1 and engine.name == "gradc" else ""))
    steady = history["steps_per_s"][1:] or history["steps_per_s"]
    history["median_steps_per_s"] = float(np.median(steady))
    print(f"  final test accuracy {100 * history['acc'][-1]:.1f}%, median {history['median_steps_per_s']:.0f} "
          f"steps/s after epoch 1")
    return history


def plot(histories: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"gradc": dict(linestyle="-", linewidth=3, alpha=0.6), "torch": dict(linestyle="--", marker="o",
                                                                                  markersize=3)}
    for name, h in histories.items():  # the curves coincide when both engines start from the same weights
        epochs = range(1, len(h["loss"]) + 1)
        label = f"{name} ({h['median_steps_per_s']:.0f} steps/s)"
        left.plot(epochs, h["loss"], label=label, **styles[name])
        right.plot(epochs, [100 * a for a in h["acc"]], label=label, **styles[name])
    left.set(xlabel="epoch", ylabel="mean training loss", yscale="log", title="loss")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")


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
