"""Regressions: the on-disk cache trusted the header's metadata, which no checksum covered.

1. A header altered so that it still parsed (e.g. another arena size) was loaded and steered the call
   path with wrong numbers. Fixed in gradc/codegen/cache.py: the metadata carries its own sha256.
2. Metadata that named symbols missing from the object (or no entry symbol) crashed compile_function with
   LookupError/KeyError instead of recompiling. Fixed in gradc/codegen/__init__.py: a disk hit resolves
   its symbols inside the recompile-on-failure guard.
"""

import json

import numpy as np
import pytest

from gradc.codegen import KERNELS, cache, compile_function, jit
from gradc.ir.builder import Builder
from gradc.ir.core import Function, TensorType, Value, float32


def kernel(name):
    b = Builder()
    x = Value(TensorType((9,), float32), name="x")
    return Function(name, [x], b.ops, [b.mul(x, b.scalar(3.0, x))])


def rewrite_meta(path, edit):
    blob = path.read_bytes()
    start = len(cache.MAGIC) + cache._HEADER_LEN.size
    (hlen,) = cache._HEADER_LEN.unpack_from(blob, len(cache.MAGIC))
    header = json.loads(blob[start:start + hlen])
    edit(header["meta"])
    h = json.dumps(header).encode()
    path.write_bytes(cache.MAGIC + cache._HEADER_LEN.pack(len(h)) + h + blob[start + hlen:])


@pytest.mark.parametrize("edit", [
    lambda m: m.update(arena_bytes=m["arena_bytes"] + 1 << 20),  # 1: parses, wrong numbers
    lambda m: m.update(entry="missing_entry"),  # 2: a symbol the object does not have
    lambda m: m.pop("entry"),  # 2: no entry symbol at all
], ids=["altered_arena_size", "missing_symbol", "no_entry_key"])
def test_altered_cache_metadata_recompiles(tmp_path, monkeypatch, edit):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    cache.reset()
    fn = kernel("regression_meta")
    KERNELS.clear()
    compile_function(fn)
    (entry,) = tmp_path.glob("*" + cache.SUFFIX)
    rewrite_meta(entry, edit)
    KERNELS.clear()
    before = jit.STATS["compiled"]
    (out,) = compile_function(fn)(np.arange(9, dtype=np.float32))
    assert jit.STATS["compiled"] == before + 1
    np.testing.assert_array_equal(out, 3 * np.arange(9, dtype=np.float32))
