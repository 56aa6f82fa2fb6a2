"""Backward hooks: `Tensor.register_post_accumulate_grad_hook` and callbacks run when a backward ends.

The eager engine (gradc.autograd.backward) calls `after_accumulate(leaf)` once it has accumulated a
leaf's .grad and `backward_done()` at the end; both cost one global check while no hook exists.
DistributedDataParallel uses them to allreduce gradient buckets as they become ready.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

__all__ = ["RemovableHandle", "register_post_accumulate_grad_hook", "queue_callback", "after_accumulate",
           "backward_done"]

_live = [0]  # registered hooks, all tensors together (after_accumulate's fast check)
_callbacks: list[Callable[[], Any]] = []
_ids = itertools.count()


class RemovableHandle:
    """`handle.remove()` unregisters the hook (torch.utils.hooks.RemovableHandle)."""

    def __init__(self, table: dict, hook_id: int) -> None:
        self.table, self.id = table, hook_id

    def remove(self) -> None:
        if self.table.pop(self.id, None) is not None:
            _live[0] -= 1


def register_post_accumulate_grad_hook(tensor: Any, hook: Callable[[Any], Any]) -> RemovableHandle:
    """hook(tensor) runs after a backward has accumulated into the leaf `tensor`'s .grad."""
    if not tensor.is_leaf:
        raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
    if not tensor.requires_grad:
        raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
    hook_id = next(_ids)
    table = tensor.__dict__.setdefault("_post_accumulate_grad_hooks", {})  # lives and dies with the tensor
    table[hook_id] = hook
    _live[0] += 1
    return RemovableHandle(table, hook_id)


def queue_callback(callback: Callable[[], Any]) -> None:
    """callback() runs once, when the backward that is running now ends."""
    _callbacks.append(callback)


def after_accumulate(leaf: Any) -> None:
    if _live[0]:
        table = leaf.__dict__.get("_post_accumulate_grad_hooks")
        if table:
            for hook in list(table.values()):
                hook(leaf)


def backward_done() -> None:
    while _callbacks:
        _callbacks.pop(0)()
