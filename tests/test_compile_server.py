"""The compile server (gradc/codegen/compile_server.py): LLVM optimization and codegen in a worker process.

Its objects must be byte-identical to in-process MCJIT output (also for kernels calling BLAS and the
`gradc_parallel` pool), it takes over after a process's first `INPROCESS_COMPILES` compiles, it is replaced
every `RESTART_EVERY` compiles and whenever it died, any failure falls back to in-process compilation with
one RuntimeWarning (a bad kernel raises the in-process error), and the worker never outlives its parent.
Most tests swap in a fresh server with every compile routed to it (`server` fixture); the process-level
behaviour (settings from the environment, a killed parent) runs in subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from gradc.codegen import _compile_here, compile_lowered, compile_server, jit
from gradc.codegen.lower import lower
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, float32, float64
from gradc.ir.printer import print_function

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def server(monkeypatch):
    """A fresh compile server that gets every compile (restored afterwards); no disk cache."""
    fresh = compile_server.CompileServer()
    monkeypatch.setattr(compile_server, "SERVER", fresh)
    monkeypatch.setattr(compile_server, "INPROCESS_COMPILES", 0)
    monkeypatch.setattr(compile_server, "_failures_in_a_row", 0)
    monkeypatch.setattr(compile_server, "_disabled", None)
    monkeypatch.setenv("GRADC_CACHE", "0")
    yield fresh
    fresh.stop()


def compile_uncached(fn: Function):
    """compile_lowered directly: no in-memory kernel cache, so the same kernel compiles again."""
    return compile_lowered(fn.name, fn.param_types, fn.result_types, fn.name, print_function(fn),
                           lambda: lower(fn, fn.name))


def elementwise(i: int = 0):
    b = Builder()
    x = Value(TensorType((7,), float64), name="x")
    fn = Function(f"cs_elementwise_{i}", [x], b.ops, [b.tanh(b.add(b.mul(x, b.scalar(2.0, x)), b.scalar(i, x)))])
    args = [np.linspace(-1, 1, 7)]
    return fn, args, [np.tanh(2 * args[0] + i)], None


def blas_matmul(i: int = 0):
    b = Builder()
    x = Value(TensorType((16, 24), float32), name="x")
    w = Value(TensorType((24, 20), float32), name="w")  # m*n*k = 7680: over the BLAS threshold (4096)
    fn = Function(f"cs_matmul_{i}", [x, w], b.ops, [b.tanh(b.matmul(x, w))])
    rng = np.random.default_rng(i)
    args = [rng.standard_normal((16, 24)).astype(np.float32), rng.standard_normal((24, 20)).astype(np.float32)]
    return fn, args, [np.tanh(args[0].astype(np.float64) @ args[1])], ("scipy_", "gradc_mkl_")  # OpenBLAS or MKL


def threaded(i: int = 0):
    b = Builder()
    x = Value(TensorType((300_000,), float64), name="x")  # over SMALL_KERNEL_ELEMENTS: split over the pool
    fn = Function(f"cs_threaded_{i}", [x], b.ops, [b.exp(b.mul(x, b.scalar(0.5 + i, x)))])
    args = [np.random.default_rng(i).standard_normal(300_000)]
    return fn, args, [np.exp(args[0] * (0.5 + i))], "gradc_parallel"


def check(cf, args, want):
    for got, expected in zip(cf(*args), want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def no_warnings():
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("error")
    return context


@pytest.mark.parametrize("make", [elementwise, blas_matmul, threaded], ids=["elementwise", "blas", "threads"])
def test_server_code_is_byte_identical_to_in_process(server, monkeypatch, make):
    monkeypatch.setenv("GRADC_NUM_THREADS", "2")
    fn, args, want, external = make()
    served, compiled = compile_server.STATS["compiles"], jit.STATS["compiled"]
    remote = compile_uncached(fn)
    assert compile_server.STATS["compiles"] == served + 1 and jit.STATS["compiled"] == compiled + 1
    monkeypatch.setattr(compile_server, "INPROCESS_COMPILES", -1)
    local = compile_uncached(fn)
    assert compile_server.STATS["compiles"] == served + 1 and jit.STATS["compiled"] == compiled + 2
    assert remote.code.object_bytes == local.code.object_bytes
    if external:
        assert any(name.startswith(external) for name in remote.meta["externals"]), remote.meta["externals"]
    check(remote, args, want)
    for a, b in zip(remote(*args), local(*args)):
        np.testing.assert_array_equal(a, b)


def test_worker_killed_between_compiles_is_restarted_silently(server):
    fn, args, want, _ = elementwise(1)
    check(compile_uncached(fn), args, want)
    pid, starts = server.pid, compile_server.STATS["starts"]
    os.kill(pid, signal.SIGKILL)
    server._process.wait(timeout=10)
    context = no_warnings()
    try:
        fn, args, want, _ = elementwise(2)
        check(compile_uncached(fn), args, want)
    finally:
        context.__exit__(None, None, None)
    assert server.pid not in (None, pid) and compile_server.STATS["starts"] == starts + 1


class DiesMidRequest(compile_server.CompileServer):
    """The worker is killed after it got the request, before it can answer."""

    def _write(self, data: bytes) -> None:
        super()._write(data)
        self._process.kill()


def test_worker_dying_mid_request_falls_back_with_one_warning(server, monkeypatch):
    monkeypatch.setattr(compile_server, "SERVER", DiesMidRequest())
    failures, compiled = compile_server.STATS["failures"], jit.STATS["compiled"]
    for i in range(compile_server.MAX_FAILURES):
        fn, args, want, _ = blas_matmul(10 + i)
        with pytest.warns(RuntimeWarning) as record:
            cf = compile_uncached(fn)
        assert len(record) == 1 and "killed by SIGKILL" in str(record[0].message), [str(r.message) for r in record]
        check(cf, args, want)
    assert "from now on" in str(record[0].message)  # the last failure in a row turns the server off
    assert compile_server._disabled
    assert compile_server.STATS["failures"] == failures + compile_server.MAX_FAILURES
    context = no_warnings()
    try:  # off for the rest of the process: no further attempts, no warnings
        fn, args, want, _ = elementwise(13)
        check(compile_uncached(fn), args, want)
    finally:
        context.__exit__(None, None, None)
    assert jit.STATS["compiled"] == compiled + compile_server.MAX_FAILURES + 1
    assert compile_server.SERVER.pid is None


def test_bad_ir_raises_the_in_process_error_without_warning(server):
    bad = "define void @broken( {\n"
    with pytest.raises(Exception) as here:
        _compile_here(bad)
    failures = compile_server.STATS["failures"]
    context = no_warnings()
    try:
        with pytest.raises(type(here.value)) as there:
            compile_server.compile_ir(bad, _compile_here)
    finally:
        context.__exit__(None, None, None)
    assert str(there.value) == str(here.value)
    assert compile_server.STATS["failures"] == failures and server.pid is not None  # the worker is fine


def test_worker_that_cannot_start_falls_back_with_one_warning(server, monkeypatch):
    monkeypatch.setattr(sys, "executable", os.path.join(ROOT, "no-such-python"))
    fn, args, want, _ = elementwise(20)
    with pytest.warns(RuntimeWarning) as record:
        cf = compile_uncached(fn)
    assert len(record) == 1 and "could not start" in str(record[0].message)
    check(cf, args, want)


def test_worker_with_other_llvm_is_not_used(server, monkeypatch):
    monkeypatch.setattr(jit, "versions", lambda: {"llvmlite": "0.0.0", "llvm": "1.0.0"})
    fn, args, want, _ = elementwise(21)
    with pytest.warns(RuntimeWarning) as record:
        cf = compile_uncached(fn)
    assert len(record) == 1 and "would generate different code" in str(record[0].message)
    check(cf, args, want)


def gone(pid: int, seconds: float) -> bool:
    """The process has exited (absent, or a zombie nobody reaped) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_worker_replaced_every_restart_every_compiles(server):
    server.restart_every = 2
    pids = []
    for i in range(5):
        fn, args, want, _ = elementwise(30 + i)
        check(compile_uncached(fn), args, want)
        pids.append(server.pid)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert gone(pids[0], 5) and gone(pids[2], 5)


