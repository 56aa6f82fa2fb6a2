"""On-disk cache of compiled object code, so a new process skips LLVM optimization and code generation.

An entry is one file named by its key: sha256 over the printed IR, the symbol name, gradc's version and a
digest of its code generator's sources, llvmlite/LLVM versions, host CPU name and features and the compile
options. The file holds a magic line, a JSON header (key, payload size and sha256, and the runtime metadata
the call path needs: entry names, arena size and mode, ...) and the relocatable object. Writes go to a
temporary file in the same directory, are fsync'ed and renamed into place (atomic). The payload and the
metadata each carry a sha256. A truncated, corrupt
or foreign entry is ignored (and later overwritten), never loaded. An unwritable cache directory turns the
disk cache off for the process with one warning.

Location: `$GRADC_CACHE_DIR`, else `$XDG_CACHE_HOME/gradc`, else `~/.cache/gradc`; `GRADC_CACHE=0` disables.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path

from gradc.codegen import jit

MAGIC = b"GRADC-OBJECT-CACHE 1\n"
_HEADER_LEN = struct.Struct("<Q")
SUFFIX = ".gco"

MAX_ENTRIES = 2048  # beyond this, a store prunes the least recently used entries (mtime, touched on load)

_disabled_reason: str | None = None  # set after a failed write: the process runs uncached from then on


class CacheWarning(UserWarning):
    """The on-disk kernel cache could not be used; gradc keeps working without it."""


def cache_dir() -> Path | None:
    """The cache directory, or None when the disk cache is disabled."""
    if os.environ.get("GRADC_CACHE", "1").strip().lower() in ("0", "false", "no", "off") or _disabled_reason:
        return None
    if os.environ.get("GRADC_CACHE_DIR"):
        return Path(os.environ["GRADC_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gradc"


@functools.cache
def source_digest() -> str:
    """Hash of the sources that decide generated code (codegen, IR ops and passes), so edits invalidate."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for sub in ("codegen", "ir"):
        for path in sorted((root / sub).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def entry_key(ir_text: str, symbol: str, options: dict) -> str:
    """The cache key of one compiled function."""
    from gradc import __version__

    parts = {"ir": ir_text, "symbol": symbol, "gradc": __version__, "sources": source_digest(),
             **jit.code_identity(), "options": options}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def entry_path(key: str) -> Path | None:
    d = cache_dir()
    return None if d is None else d / (key + SUFFIX)


def load(key: str) -> tuple[dict, bytes] | None:
    """(metadata, object bytes) of a valid entry, else None (missing, truncated, corrupt or stale)."""
    path = entry_path(key)
    if path is None:
        return None
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        if not blob.startswith(MAGIC):
            return None
        start = len(MAGIC) + _HEADER_LEN.size
        (hlen,) = _HEADER_LEN.unpack_from(blob, len(MAGIC))
        header = json.loads(blob[start:start + hlen].decode())
        payload = blob[start + hlen:]
        if (header.get("key") != key or header.get("size") != len(payload)
                or header.get("sha256") != hashlib.sha256(payload).hexdigest()
                or header.get("meta_sha256") != _meta_digest(header["meta"])):
            return None
        try:
            os.utime(path)  # recently used: survives pruning
        except OSError:
            pass
        return header["meta"], payload
    except (ValueError, KeyError, struct.error, UnicodeDecodeError, AttributeError):
        return None


def _meta_digest(meta: object) -> str:
    """Checksum of the metadata (arena size, symbols, ...): it steers the call path, so it is verified too."""
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()


def _disable(reason: str) -> None:
    global _disabled_reason
    if _disabled_reason is None:
        _disabled_reason = reason
        warnings.warn(f"gradc: on-disk kernel cache disabled: {reason}", CacheWarning, stacklevel=3)


def store(key: str, meta: dict, payload: bytes) -> bool:
    """Write an entry atomically; returns whether it was written."""
    path = entry_path(key)
    if path is None or not payload:
        return False
    header = json.dumps({"key": key, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                         "meta": meta, "meta_sha256": _meta_digest(meta)}).encode()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + _HEADER_LEN.pack(len(header)) + header + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _prune(path.parent)
        return True
    except OSError as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _disable(f"cannot write to {path.parent} ({e.strerror or e})")
        return False


def _prune(directory: Path, limit: int | None = None) -> None:
    """Remove the least recently used entries when there are more than `limit` (down to 3/4 of it)."""
    limit = MAX_ENTRIES if limit is None else limit
    try:
        entries = [e for e in os.scandir(directory) if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
        if len(entries) <= limit:
            return
        entries.sort(key=lambda e: e.stat().st_mtime)
        for e in entries[: len(entries) - limit * 3 // 4]:
            os.unlink(e.path)
    except OSError:  # another process pruning at the same time, or a vanished file: harmless
        pass


def reset() -> None:
    """Re-enable the disk cache after a failure (tests)."""
    global _disabled_reason
    _disabled_reason = None
