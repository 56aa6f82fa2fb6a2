"""The `gradc bench` report: a plain-text table for stdout, the JSON document, and an optional PNG chart.

The JSON document has keys `meta` (machine, versions, threads, date), `limits` (see gradc.bench.limits)
and `results`: one row per (workload, engine) with every column of the table, including
`native_speedup` (engine median / gradc-native median) and, for gradc-native, `percent_of_limit`.
"""

from __future__ import annotations

from gradc.bench.workloads import by_id

NATIVE = "gradc-native"


def _fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    if us >= 10_000:
        return f"{us / 1000:,.1f} ms"
    return f"{us:,.1f} us" if us < 100 else f"{us:,.0f} us"


def _fmt_num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def add_derived(doc: dict) -> dict:
    """Fill `native_speedup` per row and `percent_of_limit` for gradc-native rows, in place."""
    native = {r["workload"]: r for r in doc["results"] if r["engine"] == NATIVE and r["status"] == "ok"}
    limits = doc.get("limits", {}).get("workloads", {})
    for r in doc["results"]:
        base = native.get(r["workload"])
        r["native_speedup"] = (r["median_us"] / base["median_us"]
                               if base and r["status"] == "ok" and r["median_us"] else None)
        bound = limits.get(r["workload"], {}).get("bound_us")
        r["percent_of_limit"] = (100.0 * bound / r["median_us"]
                                 if r["engine"] == NATIVE and r["status"] == "ok" and bound else None)
    return doc


def eager_ratios(doc: dict, wid: str) -> str | None:
    """gradc-eager against torch eager (steps/s ratio) and compile_step (step-time ratio), same run."""
    ok = {r["engine"]: r["median_us"] for r in doc["results"]
          if r["workload"] == wid and r["status"] == "ok" and r["median_us"]}
    if "gradc-eager" not in ok:
        return None
    parts = []
    if "torch" in ok:
        parts.append(f"{ok['torch'] / ok['gradc-eager']:.2f}x torch eager's steps/s")
    if NATIVE in ok:
        parts.append(f"{ok['gradc-eager'] / ok[NATIVE]:.2f}x compile_step's step time")
    return f"gradc-eager (the torch row's loop, run by gradc): {', '.join(parts)}" if parts else None


def _limits_line(row: dict) -> str:
    parts = []
    if "gemm_bound_us" in row:
        parts.append(f"GEMM-bound {_fmt_us(row['gemm_bound_us'])} ({row['gemm_gflops']:.0f} GFLOP/s)")
    cached = " in cache: repeated calls may beat it" if row.get("fits_in_cache") else ""
    parts.append(f"bandwidth-bound {_fmt_us(row['bandwidth_bound_us'])} ({row['min_bytes'] / 1e6:.2f} MB{cached})")
    parts.append(f"empty ctypes call {row['ctypes_floor_us']:.2f} us ({row['ctypes_pointers']} pointers)")
    return "limits: " + ", ".join(parts)


def _bound_name(row: dict) -> str:
    bound = row["bound_us"]
    if bound == row.get("gemm_bound_us"):
        return "GEMM-bound time"
    if bound == row["bandwidth_bound_us"]:
        return "bandwidth-bound time"
    return "empty ctypes call"