def test_worker_exits_at_eof(server):
    fn, args, want, _ = elementwise(40)
    check(compile_uncached(fn), args, want)
    process = server._process
    process.stdin.close()
    assert process.wait(timeout=10) == 0


def test_eight_threads_share_one_worker(server):
    starts, served = compile_server.STATS["starts"], compile_server.STATS["compiles"]
    errors = []

    def work(t: int) -> None:
        try:
            for i in range(3):
                fn, args, want, _ = (blas_matmul if i == 1 else elementwise)(100 + 10 * t + i)
                check(compile_uncached(fn), args, want)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert compile_server.STATS["compiles"] == served + 24 and compile_server.STATS["starts"] == starts + 1


def test_forked_child_starts_its_own_worker(server):
    fn, args, want, _ = elementwise(50)
    check(compile_uncached(fn), args, want)
    parent_worker = server.pid
    pid = os.fork()
    if pid == 0:  # child: sharing the parent's pipes would interleave both processes' messages
        signal.alarm(60)
        try:
            fn, args, want, _ = blas_matmul(51)
            check(compile_uncached(fn), args, want)
            ok = compile_server.SERVER.pid not in (None, parent_worker)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    fn, args, want, _ = elementwise(52)
    check(compile_uncached(fn), args, want)
    assert server.pid == parent_worker  # the parent's worker was not disturbed


