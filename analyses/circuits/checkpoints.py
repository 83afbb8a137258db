"""Checkpoint files of long searches and sweeps (ACDC's receivers, edge and head patching's sweeps, head-ablation
sweeps, pruning curves, retrieval scores): what was computed so far, with the settings it was computed under; a rerun
continues only a file written under the same settings. A file that cannot be continued raises a ValueError
(`unusable`): a caller's own path is refused with it; a path the program manages itself (a batch job's shard,
`run_circuit_job`'s folder) is deleted and the work started over (`discard`)."""

from __future__ import annotations

import hashlib
import numbers
import os
import re
from pathlib import Path

import torch

from interp.batch.arguments import writable_folder
from interp.validate import is_path


def ablation_summary(ablated: torch.Tensor) -> bytes:
    """What a checkpoint records of the ablation values: their shape, sum and absolute sum to 4 significant digits,
    so a search started on one device resumes on another (a CPU's and a GPU's float32 sums differ in the last
    digits) while other ablation data is refused."""
    a = ablated.detach().double()
    return f"{tuple(a.shape)} {float(a.sum()):.4g} {float(a.abs().sum()):.4g}".encode()


def prompts_digest(batch) -> str:
    """A short digest of a TaskBatch's prompts, answers, read positions and loss mask."""
    h = hashlib.sha256()
    for name in ("clean", "corrupt"):
        t = getattr(batch, name)
        h.update(b"-" if t is None else t.input_ids.detach().cpu().to(torch.int64).numpy().tobytes())
    for name in ("answer", "wrong", "position", "loss_mask"):
        t = getattr(batch, name)
        h.update(b"-" if t is None else t.detach().cpu().to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:16]


def model_settings(model) -> dict:
    """The settings every analysis checkpoint records of its model: its name and dtype (not its device: a run may
    continue on another device)."""
    return {"model": model.name, "dtype": str(model.dtype).replace("torch.", "")}


def digest(value) -> str:
    """A short digest of inputs too big to record in a checkpoint's settings (a removal order, needle trials):
    tensors (their dtype, shape and values), numbers (an int and a NumPy int of the same value alike), strings, and
    lists / tuples of them."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()[:16]


def _feed(h, value) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        wide = t.double() if t.dtype.is_floating_point else t.to(torch.int64)
        h.update(f"T{str(t.dtype)}{tuple(t.shape)}".encode() + wide.contiguous().numpy().tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        h.update(f"i{int(value)};".encode())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        h.update(f"f{float(value).hex()};".encode())
    else:
        h.update(f"r{value!r};".encode())


def checkpoint_path(checkpoint, where: str) -> Path:
    """A checkpoint argument checked before any work: a file path (str or PathLike) that is not a folder, whose
    folder exists (created here when missing) and is writable; else a TypeError / ValueError naming it."""
    if not is_path(checkpoint):
        raise TypeError(f"{where}: checkpoint must be a file path (str or pathlib.Path) or None, got "
                        f"{type(checkpoint).__name__} {checkpoint!r:.60}")
    path = Path(checkpoint)
    if str(checkpoint) == "" or path.is_dir():
        raise ValueError(f"{where}: checkpoint {str(checkpoint)!r} is a folder; pass a file path inside it, e.g. "
                         f"{str(path / 'sweep.pt')!r}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{where}: cannot create the folder {str(folder)!r} of checkpoint {str(path)!r} "
                         f"({type(e).__name__}: {e}); pass a path in a writable folder") from None
    if not writable_folder(folder):  # (tried: os.access says yes to root on a read-only mount)
        raise ValueError(f"{where}: the folder {str(folder)!r} of checkpoint {str(path)!r} is not writable; pass a "
                         "path in a writable folder")
    return path


def unusable(path: Path, message: str) -> ValueError:
    """The ValueError for a checkpoint file that cannot be continued (unreadable, damaged, written under other
    settings); its `checkpoint` attribute names the file, for callers that manage the file themselves
    (`is_unusable`)."""
    err = ValueError(message)
    err.checkpoint = Path(path)
    return err


def _beside(name: str, base: str) -> bool:
    """True for the files a checkpoint `base` keeps: itself, BASE.tmp, edge patching's BASE.b<i> (and BASE.b<i>.tmp);
    not for another file that merely shares the prefix (BASE.bak, BASE2, a copy the user made)."""
    return name == base or re.fullmatch(re.escape(base) + r"(\.b\d+)?(\.tmp)?", name) is not None


def is_unusable(err: BaseException, path) -> bool:
    """True when `err` says that the checkpoint `path`, or a file kept beside it (PATH.b0, ...), cannot be continued."""
    bad, path = getattr(err, "checkpoint", None), Path(path)
    return isinstance(bad, Path) and bad.parent == path.parent and _beside(bad.name, path.name)


def discard(path: Path) -> None:
    """Remove the checkpoint `path` and the files kept beside it (PATH.tmp, edge patching's PATH.b0, PATH.b1, ...),
    nothing else (a PATH.bak or PATHx beside it is kept)."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for f in path.parent.iterdir():
        if _beside(f.name, path.name):
            f.unlink(missing_ok=True)


def run_fresh_if_unusable(run, path: Path | None, note):
    """run(), for a caller that manages the checkpoint `path` itself: when run() raises the ValueError of that file
    (or one kept beside it) being unusable, `note(why)` hears the reason (the error's text before its "delete it"
    advice), the files are discarded and run() starts over once. Any other error, or any error without `path`,
    propagates."""
    try:
        return run()
    except ValueError as e:
        if path is None or not is_unusable(e, path):
            raise
        note(str(e).split("; delete it")[0])
        discard(path)
        return run()


def invalid(path: Path, kind: str, why: str) -> ValueError:
    """The error for a checkpoint file that loads but holds a malformed state (tampered, or another version's)."""
    return unusable(path, f"checkpoint {path} is damaged or not {kind} checkpoint: {why}; delete it or pass "
                          "another path")


def state_fields(saved, path: Path, kind: str, fields: tuple[str, ...]) -> dict:
    """The loaded state of a `kind` checkpoint: a dict holding exactly `fields`; else the `invalid` error."""
    if not isinstance(saved, dict) or set(saved) != set(fields):
        have = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        names = [repr(f) for f in fields]
        want = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise invalid(path, kind, f"its state must hold {want}, got {have}")
    return saved


def done_count(done, path: Path, kind: str, total: int, step: int, unit: str, finished_ok: bool) -> int:
    """A state's count of finished items, checked: a whole number of steps of `step` items (`unit` names a step,
    e.g. "forwards of 4 heads") in 0..total - 1, or up to `total` (the last step may be shorter) where the state
    of a finished run is kept (`finished_ok`); else the `invalid` error."""
    top = total if finished_ok else total - 1
    if (isinstance(done, bool) or not isinstance(done, numbers.Integral) or not 0 <= done <= top
            or (done % step and done != total)):
        raise invalid(path, kind, f"'done' must be a whole number of {unit} in 0..{top}, got {done!r:.40}")
    return int(done)


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
        if not isinstance(old, dict):
            raise TypeError(f"its 'settings' is a {type(old).__name__}, not a dict")
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise unusable(path, f"checkpoint {path} is not {kind} checkpoint ({type(e).__name__}: {e}); delete it or "
                             "pass another path") from None
    if old != settings:
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        raise unusable(path, f"checkpoint {path} was written under other settings (differs in: {', '.join(diff)}); "
                             "delete it or pass another path")
    return state
