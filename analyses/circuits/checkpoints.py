"""Checkpoint files of long circuit searches (ACDC's receivers, edge patching's sweep): what was computed so far,
with the settings it was computed under; a rerun continues only a file written under the same settings."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def ablation_summary(ablated: torch.Tensor) -> bytes:
    """What a checkpoint records of the ablation values: their shape, sum and absolute sum to 4 significant digits,
    so a search started on one device resumes on another (a CPU's and a GPU's float32 sums differ in the last
    digits) while other ablation data is refused."""
    a = ablated.detach().double()
    return f"{tuple(a.shape)} {float(a.sum()):.4g} {float(a.abs().sum()):.4g}".encode()


def save(path: Path, settings: dict, state: dict) -> None:
    """Write {settings, state} to `path` atomically (a kill mid-write leaves the previous file)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"settings": settings, "state": state}, tmp)
    os.replace(tmp, path)


def load(path: Path, settings: dict, kind: str) -> dict | None:
    """The saved state, None when there is no file; a clear ValueError for a file that is not a `kind` checkpoint or
    was written under other settings (naming the ones that differ)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path)
        old, state = saved["settings"], saved["state"]
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"checkpoint {path} is not {kind} checkpoint ({type(e).__name__}: {e}); delete it or pass "
                         "another path") from None
    if old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise ValueError(f"checkpoint {path} was written under other settings (differs in: {', '.join(diff)}); "
                         "delete it or pass another path")
    return state
