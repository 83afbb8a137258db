"""A resumable runner for batch jobs over many models.

A `Job` says three things: which shards a model needs, how to compute one shard from a loaded model, and how to
assemble the final files from every shard's result. The runner does the rest, the same way for every job:

- plans the (model, shard) pairs, naming each model once (two spellings of one model are merged, with a note);
- writes each finished shard atomically to `DIR/shards/<model>/<shard>.json`, with the job's name and version,
  the options that shape the result and a fingerprint of the model's config and weights;
- on `resume`, keeps a finished shard only when all of those match, and otherwise refuses before computing
  anything, naming the option that differs and both values (or, with `recompute_mismatched`, recomputes those
  shards and says so); an unreadable shard file, or one whose result fails the job's `check` (a missing score, a
  NaN or out-of-range value, a shape that is not the model's heads), is named and recomputed;
- gives a job with `checkpoints` a path per unfinished shard (`checkpoint_path`, local runs only) where compute()
  may keep its progress; `resume` continues from it, a fresh run deletes it, a finished shard removes it, and one
  that cannot be continued (damaged: `analyses.circuits.checkpoints.run_fresh_if_unusable`) is named, deleted and
  started over;
- computes the rest in this process or as Ray tasks (`ray_backend`), showing progress, and assembles;
- records where each shard ran (host, pid, Ray node and GPU, device: `workers.py`) in its shard file, and writes
  them all to `DIR/workers.csv` once every shard is done.

Registering a job:

    register(Job(name="importance", version=1, shards=lambda model, opts: ["ablation"],
                 compute=lambda model, shard, opts: {...}, assemble=write_importance_table))
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .arguments import _model_sources, check_out, check_run_args

SHARD_FORMAT = 1  # layout of a shard file (the header keys); a job's own `version` covers its results


@dataclass(frozen=True)
class Job:
    name: str
    version: int  # bump when what compute() returns changes: older shards are then refused on --resume
    shards: Callable[[str, dict], Sequence[str]]  # (model source, options) -> shard names, in order
    compute: Callable[..., dict]  # (HookedModel, shard, options) -> JSON-able result; "notes": [str] are printed
    assemble: Callable[..., object]  # ({model: {shard: result}}, out dir, options, log) -> final object
    outputs: tuple[str, ...] = ()  # files assemble() writes in the out dir (for messages)
    max_models: int | None = None  # e.g. 1 for a job over one model
    add_arguments: Callable | None = None  # (argparse parser) -> None: the job's own CLI options
    checkpoints: bool = False  # compute() takes checkpoint=PATH: where it may keep an unfinished shard's progress
    # (shard, result, options) -> the model dims the result implies (e.g. (layers, heads)) or None; a ValueError
    # says what is wrong with a result read back on --resume (the shard is then recomputed). The shards of one
    # model must imply the same dims.
    check: Callable[[str, dict, dict], object] | None = None
    options_from_args: Callable | None = None  # (argparse namespace) -> dict of the job's options
    help: str = ""
    # shard -> the name its files had in an earlier release: on --resume such files are renamed and reused
    former_names: dict = field(default_factory=dict)


JOBS: dict[str, Job] = {}


def register(job: Job) -> Job:
    JOBS[job.name] = job
    return job


def get_job(name: str) -> Job:
    """A registered job; `interp.batch.<name>` is imported on first use (Ray workers find jobs this way)."""
    if name not in JOBS:
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError:
            pass
    if name not in JOBS:
        raise ValueError(f"unknown batch job {name!r}; known: {sorted(JOBS)}")
    return JOBS[name]


# ---------------------------------------------------------------------------------------------- shard files
def slug(name: str) -> str:
    """A model's folder name under DIR/shards (and DIR for per-model outputs). Never "." or "..": a model given as
    "." or ".." (a folder) would put its files beside the others' or outside DIR."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_")[-80:]
    return s if s.strip(".") else "model"


