"""The data-parallel scaling model, fed with measured compute times (bench_distributed.py --json).

    python benchmarks/scaling_model.py RESULTS.json

Per step, with N ranks, gradient bytes B, link bandwidth beta and per-message latency alpha, a ring
allreduce (reduce-scatter then allgather, 2 (N-1) steps each moving B/N bytes) takes

    T_ar(N) = 2 (N-1) alpha + 2 (N-1)/N * B / beta

and, since gradc's compiled DDP step does not overlap it with the backward, the weak-scaling efficiency is

    E(N) = T_c / (T_c + T_ar(N))        T_c = the 1-rank step time (measured, one thread)

Links: 10 Gb/s Ethernet (beta = 1.25 GB/s, alpha = 25 us per message through TCP) and 100 Gb/s
InfiniBand/RoCE (beta = 12.5 GB/s, alpha = 3 us). Line rates; real links reach ~90% of them. The
"shared memory" row uses this machine's own 2-rank bare Allreduce of the same bytes as T_ar(2): that is
the model's prediction for the 2-rank run measured here, printed beside the measured efficiency.
W7 (no convolution on this branch) is estimated: its 4.58 GFLOP per step (the convolutions as GEMMs) at
the GFLOP/s the W4-step measured, with W7's 1,199,882 float32 parameters (4.80 MB).
"""

from __future__ import annotations

import json
import sys

LINKS = {"10 Gb/s": (1.25e9, 25e-6), "100 Gb/s": (12.5e9, 3e-6)}
RANKS = (2, 8, 64, 512)
W4_STEP_FLOP = (2 * 1024 * 1024 + 3 * 1024 * 1024 + 3 * 1024 * 10) * 256 * 2  # GEMMs: fwd, dW, dx (no dx of x)
W7_FLOP, W7_BYTES = 4.58e9, 1_199_882 * 4


def allreduce_seconds(ranks: int, nbytes: float, bandwidth: float, latency: float) -> float:
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * nbytes / bandwidth


def efficiency(compute: float, ranks: int, nbytes: float, bandwidth: float, latency: float) -> float:
    return compute / (compute + allreduce_seconds(ranks, nbytes, bandwidth, latency))


def rows(results: dict) -> list[tuple[str, float, float, dict]]:
    """(workload, compute seconds, gradient bytes, entries of the 2-rank run) per workload."""
    one = results.get("1") or results.get(1)
    two = results.get("2") or results.get(2) or {}
    out = []
    for name, entry in one["workloads"].items():
        compute = 1 / entry["local"]["steps_per_s"]
        out.append((name, compute, entry["local"]["grad_bytes"], (two.get("workloads") or {}).get(name)))
    w4 = next((r for r in out if r[0] == "W4-step"), None)
    if w4 is not None:
        flops = W4_STEP_FLOP / w4[1]
        out.append((f"W7 (est., {flops / 1e9:.0f} GFLOP/s)", W7_FLOP / flops, W7_BYTES, None))
    return out


def table(results: dict) -> str:
    lines = ["modelled weak-scaling efficiency (ring allreduce, no overlap), from the measured 1-rank step",
             f"{'workload':24} {'T_c ms':>8} {'grad MB':>8} {'link':>9} " + " ".join(f"{'N=' + str(n):>7}"
                                                                                     for n in RANKS)]
    for name, compute, nbytes, two in rows(results):
        for link, (bandwidth, latency) in LINKS.items():
            effs = " ".join(f"{efficiency(compute, n, nbytes, bandwidth, latency):>7.0%}" for n in RANKS)
            lines.append(f"{name:24} {compute * 1e3:>8.2f} {nbytes / 1e6:>8.2f} {link:>9} {effs}")
        if two is not None:
            bare = two["bare_allreduce_min_ms"] / 1e3
            predicted = compute / (compute + bare)
            measured = two["compiled-buffer"]["steps_per_s"] * compute
            local2 = two["compiled-buffer"]["steps_per_s"] / two["local"]["steps_per_s"]
            lines.append(f"{'':24} {'':>8} {'':>8} {'shm':>9} {predicted:>7.0%}  <- T_ar = this machine's bare "
                         f"Allreduce ({bare * 1e3:.3f} ms); measured 2-rank: {measured:.0%} vs 1 rank, "
                         f"{local2:.0%} vs 2 ranks without communication")
    return "\n".join(lines)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(table(json.load(f)))
