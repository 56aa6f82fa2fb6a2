"""The epoch loop and the loss/accuracy plot shared by the digits examples (train_digits*.py).

An engine is any object with `name`, `train_step(x, y) -> float` and `predict(x) -> labels` (and `opt` when a
learning-rate schedule is given); every engine sees the same batches, so their curves can be compared.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from gradc.data import DataLoader, progress

STYLES = {"gradc": dict(linestyle="-", linewidth=3, alpha=0.6), "eager": dict(linestyle=":", linewidth=2),
          "torch": dict(linestyle="--", marker="o", markersize=3)}


def train(engine: Any, data: tuple[np.ndarray, ...], epochs: int, batch_size: int, seed: int, bar: bool,
          lr_at_epoch: Callable[[int], float] | None = None) -> dict:
    """Train for `epochs`, printing one line an epoch; returns the loss/accuracy/steps-per-second history."""
    x_train, x_test, y_train, y_test = data
    loader = DataLoader(x_train, y_train, batch_size=batch_size, seed=seed)  # same batches for every engine
    history: dict = {"loss": [], "acc": [], "steps_per_s": []}
    print(f"[{engine.name}]")
    for epoch in range(1, epochs + 1):
        if lr_at_epoch is not None:
            for group in engine.opt.param_groups:
                group["lr"] = lr_at_epoch(epoch)
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
    steady = history["steps_per_s"][1:] or history["steps_per_s"]  # epoch 1 includes compiling
    history["median_steps_per_s"] = float(np.median(steady))
    print(f"  final test accuracy {100 * history['acc'][-1]:.1f}%, median {history['median_steps_per_s']:.0f} "
          f"steps/s after epoch 1")
    return history


def plot(histories: dict, path: str) -> None:
    """Save the engines' loss and accuracy curves side by side as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, h in histories.items():  # the curves coincide when the engines start from the same weights
        epochs = range(1, len(h["loss"]) + 1)
        label = f"{name} ({h['median_steps_per_s']:.0f} steps/s)"
        left.plot(epochs, h["loss"], label=label, **STYLES[name])
        right.plot(epochs, [100 * a for a in h["acc"]], label=label, **STYLES[name])
    left.set(xlabel="epoch", ylabel="mean training loss", yscale="log", title="loss")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="accuracy")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"saved {path}")
