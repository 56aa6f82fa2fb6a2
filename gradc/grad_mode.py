"""Gradient recording mode (thread-local), as torch.no_grad / torch.enable_grad."""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable


class _State(threading.local):
    enabled = True  # class default: each thread starts with recording on


_local = _State()


def is_grad_enabled() -> bool:
    return _local.enabled


def _set(enabled: bool) -> None:
    _local.enabled = enabled


class set_grad_enabled:
    """Context manager (and decorator) that turns gradient recording on or off."""

    def __init__(self, mode: bool) -> None:
        self.mode = bool(mode)
        self.prev = is_grad_enabled()
        _set(self.mode)  # like PyTorch, also works as a plain function call

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        _set(self.prev)

    def __call__(self, fn: Callable) -> Callable:
        mode = self.mode
        _set(self.prev)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class _Mode:
    mode = True

    def __init__(self) -> None:
        self.prev = True

    def __enter__(self) -> None:
        self.prev = is_grad_enabled()
        _set(self.mode)

    def __exit__(self, *exc: Any) -> None:
        _set(self.prev)

    def __call__(self, fn: Callable) -> Callable:
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(_Mode):
    """Disable gradient recording inside the block (or the decorated function)."""
    mode = False


class enable_grad(_Mode):
    """Enable gradient recording inside the block (or the decorated function)."""
    mode = True
