"""The batch runner's own arguments, checked before anything is planned or loaded: the output folder (made and
tried writable: `check_out`, shared with the CLI's --out and the reports), the model sources (names or paths, never
loaded models) and the run's flags, `log` and Ray options. Each raises a TypeError/ValueError naming the argument."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..input_checks import bool_arg


def writable_folder(folder: Path) -> bool:
    """Whether a file can be created in the existing `folder`: tried with a small temporary file, since
    os.access says yes to root on a read-only or virtual file system (/sys, /proc)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".interp-write-test-")
    except OSError:
        return False
    os.close(fd)
    Path(tmp).unlink(missing_ok=True)
    return True


def check_out(out, flag: str = "out", create: bool = True) -> Path:
    """The output folder `out` as a Path, made if missing and checked writable, or a TypeError/ValueError naming
    `flag` -- before any model is loaded (an empty string would put every file in the current directory; a file,
    or a folder the user may not write, would fail only after the first shard). create=False: the checks that
    touch nothing (type, empty, a file in the way)."""
    if isinstance(out, (bytes, bytearray)) or not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"{flag} must be a folder path (a str or pathlib.Path), got {type(out).__name__} {out!r:.60}")
    text = os.fspath(out)
    if not isinstance(text, str):
        raise TypeError(f"{flag} must be a folder path (a str or pathlib.Path), got {type(out).__name__} {out!r:.60}")
    if not text.strip():  # Path("") is the current directory: every output file would land there
        raise ValueError(f"{flag} must name a directory, got an empty string")
    p = Path(text)
    try:
        blocking = next((a for a in (p, *p.parents) if a.exists()), None)  # the nearest existing one
    except OSError as e:  # a name longer than the file system allows, a path too deep
        raise ValueError(f"{flag} {text:.120} cannot be a folder: {e.strerror or e}") from None
    if blocking is not None and not blocking.is_dir():
        raise ValueError(f"{flag} {text} is a file, not a folder; give a folder for the output files" if blocking == p
                         else f"cannot create {flag} {text}: {blocking} is a file, not a folder")
    if not create:
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create {flag} {text}: {e.strerror or e}") from None
    if not writable_folder(p):
        raise ValueError(f"{flag} {text} is not writable")
    return p


def _is_loaded_model(obj) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module) or (hasattr(obj, "cfg") and hasattr(obj, "run_with_hooks"))


def _model_sources(models) -> list[str]:
    """The model sources as strings: one name or path, or an iterable of them (a list, `interp.available()`); a TypeError naming what else was
    given (a loaded model above all: the jobs load each model themselves, one at a time or in Ray workers)."""
    def one(m, where: str) -> str:
        if isinstance(m, (str, os.PathLike)) and isinstance(os.fspath(m), str):
            return os.fspath(m)
        if _is_loaded_model(m):
            name = getattr(m, "name", None)
            example = f", e.g. {name!r}" if isinstance(name, str) and name else " (e.g. 'toy-induction')"
            raise TypeError(f"{where} is a loaded model ({type(m).__name__}); batch jobs load each model themselves "
                            f"(one at a time, or in Ray workers), so they take its name or path{example}")
        raise TypeError(f"{where} must be a model name or path (a bundled or toy name, a folder, a .gguf file or a "
                        f"hub id), got {type(m).__name__} {m!r:.60}")

    if isinstance(models, (str, os.PathLike)) or _is_loaded_model(models):
        return [one(models, "models")]
    if isinstance(models, Iterable) and not isinstance(models, (bytes, bytearray)):
        # a list, a tuple, interp.available()'s dict (its keys), a set, a generator
        return [one(m, f"models[{i}]") for i, m in enumerate(models)]
    raise TypeError(f"models must be a model name or path, or a list of them, got {type(models).__name__} "
                    f"{models!r:.60}")


def check_run_args(*, out, resume, recompute_mismatched, progress, log, ray_address, ray_timeout) -> None:
    """The run's own arguments, checked before anything is planned or loaded (a TypeError/ValueError naming the
    argument): flags True or False, `log` a callable, a Ray address a str, a Ray timeout a positive number."""
    from .checks import check_timeout

    for name, value in (("resume", resume), ("recompute_mismatched", recompute_mismatched), ("progress", progress)):
        bool_arg(name, value)
    if recompute_mismatched and not resume:
        raise ValueError("recompute_mismatched only makes sense with resume=True")
    if not callable(log):
        raise TypeError(f"log must be a callable taking one str (e.g. print, or `lambda *a: None` for silence), got "
                        f"{type(log).__name__} {log!r:.40}")
    if ray_address is not None and not isinstance(ray_address, str):
        raise TypeError(f"ray_address must be None (run here), 'local', 'auto' or 'host:port', got "
                        f"{type(ray_address).__name__} {ray_address!r:.40}")
    check_timeout(ray_timeout, "ray_timeout")
    check_out(out, create=False)
