"""Faults of the on-disk kernel cache: every one recompiles (or runs uncached with a warning), never crashes,
never loads wrong code or wrong metadata.

Beyond test_jit_cache.py (damaged payload, half truncation, garbage, wrong key, other CPU features in
process, a cache path under a file): truncation at every header length, a header whose metadata was
altered (it is outside the payload checksum), metadata naming symbols that are not in the object, a
directory squatting on the entry path, a full disk during the write, other CPU features across processes,
several PROCESSES writing the same entry at once, and processes reloading entries while another one keeps
truncating and deleting them.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import uuid
import warnings

import numpy as np
import pytest

from gradc.codegen import KERNELS, cache, compile_function, jit
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, float32

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GRADC_CACHE", raising=False)
    cache.reset()
    yield
    cache.reset()


def kernel(name: str, n: int = 33) -> Function:
    """out = tanh(x) * 2 + sum(x): an elementwise kernel and a reduction, arena-free."""
    b = Builder()
    x = Value(TensorType((n,), float32), name="x")
    total = b.broadcast_to(b.reshape_to(b.reduce_sum(x, axes=(0,)), (1,)), (n,))
    out = b.add(b.mul(b.tanh(x), b.scalar(2.0, x)), total)
    return Function(name, [x], b.ops, [out])


def fresh_compile(fn: Function):
    """compile_function past the in-memory cache, so the disk cache is consulted."""
    KERNELS.clear()
    return compile_function(fn)


def check(cf, n: int = 33) -> None:
    x = np.linspace(-2, 2, n, dtype=np.float32)
    (out,) = cf(x)
    xd = x.astype(np.float64)
    np.testing.assert_allclose(out, np.tanh(xd) * 2 + xd.sum(), rtol=1e-5, atol=1e-5)


def entries(tmp_path):
    d = tmp_path / "cache"
    return sorted(d.glob("*" + cache.SUFFIX)) if d.exists() else []


def split(blob: bytes) -> tuple[dict, bytes]:
    start = len(cache.MAGIC) + cache._HEADER_LEN.size
    (hlen,) = cache._HEADER_LEN.unpack_from(blob, len(cache.MAGIC))
    return json.loads(blob[start:start + hlen]), blob[start + hlen:]


def join(header: dict, payload: bytes) -> bytes:
    h = json.dumps(header).encode()
    return cache.MAGIC + cache._HEADER_LEN.pack(len(h)) + h + payload


def stats_delta(before: dict) -> dict:
    return {k: jit.STATS[k] - before[k] for k in ("compiled", "loaded")}


# ------------------------------------------------------------------------------------------- damaged entries

def test_truncation_at_every_header_length_and_through_the_payload(tmp_path):
    check(fresh_compile(kernel(f"trunc_{uuid.uuid4().hex[:6]}")))
    (entry,) = entries(tmp_path)
    blob = entry.read_bytes()
    header, payload = split(blob)
    key = entry.stem
    assert cache.load(key) is not None
    cuts = list(range(0, len(blob) - len(payload) + 1)) + list(range(len(blob) - len(payload), len(blob), 97))
    for cut in cuts:
        entry.write_bytes(blob[:cut])
        assert cache.load(key) is None, f"an entry cut at {cut} of {len(blob)} bytes was accepted"
    entry.write_bytes(blob + b"\0")  # one byte too many is as wrong as one too few
    assert cache.load(key) is None


@pytest.mark.parametrize("change", ["arena_bytes", "arena_mode", "aligns", "entry", "drop_entry", "meta_not_a_dict"])
def test_altered_metadata_is_never_loaded(tmp_path, change):
    """The header's metadata steers the call path (arena size, symbols): altered, it must not be used."""
    fn = kernel(f"meta_{change}_{uuid.uuid4().hex[:6]}")
    check(fresh_compile(fn))
    (entry,) = entries(tmp_path)
    header, payload = split(entry.read_bytes())
    meta = header["meta"]
    if change == "arena_bytes":
        meta["arena_bytes"] = int(meta["arena_bytes"]) + 4096
    elif change == "arena_mode":
        meta["arena_mode"] = "tuple" if meta["arena_mode"] != "tuple" else "none"
    elif change == "aligns":
        meta["aligns"] = [1] * len(meta["aligns"])
    elif change == "entry":
        meta["entry"] = "no_such_symbol_entry"
    elif change == "drop_entry":
        del meta["entry"]
    else:
        header["meta"] = ["not", "a", "dict"]
    entry.write_bytes(join(header, payload))
    before = dict(jit.STATS)
    cf = fresh_compile(fn)
    assert stats_delta(before) == {"compiled": 1, "loaded": 0}
    check(cf)
    assert cache.load(entry.stem) is not None  # rewritten, valid again