def format_table(doc: dict) -> str:
    """The side-by-side table: one block per workload, engines as rows."""
    meta, limits = doc["meta"], doc.get("limits", {})
    lines = [f"gradc bench  {meta['date']}  {meta['machine']}",
             f"threads: {meta['threads']} for every engine ({meta['thread_settings']})",
             f"timing: {meta['timing']}"]
    if limits:
        lines.append(f"memory bandwidth {limits['memory_bandwidth_gbs']:.1f} GB/s ({limits['memory_test']}); "
                     f"BLAS: {limits['blas']}")
    for note in meta.get("notes", []):
        lines.append(f"note: {note}")
    header = (f"  {'engine':<15}{'median':>12}{'min':>12}{'first call':>13}{'2nd call':>11}{'cached':>10}"
              f"{'native x':>10}  check")
    for wid in dict.fromkeys(r["workload"] for r in doc["results"]):
        w = by_id(wid)
        lines += ["", f"{wid} {w.name if w else ''} ({w.stresses if w else ''})"]
        lrow = limits.get("workloads", {}).get(wid)
        if lrow:
            lines.append("  " + _limits_line(lrow))
        lines.append(header)
        for r in (r for r in doc["results"] if r["workload"] == wid):
            first = "-" if r["first_call_ms"] is None else f"{r['first_call_ms']:,.1f} ms"
            speedup = "-" if r.get("native_speedup") is None else f"{r['native_speedup']:.2f}x"
            if r["status"] == "ok":
                check = f"ok ({r['max_rel_err']:.0e})"
            else:
                check = f"{r['status'].upper()}: {r['note']}"
            cached = "-" if r.get("first_call_cached_ms") is None else f"{r['first_call_cached_ms']:,.1f} ms"
            second = "-" if r.get("second_call_ms") is None else f"{r['second_call_ms']:,.1f} ms"
            lines.append(f"  {r['engine']:<15}{_fmt_us(r['median_us']):>12}{_fmt_us(r['min_us']):>12}"
                         f"{first:>13}{second:>11}{cached:>10}{speedup:>10}  {check}")
        if w is not None and w.kind == "train":
            rates = [f"{r['engine']} {1e6 / r['median_us']:,.0f}" for r in doc["results"]
                     if r["workload"] == wid and r["status"] == "ok" and r["median_us"]]
            if rates:
                lines.append(f"  steps/s (median): {', '.join(rates)}")
            eager = eager_ratios(doc, wid)
            if eager:
                lines.append(f"  {eager}")
        native = next((r for r in doc["results"] if r["workload"] == wid and r["engine"] == NATIVE), None)
        if native and native.get("percent_of_limit") is not None and lrow:
            above = (" (faster than the measured limit: the data stay in cache between calls, or the limit's "
                     "measurement was disturbed)" if native["percent_of_limit"] > 100 else "")
            lines.append(f"  gradc-native runs at {native['percent_of_limit']:.0f}% of the limit "
                         f"({_bound_name(lrow)} {_fmt_us(lrow['bound_us'])}){above}")
    bad = [r for r in doc["results"] if r["status"] in ("mismatch", "error")]
    if bad:
        lines += ["", f"{len(bad)} engine/workload pair(s) FAILED (mismatch or error): no time reported for them"]
    targets = target_lines(doc)
    if targets:
        lines += ["", "targets of BENCHMARKS.md (gradc-native, this run):"] + [f"  {t}" for t in targets]
    lines.append("")
    lines.append("first call: prepare + first call (trace + AD + compile; gradc with an empty on-disk cache); "
                 "2nd call: the second training step alone (an eager engine's warm-up); "
                 "cached: gradc-native's first call in a new process with the on-disk cache filled.")
    lines.append("native x: how many times faster gradc-native is than the engine (engine median / gradc median). "
                 "Medians of steady-state calls; min is the best call. The machine is shared: expect +-20% noise.")
    trains = [wid for wid in dict.fromkeys(r["workload"] for r in doc["results"])
              if by_id(wid) is not None and by_id(wid).kind == "train"]
    for wid in trains:
        w = by_id(wid)
        lines.append(f"{wid}: times are per training step (forward, backward, optimizer update); the first call is "
                     f"the first step; check: each engine's losses of its first {w.steps} steps and its parameters "
                     "after them vs a numpy Adam reference from the same initial weights.")
    return "\n".join(lines) + "\n"


PEERS = ("numpy", "torch", "torch-compile", "jax", "autograd")


# the targets of the team's BENCHMARKS.md, as (workload, peer or "fastest peer", at least this speedup)
SPEEDUP_TARGETS = (
    ("W1", "torch", 50), ("W1", "jax", 10), ("W2", "fastest peer", 1.25), ("W3", "jax", 2),
    ("W4", "fastest peer", 1.05), ("W5", "jax", 3), ("W6", "fastest peer", 1.6),
    ("W7", "torch", 1.5), ("W7", "torch-compile", 1.2), ("W7", "jax", 1.2),
    ("W8", "torch", 1.5), ("W8", "torch-compile", 1.2), ("W8", "jax", 1.2), ("W9", "fastest peer", 1.5),
)
# (workload, limit key, its name, at most this many times the limit)
LIMIT_TARGETS = (
    ("W1", "ctypes_floor_us", "empty ctypes call", 2), ("W3", "bandwidth_bound_us", "bandwidth-bound time", 1.15),
    ("W4", "gemm_bound_us", "GEMM-bound time", 1.12), ("W7", "gemm_bound_us", "GEMM-bound time", 1.5),
)
# (workload, result key, what, at most this many ms)
FIRST_CALL_TARGETS = (
    ("W5S", "first_call_ms", "(W5 as a scan) first call (empty cache)", 150),
    ("W2", "first_call_ms", "first call (empty cache)", 250),
    ("W2", "first_call_cached_ms", "first call in a new process with the on-disk cache", 50),
)


