"""`gradc bench --ranks N`: data-parallel weak scaling on MPI, 1 thread per rank, per-rank batch fixed.

`run(ranks)` launches `mpiexec -n R python -m gradc.bench distributed` for each R (1 first, so its step is
the baseline); every rank times the same paths of each workload, and rank 0 writes the slowest rank's
numbers as JSON (a step ends when the slowest rank's does). benchmarks/bench_distributed.py is the same
benchmark as a script. Workloads (per-rank batch, as W6 and W7 of `gradc bench`):

  W6  W2's MLP 784-256-10 + Adam, batch 64 per rank (0.8 MB of gradients: latency-bound)
  W7  PyTorch's MNIST example CNN + Adam, batch 64 per rank (4.8 MB of gradients, ~130 ms of compute)

Paths:
  local             compile_step on the bare model: no communication (the same R processes side by side)
  compiled-buffer   compile_step(DDP): native backward, ONE Allreduce of a contiguous buffer, native update
  compiled-buckets  the same backward, then ~0.25 MB buckets with Iallreduce, each bucket's native update
                    run as it arrives (overlaps communication with the updates of earlier buckets)
  eager-local       loss.backward() and optimizer.step() on the bare model
  eager             loss.backward() with DDP's bucketed Iallreduce hooks, then optimizer.step()

The paths are interleaved round by round, so a burst of load from elsewhere on a shared machine hits them
alike; at R > 1 ranks each round also times `local` and `eager-local` on rank 0 alone while the other ranks
sleep (an idle barrier, not MPI's spinning one): a 1-rank baseline under the same outside load as the R-rank
steps beside it, which the separate 1-rank launch minutes earlier is not. Beside the steps: the
compiled-buffer Allreduce timed after a barrier (without waiting for the other rank's compute), each
followed by a bare mpi4py Allreduce of the same bytes, so that both see the same load from elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gradc.bench.runner import thread_environment

PATHS = ("local", "compiled-buffer", "compiled-buckets", "eager-local", "eager")
COMPILED = ("compiled-buffer", "compiled-buckets")
SOLO = ("local", "eager-local")  # timed again at R > 1 ranks on rank 0 alone while the others sleep
BUCKET_CAP_MB = 0.25
SWEEP_BYTES = (4_000, 40_000, 400_000, 4_000_000, 40_000_000)


@dataclass(frozen=True)
class Counts:
    """How much to time: rounds of every path, steps per round (compiled / eager), warm-up steps."""
    rounds: int
    steps: dict[str, tuple[int, int]]  # workload -> (compiled steps, eager steps) per round
    warmup: int  # warm-up steps of the compiled paths (the first compiles); the eager paths get one less
    bare: int  # timed bare Allreduces per size of the sweep


FULL = Counts(rounds=7, steps={"W6": (60, 20), "W7": (8, 2)}, warmup=3, bare=60)
QUICK = Counts(rounds=2, steps={"W6": (10, 3), "W7": (1, 1)}, warmup=1, bare=8)
WORKLOADS = ("W6", "W7")


def mpiexec() -> str | None:
    """The MPI launcher: next to the interpreter (pip's mpich puts it there), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else shutil.which("mpiexec")


# ----------------------------------------------------------------------------- worker (inside mpiexec)

def problem(name: str) -> tuple[Callable[[], Any], Any, np.ndarray, np.ndarray]:
    """(make a fresh model with the workload's initial weights, the loss, x, y) of W6 or W7."""
    import gradc
    from gradc import nn

    if name == "W6":
        from gradc.bench import train_step
        x, y, state = train_step.initial()

        def make() -> Any:
            model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
            model.load_state_dict(state)
            return model
        return make, nn.CrossEntropyLoss(), x, y
    if name == "W7":
        from gradc.bench import cnn_step
        x, y, state = cnn_step.initial()

        def make() -> Any:
            model = cnn_step.net(gradc)
            model.load_state_dict(state)
            return model
        return make, nn.functional.nll_loss, x, y
    raise ValueError(f"unknown distributed workload {name!r}; choose from {', '.join(WORKLOADS)}")


def make_step(path: str, make: Callable[[], Any], loss_fn: Any, x: np.ndarray, y: np.ndarray
              ) -> tuple[Callable[[], Any], Callable[[], float], Any]:
    """(one training step, seconds spent in gradient communication so far, the compiled DDP step or None)."""
    import gradc
    from gradc.bench.train_step import BETAS, EPS, LR
    from gradc.distributed.compiled import compile_ddp_step
    from gradc.nn.parallel import DistributedDataParallel as DDP

    model = make()
    ddp = DDP(model) if path in COMPILED + ("eager",) else None
    opt = gradc.optim.Adam((ddp or model).parameters(), lr=LR, betas=BETAS, eps=EPS)
    if path.startswith("eager"):
        net, xt, yt = ddp or model, gradc.tensor(x), gradc.tensor(y)

        def step() -> Any:
            opt.zero_grad()
            loss = loss_fn(net(xt), yt)
            loss.backward()
            opt.step()
            return loss
        return step, (lambda: ddp.comm_seconds) if ddp else (lambda: 0.0), None
    if path == "local":
        local = gradc.compile_step(model, loss_fn, opt)
        return (lambda: local(x, y)), (lambda: 0.0), None
    compiled = compile_ddp_step(ddp, loss_fn, opt, mode=path.split("-")[1], bucket_cap_mb=BUCKET_CAP_MB)
    return (lambda: compiled(x, y)), (lambda: compiled.timings["allreduce"]), compiled


def threads() -> dict[str, float]:
    """CPU seconds per OS thread of this process, by thread name (a sleeping MPI helper thread shows ~0)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = name if name not in out else f"{name}-{tid}"
        out[key] = round((int(fields[11]) + int(fields[12])) / tick, 2)  # utime + stime
    return out


def _slowest(comm: Any, times: list[float]) -> np.ndarray:
    return np.array(comm.allgather(times)).max(axis=0)


def _bare_allreduce(comm: Any, MPI: Any, buffer: np.ndarray, count: int, warmup: int = 0) -> list[float]:
    """Seconds of `count` bare in-place Allreduces of `buffer` on this rank, each after a barrier."""
    times = []
    for i in range(warmup + count):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, MPI.SUM)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def _idle_barrier(comm: Any, poll: float = 1e-3) -> None:
    """A barrier that sleeps while it waits (MPI's blocking Barrier spins, taking a core from rank 0)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll)


def _stats(seconds: np.ndarray, rounds: int) -> dict[str, float]:
    """Median over all steps and the best round's median (a round whose steps no outside load hit)."""
    per_round = np.array_split(seconds, rounds)
    return {"median": float(np.median(seconds)), "best_round": float(min(np.median(r) for r in per_round)),
            "min": float(seconds.min())}


def measure(name: str, counts: Counts, comm: Any, MPI: Any) -> dict[str, Any]:
    """Every path of one workload at this launch's rank count."""
    make, loss_fn, x, y = problem(name)
    steps = {path: make_step(path, make, loss_fn, x, y) for path in PATHS}
    for path, (step, _, _) in steps.items():  # compile and warm up
        for _ in range(counts.warmup - path.startswith("eager")):
            step()
    n_compiled, n_eager = counts.steps[name]
    size = comm.Get_size()
    times: dict[str, list[float]] = {p: [] for p in PATHS}
    comm_times: dict[str, list[float]] = {p: [] for p in PATHS}
    cpu_times: dict[str, list[float]] = {p: [] for p in PATHS}  # this process's CPU seconds per step
    solo: dict[str, list[float]] = {p: [] for p in SOLO}
    for _ in range(counts.rounds):
        for path, (step, comm_seconds, _) in steps.items():
            comm.Barrier()
            count = n_eager if path.startswith("eager") else n_compiled
            for _ in range(count):
                c0, p0, t0 = comm_seconds(), time.process_time(), time.perf_counter()
                step()
                times[path].append(time.perf_counter() - t0)
                cpu_times[path].append(time.process_time() - p0)
                comm_times[path].append(comm_seconds() - c0)
            if path in SOLO and size > 1:  # rank 0 alone, the others asleep: 1 rank under the same outside load
                comm.Barrier()
                if comm.Get_rank() == 0:
                    for _ in range(count):
                        t0 = time.perf_counter()
                        step()
                        solo[path].append(time.perf_counter() - t0)
                _idle_barrier(comm)
    grad_bytes = sum(p._data.nbytes for p in make().parameters())
    entry: dict[str, Any] = {"grad_bytes": grad_bytes, "paths": {}}
    for path in PATHS:
        entry["paths"][path] = {"step_s": _stats(_slowest(comm, times[path]), counts.rounds),
                                "allreduce_s": _stats(_slowest(comm, comm_times[path]), counts.rounds),
                                "cpu_s": _stats(_slowest(comm, cpu_times[path]), counts.rounds)}
    if size > 1:
        entry["solo"] = {p: _stats(np.array(comm.bcast(solo[p], root=0)), counts.rounds) for p in SOLO}
    # the compiled-buffer Allreduce alone (a barrier first absorbs the ranks' compute imbalance), each one
    # followed by a bare mpi4py Allreduce of the same bytes, so that both see the same load from elsewhere
    compiled = steps["compiled-buffer"][2]
    compiled.measure_wait = True
    buffer = np.ones(grad_bytes // 4, dtype=np.float32)
    alone, bare = [], []
    for _ in range(max(n_compiled * counts.rounds, counts.bare // 4)):
        a0 = compiled.timings["allreduce"]
        compiled(x, y)
        alone.append(compiled.timings["allreduce"] - a0)
        bare.append(_bare_allreduce(comm, MPI, buffer, 1)[0])
    compiled.measure_wait = False
    alone_s, bare_s = _slowest(comm, alone), _slowest(comm, bare)
    entry["in_step_allreduce_s"], entry["bare_allreduce_s"] = _stats(alone_s, 1), _stats(bare_s, 1)
    entry["allreduce_ratio_paired"] = float(np.median(alone_s / bare_s))  # each pair ran back to back
    return entry


def worker(out_path: str, workloads: list[str], quick: bool) -> None:
    """One rank of a launch: measure, and rank 0 writes the JSON document."""
    from mpi4py import MPI

    import gradc.distributed as dist
    from gradc.codegen import blas

    dist.init_process_group("mpi")
    comm, size = MPI.COMM_WORLD, dist.get_world_size()
    counts = QUICK if quick else FULL
    doc: dict[str, Any] = {"ranks": size, "workloads": {}}
    for name in workloads:
        doc["workloads"][name] = measure(name, counts, comm, MPI)
    if size > 1:  # the bare Allreduce against bytes: this machine's latency and bandwidth
        doc["allreduce_sweep_s"] = {
            str(b): _stats(_slowest(comm, _bare_allreduce(comm, MPI, np.ones(b // 4, np.float32), counts.bare, 3)), 1)
            for b in SWEEP_BYTES}
    doc["threads_per_rank"] = comm.allgather(threads())
    doc["blas_threads"] = blas.get_num_threads() if blas.available() else None
    doc["gradc_threads"] = os.environ.get("GRADC_NUM_THREADS")
    if comm.Get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(doc, f)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- driver

def launch_env() -> dict[str, str]:
    """One thread per rank for every pool (OpenBLAS, gradc, OpenMP, ...); this gradc first on the path."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, **thread_environment(1)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return env


def launch(ranks: int, workloads: list[str], quick: bool, timeout: float = 1800) -> dict[str, Any]:
    """Run one `mpiexec -n RANKS` launch; its JSON document. RuntimeError with the output if it fails."""
    launcher = mpiexec()
    if launcher is None:
        raise RuntimeError("mpiexec not found (pip install -e \".[distributed]\" brings mpich)")
    with tempfile.TemporaryDirectory(prefix="gradc-bench-ranks-") as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [launcher, "-n", str(ranks), sys.executable, "-m", "gradc.bench", "distributed", "--out", out,
               "--workloads", ",".join(workloads)] + (["--quick"] if quick else [])
        proc = subprocess.run(cmd, env=launch_env(), timeout=timeout, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            raise RuntimeError(f"mpiexec -n {ranks} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}"
                               f"\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def run(ranks: list[int], workloads: list[str] | None = None, quick: bool = False,
        progress: Any = sys.stderr) -> dict[str, Any]:
    """{"meta": ..., "runs": {R: document}} for each rank count, 1 first (the weak-scaling baseline)."""
    from gradc.bench.run import machine

    workloads = list(workloads or WORKLOADS)
    for name in workloads:
        if name not in WORKLOADS:
            raise ValueError(f"unknown distributed workload {name!r}; choose from {', '.join(WORKLOADS)}")
    order = sorted(set(ranks) | {1})
    doc: dict[str, Any] = {"meta": {"machine": machine(), "quick": quick, "load_average_before": _load(),
                                    "cpu_pressure_before": _cpu_pressure(), "autogroup": _autogroup(),
                                    "date": time.strftime("%Y-%m-%d %H:%M")}, "runs": {}}
    for r in order:
        if progress is not None:
            progress.write(f"bench: mpiexec -n {r} ({', '.join(workloads)})\n")
            progress.flush()
        started = time.perf_counter()
        doc["runs"][str(r)] = launch(r, workloads, quick)
        doc["runs"][str(r)]["seconds"] = round(time.perf_counter() - started, 1)
    return doc


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _autogroup() -> bool:
    """Linux groups a session's processes for the scheduler: all ranks of one mpiexec share one CPU share."""
    return (_read("/proc/sys/kernel/sched_autogroup_enabled") or "0").strip() == "1"


def _cpu_pressure() -> float | None:
    """% of the last 60 s in which some runnable task waited for a CPU (Linux PSI), None where unknown."""
    text = _read("/proc/pressure/cpu") or ""
    for field in text.split():
        if field.startswith("avg60="):
            return float(field[6:])
    return None


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return 0.0


# ----------------------------------------------------------------------------- report

def efficiency(doc: dict[str, Any], ranks: int, name: str, path: str, stat: str = "median") -> float:
    """Weak-scaling efficiency: steps/s at RANKS / steps/s at 1 rank (per-rank batch fixed)."""
    one = doc["runs"]["1"]["workloads"][name]["paths"][path]["step_s"][stat]
    return one / doc["runs"][str(ranks)]["workloads"][name]["paths"][path]["step_s"][stat]


def moved_bytes(ranks: int, nbytes: int) -> float:
    """Bytes each rank sends in a ring allreduce: 2 (N-1)/N x the buffer."""
    return 2 * (ranks - 1) / ranks * nbytes


def _load_note(meta: dict[str, Any]) -> list[str]:
    """Why R ranks get less than R cores on a busy machine (say so beside the numbers it lowers)."""
    busy = meta["load_average_before"] > 0.5 * (os.cpu_count() or 1)
    if not busy:
        return []
    note = (f"busy machine: load {meta['load_average_before']} on {os.cpu_count()} CPUs"
            + (f", CPU pressure {meta['cpu_pressure_before']:g}% (tasks waiting for a CPU)"
               if meta.get("cpu_pressure_before") is not None else ""))
    if meta.get("autogroup"):
        note += ("; the kernel's autogroup scheduling shares the CPUs between sessions, so the ranks of one "
                 "mpiexec share ONE session's share: 2 ranks get less than twice one rank's CPU")
    return [note + "; efficiencies are lower than on an idle machine"]


def format_report(doc: dict[str, Any]) -> str:
    """The measured table, the Allreduce sweep and the threads check."""
    meta = doc["meta"]
    lines = [f"data-parallel weak scaling on MPI: {meta['machine']}; 1 thread per rank; load average "
             f"{meta['load_average_before']} before the run{' (quick: few steps, noisy)' if meta['quick'] else ''}",
             *_load_note(meta),
             "steps/s = 1 / median step of the slowest rank [best round's median]; eff. = steps/s at R ranks / "
             "at 1 rank (the mpiexec -n 1 launch), per path, median [best round];",
             "eff. interleaved = the same against rank 0 stepping alone (the others asleep) in rounds interleaved "
             "with the R-rank steps of the same launch: the same outside load on both sides;",
             "CPU eff. = CPU seconds per step (the slower rank's) at 1 rank / at R ranks: the efficiency if every "
             "rank had a core to itself (time spent descheduled left out; MPI's spinning waits counted in);",
             "comm eff. = steps/s / the R ranks' step without communication (local or eager-local) run side by "
             "side: what communication costs beyond R processes sharing the cores",
             f"{'workload':8} {'path':16} {'ranks':>5} {'steps/s':>15} {'eff.':>11} {'eff. interleaved':>16} "
             f"{'CPU eff.':>8} {'comm eff.':>9} {'allreduce ms/step':>17} {'grad MB':>7} {'moved MB':>8}"]
    for r, run in doc["runs"].items():
        ranks = int(r)
        for name, entry in run["workloads"].items():
            for path in PATHS:
                p = entry["paths"][path]
                speed = f"{1 / p['step_s']['median']:.1f} [{1 / p['step_s']['best_round']:.1f}]"
                eff = inter = cpu_eff = comm_eff = comm = ""
                if ranks > 1:
                    best = efficiency(doc, ranks, name, path, "best_round")
                    eff = f"{efficiency(doc, ranks, name, path):.0%} [{best:.0%}]"
                    base = "eager-local" if path.startswith("eager") else "local"
                    solo = entry["solo"][base]
                    inter = (f"{solo['median'] / p['step_s']['median']:.0%} "
                             f"[{solo['best_round'] / p['step_s']['best_round']:.0%}]")
                    cpu_one = doc["runs"]["1"]["workloads"][name]["paths"][path]["cpu_s"]["median"]
                    cpu_eff = f"{cpu_one / p['cpu_s']['median']:.0%}"
                    if path != base:
                        comm_eff = f"{entry['paths'][base]['step_s']['median'] / p['step_s']['median']:.0%}"
                        comm = f"{1e3 * p['allreduce_s']['median']:.3f}"
                lines.append(f"{name:8} {path:16} {ranks:>5} {speed:>15} {eff:>11} {inter:>16} {cpu_eff:>8} "
                             f"{comm_eff:>9} {comm:>17} {entry['grad_bytes'] / 1e6:>7.2f} "
                             f"{moved_bytes(ranks, entry['grad_bytes']) / 1e6:>8.2f}")
            if ranks > 1:
                alone, bare = entry["in_step_allreduce_s"], entry["bare_allreduce_s"]
                lines.append(f"{name:8} allreduce of {entry['grad_bytes'] / 1e6:.2f} MB at {ranks} ranks: in the "
                             f"compiled step (after a barrier) {1e3 * alone['median']:.3f} ms median, "
                             f"{1e3 * alone['min']:.3f} best; bare mpi4py Allreduce alone "
                             f"{1e3 * bare['median']:.3f} ms median, {1e3 * bare['min']:.3f} best: "
                             f"{alone['median'] / bare['median']:.2f}x (median of the back-to-back pairs' "
                             f"ratios {entry['allreduce_ratio_paired']:.2f}x)")
    for r, run in doc["runs"].items():
        sweep = run.get("allreduce_sweep_s")
        if sweep:
            lines.append(f"bare mpi4py Allreduce at {r} ranks, ms median by bytes: " + ", ".join(
                f"{int(b) / 1e6:g} MB {1e3 * s['median']:.3f}" for b, s in sweep.items()))
        cpu = "; ".join(", ".join(f"{name} {sec:g}" for name, sec in t.items()) for t in run["threads_per_rank"])
        lines.append(f"threads at {r} ranks (CPU s per OS thread, per rank): {cpu}; BLAS threads "
                     f"{run['blas_threads']}, GRADC_NUM_THREADS={run['gradc_threads']}; launch {run['seconds']} s")
    return "\n".join(lines)
