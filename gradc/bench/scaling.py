"""The data-parallel scaling model, fed with the measured step times of `gradc bench --ranks`.

Per step, with N ranks, gradient bytes B, link bandwidth beta and per-message latency alpha, a ring
allreduce (reduce-scatter then allgather, 2 (N-1) steps each moving B/N bytes) takes

    T_ar(N) = 2 (N-1) alpha + 2 (N-1)/N * B / beta

and, since gradc's compiled DDP step does not overlap it with the backward, the weak-scaling efficiency is

    E(N) = T_c / (T_c + T_ar(N))        T_c = the 1-rank compiled step (measured, one thread)

Links: 10 Gb/s Ethernet (beta = 1.25 GB/s, alpha = 25 us per message through TCP) and 100 Gb/s
InfiniBand/RoCE (beta = 12.5 GB/s, alpha = 3 us). Line rates; real links reach ~90% of them. The "shm"
row puts this machine's own 2-rank bare Allreduce of the same bytes in T_ar(2): the model's prediction for
the 2-rank run measured here, printed beside the measured efficiencies (against the 1-rank launch, against
rank 0 alone interleaved with the 2-rank steps, and against 2 ranks running side by side without
communicating, which removes the 2 processes' contention for 2 cores).
"""

from __future__ import annotations

from typing import Any

LINKS = {"10 Gb/s": (1.25e9, 25e-6), "100 Gb/s": (12.5e9, 3e-6)}
RANKS = (2, 8, 64, 512)


def allreduce_seconds(ranks: int, nbytes: float, bandwidth: float, latency: float) -> float:
    return 2 * (ranks - 1) * latency + 2 * (ranks - 1) / ranks * nbytes / bandwidth


def efficiency(compute: float, ranks: int, nbytes: float, bandwidth: float, latency: float) -> float:
    return compute / (compute + allreduce_seconds(ranks, nbytes, bandwidth, latency))


def rows(doc: dict[str, Any]) -> list[tuple[str, float, int, dict | None]]:
    """(workload, 1-rank compiled step seconds, gradient bytes, the 2-rank entry or None) per workload."""
    one, two = doc["runs"]["1"], doc["runs"].get("2")
    return [(name, entry["paths"]["local"]["step_s"]["median"], entry["grad_bytes"],
             two["workloads"].get(name) if two else None) for name, entry in one["workloads"].items()]


def table(doc: dict[str, Any]) -> str:
    lines = ["modelled weak-scaling efficiency (ring allreduce, no overlap), T_c = the measured 1-rank compiled step",
             f"{'workload':8} {'T_c ms':>8} {'grad MB':>8} {'link':>9} " + " ".join(f"{'N=' + str(n):>7}"
                                                                                for n in RANKS)]
    for name, compute, nbytes, two in rows(doc):
        for link, (bandwidth, latency) in LINKS.items():
            effs = " ".join(f"{efficiency(compute, n, nbytes, bandwidth, latency):>7.0%}" for n in RANKS)
            lines.append(f"{name:8} {compute * 1e3:>8.2f} {nbytes / 1e6:>8.2f} {link:>9} {effs}")
        if two is not None:
            bare = two["bare_allreduce_s"]["median"]
            predicted = compute / (compute + bare)
            buffer = two["paths"]["compiled-buffer"]["step_s"]["median"]
            local = two["paths"]["local"]["step_s"]["median"]
            solo = two["solo"]["local"]["median"]
            lines.append(f"{name:8} {'':>8} {'':>8} {'shm':>9} {predicted:>7.0%}  <- T_ar = this machine's bare "
                         f"Allreduce ({bare * 1e3:.3f} ms); measured compiled-buffer at 2 ranks: "
                         f"{compute / buffer:.0%} vs 1 rank, {solo / buffer:.0%} interleaved, "
                         f"{local / buffer:.0%} vs 2 ranks without communication")
    return "\n".join(lines)
