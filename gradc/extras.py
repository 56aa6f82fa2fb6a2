"""Optional peers (PyTorch, matplotlib, scikit-learn, ...) and the pip extra of gradc that installs each.

Examples and tools check a peer before they start working and, when it is missing, stop with one line that
names the extra to install and exit code 2 (like `gradc bench`'s SKIPPED rows), never with a traceback.
"""

from __future__ import annotations

import importlib.util
import sys

# module -> (what to call it, the extra of pyproject.toml that installs it)
PEERS: dict[str, tuple[str, str]] = {
    "torch": ("PyTorch", "compare"),
    "jax": ("JAX", "compare"),
    "autograd": ("HIPS autograd", "compare"),
    "sklearn": ("scikit-learn", "examples"),
    "matplotlib": ("matplotlib", "examples"),
    "mpi4py": ("mpi4py", "distributed"),
}


def installed(module: str) -> bool:
    """True when the top-level `module` can be imported here."""
    return importlib.util.find_spec(module) is not None


def install_hint(module: str) -> str:
    """'PyTorch is not installed (pip install -e ".[compare]")'."""
    name, extra = PEERS[module]
    return f'{name} is not installed (pip install -e ".[{extra}]")'


def require(module: str, purpose: str, prog: str | None = None) -> None:
    """Exit with code 2 and one line on stderr naming the extra when `module` is missing; else do nothing."""
    if installed(module):
        return
    name, extra = PEERS[module]
    prog = prog or sys.argv[0].rsplit("/", 1)[-1]
    print(f'{prog}: error: {purpose} needs {name}: pip install -e ".[{extra}]"', file=sys.stderr)
    raise SystemExit(2)