def shard_path(out: Path, model: str, shard: str) -> Path:
    return Path(out) / "shards" / slug(model) / f"{shard}.json"


def checkpoint_path(out: Path, header: dict, shard: str) -> Path:
    """Where a job with `checkpoints` keeps an unfinished shard's progress: next to the shard file, named by a digest
    of the shard's header (options and model fingerprint), so a run with other settings never continues it."""
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()[:12]
    return shard_path(out, header["model"], shard).with_name(f"{shard}.partial-{digest}.pt")


def _adopt_former_files(out: Path, model: str, former: str, shard: str, log=print) -> None:
    """A shard renamed since an earlier release: its finished file and unfinished checkpoints under the former name
    take the new one (when the new name has none of its own), so --resume loses nothing already computed."""
    old, new = shard_path(out, model, former), shard_path(out, model, shard)
    if old.exists() and not new.exists():
        os.replace(old, new)
        log(f"note: {old.name} is now {new.name} (shard renamed); reusing it")
    for part in old.parent.glob(f"{former}.partial-*.pt"):
        target = part.with_name(shard + part.name[len(former):])
        if not target.exists():
            os.replace(part, target)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` so that it is either absent, the old file, or complete (never half-written): a temporary file
    in the same folder, flushed to disk, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # Ctrl-C or a full disk: leave no temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    """Write JSON atomically (`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(obj))


def _jsonable(obj):
    return json.loads(json.dumps(obj))  # tuples -> lists, so recorded and current options compare equal


