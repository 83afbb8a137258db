"""Chunked sweeps that keep their progress (`edge_patching`, `head_patching`): each chunk of items (edges, heads)
is one batched forward; `_resume_chunks` starts a sweep from its checkpoint file (or from scratch), `_ChunkSaver`
saves the finished chunks every few seconds and when Ctrl-C or an error stops the sweep, `_chunks_state` checks a
loaded file and reads back only the finished items."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import torch

from interp.validate import _show

from . import checkpoints

EDGE_KIND, HEAD_KIND = "an edge-patching", "a head-patching"  # what checkpoints' messages call the two sweeps


class _ChunkSaver:
    """The checkpoint of a sweep done in chunks (`edge_patching`, `head_patching`): `finished(done)` after each chunk
    saves {done, scores} to `path` every `every_s` seconds (not after the last chunk), `stopped()` when an exception
    (Ctrl-C included) ends the sweep saves the chunks finished since the last save. `done` counts only finished
    chunks, so a chunk being written when the sweep stopped is never saved as done. Without a path it does nothing.
    `progress(msg)` hears about each save."""

    def __init__(self, path: Path | None, settings: dict | None, scores: torch.Tensor, done: int, n: int, unit: str,
                 every_s: float, progress: Callable | None):
        self.path, self.settings, self.scores, self.n, self.unit = path, settings, scores, n, unit
        self.every_s, self.progress = every_s, progress
        self.done = self.saved = done
        self.t_save = time.perf_counter()

    def finished(self, done: int) -> None:
        """The first `done` items of the sweep are scored (in `scores`); save them if `every_s` has passed."""
        self.done = done
        if self.path is not None and done < self.n and time.perf_counter() - self.t_save >= self.every_s:
            self._save(f"patched {done} of {self.n} {self.unit} (saved to {self.path.name})")

    def stopped(self) -> None:
        """The sweep was stopped by an exception: save what it finished since the last save, if anything."""
        if self.path is not None and self.done > self.saved:
            self._save(f"stopped after {self.done} of {self.n} {self.unit} (saved to {self.path.name})")

    def _save(self, message: str) -> None:
        checkpoints.save(self.path, self.settings, {"done": self.done, "scores": self.scores})
        self.saved, self.t_save = self.done, time.perf_counter()
        if self.progress:
            self.progress(message)


def _resume_chunks(path: Path | None, settings: dict | None, kind: str, idx: torch.Tensor, chunk: int,
                   fresh: torch.Tensor, unit: str, every_s: float, progress: Callable | None):
    """A chunked sweep's start: (items done, scores, its _ChunkSaver), continued from `path` when it holds a sweep
    of these settings (0 and `fresh` without a file or a path; a file of other settings or a damaged one raises)."""
    start, scores = 0, fresh
    if path is not None:
        saved = checkpoints.load(path, settings, kind)
        if saved is not None:
            start, scores = _chunks_state(saved, path, kind, idx, chunk, fresh, unit)
            if progress:
                progress(f"resume: {path} at {unit[:-1]} {start} of {len(idx)}")
    return start, scores, _ChunkSaver(path, settings, scores, start, len(idx), unit, every_s, progress)


def _chunks_state(saved, path: Path, kind: str, idx: torch.Tensor, chunk: int, fresh: torch.Tensor,
                  unit: str) -> tuple[int, torch.Tensor]:
    """(items done, scores) of a saved chunked sweep, checked: `done` a whole number of chunks of the sweep's items
    (`idx`, [n, 2] indices into the scores: edge_patching's (up, slot), head_patching's (layer, head)), scores a float
    tensor of `fresh`'s shape with a finite score on every finished item. Only those are read: the scores returned
    are `fresh` (an unstarted sweep's) with them filled in, as an uninterrupted sweep has them. Anything else: a
    ValueError naming the file."""
    if not isinstance(saved, dict) or not {"done", "scores"} <= set(saved):
        have = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise checkpoints.invalid(path, kind, f"its state must hold 'done' and 'scores', got {have}")
    done = checkpoints.done_count(saved["done"], path, kind, len(idx), chunk, f"chunks of {chunk} {unit}",
                                  finished_ok=True)
    scores, shape = saved["scores"], list(fresh.shape)
    if not isinstance(scores, torch.Tensor) or list(scores.shape) != shape or not scores.dtype.is_floating_point:
        raise checkpoints.invalid(path, kind, f"'scores' must be a float tensor {shape}, got {_show(scores)}")
    first = idx[:int(done)]
    got = scores.detach()[first[:, 0], first[:, 1]]
    if not bool(torch.isfinite(got).all()):
        raise checkpoints.invalid(path, kind, f"'scores' lacks a finite score on some of the {int(done)} {unit} "
                                              "it says are done")
    out = fresh.clone()
    out[first[:, 0], first[:, 1]] = got.to(out.dtype)
    return int(done), out


def _digest(*parts) -> str:
    """sha256 of the parts in order: a tensor's bytes, or bytes as given."""
    digest = hashlib.sha256()
    for t in parts:
        digest.update(t if isinstance(t, bytes) else t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
