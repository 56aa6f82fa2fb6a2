"""The `gradc` command: demo (the autograd tutorial, eager and compiled), and later bench and ir."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Sequence

import numpy as np


def _median_us(fn: Callable[[], object], budget_s: float = 0.3, max_runs: int = 20000) -> float:
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


TUTORIAL_W = [[0.5, -1.0, 0.25], [1.5, 0.0, -0.5], [-0.75, 0.2, 1.0], [0.3, 0.3, -1.2], [1.1, -0.4, 0.6]]
TUTORIAL_B = [0.1, -0.2, 0.3]


def tutorial_loss(x, w, b, y):
    """The autograd tutorial's logistic layer: BCE-with-logits of x @ w + b against y."""
    import gradc
    z = gradc.matmul(x, w) + b
    return gradc.nn.functional.binary_cross_entropy_with_logits(z, y)


def demo(out=sys.stdout) -> int:
    """Run PyTorch's autograd tutorial eagerly and compiled; print gradients, IR and timings."""
    import gradc as torch
    from gradc import api

    say = lambda *a: print(*a, file=out)  # noqa: E731
    say("== eager (import gradc as torch) ==")
    x = torch.ones(5)
    y = torch.zeros(3)
    w = torch.tensor(TUTORIAL_W, requires_grad=True)
    b = torch.tensor(TUTORIAL_B, requires_grad=True)
    z = torch.matmul(x, w) + b
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    say(f"Gradient function for z = {z.grad_fn}")
    say(f"Gradient function for loss = {loss.grad_fn}")
    loss.backward()
    say("loss =", loss)
    say("w.grad =", w.grad)
    say("b.grad =", b.grad)
    with torch.no_grad():
        z = torch.matmul(x, w) + b
    say("requires_grad under no_grad:", z.requires_grad)
    say("requires_grad after detach:", (torch.matmul(x, w) + b).detach().requires_grad)

    say("\n== compiled: gradc.value_and_grad(loss_fn, argnums=(1, 2)) ==")
    arrays = (np.ones(5, np.float32), np.array(TUTORIAL_W, np.float32), np.array(TUTORIAL_B, np.float32),
              np.zeros(3, np.float32))
    native = api.value_and_grad(tutorial_loss, argnums=(1, 2))
    value, (grad_w, grad_b) = native(*arrays)
    say("loss =", value)
    say("grad w =\n", grad_w)
    say("grad b =", grad_b)
    spec = native.lower(*arrays)
    say("\n-- forward IR --")
    say(spec.as_text("ir"))
    say("-- joint forward + adjoint IR --")
    say(spec.as_text("ad"))
    backend = "native" if api.native_available() and api.get_backend() != "interp" else "interp"
    if backend == "native":
        say("-- fused kernels --")
        say(spec.as_text("fused"))
    api.set_backend("interp")
    try:
        interp = api.value_and_grad(tutorial_loss, argnums=(1, 2))
        interp(*arrays)
        t_interp = _median_us(lambda: interp(*arrays))
    finally:
        api.set_backend("auto")
    t_main = _median_us(lambda: native(*arrays))
    say(f"time per value_and_grad call: {backend} {t_main:.1f} us, interpreter {t_interp:.1f} us "
        f"({t_interp / t_main:.1f}x)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradc", description="Compile models into native gradient functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the autograd tutorial eagerly and compiled, print IR and timings")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
