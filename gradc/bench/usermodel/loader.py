"""Load a model file written against `torch` with PyTorch, or with gradc standing in for `torch`.

The gradc load executes the file in a fresh module whose `__builtins__` carry their own `__import__`:
`import torch`, `import torch.nn as nn`, `from torch.nn import functional as F`, ... resolve to `gradc`,
`gradc.nn`, `gradc.nn.functional` inside that file (and inside the functions it defines, which keep the
module's builtins), while every other module, PyTorch included, imports as usual. Each load is a new module,
so two models from two files (or one file loaded twice) never share state.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import itertools
import os
import sys
from types import ModuleType
from typing import Any

FRAMEWORKS = ("torch", "gradc")
_counter = itertools.count()


class ModelSpecError(ValueError):
    """A FILE.py:NAME spec that does not name a loadable model."""


def gradc_name(name: str) -> str:
    """`torch.nn.functional` -> `gradc.nn.functional` (names outside torch are returned unchanged)."""
    return "gradc" + name[len("torch"):] if name == "torch" or name.startswith("torch.") else name


def _gradc_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level == 0 and (name == "torch" or name.startswith("torch.")):
        try:
            module = importlib.import_module(gradc_name(name))
        except ModuleNotFoundError as exc:
            missing = exc.name or gradc_name(name)
            raise ModuleNotFoundError(f"gradc has no module {missing} (for {name})", name=name) from None
        return module if fromlist else importlib.import_module("gradc")
    return builtins.__import__(name, globals, locals, fromlist, level)


GRADC_BUILTINS = {**builtins.__dict__, "__import__": _gradc_import}


def split_spec(spec: str) -> tuple[str, str]:
    """'path/model.py:Net' -> (path, 'Net'), with one-line errors for a bad spec."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ModelSpecError(f"expected FILE.py:NAME, got {spec!r}")
    if not path.endswith(".py"):
        raise ModelSpecError(f"{path!r} is not a Python file (FILE.py:NAME)")
    if not os.path.isfile(path):
        raise ModelSpecError(f"no such file: {path}")
    return path, name


def load_file(path: str, framework: str) -> ModuleType:
    """Execute the file as a new module with `torch` (framework='torch') or gradc standing in for it."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {framework!r}")
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"_gradc_user_{framework}_{stem}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None or spec.loader is None:
        raise ModelSpecError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    if framework == "gradc":
        module.__builtins__ = GRADC_BUILTINS
    sys.modules[name] = module  # dataclasses, pickling and typing look modules up by name
    folder = os.path.dirname(os.path.abspath(path))
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # a model file may import its sibling helpers (those import torch as usual)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if added:
            sys.path.remove(folder)
    return module


def uses_torch(path: str) -> bool:
    """Whether the file imports torch at all (a file that does not cannot be run on both frameworks)."""
    import ast
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "torch":
            return True
    return False


def model_factory(module: ModuleType, name: str, path: str) -> Any:
    """The zero-argument callable that builds the model: an nn.Module subclass or a factory function."""
    if not hasattr(module, name):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, type) and not k.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        hint = f" (classes defined there: {', '.join(found)})" if found else ""
        raise ModelSpecError(f"{path} has no {name!r}{hint}")
    obj = getattr(module, name)
    if not callable(obj):
        raise ModelSpecError(f"{path}:{name} is a {type(obj).__name__}, not an nn.Module subclass or a factory")
    return obj


def is_module(obj: Any, framework: str) -> bool:
    nn = importlib.import_module("torch.nn" if framework == "torch" else "gradc.nn")
    return isinstance(obj, nn.Module)


def build_model(path: str, name: str, framework: str, seed: int = 0) -> tuple[Any, ModuleType]:
    """Load the file under `framework` and build NAME() (an nn.Module instance), seeded."""
    module = load_file(path, framework)
    factory = model_factory(module, name, path)
    fw = importlib.import_module(framework)
    fw.manual_seed(seed)
    model = factory()
    if not is_module(model, framework):
        raise ModelSpecError(f"{path}:{name}() returned a {type(model).__name__}, not an nn.Module")
    return model, module
