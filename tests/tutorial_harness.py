"""One harness for the tutorial tests: run a PyTorch program's text under torch, and under gradc with only
its import lines rewritten, capturing what it prints.

`run(text, "gradc")` rewrites `import torch`, `import torch.x as y` and `from torch.x import ...` to gradc's
modules and asserts that no other line changed; `stand_ins` maps whole import lines of libraries that are not
dependencies (torchvision, pandas, matplotlib) to in-memory replacements, for both libraries alike. Each run
starts from the same seeds (Python's random, the library's manual_seed) on one thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
from typing import Any

import numpy as np

import gradc

NUMBER = re.compile(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?")


def as_gradc(line: str) -> str:
    """The import line a gradc user writes instead of a torch one (other lines come back unchanged)."""
    line = re.sub(r"^(\s*)import torch$", r"\1import gradc as torch", line)
    line = re.sub(r"^(\s*)import torch\.([\w.]+) as (\w+)$", r"\1import gradc.\2 as \3", line)
    return re.sub(r"^(\s*)from torch((?:\.\w+)*) import ", r"\1from gradc\2 import ", line)


def run(text: str, lib_name: str, cwd: str | None = None, stand_ins: dict[str, str] | None = None,
        namespace: dict[str, Any] | None = None) -> tuple[str, dict]:
    """Exec the program under `lib_name` ("torch" or "gradc"); returns (printed text, its namespace)."""
    import torch
    lib = gradc if lib_name == "gradc" else torch
    lines = [(stand_ins or {}).get(line.strip(), line) for line in text.splitlines()]
    if lib_name == "gradc":
        lines = [as_gradc(line) for line in lines]
    changed = [a for a, b in zip(text.splitlines(), lines) if a != b]
    assert all(a.lstrip().startswith(("import ", "from ")) for a in changed), "only import lines may change"
    scope = {"__name__": "__main__", **(namespace or {})}
    out = io.StringIO()
    threads, previous = torch.get_num_threads(), os.getcwd()
    torch.set_num_threads(1)  # the machine is shared: no thread pool spinning for these small matrices
    random.seed(0)  # the dynamic-graph program draws its depth from Python's random module
    lib.manual_seed(0)  # programs that draw unseeded weights repeat too
    try:
        if cwd:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out):
            exec(compile("\n".join(lines), f"<{lib_name} program>", "exec"), scope)
    finally:
        os.chdir(previous)
        torch.set_num_threads(threads)
    return out.getvalue(), scope


def numbers(text: str) -> list[float]:
    return [float(m) for m in NUMBER.findall(text)]


def run_both(text: str, cwd: str | None = None, rtol: float = 1e-4, atol: float = 1e-5) -> tuple[dict, dict]:
    """Both runs must print the same numbers (to rtol/atol); returns their namespaces (torch's, gradc's)."""
    torch_text, torch_ns = run(text, "torch", cwd)
    gradc_text, gradc_ns = run(text, "gradc", cwd)
    a, b = numbers(torch_text), numbers(gradc_text)
    assert len(a) == len(b) and a, f"printed different things:\n--- torch\n{torch_text}\n--- gradc\n{gradc_text}"
    np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=f"--- torch\n{torch_text}\n--- gradc\n{gradc_text}")
    return torch_ns, gradc_ns