def differences(recorded: dict, current: dict) -> list[str]:
    """What differs between a shard's header and the current run's, in words (empty when it may be reused)."""
    diffs = []
    for key in ("format", "job", "version"):
        if recorded.get(key) != current[key]:
            diffs.append(f"shard {key} is {recorded.get(key)!r} in the file, {current[key]!r} now")
    if recorded.get("fingerprint") != current["fingerprint"]:
        diffs.append(f"the model's config or weights changed (fingerprint {recorded.get('fingerprint')} in the file, "
                     f"{current['fingerprint']} now)")
    old, new = recorded.get("options") or {}, current["options"]
    for key in sorted(set(old) | set(new), key=lambda k: (k not in new, k)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            diffs.append(f"option {key} is {old.get(key, '<unset>')!r} in the file, {new.get(key, '<unset>')!r} now")
    return diffs


class ShardMismatch(ValueError):
    """--resume found shards computed with other options or another model; nothing was computed."""


# ---------------------------------------------------------------------------------------------- planning
def canonical_models(models, log=print) -> list[str]:
    """The models as given, each named once: two spellings of one model (a repeated name, ./m and m) are merged
    with a note; two different models that would share a shard folder are refused."""
    from ..zoo import resolve

    models = _model_sources(models)
    if not models:
        raise ValueError("no model given (a bundled or toy name, a folder, a .gguf file or a hub id)")
    seen: dict[str, str] = {}
    folders: dict[str, str] = {}
    out = []
    for m in models:
        key = resolve(m).key
        if key in seen:
            log(f"note: {m} is named more than once; it is processed once" if m == seen[key] else
                f"note: {m} is the same model as {seen[key]}; it is processed once")
            continue
        other = folders.get(slug(m))
        if other is not None:
            raise ValueError(f"{other} and {m} would share the shard folder {slug(m)!r}; "
                             "give one of them another path")
        seen[key], folders[slug(m)] = m, m
        out.append(m)
    return out


@dataclass
class Plan:
    models: list[str]
    headers: dict[str, dict]  # model -> the header its shards are written with
    shards: dict[str, list[str]]  # model -> shard names
    done: dict[tuple[str, str], dict]  # (model, shard) -> result, reused from disk
    todo: list[tuple[str, str]]
    workers: dict[tuple[str, str], dict] = field(default_factory=dict)  # where the reused shards ran


def plan(job: Job, models, out: Path, options: dict, *, resume: bool = False, recompute_mismatched: bool = False,
         log=print) -> Plan:
    from ..zoo import fingerprint

    models = canonical_models(models, log)
    if job.max_models is not None and len(models) > job.max_models:
        raise ValueError(f"`{job.name}` takes at most {job.max_models} model(s), got {len(models)}")
    options = _jsonable(options)
    headers, shards, done, todo, mismatched, workers = {}, {}, {}, [], [], {}
    for m in models:
        for stale in (Path(out) / "shards" / slug(m)).glob(".tmp-*"):  # left by a run killed mid-write (SIGKILL)
            stale.unlink(missing_ok=True)
        headers[m] = dict(format=SHARD_FORMAT, job=job.name, version=job.version, model=m,
                          fingerprint=fingerprint(m), options=options)
        shards[m] = list(job.shards(m, options))
        reused, dims = {}, {}  # shard -> (the file's content, its path); shard -> the model dims it implies
        for s in shards[m]:
            path = shard_path(out, m, s)
            if resume and s in job.former_names:
                _adopt_former_files(out, m, job.former_names[s], s, log)
            if not (resume and path.exists()):
                continue
            try:
                saved = json.loads(path.read_text())
                if not isinstance(saved, dict) or "result" not in saved:
                    raise ValueError("no result in it")
                if not isinstance(saved.get("options", {}), dict):
                    raise ValueError("its options are not an object")
            except (ValueError, UnicodeDecodeError, OSError) as e:
                log(f"note: {path} is not a readable shard file ({str(e).splitlines()[0][:80]}); recomputing it")
                continue
            diffs = differences(saved, headers[m])
            if diffs:
                mismatched.append((path, diffs))
                continue
            problem = result_problem(job, s, saved["result"], options)
            if isinstance(problem, str):
                log(f"note: {path} holds an invalid result ({problem[:200]}); recomputing it")
                continue
            reused[s], dims[s] = (saved, path), problem
        first = {}  # model dims -> the first reused shard implying them
        for s, d in dims.items():
            if d is not None:
                first.setdefault(d, s)
        if len(first) > 1:  # which one is right is unknown: recompute them all
            (da, a), (db, b) = list(first.items())[:2]
            log(f"note: the shards of {m} disagree on the model's size ({reused[a][1]}: {da}, "
                f"{reused[b][1]}: {db}); recomputing {len(reused)} shard(s)")
            reused = {}
        for s in shards[m]:
            if s not in reused:
                todo.append((m, s))
                continue
            saved = reused[s][0]
            done[(m, s)] = saved["result"]
            worker = saved.get("worker")
            workers[(m, s)] = dict(worker if isinstance(worker, dict) else {}, seconds=saved.get("seconds"))
    if mismatched:
        path, diffs = mismatched[0]
        more = f" (and {len(mismatched) - 1} more shard(s))" if len(mismatched) > 1 else ""
        if not recompute_mismatched:
            raise ShardMismatch(f"--resume: {path} was computed with other settings: {diffs[0]}{more}; "
                                "add --recompute-mismatched to recompute such shards, or use another --out")
        log(f"note: recomputing {len(mismatched)} shard(s) computed with other settings, e.g. {path}: {diffs[0]}")
    return Plan(models, headers, shards, done, todo, workers)


def result_problem(job: Job, shard: str, result, options: dict):
    """What is wrong with a shard's result read back from disk, in words (a str), else the model dims the job's
    `check` says it implies (None when the job has no check or the shard implies none)."""
    if not isinstance(result, dict):
        return f"result must be an object, got {type(result).__name__}"
    if job.check is None:
        return None
    try:
        dims = job.check(shard, result, options)
    except (ValueError, TypeError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None if dims is None else tuple(dims)


# ---------------------------------------------------------------------------------------------- running
_shard_log = None  # while a shard computes in this process: where shard_progress() writes (None: silent)
SHARD_LOG_EVERY_S = 10.0  # at most one progress line per shard this often


def shard_progress(msg: str) -> None:
    """What a job's compute() reports while its shard runs (a long sweep's progress), shown as "model shard: msg"
    when the run shows progress; silent otherwise, and on Ray workers (their shards report when finished)."""
    if _shard_log is not None:
        _shard_log(msg)


def _throttled(write, every_s: float = SHARD_LOG_EVERY_S):
    """`write`, passing at most one message per `every_s` seconds (the first always): a search that reports every
    receiver stays readable."""
    last = [-float("inf")]

    def log(msg: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            write(msg)

    return log


def compute_shard(job_name: str, model, shard: str, options: dict, checkpoint: Path | None = None
                  ) -> tuple[dict, float]:
    t0 = time.perf_counter()
    kw = {} if checkpoint is None else {"checkpoint": checkpoint}
    result = get_job(job_name).compute(model, shard, options, **kw)
    return result, time.perf_counter() - t0


@contextmanager
def _ctrl_c_sticks():
    """Ctrl-C that cannot get lost. Python raises KeyboardInterrupt wherever the main thread is; inside a
    finalizer (`__del__`, e.g. of a regex object collected mid-shard) it is printed as "Exception ignored" and
    the job carries on. While a job runs, its SIGINT handler also sets a flag of this call's own; the function
    yielded raises KeyboardInterrupt once the flag is set (the job calls it between shards and before any output
    is written), and any other error that leaves the job after a Ctrl-C is reported as the Ctrl-C. Only where
    Python's own handler is installed (the main thread; a nested job or one in another thread gets a check that
    never fires, and leaves the outer job's flag alone)."""
    flag = threading.Event()

    def stop_if_interrupted() -> None:
        if flag.is_set():
            raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is not signal.default_int_handler:
        yield lambda: None
        return

    def on_sigint(signum, frame):
        flag.set()
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGINT, on_sigint)
        yield stop_if_interrupted
    except Exception as err:
        # raised inside a callback from C++, the KeyboardInterrupt may come out as another error (torch once gave
        # "could not determine the shape of object type 'torch.storage.UntypedStorage'"): after a Ctrl-C it is one
        if flag.is_set():
            raise KeyboardInterrupt from err
        raise
    finally:
        if signal.getsignal(signal.SIGINT) is on_sigint:  # not if the job installed a handler of its own
            signal.signal(signal.SIGINT, previous)


def run_job(job: Job | str, models, out, options: dict | None = None, *, device=None, dtype=None,
            resume: bool = False, recompute_mismatched: bool = False, ray_address: str | None = None,
            ray_timeout: float = 20.0, progress: bool = True, log=print):
    """Run `job` over `models` into `out`; returns what the job's assemble() returns.

    dtype is recorded with the job's options (it changes results); device is not. Ctrl-C stops it between
    shards at the latest (finished shards are kept; `resume=True` continues)."""
    with _ctrl_c_sticks() as stop_if_interrupted:
        return _run_job(job, models, out, options, device=device, dtype=dtype, resume=resume,
                        recompute_mismatched=recompute_mismatched, ray_address=ray_address,
                        ray_timeout=ray_timeout, progress=progress, log=log, stop_if_interrupted=stop_if_interrupted)


def _run_job(job, models, out, options, *, device, dtype, resume, recompute_mismatched, ray_address,
             ray_timeout, progress, log, stop_if_interrupted):
    from tqdm.auto import tqdm

    job = get_job(job) if isinstance(job, str) else job
    check_run_args(out=out, resume=resume, recompute_mismatched=recompute_mismatched, progress=progress, log=log,
                   ray_address=ray_address, ray_timeout=ray_timeout)
    out = Path(out)
    dtype_name = None if dtype is None else str(dtype).replace("torch.", "")
    options = dict(options or {}, dtype=dtype_name)
    options = _jsonable(options)
    p = plan(job, models, out, options, resume=resume, recompute_mismatched=recompute_mismatched, log=log)
    check_out(out)  # made and checked writable once the models are known, before any is loaded
    results = dict(p.done)
    workers = {k: dict(w, run="earlier") for k, w in p.workers.items()}  # (model, shard) -> where it ran
    total = sum(len(v) for v in p.shards.values())
    # a bar only on a terminal (cleared if the run fails); elsewhere one line per shard
    bar = tqdm(total=total, initial=total - len(p.todo), desc=job.name, unit="shard",
               disable=not (progress and sys.stderr.isatty()))
    try:

        def finished(model: str, shard: str, result: dict, seconds: float, worker: dict) -> None:
            atomic_write_json(shard_path(out, model, shard), dict(p.headers[model], shard=shard,
                                                                  seconds=round(seconds, 3), worker=worker,
                                                                  result=result))
            results[(model, shard)] = result
            workers[(model, shard)] = dict(worker, seconds=round(seconds, 3), run="now")
            for note in result.get("notes", []):
                log(note)
            if progress and bar.disable:
                log(f"{model} {shard}: {seconds:.1f}s")
            elif progress:
                bar.write(f"{model} {shard}: {seconds:.1f}s", file=sys.stdout)
            bar.update(1)

        if p.todo and ray_address is not None:
            from .ray_backend import run_on_ray

            def finished_then_check(*args) -> None:
                finished(*args)
                stop_if_interrupted()

            run_on_ray(job.name, p.todo, options, dict(device=device, dtype=dtype),
                       address=ray_address, timeout=ray_timeout, on_done=finished_then_check, log=log)
        elif p.todo:
            from ..zoo import load
            from .workers import worker_info

            if job.checkpoints:  # their module loads analyses.circuits (~1 s), which the other jobs skip
                from ..analyses.circuits.checkpoints import discard, run_fresh_if_unusable

            loaded: dict = {}
            for m, s in p.todo:
                stop_if_interrupted()
                started, load_s = time.time(), 0.0
                if m not in loaded:
                    loaded.clear()  # one model in memory at a time
                    loaded[m] = load(m, device=device, dtype=dtype)
                    load_s = time.time() - started
                ck = checkpoint_path(out, p.headers[m], s) if job.checkpoints else None
                if ck is not None:
                    ck.parent.mkdir(parents=True, exist_ok=True)
                if ck is not None and not resume:
                    for old in ck.parent.glob(f"{s}.partial-*"):  # a fresh run continues nothing
                        old.unlink()
                global _shard_log
                if progress:
                    _shard_log = _throttled(lambda msg, m=m, s=s: bar.write(f"{m} {s}: {msg}", file=sys.stdout)
                                            if not bar.disable else log(f"{m} {s}: {msg}"))
                try:
                    if ck is None:
                        result, seconds = compute_shard(job.name, loaded[m], s, options)
                    else:  # the run's own progress file, damaged (or not continuable): named, then the shard restarts
                        result, seconds = run_fresh_if_unusable(
                            lambda: compute_shard(job.name, loaded[m], s, options, checkpoint=ck), ck,
                            lambda why: log(f"note: {why.splitlines()[0][:300]}; starting {m} {s} over"))
                finally:
                    _shard_log = None
                finished(m, s, result, seconds, worker_info(device, load_s=load_s, started=started))
                if ck is not None:  # the shard file has the result now (and the files a job keeps beside ck go too)
                    discard(ck)
                stop_if_interrupted()
    except BaseException:
        bar.leave = False  # the error message, not a half-full bar, is the last thing on the terminal
        raise
    finally:
        bar.close()
    stop_if_interrupted()
    from .workers import write_workers_csv

    write_workers_csv(out, [dict(workers.get((m, s)) or {}, model=m, shard=s) for m in p.models for s in p.shards[m]])
    by_model = {m: {s: results[(m, s)] for s in p.shards[m]} for m in p.models}
    return job.assemble(by_model, out, options, log)