def test_a_directory_on_the_entry_path_runs_uncached_with_a_warning(tmp_path):
    fn = kernel(f"dir_{uuid.uuid4().hex[:6]}")
    check(fresh_compile(fn))
    (entry,) = entries(tmp_path)
    entry.unlink()
    entry.mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cf = fresh_compile(fn)
    check(cf)
    assert [w for w in caught if issubclass(w.category, cache.CacheWarning)]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_disk_full_during_the_write_runs_uncached_with_one_warning(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            check(fresh_compile(kernel(f"full_{i}_{uuid.uuid4().hex[:6]}")))
    found = [w for w in caught if issubclass(w.category, cache.CacheWarning)]
    assert len(found) == 1 and "No space left on device" in str(found[0].message)
    assert not list((tmp_path / "cache").iterdir())  # no entries, no temporary files left behind
    assert cache.cache_dir() is None  # off for the rest of the process


# ------------------------------------------------------------------------------------------- processes

PROCESS = r"""
import json, os, sys, time
import numpy as np
sys.path.insert(0, os.environ["GRADC_TEST_DIR"])
from test_cache_faults import check, kernel
from gradc.codegen import KERNELS, cache, compile_function, jit

mode, name = sys.argv[1], sys.argv[2]
if mode == "features":  # pretend to be a CPU with other features
    real = jit.host_cpu()
    jit.host_cpu = lambda: (real[0], real[1] + ",+fake-feature")
go = os.environ.get("GRADC_TEST_GO")
while go and not os.path.exists(go):  # start together
    time.sleep(0.001)
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
for r in range(rounds):
    for k in (name, name + "_b") if rounds > 1 else (name,):
        KERNELS.clear()
        check(compile_function(kernel(k)))
print(json.dumps(jit.STATS))
"""


def spawn(tmp_path, *args: str, go: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path / "cache"), GRADC_TEST_DIR=os.path.dirname(__file__),
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    if go:
        env["GRADC_TEST_GO"] = go
    return subprocess.Popen([sys.executable, "-c", PROCESS, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_processes_writing_the_same_entry_at_once(tmp_path):
    name = f"race_{uuid.uuid4().hex[:6]}"
    go = tmp_path / "go"
    procs = [spawn(tmp_path, "plain", name, go=str(go)) for _ in range(4)]
    go.touch()
    runs = [finish(p) for p in procs]
    assert all(r["compiled"] + r["loaded"] == 1 for r in runs)
    (entry,) = entries(tmp_path)  # one entry, no temporary files left behind
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]
    assert cache.load(entry.stem) is not None
    assert finish(spawn(tmp_path, "plain", name)) == {"compiled": 0, "loaded": 1}


def test_entries_for_other_cpu_features_are_not_shared_across_processes(tmp_path):
    name = f"cpu_{uuid.uuid4().hex[:6]}"
    assert finish(spawn(tmp_path, "features", name)) == {"compiled": 1, "loaded": 0}
    assert finish(spawn(tmp_path, "plain", name)) == {"compiled": 1, "loaded": 0}
    assert finish(spawn(tmp_path, "features", name)) == {"compiled": 0, "loaded": 1}
    assert len(entries(tmp_path)) == 2


CHAOS = r"""
import os, random, sys, time
d, stop = sys.argv[1], sys.argv[2]
rng = random.Random(0)
while not os.path.exists(stop):
    for e in os.scandir(d) if os.path.isdir(d) else ():
        if e.name.endswith(".gco") and not e.name.startswith("."):
            try:
                if rng.random() < 0.5:
                    os.unlink(e.path)
                else:
                    with open(e.path, "r+b") as f:
                        f.truncate(rng.randrange(1, max(2, os.path.getsize(e.path))))
            except OSError:
                pass
    time.sleep(0.002)
"""


def test_processes_reload_entries_while_another_truncates_and_deletes_them(tmp_path):
    """Every compile goes to disk (in-memory cache cleared); entries vanish or get cut at random meanwhile."""
    name = f"chaos_{uuid.uuid4().hex[:6]}"
    (tmp_path / "cache").mkdir()
    stop = tmp_path / "stop"
    chaos = subprocess.Popen([sys.executable, "-c", CHAOS, str(tmp_path / "cache"), str(stop)])
    try:
        runs = [finish(p) for p in [spawn(tmp_path, "plain", name, "15") for _ in range(3)]]
    finally:
        stop.touch()
        chaos.wait(timeout=60)
    for r in runs:
        assert r["compiled"] + r["loaded"] == 30  # every round compiled or loaded, all results checked
    assert sum(r["compiled"] for r in runs) > 2  # the chaos did destroy entries that were then rebuilt
