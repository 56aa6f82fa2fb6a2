"""Fuzzing fixtures: no disk cache for the thousands of distinct fuzzed kernels."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import fuzz.graphgen` from any rootdir


@pytest.fixture(autouse=True)
def _no_disk_cache(monkeypatch):
    """Fuzzed kernels are all distinct: writing them to the user's cache would only evict useful entries."""
    monkeypatch.setenv("GRADC_CACHE", "0")
