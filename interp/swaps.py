"""Temporary `forward` replacements on module instances (InputPatch's shortcuts, block checkpointing)."""

from __future__ import annotations


class ForwardSwaps:
    """Temporary `forward` replacements on module instances, undone in reverse order by `restore` (an instance
    `forward` that was there before, e.g. accelerate's dispatch hook, is put back; a module is swapped once)."""

    _NONE = object()

    def __init__(self):
        self._done: list = []

    def set(self, module, fn) -> None:
        if any(m is module for m, _ in self._done):
            return
        self._done.append((module, vars(module).get("forward", self._NONE)))
        module.forward = fn

    def restore(self) -> None:
        while self._done:
            module, old = self._done.pop()
            if old is self._NONE:
                vars(module).pop("forward", None)
            else:
                module.forward = old
