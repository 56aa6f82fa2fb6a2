"""Which torch names a model file uses that gradc does not have yet, each with file:line (`gradc check`).

Two passes, so one run lists every gap instead of stopping at the first:
* static: every `torch...` attribute chain in the file (through `import torch.nn as nn`, `from torch import
  nn`, `from torch.nn import functional as F`, `from torch.nn import Conv2d`, ...) is resolved on gradc;
* dynamic: the file is loaded with gradc, the model built and one forward, loss and backward run; a Tensor
  method gradc lacks (`x.unfold(...)`) is recorded at the line that called it, a placeholder that returns
  its tensor takes its place, and the run is repeated to find the next one. An error after a placeholder
  may be a consequence of it, so such errors are listed apart, as "then".
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import traceback
from dataclasses import dataclass, field
from typing import Any

from gradc.bench.usermodel.loader import ModelSpecError, gradc_name

MAX_ROUNDS = 30
_MISSING_ATTR = re.compile(r"'Tensor' object has no attribute '(\w+)'")


@dataclass
class Coverage:
    path: str
    name: str
    missing: list[tuple[str, int]] = field(default_factory=list)  # (torch name, line)
    errors: list[str] = field(default_factory=list)  # what failed after the missing names, with file:line
    ran: bool = False  # the dynamic pass ran a whole step (without placeholders)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.errors

    @property
    def runnable(self) -> bool:
        """A training step ran on gradc; names missing elsewhere in the file were not reached by it."""
        return self.ran and not self.errors

    def add(self, name: str, line: int) -> None:
        if not any(n == name for n, _ in self.missing):
            self.missing.append((name, line))

    def report(self) -> str:
        base = os.path.basename(self.path)
        if self.ok:
            return f"gradc can run {self.name}: every torch name it uses exists in gradc, and one step ran"
        if self.runnable:
            names = ", ".join(f"{n} ({base}:{line})" for n, line in sorted(self.missing, key=lambda m: m[1]))
            return (f"gradc runs {self.name}'s training step; the file also uses names gradc lacks, not reached "
                    f"by that step: {names}")
        lines = []
        if self.missing:
            names = ", ".join(f"{n} ({base}:{line})" for n, line in sorted(self.missing, key=lambda m: m[1]))
            lines.append(f"gradc cannot run {self.name} yet: {names}")
        else:
            lines.append(f"gradc cannot run {self.name} yet:")
        for e in self.errors:
            lines.append(("  then: " if self.missing else "  ") + e)
        return "\n".join(lines)


# ----------------------------------------------------------------------------- static pass

def _resolve(dotted: str) -> bool:
    """Whether gradc has the torch name `dotted` (a module, or an attribute chain below one)."""
    parts = gradc_name(dotted).split(".")
    obj: Any = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[:i + 1]))
        except ImportError:
            return False
    return True


def _torch_aliases(tree: ast.AST, cov: Coverage) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "torch":
                    if a.asname:
                        aliases[a.asname] = a.name
                    else:
                        aliases["torch"] = "torch"
                    if not _resolve(a.name):
                        cov.add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _resolve(full):
                    aliases[a.asname or a.name] = full
                else:
                    cov.add(full, node.lineno)
    return aliases


def _chain(node: ast.AST) -> tuple[str, list[str]] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return node.id, parts[::-1]
    return None


def static_scan(path: str, cov: Coverage) -> None:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    aliases = _torch_aliases(tree, cov)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        found = _chain(node)
        if found is None or found[0] not in aliases:
            continue
        root, attrs = found
        # resolve the longest chain; report the first missing prefix
        for i in range(1, len(attrs) + 1):
            dotted = ".".join([aliases[root], *attrs[:i]])
            if not _resolve(dotted):
                cov.add(dotted, node.lineno)
                break


# ----------------------------------------------------------------------------- dynamic pass

def _line_in(tb: Any, path: str) -> int | None:
    line = None
    for frame in traceback.extract_tb(tb):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            line = frame.lineno
    return line


def _placeholder(name: str) -> Any:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self
    method.__name__ = name
    method._gradc_placeholder = True
    return method


def dynamic_run(spec: Any, cov: Coverage) -> None:
    """Load under gradc, build, run one training step; record missing Tensor methods and later errors."""
    from gradc.bench.usermodel import spec as specs
    from gradc.bench.usermodel.loader import build_model
    from gradc.tensor import Tensor

    path = spec.model.rpartition(":")[0]
    added: list[str] = []
    try:
        for _ in range(MAX_ROUNDS):
            try:
                model, module = build_model(path, cov.name, "gradc", spec.seed)
                inputs, target = specs.make_batch(spec, batch_source(path, module))
                import gradc
                loss = specs.loss_function(spec, "gradc")(model(*[gradc.from_numpy(x) for x in inputs]),
                                                          gradc.from_numpy(target))
                loss.backward()
                cov.ran = not added
                return
            except AttributeError as exc:
                m = _MISSING_ATTR.search(str(exc))
                line = _line_in(exc.__traceback__, path)
                if m and not hasattr(Tensor, m.group(1)):
                    cov.add(f"Tensor.{m.group(1)}", line or 0)
                    setattr(Tensor, m.group(1), _placeholder(m.group(1)))
                    added.append(m.group(1))
                    continue
                _record_error(cov, exc, path)
                return
            except ModelSpecError:
                raise
            except Exception as exc:  # anything else ends the run: reported with the line that raised it
                _record_error(cov, exc, path)
                return
        cov.errors.append(f"stopped after {MAX_ROUNDS} missing Tensor methods")
    finally:
        for name in added:
            delattr(Tensor, name)


def batch_source(path: str, gradc_module: Any) -> Any:
    """The module whose make_batch draws the batch: the PyTorch load when installed (as the benchmark does)."""
    if getattr(gradc_module, "make_batch", None) is None or importlib.util.find_spec("torch") is None:
        return gradc_module
    from gradc.bench.usermodel.loader import load_file
    return load_file(path, "torch")


def _record_error(cov: Coverage, exc: BaseException, path: str) -> None:
    line = _line_in(exc.__traceback__, path)
    where = f" ({os.path.basename(path)}:{line})" if line else ""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ModuleNotFoundError) and exc.name and exc.name.startswith("torch"):
        return  # already listed by the static pass
    if isinstance(exc, ImportError) and "cannot import name" in text and cov.missing:
        return  # a `from torch.x import Y` the static pass listed
    if isinstance(exc, AttributeError) and cov.missing and "gradc" in text:
        return  # a module attribute the static pass listed
    cov.errors.append(f"{type(exc).__name__}: {text}{where}")


def check(spec: Any) -> Coverage:
    """Static and dynamic coverage of spec.model (a BenchSpec) on gradc."""
    path, name = spec.model.rpartition(":")[::2]
    cov = Coverage(path, name)
    static_scan(path, cov)
    dynamic_run(spec, cov)
    return cov
