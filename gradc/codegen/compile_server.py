"""Compile server: LLVM optimization and object emission in a helper process that is restarted periodically.

Why it exists: llvmlite 0.50 leaks in every O3 run. `LLVMPY_CreatePassBuilder` allocates a
`PassInstrumentationCallbacks` that is never freed, and each pipeline run registers its instrumentation
callbacks into it: measured ~60-96 KB per compiled kernel, ~470 MB for 5,000 distinct kernels in one
process (gradc's own bookkeeping for the same 5,000 kernels: 2.5 MB). gradc cannot free it, and sharing one
PassBuilder across runs is a use-after-free. So after the first `INPROCESS_COMPILES` compiles of a process
(kept in-process: a fresh process's first call must not wait for a worker to start), each kernel's LLVM IR
is sent to a worker process that parses, optimizes and emits a relocatable object; the parent loads it with
`jit.load_object` as it loads a disk-cache entry. The worker is replaced every `RESTART_EVERY` compiles, so
the leak is bounded by what one worker accumulates (~25 MB) and is returned to the OS at each restart.

- Same code as in-process: the worker runs gradc's own `jit.py` (loaded by file path, so it imports only
  llvmlite: ~0.2 s to start, no numpy or gradc), gets the parent's `OPT_LEVEL`/`PIPELINE` with each request
  and must report the parent's llvmlite/LLVM versions and host CPU/features before it is used. Its object
  is byte-identical to the one MCJIT generates in-process (tests/test_compile_server.py), so disk-cache keys
  and entries do not depend on where a kernel was compiled.
- Started with `subprocess.Popen` (never a bare fork: the parent has LLVM state and threads). Protocol on
  the worker's stdin/stdout: length-prefixed messages (kind byte + 8-byte length + payload); the worker's
  fd 1 is pointed at stderr so a stray print cannot corrupt it. The worker exits at EOF on stdin, i.e. when
  the parent closes the pipe or dies, and also when it is orphaned (a forked child may still hold the pipe).
- One request at a time (a lock); other threads keep lowering meanwhile. A worker found dead is restarted
  silently. If the worker cannot be used (does not start, dies or times out mid-request, different llvmlite)
  the kernel is compiled in-process with one `RuntimeWarning` naming the reason; after `MAX_FAILURES`
  failures in a row the process stops using the server. If the worker's LLVM rejects a kernel, the kernel is
  compiled in-process, which raises the real error (or, if it compiles, warns).

Settings (read at import): `GRADC_INPROCESS_COMPILES` (default 64; 0: every compile uses the server;
negative: never use it), `GRADC_COMPILE_SERVER_RESTART` (compiles per worker, default 256).

Run as a script (`python -P compile_server.py`) this module is the worker: it must import only the stdlib
at module level.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from gradc.codegen.jit import NativeCode


def _setting(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, str(default)))
    except ValueError:
        return default


INPROCESS_COMPILES = _setting("GRADC_INPROCESS_COMPILES", 64)
RESTART_EVERY = max(1, _setting("GRADC_COMPILE_SERVER_RESTART", 256))
MAX_FAILURES = 3  # failures in a row before the process stops trying the server
REPLY_TIMEOUT_S = 600.0  # only against a hung worker: far above any kernel's compile time on a loaded machine

# counters for tests and benchmarks: compiles served, workers started, failures (each one warned)
STATS = {"compiles": 0, "starts": 0, "failures": 0, "seconds": 0.0}

_MESSAGE = struct.Struct("<BQ")  # kind, payload length
COMPILE, HELLO, OBJECT, ERROR = 1, 2, 3, 4
_JIT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jit.py")


class CompileServerError(RuntimeError):
    """The worker could not be used (start, crash, timeout, protocol); the kernel itself may be fine."""


class _WorkerGone(CompileServerError):
    """EOF from the worker: it exited or was killed."""


class WorkerCompileError(RuntimeError):
    """The worker's LLVM raised on this kernel's IR (the message is the worker's exception)."""


def _close_pipes(process: subprocess.Popen) -> None:
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass


def _frame(kind: int, payload: bytes) -> bytes:
    return _MESSAGE.pack(kind, len(payload)) + payload


class CompileServer:
    """One worker process at a time; `compile` sends IR text and returns the optimized object's bytes."""

    def __init__(self, restart_every: int | None = None):
        self.restart_every = restart_every  # None: the module's RESTART_EVERY (read at each compile)
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._served = 0  # requests answered by the current worker
        self._hello_checked = False

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None before the first server compile or after a failure)."""
        process = self._process
        return process.pid if process is not None else None

    def compile(self, ir_text: str, settings: dict) -> bytes:
        """Object bytes for `ir_text`, optimized with `settings` (`opt`, `pipeline`) in the worker."""
        limit = self.restart_every if self.restart_every is not None else RESTART_EVERY
        payload = json.dumps(settings).encode() + b"\n" + ir_text.encode()
        with self._lock:
            if self._process is None or self._process.poll() is not None or self._served >= limit:
                self._stop()
                try:
                    self._start()
                except OSError as error:
                    raise CompileServerError(f"the compile server could not start: {error}") from error
            try:
                self._write(_frame(COMPILE, payload))
                if not self._hello_checked:
                    self._check_hello(*self._read())
                kind, body = self._read()
            except Exception as error:  # broken pipe, EOF, timeout, a garbled or foreign reply
                reason = self._reason(error)
                self._stop(kill=True)
                raise CompileServerError(reason) from error
            except BaseException:  # the protocol state is unknown (e.g. Ctrl-C mid-reply): never reuse this worker
                self._stop(kill=True)
                raise
            self._served += 1
        if kind == ERROR:
            raise WorkerCompileError(body.decode(errors="replace"))
        if kind != OBJECT:
            raise CompileServerError(f"unexpected reply kind {kind} from the compile server")
        return body

    def stop(self) -> None:
        """End the worker (it exits at EOF on its stdin); the next compile starts a new one."""
        with self._lock:
            self._stop()

    def _start(self) -> None:
        # -P: the script's directory (gradc/codegen, with its math.py) must not shadow the stdlib
        self._process = subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__), _JIT_PATH],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._served, self._hello_checked = 0, False
        STATS["starts"] += 1

    def _stop(self, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        _close_pipes(process)
        try:
            process.wait(timeout=10)  # EOF: the worker leaves at once (os._exit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        fd = self._process.stdin.fileno()
        while view:
            view = view[os.write(fd, view):]

    def _read_exact(self, size: int, deadline: float) -> bytes:
        fd = self._process.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        chunks = []
        while size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CompileServerError(f"no reply from the compile server within {REPLY_TIMEOUT_S:.0f} s")
            if not poller.poll(remaining * 1000):
                continue
            chunk = os.read(fd, min(size, 1 << 20))
            if not chunk:
                raise _WorkerGone("it closed its output")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _read(self) -> tuple[int, bytes]:
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        kind, size = _MESSAGE.unpack(self._read_exact(_MESSAGE.size, deadline))
        return kind, self._read_exact(size, deadline)

    def _check_hello(self, kind: int, body: bytes) -> None:
        from gradc.codegen import jit
        if kind != HELLO:
            raise CompileServerError(f"the compile server did not introduce itself (message kind {kind})")
        worker = json.loads(body)
        ours = jit.code_identity()
        different = sorted(k for k in ours if worker.get(k) != ours[k])
        if different:
            raise CompileServerError("the compile server would generate different code: "
                                     + ", ".join(f"{k} {worker.get(k)!r} there, {ours[k]!r} here" for k in different))
        self._hello_checked = True

    def _reason(self, error: BaseException) -> str:
        """Why the worker failed, with its exit status when it is gone (EOF or a broken pipe)."""
        process = self._process
        pid = process.pid if process is not None else "?"
        if process is None or not isinstance(error, (OSError, _WorkerGone)):
            return f"compile server worker (pid {pid}): {error}"
        try:
            status = process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return f"compile server worker (pid {pid}) stopped answering: {error}"
        if status < 0:
            try:
                return f"compile server worker (pid {pid}) was killed by {signal.Signals(-status).name}"
            except ValueError:
                return f"compile server worker (pid {pid}) was killed by signal {-status}"
        return f"compile server worker (pid {pid}) exited with code {status}"

    def _abandon_after_fork(self) -> None:
        """In a forked child: never talk to the parent's worker (the pipes are shared)."""
        self._lock = threading.Lock()  # another thread may have held it at the fork
        process, self._process = self._process, None
        if process is not None:
            _close_pipes(process)  # unbuffered: closing only drops the child's copies
            _not_ours.append(process)  # kept: its __del__ would wait for a process that is not this one's child


