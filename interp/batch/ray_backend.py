"""The runner's shards as Ray tasks, across the GPUs and nodes of a Ray cluster (optional extra: `ray`).

Each task loads its model (kept per worker for the next shard of the same model), computes one shard and returns
it; the driver writes every shard atomically as it arrives, exactly as a local run does, so `--resume` and the
final files are the same whichever way the shards ran.

Failures are one sentence: an address where nothing listens, or a cluster that does not answer within `timeout`
seconds (Ray itself would retry for ever), names the address and what to do; a task that raises surfaces its own
exception's message, not Ray's wrapping of it. Ray's own log lines are kept off the terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from contextlib import contextmanager

LOCAL_START_S = 180.0  # starting a local Ray instance takes 10-20 s on a busy 2-core machine
_LOADED: dict = {}  # per worker process: (model, load options) -> the loaded model


def _task(job_name: str, model: str, shard: str, options: dict, load_kw: dict):
    from ..zoo import load
    from .runner import compute_shard

    key = (model, repr(sorted(load_kw.items())))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load(model, **load_kw)
    return compute_shard(job_name, _LOADED[key], shard, options)


@contextmanager
def _quiet_stderr():
    """Point file descriptor 2 at /dev/null (Ray's C++ core logs there directly); yields the real stderr's fd."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    state = {"restore": True}
    try:
        yield saved, state
    finally:
        if state["restore"]:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _parse_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--ray must be 'local', 'auto' or host:port, got {address!r}")
    return host, int(port)


def connect(address: str, timeout: float = 20.0):
    """ray, initialised against `address` ('local' starts one here, 'auto' finds a running one, host:port), or a
    ValueError within about `timeout` seconds saying why not."""
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs the optional dependency: pip install 'interp-heads[ray]'") from None
    if ray.is_initialized():
        return ray
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"the Ray connection timeout must be a positive number of seconds, got {timeout!r}")
    if address not in ("local", "auto"):
        host, port = _parse_address(address)
        try:
            socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
        except OSError as e:
            raise ValueError(f"cannot reach a Ray cluster at {address} ({e.strerror or e}); start one there with "
                             f"`ray start --head --port {port}`, or run on this machine with --ray local") from None
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    outcome: dict = {}
    done = threading.Event()

    def init():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR, ignore_reinit_error=True)
            outcome["ok"] = True
        except BaseException as e:  # reported by the caller's thread
            outcome["error"] = e
        finally:
            done.set()
        if outcome.get("ok"):
            # Ray's local processes are started with PR_SET_PDEATHSIG, which fires when the *thread* that started
            # them exits: this thread stays (asleep, a daemon) for as long as the process runs.
            threading.Event().wait()

    wait = max(timeout, LOCAL_START_S) if address == "local" else timeout
    with _quiet_stderr() as (real_stderr, state):
        threading.Thread(target=init, name="ray-init", daemon=True).start()
        answered = done.wait(wait)
        if not answered:  # Ray keeps retrying in that thread: keep its C++ logs off the terminal for good
            state["restore"] = False
            sys.stderr = os.fdopen(real_stderr, "w", buffering=1)
    if not answered:
        what = {"local": "start a local Ray instance",
                "auto": "get an answer from the Ray cluster --ray auto found (RAY_ADDRESS or the last `ray start`)"
                }.get(address, f"get an answer from a Ray cluster at {address}")
        raise ValueError(f"could not {what} within {wait:g}s; check the address (`ray status` on the head node), "
                         "raise --ray-timeout, or use --ray local")
    err = outcome.get("error")
    if isinstance(err, KeyboardInterrupt):
        raise err
    if err is not None:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if address == "auto":
            raise ValueError(f"--ray auto found no running Ray cluster ({msg}); start one with `ray start --head`, "
                             "give its host:port, or use --ray local") from None
        raise ValueError(f"could not connect to Ray at {address}: {msg}") from None
    return ray


def task_error_message(err) -> str:
    """The message of the exception a Ray task raised (not Ray's traceback-laden wrapping)."""
    cause = getattr(err, "cause", None)
    e = cause if isinstance(cause, BaseException) else err
    text = str(e).strip()
    if cause is None and "\n" in text:  # Ray's own errors: its first line, without the traceback
        text = text.splitlines()[0]
    return text.splitlines()[0] if text else type(e).__name__


def run_on_ray(job_name: str, todo, options: dict, load_kw: dict, *, address: str, timeout: float, on_done) -> None:
    """Compute every (model, shard) in `todo` as a Ray task; `on_done(model, shard, result, seconds)` is called in
    the driver as each one finishes. The first failing task stops the run with its own message."""
    ray = connect(address, timeout)
    device = load_kw.get("device")
    gpus = 1 if device is not None and str(device).startswith("cuda") else 0
    task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)(_task)
    refs = {task.remote(job_name, m, s, options, load_kw): (m, s) for m, s in todo}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            model, shard = refs[ready[0]]
            try:
                result, seconds = ray.get(ready[0])
            except ray.exceptions.RayError as e:
                raise ValueError(f"{model} {shard}: {task_error_message(e)}") from None
            on_done(model, shard, result, seconds)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
