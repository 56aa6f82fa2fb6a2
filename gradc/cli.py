"""The `gradc` command: demo (the autograd tutorial, eager and compiled), bench (gradc beside other engines)
and ir (any compilation stage of a user's own function).

Usage errors (a bad FILE.py:FUNCTION, shape spec, workload or engine name) print one line and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from gradc.ir.core import DTYPES


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


class UsageError(Exception):
    """A bad command line: reported in one line with exit code 2, without a traceback."""


# ----------------------------------------------------------------------------- gradc ir

STAGES = ("ir", "ad", "fused", "llvm", "asm", "mlir")
NATIVE_STAGES = ("fused", "llvm", "asm")
DTYPE_NAMES = {**{d.short: d.name for d in DTYPES}, **{d.name: d.name for d in DTYPES}}  # f32, i8, u8, ...
ARG_SPEC = re.compile(r"^\s*([a-z0-9]+)\s*\[([^\]]*)\]\s*$")


def parse_arg_spec(spec: str) -> np.ndarray:
    """An array of zeros for a spec such as "f32[64,784]", "i64[64]" or "f64[]" (a scalar)."""
    m = ARG_SPEC.match(spec)
    if not m or m.group(1) not in DTYPE_NAMES:
        raise UsageError(f"bad --arg {spec!r}: expected DTYPE[DIMS] such as f32[64,784], i64[64] or f32[] "
                         f"(dtypes: {', '.join(d.short for d in DTYPES)})")
    dims = [d.strip() for d in m.group(2).split(",")] if m.group(2).strip() else []
    if any(not d.isdigit() for d in dims):
        raise UsageError(f"bad --arg {spec!r}: dimensions must be non-negative integers separated by commas")
    return np.zeros(tuple(int(d) for d in dims), dtype=np.dtype(DTYPE_NAMES[m.group(1)]))


def load_function(spec: str) -> Any:
    """The object NAME defined in FILE.py, from "FILE.py:NAME"; UsageError with the reason otherwise."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise UsageError(f"expected FILE.py:FUNCTION, got {spec!r}")
    if not os.path.isfile(path):
        raise UsageError(f"no such file: {path}")
    module_name = "_gradc_user_" + re.sub(r"\W", "_", os.path.abspath(path))
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:
        raise UsageError(f"{path} failed to import: {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.pop(0)
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_"))
        raise UsageError(f"{path} has no {name!r}" + (f" (functions there: {', '.join(found)})" if found else ""))
    return getattr(module, name)


def _check_arity(fn: Callable, name: str, count: int) -> None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    mandatory = [p for p in required if p.default is p.empty]
    if not len(mandatory) <= count <= len(required):
        raise UsageError(f"{name} takes {len(required)} positional argument(s), got {count} --arg")


def ir_text(spec: str, arg_specs: Sequence[str], grad: str | None, stage: str) -> str:
    """The text of one stage for the function at FILE.py:FUNCTION, traced on zero arrays of the given types."""
    from gradc import api
    from gradc.mlir import to_mlir

    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    arrays = [parse_arg_spec(a) for a in arg_specs]
    fn = load_function(spec)
    if not callable(fn):
        raise UsageError(f"{spec} is a {type(fn).__name__}, not a function")
    _check_arity(fn, spec.rpartition(":")[2], len(arrays))
    argnums = None
    if grad is not None:
        try:
            argnums = tuple(int(a) for a in grad.split(","))
        except ValueError:
            raise UsageError(f"bad --grad {grad!r}: expected argument positions such as 0 or 0,1") from None
    if stage == "ad" and argnums is None:
        raise UsageError("--stage ad shows the joint forward + adjoint function: give --grad")
    if stage in NATIVE_STAGES and not api.native_available():
        raise RuntimeError(f"stage {stage!r} needs gradc's native compiler (gradc.codegen), which is not "
                           f"available here; stages ir, ad and mlir work without it")
    transformed = api.compile(fn) if argnums is None else api.value_and_grad(fn, argnums=argnums)
    previous = api.get_backend()
    api.set_backend("native" if stage in NATIVE_STAGES else "interp")
    try:
        lowered = transformed.lower(*arrays)
    finally:
        api.set_backend(previous)
    if stage == "mlir":
        return to_mlir(lowered.joint if argnums is not None else lowered.traced)
    return lowered.as_text(stage)


# ----------------------------------------------------------------------------- gradc bench

def bench(args: argparse.Namespace, out: Any = sys.stdout, progress: Any = sys.stderr) -> int:
    """Run the benchmark; print the table; write --json / --plot; exit 1 if any engine disagreed or failed."""
    from gradc.bench import report, run, workloads

    if args.model:
        return model_bench(args, out, progress)
    if args.ranks is not None:
        return ranks_bench(args, out, progress)
    try:
        workloads.select(args.workloads)
        run.resolve_engines(args.engines, args.quick)
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'gradc[plot]' (or pip install matplotlib)")
    doc = run.run(args.workloads, args.engines, quick=args.quick, threads=args.threads, progress=progress)
    out.write(report.format_table(doc))
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    if args.plot:
        report.plot(doc, args.plot)
    if report.any_failed(doc):
        print("gradc bench: some engines disagreed with the numpy reference or failed (see the table)",
              file=sys.stderr)
        return 1
    return 0


def ranks_bench(args: argparse.Namespace, out: Any = sys.stdout, progress: Any = sys.stderr) -> int:
    """`gradc bench --ranks N`: W6 and W7 data-parallel on 1 and N MPI ranks (gradc.bench.distributed)."""
    from gradc import extras
    from gradc.bench import distributed, scaling

    if args.ranks < 2:
        raise UsageError("--ranks must be at least 2 (1 rank always runs as the weak-scaling baseline)")
    names = [w.strip() for w in (args.workloads or ",".join(distributed.WORKLOADS)).split(",") if w.strip()]
    unknown = [w for w in names if w not in distributed.WORKLOADS]
    if unknown:
        raise UsageError(f"--ranks runs the workloads {', '.join(distributed.WORKLOADS)}, not {', '.join(unknown)}")
    extras.require("mpi4py", "--ranks", prog="gradc bench")
    if distributed.mpiexec() is None:
        print('gradc bench: error: --ranks needs mpiexec (an MPI library such as mpich): '
              'pip install -e ".[distributed]"', file=sys.stderr)
        return 2
    doc = distributed.run([1, args.ranks], names, quick=args.quick, progress=progress)
    out.write(distributed.format_report(doc) + "\n\n" + scaling.table(doc) + "\n")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    return 0


def model_bench(args: argparse.Namespace, out: Any = None, progress: Any = None) -> int:
    """`gradc bench --model FILE.py:NAME` (and `gradc check`): a user's own PyTorch model file."""
    out = out or sys.stdout
    progress = progress or sys.stderr
    from gradc.bench.usermodel import loader
    from gradc.bench.usermodel import run as model_run

    if args.threads < 1:
        raise UsageError("--threads must be at least 1")
    if getattr(args, "plot", None) and importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'gradc[plot]' (or pip install matplotlib)")
    try:
        spec = model_run.spec_from_args(args)
        if args.command == "check":
            return model_run.check_command(spec, out)
        model_run.resolve_engines(args.engines, args.quick)
        return model_run.bench_command(args, out, progress)
    except loader.ModelSpecError as exc:
        raise UsageError(str(exc)) from None


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", default=[], metavar="DTYPE[DIMS]",
                   help="with --model: a random model input, e.g. f32[64,1,28,28] (repeat for several)")
    p.add_argument("--target", default=None, metavar="DTYPE[DIMS][:N]",
                   help="with --model: the random target, e.g. i64[64]:10 (:10 = class count) or f32[64,10]")
    p.add_argument("--batch", type=int, default=None, help="with --model: batch size (replaces leading dims)")
    p.add_argument("--loss", default="cross_entropy", help="cross_entropy, nll, mse or FILE.py:FUNCTION")
    p.add_argument("--optimizer", default="adam", choices=("sgd", "adam", "adamw"))
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the random batch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gradc", description="Compile models into native gradient functions.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the autograd tutorial eagerly and compiled, print IR and timings")

    p = sub.add_parser("bench", help="time the workloads W1-W7 on gradc and the installed peer engines")
    p.add_argument("--workloads", default=None,
                   help="comma list, e.g. W1,W3; W6, W7 are whole Adam training steps, W7G is W7's "
                        "value_and_grad (default: all)")
    p.add_argument("--engines", default=None,
                   help="comma list of gradc-native, gradc-interp, numpy, torch, torch-compile, jax, autograd "
                        "or FILE.py:CLASS (default: all installed; --quick leaves out torch-compile)")
    p.add_argument("--quick", action="store_true", help="short timing budgets: about a minute in all")
    p.add_argument("--threads", type=int, default=2, help="thread limit for every engine (default 2)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--plot", metavar="PATH", help="also write a PNG bar chart (needs matplotlib)")
    p.add_argument("--ranks", type=int, default=None, metavar="N",
                   help="data-parallel weak scaling instead: W6 and W7 on 1 and N MPI ranks of 1 thread "
                        "(needs the distributed extra: mpi4py, mpich)")
    p.add_argument("--model", default=None, metavar="FILE.py:NAME",
                   help="benchmark your own PyTorch model file (an nn.Module subclass or a factory) on torch "
                        "eager, torch.compile, gradc eager, gradc compile_step and gradc's interpreter")
    _model_options(p)

    p = sub.add_parser("check", help="which torch names a model file uses that gradc cannot run yet")
    p.add_argument("model", metavar="FILE.py:NAME")
    p.add_argument("--threads", type=int, default=2)
    _model_options(p)

    p = sub.add_parser("ir", help="print a compilation stage of FILE.py:FUNCTION")
    p.add_argument("target", metavar="FILE.py:FUNCTION")
    p.add_argument("--arg", action="append", default=[], metavar="DTYPE[DIMS]",
                   help="one per argument, e.g. f32[64,784] or i64[64]; arrays of zeros are traced")
    p.add_argument("--grad", default=None, metavar="0,1", help="differentiate wrt these arguments")
    p.add_argument("--stage", default="ir", choices=STAGES)

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return demo()
        if args.command == "bench":
            return bench(args)
        if args.command == "check":
            return model_bench(args)
        if args.command == "ir":
            sys.stdout.write(ir_text(args.target, args.arg, args.grad, args.stage))
            return 0
    except UsageError as exc:
        print(f"gradc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        print(f"gradc {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