SERVER = CompileServer()
_state_lock = threading.Lock()
_inprocess_done = 0
_failures_in_a_row = 0
_disabled: str | None = None  # why the server is off for the rest of the process
_not_ours: list[subprocess.Popen] = []
_SUPPORTED = hasattr(select, "poll") and hasattr(os, "register_at_fork")  # POSIX; elsewhere all in-process


def _server_turn() -> bool:
    """Whether this compile goes to the server (after the first INPROCESS_COMPILES of the process)."""
    global _inprocess_done
    if INPROCESS_COMPILES < 0 or _disabled or not _SUPPORTED:
        return False
    with _state_lock:
        if _inprocess_done < INPROCESS_COMPILES:
            _inprocess_done += 1
            return False
    return True


def _failed(reason: str) -> None:
    global _failures_in_a_row, _disabled
    with _state_lock:
        STATS["failures"] += 1
        _failures_in_a_row += 1
        if _failures_in_a_row >= MAX_FAILURES:
            _disabled = reason
    tail = ("; compiling in this process from now on" if _disabled
            else "; this kernel is compiled in this process")
    warnings.warn(f"gradc: {reason}{tail}", RuntimeWarning, stacklevel=3)


def compile_ir(ir_text: str, compile_here: Callable[[str], NativeCode]) -> NativeCode:
    """Native code for a kernel's LLVM IR text (with its runtime entry): in the server, else `compile_here`.

    `compile_here(ir_text)` is the in-process path (parse, O3, MCJIT); it also raises the real error when the
    worker's LLVM rejected the IR. `jit.STATS["compiled"]` counts the kernel either way.
    """
    global _failures_in_a_row
    if not _server_turn():
        return compile_here(ir_text)
    from gradc.codegen import jit
    t0 = time.perf_counter()
    try:
        obj = SERVER.compile(ir_text, {"opt": jit.OPT_LEVEL, "pipeline": dict(jit.PIPELINE)})
    except WorkerCompileError as error:
        code = compile_here(ir_text)  # bad IR raises here, exactly as without the server
        _failed(f"the compile server failed on a kernel that compiles in-process ({error})")
        return code
    except CompileServerError as error:
        _failed(str(error))
        return compile_here(ir_text)
    code = jit.load_object(obj, compiled=True)
    with _state_lock:
        _failures_in_a_row = 0
        STATS["compiles"] += 1
        STATS["seconds"] += time.perf_counter() - t0
    return code