def target_lines(doc: dict) -> list[str]:
    """Each target of BENCHMARKS.md that this run can judge: the measured ratio and met / NOT met."""
    rows = {(r["workload"], r["engine"]): r for r in doc["results"] if r["status"] == "ok"}
    limits = doc.get("limits", {}).get("workloads", {})
    out = []

    def check(text: str, value: float | None, goal: float, smaller_is_better: bool = False) -> None:
        if value is None:
            return
        met = value <= goal if smaller_is_better else value >= goal
        out.append(f"{text}: {value:.2f} (goal {'<=' if smaller_is_better else '>='} {goal:g}) "
                   f"{'met' if met else 'NOT met'}")

    def speedup(wid: str, engine: str) -> float | None:
        n, e = rows.get((wid, NATIVE)), rows.get((wid, engine))
        return e["median_us"] / n["median_us"] if n and e else None

    def vs_fastest_peer(wid: str) -> tuple[float | None, str]:
        peers = [rows[(wid, p)] for p in PEERS if (wid, p) in rows]
        if not peers or (wid, NATIVE) not in rows:
            return None, ""
        best = min(peers, key=lambda r: r["median_us"])
        return best["median_us"] / rows[(wid, NATIVE)]["median_us"], best["engine"]

    def vs_limit(wid: str, key: str) -> float | None:
        n, bound = rows.get((wid, NATIVE)), limits.get(wid, {}).get(key)
        return n["median_us"] / bound if n and bound else None

    for wid, what, goal in SPEEDUP_TARGETS:
        if what == "fastest peer":
            ratio, peer = vs_fastest_peer(wid)
            label = "training steps/s" if wid in ("W6", "W9") else "speedup"
            check(f"{wid} {label} over the fastest peer ({peer})", ratio, goal)
        else:
            check(f"{wid} speedup over {what}", speedup(wid, what), goal)
    for wid, key, label, goal in LIMIT_TARGETS:
        check(f"{wid} time / {label}", vs_limit(wid, key), goal, True)
    for wid, key, label, goal in FIRST_CALL_TARGETS:
        row = rows.get((wid, NATIVE))
        if row:
            check(f"{wid} {label}, ms", row.get(key), goal, True)
    return out


def plot(doc: dict, path: str) -> None:
    """A PNG bar chart of median time per call, log scale, one group of bars per workload."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'gradc[plot]' (or pip install matplotlib)") from None
    rows = [r for r in doc["results"] if r["status"] == "ok"]
    workloads = list(dict.fromkeys(r["workload"] for r in doc["results"]))
    engines = list(dict.fromkeys(r["engine"] for r in rows))
    width = 0.8 / max(len(engines), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(workloads) + 2), 4.5))
    for i, engine in enumerate(engines):
        xs, ys = [], []
        for j, wid in enumerate(workloads):
            r = next((r for r in rows if r["workload"] == wid and r["engine"] == engine), None)
            if r is not None:
                xs.append(j + (i - (len(engines) - 1) / 2) * width)
                ys.append(r["median_us"])
        ax.bar(xs, ys, width=width, label=engine)
    ax.set_yscale("log")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels([f"{w} {by_id(w).name}" if by_id(w) else w for w in workloads])
    ax.set_ylabel("median us per value-and-grad call or training step (log)")
    ax.set_title(f"gradc bench, {doc['meta']['threads']} threads, {doc['meta']['date']}")
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def any_failed(doc: dict) -> bool:
    return any(r["status"] in ("mismatch", "error") for r in doc["results"])

