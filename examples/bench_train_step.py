"""W6 "train-step": one Adam training step of the W2 MLP (batch 64, 784 -> 256 ReLU -> 10, cross-entropy).

Steps per second of gradc.compile_step (forward, adjoint and Adam in one compiled call) against
PyTorch eager (zero_grad, forward, backward, step) and JAX jit of the whole step (parameters and Adam state
donated). The model, data, initial weights and each engine's step are the shared definitions of
gradc.bench.train_step, which `gradc bench --workloads W6` and benchmarks/test_train_step.py also run.
Each engine is first checked against the numpy Adam reference; engines that are not installed are skipped
with a line naming the extra that installs them (pip install -e ".[compare]"), and when no peer is installed
at all the script says so in one line and exits with code 2. Exit code 1: an engine disagreed.

    python examples/bench_train_step.py [--repeats 7] [--steps 300] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from gradc import extras
from gradc.bench import runner
from gradc.bench import train_step as w6


def measure(step: w6.TrainStep, steps: int, repeats: int) -> float:
    """Median steps per second over `repeats` runs of `steps` steps, after a warm-up."""
    for _ in range(20):  # warm up: caches, allocator, JAX dispatch
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="one repeat of 30 steps: a smoke test, not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.steps = 1, 30
    reference = w6.W6.reference()
    results, failed = {}, False
    for name, make in w6.STEPS.items():
        module = name.split("-")[0]
        if module in extras.PEERS and not extras.installed(module):
            print(f"{name:14s} skipped: {extras.install_hint(module)}")
            continue
        try:
            step = make(*w6.initial())
        except ImportError as e:
            print(f"{name:14s} skipped ({e})")
            continue
        losses = [float(step()) for _ in range(w6.W6.steps)]
        ok, err, where = runner.check_training(losses, step.parameters(), reference)
        if not ok:
            print(f"{name:14s} DISAGREES with the numpy Adam reference: {where} (max rel err {err:.1e})")
            failed = True
            continue
        results[name] = measure(step, args.steps, args.repeats)
        print(f"{name:14s} {results[name]:9.0f} steps/s  ({1e6 / results[name]:7.1f} us/step)  "
              f"check ok ({err:.0e})")
    peers = {k: v for k, v in results.items() if not k.startswith("gradc")}
    if "gradc-native" in results and peers:
        best = max(peers, key=peers.get)
        print(f"gradc / fastest peer ({best}): {results['gradc-native'] / peers[best]:.2f}x (target >= 1.5x)")
    if failed:
        return 1
    if not peers:
        print(f"bench_train_step.py: error: no peer to compare against: {extras.install_hint('torch')}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