PARENT = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_compile_server as t
from gradc.codegen import compile_server, jit
pids = []
for i in range(5):
    fn, args, want, _ = t.elementwise(i)
    t.check(t.compile_uncached(fn), args, want)
    pids.append(compile_server.SERVER.pid)
with open(f"/proc/{pids[-1]}/maps") as f:
    maps = f.read()
print(json.dumps({"pids": pids, "compiled": jit.STATS["compiled"], "server": compile_server.STATS,
                  "numpy_in_worker": "numpy" in maps, "llvmlite_in_worker": "llvmlite" in maps}), flush=True)
if sys.argv[2] == "wait":
    time.sleep(120)
"""


def parent(mode: str, **env) -> subprocess.Popen:
    env = dict(os.environ, GRADC_CACHE="0", **env)
    env.pop("GRADC_COMPILE_SERVER_RESTART", None)
    return subprocess.Popen([sys.executable, "-c", PARENT, os.path.dirname(os.path.abspath(__file__)), mode],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_first_compiles_stay_in_process_then_the_worker_takes_over():
    proc = parent("exit", GRADC_INPROCESS_COMPILES="3")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["pids"][:3] == [None] * 3 and None not in out["pids"][3:]
    assert out["compiled"] == 5 and out["server"]["compiles"] == 2 and out["server"]["starts"] == 1
    assert out["llvmlite_in_worker"] and not out["numpy_in_worker"]  # the worker imports llvmlite, not gradc
    assert gone(out["pids"][-1], 5)


def test_worker_exits_when_its_parent_is_killed():
    proc = parent("wait", GRADC_INPROCESS_COMPILES="0")
    try:
        out = json.loads(proc.stdout.readline())
        worker = out["pids"][-1]
        assert out["server"]["compiles"] == 5 and not gone(worker, 0.2)
    finally:
        proc.kill()  # SIGKILL: no atexit handler runs; the worker sees EOF on its stdin
        proc.communicate(timeout=30)
    assert gone(worker, 5)