def _after_fork_in_child() -> None:
    global _state_lock
    _state_lock = threading.Lock()
    SERVER._abandon_after_fork()


def _stop_at_exit() -> None:
    if SERVER._lock.acquire(blocking=False):  # a compile still running in a daemon thread keeps its worker
        try:
            SERVER._stop()
        finally:
            SERVER._lock.release()


def _serve(jit_path: str) -> None:
    """The worker: answer compile requests on stdin until EOF."""
    import importlib.util

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol
    parent = os.getppid()

    def exit_when_orphaned() -> None:  # EOF covers a dying parent unless a forked child still holds the pipe
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=exit_when_orphaned, daemon=True).start()
    spec = importlib.util.spec_from_file_location("gradc_compile_server_jit", jit_path)
    jit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jit)

    def reply(kind: int, payload: bytes) -> None:
        replies.write(_frame(kind, payload))
        replies.flush()

    reply(HELLO, json.dumps({**jit.code_identity(), "pid": os.getpid()}).encode())
    requests = sys.stdin.buffer
    while True:
        header = requests.read(_MESSAGE.size)
        if len(header) < _MESSAGE.size:
            os._exit(0)  # EOF: the parent is done (skipping LLVM's teardown: nothing to flush)
        kind, size = _MESSAGE.unpack(header)
        payload = requests.read(size)
        if kind != COMPILE or len(payload) < size:
            os._exit(2)
        settings_line, _, ir_text = payload.partition(b"\n")
        try:
            settings = json.loads(settings_line)
            jit.OPT_LEVEL, jit.PIPELINE = settings["opt"], settings["pipeline"]
            obj = jit.object_code(jit.optimize(jit.parse(ir_text.decode())))
        except Exception as error:
            reply(ERROR, f"{type(error).__name__}: {error}".encode())
        else:
            reply(OBJECT, obj)


if __name__ == "__main__":
    _serve(sys.argv[1])
elif _SUPPORTED:
    os.register_at_fork(after_in_child=_after_fork_in_child)
    atexit.register(_stop_at_exit)
