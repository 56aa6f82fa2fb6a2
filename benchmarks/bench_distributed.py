"""Data-parallel weak scaling on MPI: 1 and 2 ranks, one thread per rank, per-rank batch fixed.

    python benchmarks/bench_distributed.py [--quick] [--ranks 1,2] [--json PATH]

Launches `mpiexec -n R` of itself for each R. Workloads: W6 (W2's MLP 784-256-10 + Adam(1e-3), batch 64
per rank) and, as the CNN-free stand-in for W7 (no convolution on this branch), "W4-step": W4's MLP
1024-1024-1024-10 (tanh) + Adam, batch 256 per rank, a compute-heavy step with 8.4 MB of gradients (W7
has 4.8 MB). Paths per workload:

  compiled-buffer   compile_step(DDP): native backward, ONE Allreduce of a contiguous buffer, native update
  compiled-buckets  the same backward, then ~0.25 MB buckets with Iallreduce, each bucket's native update
                    run as it arrives (overlaps communication with the updates of earlier buckets)
  eager             loss.backward() with DDP's bucketed Iallreduce hooks, then optimizer.step()

Reported per path and rank count: steps/s (the slowest rank's, best of several rounds), weak-scaling
efficiency (steps/s at R ranks / steps/s at 1 rank), allreduce time per step inside the step, and a bare
mpi4py Allreduce of the same bytes timed alone in the same launch, then the scaling model
(benchmarks/scaling_model.py) fed with the measured 1-rank step times. Noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def mpiexec() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return beside if os.path.exists(beside) else "mpiexec"


# ----------------------------------------------------------------------------- worker (inside mpiexec)

def workloads(quick: bool) -> dict:
    from gradc.bench.train_step import initial
    x6, y6, state6 = initial()
    rng = np.random.default_rng(0)
    x4 = rng.standard_normal((256, 1024)).astype(np.float32)
    y4 = rng.integers(0, 10, 256)
    return {"W6": dict(sizes=(784, 256, 10), act="relu", x=x6, y=y6, state=state6, steps=20 if quick else 60),
            "W4-step": dict(sizes=(1024, 1024, 1024, 10), act="tanh", x=x4, y=y4, state=None,
                            steps=3 if quick else 10)}


def build(spec: dict):
    import gradc
    from gradc import nn
    layers = []
    sizes = spec["sizes"]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU() if spec["act"] == "relu" else nn.Tanh())
    gradc.manual_seed(0)
    model = nn.Sequential(*layers)
    if spec["state"] is not None:
        model.load_state_dict(spec["state"])
    return model


PATHS = ("local", "compiled-buffer", "compiled-buckets", "eager-local", "eager")


def make_step(path: str, spec: dict):
    """(step(), seconds spent in gradient communication so far) for one path on a fresh model."""
    import gradc
    from gradc import nn
    from gradc.distributed.compiled import compile_ddp_step
    from gradc.nn.parallel import DistributedDataParallel as DDP

    x, y = spec["x"], spec["y"]
    loss_fn = nn.CrossEntropyLoss()
    model = build(spec)
    ddp = DDP(model) if path in ("compiled-buffer", "compiled-buckets", "eager") else None
    opt = gradc.optim.Adam((ddp or model).parameters(), lr=1e-3)
    if path.startswith("eager"):
        net, xt, yt = ddp or model, gradc.tensor(x), gradc.tensor(y)

        def step():
            opt.zero_grad()
            loss_fn(net(xt), yt).backward()
            opt.step()
        return step, (lambda: ddp.comm_seconds) if ddp else (lambda: 0.0)
    if path == "local":
        compiled = gradc.compile_step(model, loss_fn, opt)
        return (lambda: compiled(x, y)), (lambda: 0.0)
    compiled = compile_ddp_step(ddp, loss_fn, opt, mode=path.split("-")[1], bucket_cap_mb=0.25)
    return functools.partial(compiled, x, y), (lambda: compiled.timings["allreduce"])


def worker(out_path: str, quick: bool) -> None:
    from mpi4py import MPI

    import gradc.distributed as dist

    dist.init_process_group("mpi")
    comm, rank, size = MPI.COMM_WORLD, dist.get_rank(), dist.get_world_size()
    rounds = 3 if quick else 7
    results = {"ranks": size, "threads": os.environ.get("GRADC_NUM_THREADS"), "workloads": {}}
    selected = os.environ.get("BENCH_DISTRIBUTED_WORKLOADS", "W6,W4-step").split(",")
    for name, spec in workloads(quick).items():
        if name not in selected:
            continue
        steps = {path: make_step(path, spec) for path in PATHS}
        for step, _ in steps.values():  # compile and warm up
            for _ in range(3):
                step()
        times = {path: [] for path in PATHS}
        comm_times = {path: [] for path in PATHS}
        for _ in range(rounds):  # paths interleaved, so a burst of load elsewhere hits them alike
            for path, (step, comm_seconds) in steps.items():
                comm.Barrier()
                for _ in range(spec["steps"]):
                    c0, t0 = comm_seconds(), time.perf_counter()
                    step()
                    times[path].append(time.perf_counter() - t0)
                    comm_times[path].append(comm_seconds() - c0)
        entry = results["workloads"][name] = {}
        compiled = steps["compiled-buffer"][0].func  # the DistributedCompiledStep
        pure = []  # the in-step allreduce alone: a barrier first absorbs the ranks' compute imbalance
        compiled.measure_wait = True
        for _ in range(spec["steps"] * rounds):
            a0 = compiled.timings["allreduce"]
            compiled(spec["x"], spec["y"])
            pure.append(compiled.timings["allreduce"] - a0)
        compiled.measure_wait = False
        pure = np.array(comm.allgather(pure)).max(axis=0)
        entry["in_step_allreduce_ms"] = 1e3 * float(np.median(pure))
        entry["in_step_allreduce_min_ms"] = 1e3 * float(pure.min())
        model = build(spec)
        grad_bytes = sum(p._data.nbytes for p in model.parameters())
        for path in PATHS:
            per_step = np.array(comm.allgather(times[path])).max(axis=0)  # a step ends when the slowest rank's does
            comm_step = np.array(comm.allgather(comm_times[path])).max(axis=0)
            entry[path] = {"steps_per_s": 1 / float(np.median(per_step)), "best_steps_per_s": 1 / float(per_step.min()),
                           "allreduce_ms_per_step": 1e3 * float(np.median(comm_step)),
                           "allreduce_min_ms": 1e3 * float(comm_step.min()), "grad_bytes": grad_bytes}
        buffer = np.ones(grad_bytes // 4, dtype=np.float32)  # the bare Allreduce of the same bytes, alone
        bare = []
        for i in range(5 + (20 if quick else 60)):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, MPI.SUM)
            if i >= 5:
                bare.append(time.perf_counter() - t0)
        bare = np.array(comm.allgather(bare)).max(axis=0)
        entry["bare_allreduce_ms"] = 1e3 * float(np.median(bare))
        entry["bare_allreduce_min_ms"] = 1e3 * float(bare.min())
    if size > 1:  # bare Allreduce time against bytes: this machine's latency and bandwidth
        sweep = {}
        for nbytes in (4_000, 40_000, 400_000, 4_000_000, 40_000_000):
            buffer = np.ones(nbytes // 4, dtype=np.float32)
            times = []
            for i in range(3 + (10 if quick else 30)):
                comm.Barrier()
                t0 = time.perf_counter()
                comm.Allreduce(MPI.IN_PLACE, buffer, MPI.SUM)
                if i >= 3:
                    times.append(time.perf_counter() - t0)
            times = np.array(comm.allgather(times)).max(axis=0)
            sweep[nbytes] = (1e3 * float(np.median(times)), 1e3 * float(times.min()))
        results["allreduce_sweep_ms"] = sweep
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


# ----------------------------------------------------------------------------- driver

def run(ranks: int, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        env = {**os.environ, "GRADC_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [ROOT, os.environ.get("PYTHONPATH", "")])}
        cmd = [mpiexec(), "-n", str(ranks), sys.executable, os.path.abspath(__file__), "--worker", out]
        if quick:
            cmd.append("--quick")
        subprocess.run(cmd, check=True, env=env, timeout=1800)
        with open(out) as f:
            return json.load(f)


def report(results: dict[int, dict]) -> str:
    base = results.get(1)
    lines = [f"data-parallel weak scaling, 1 thread per rank, {os.cpu_count()} cores (shared machine: noisy); "
             "steps/s from the median step (best step in brackets)",
             "eff. = steps/s at R ranks / at 1 rank; comm eff. = steps/s / the same R ranks' local step "
             "(no communication) run side by side",
             f"{'workload':9} {'path':17} {'ranks':>5} {'steps/s':>16} {'eff.':>6} {'comm eff.':>9} "
             f"{'allreduce ms/step':>18} {'bare Allreduce ms':>18} {'grad MB':>8}"]
    for ranks, res in sorted(results.items()):
        for name, entry in res["workloads"].items():
            for path in PATHS:
                e = entry[path]
                eff = comm_eff = ""
                if base is not None and ranks != 1:
                    eff = f"{e['steps_per_s'] / base['workloads'][name][path]['steps_per_s']:.0%}"
                local = entry["eager-local" if path.startswith("eager") else "local"]
                if path not in ("local", "eager-local"):
                    comm_eff = f"{e['steps_per_s'] / local['steps_per_s']:.0%}"
                speed = f"{e['steps_per_s']:.1f} ({e['best_steps_per_s']:.1f})"
                comm = f"{e['allreduce_ms_per_step']:.3f} ({e['allreduce_min_ms']:.3f})" \
                    if path not in ("local", "eager-local") else ""
                bare = f"{entry['bare_allreduce_ms']:.3f} ({entry['bare_allreduce_min_ms']:.3f})"
                lines.append(f"{name:9} {path:17} {ranks:>5} {speed:>16} {eff:>6} {comm_eff:>9} {comm:>18} "
                             f"{bare:>18} {e['grad_bytes'] / 1e6:>8.2f}")
            if ranks > 1:
                lines.append(f"{name:9} {'':17} {ranks:>5}   compiled-buffer's Allreduce after a barrier (no waiting "
                             f"for the other rank): {entry['in_step_allreduce_ms']:.3f} ms median, "
                             f"{entry['in_step_allreduce_min_ms']:.3f} ms best; "
                             f"{entry['in_step_allreduce_ms'] / entry['bare_allreduce_ms']:.2f}x the bare Allreduce")
    for ranks, res in sorted(results.items()):
        sweep = res.get("allreduce_sweep_ms")
        if sweep:
            lines.append(f"bare Allreduce at {ranks} ranks, ms median (best) by bytes: " + ", ".join(
                f"{int(b) / 1e6:g} MB {m:.3f} ({lo:.3f})" for b, (m, lo) in sweep.items()))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    p.add_argument("--ranks", default="1,2", help="rank counts to run (default 1,2)")
    p.add_argument("--workloads", default="W6,W4-step", help="comma-separated (default W6,W4-step)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.quick)
        return
    os.environ["BENCH_DISTRIBUTED_WORKLOADS"] = args.workloads  # read by the workers
    results = {int(r): run(int(r), args.quick) for r in args.ranks.split(",")}
    print(report(results))
    if 1 in results:
        from scaling_model import table  # benchmarks/scaling_model.py, beside this file
        print()
        print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
