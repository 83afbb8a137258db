"""The runner's shards as Ray tasks, across the GPUs and nodes of a Ray cluster (optional extra: `ray`).

Each task loads its model (kept per worker for the next shard of the same model), computes one shard and returns
it; the driver writes every shard atomically as it arrives, exactly as a local run does, so `--resume` and the
final files are the same whichever way the shards ran.

Scheduling: with `--device cuda` each task asks Ray for one GPU (`num_gpus=1`), so Ray runs as many shards at once
as the cluster has GPUs, each in a process whose CUDA_VISIBLE_DEVICES is its own GPU (Ray starts a fresh worker
process for every GPU task, so a GPU task reloads its model); otherwise one CPU. A task records where it ran
(`workers.py`: host, pid, Ray node, GPU id, CUDA_VISIBLE_DEVICES, GPU UUID), kept in the shard file and
DIR/workers.csv. A task whose worker process dies (killed, out of memory, a lost node) is retried by Ray up to
`INTERP_RAY_MAX_RETRIES` times (default 2); an exception the shard's own code raises is not retried. If a shard
still fails, the shards already finished stay on disk and `--resume` computes only the rest.

Environment variables read by the driver (the `interp` process):

    INTERP_RAY_MAX_RETRIES=N    retries of a task whose worker died (default 2; 0 = fail at once)
    INTERP_RAY_TASK_DEVICE=cpu  compute every task on this device whatever --device says, while still asking Ray
                                for one GPU per task under --device cuda: to test GPU scheduling on a machine
                                without GPUs (`ray start --head --num-gpus 4` fakes four); never touches CUDA

Failures are one sentence: an address where nothing listens, or a cluster that does not answer within `timeout`
seconds (Ray itself would retry for ever), names the address and what to do; a task that raises surfaces its own
exception's message, not Ray's wrapping of it. Ray's own log lines are kept off the terminal.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
import threading
import time
from contextlib import contextmanager

LOCAL_START_S = 180.0  # starting a local Ray instance takes 10-20 s on a busy 2-core machine
WAIT_MAX_S = threading.TIMEOUT_MAX  # the longest wait threading allows (a longer timeout waits this long)
RETRIES_ENV = "INTERP_RAY_MAX_RETRIES"
TASK_DEVICE_ENV = "INTERP_RAY_TASK_DEVICE"
DEFAULT_RETRIES = 2
TASK_PREFIX = "interp"  # task names (and worker process titles, `ray::interp:classify:MODEL:SHARD`)
_LOADED: dict = {}  # per worker process: (model, load options) -> the loaded model


def _task(job_name: str, model: str, shard: str, options: dict, load_kw: dict):
    """(result, seconds, worker record) of one shard, in a Ray worker."""
    import ray

    from ..zoo import load
    from .runner import compute_shard
    from .workers import worker_info

    started = time.time()
    key = (model, repr(sorted(load_kw.items())))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load(model, **load_kw)
    load_s = time.time() - started
    result, seconds = compute_shard(job_name, _LOADED[key], shard, options)
    ctx = ray.get_runtime_context()
    return result, seconds, worker_info(load_kw.get("device"), node_id=ctx.get_node_id(), gpu_ids=ray.get_gpu_ids(),
                                        load_s=load_s, started=started)


def task_name(job_name: str, model: str, shard: str) -> str:
    from .runner import slug

    return f"{TASK_PREFIX}:{job_name}:{slug(model)}:{shard}"


def max_retries() -> int:
    text = os.environ.get(RETRIES_ENV, "").strip()
    if not text:
        return DEFAULT_RETRIES
    if not text.isdigit():
        raise ValueError(f"{RETRIES_ENV} must be a whole number of retries (0 or more), got {text!r}")
    return int(text)


def task_device(device):
    """The device tasks compute on: `device`, unless INTERP_RAY_TASK_DEVICE overrides it."""
    forced = os.environ.get(TASK_DEVICE_ENV, "").strip()
    if not forced:
        return device
    if forced not in ("cpu", "cuda") and not re.fullmatch(r"cuda:\d+", forced):
        raise ValueError(f"{TASK_DEVICE_ENV} must be cpu or cuda, got {forced!r}")
    return forced


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
    from .checks import check_timeout

    timeout = check_timeout(timeout, "the Ray connection timeout")
    if ray.is_initialized():
        return ray
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

    wait = min(max(timeout, LOCAL_START_S) if address == "local" else timeout, WAIT_MAX_S)  # 1e10 s: no OverflowError
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


def _failure(ray, err, retries: int) -> str:
    if isinstance(err, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        getattr(ray.exceptions, "OutOfMemoryError", ()))):
        return (f"its Ray worker died ({task_error_message(err)}) and {retries} retr{'y' if retries == 1 else 'ies'} "
                f"({RETRIES_ENV}) did not finish it; finished shards are kept: rerun with --resume")
    return task_error_message(err)


def run_on_ray(job_name: str, todo, options: dict, load_kw: dict, *, address: str, timeout: float, on_done,
               log=print) -> None:
    """Compute every (model, shard) in `todo` as a Ray task; `on_done(model, shard, result, seconds, worker)` is
    called in the driver as each one finishes. The first failing task stops the run with its own message."""
    retries = max_retries()
    device = load_kw.get("device")
    gpus = 1 if device is not None and str(device).startswith("cuda") else 0
    load_kw = dict(load_kw, device=task_device(device))
    ray = connect(address, timeout)
    resources = ray.cluster_resources()
    if gpus and resources.get("GPU", 0) < 1:
        raise ValueError(f"--device cuda with --ray {address}: the Ray cluster has no GPU (`ray status` lists its "
                         "resources); start its nodes on GPU machines, or drop --device cuda")
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    log(f"ray: {len(todo)} shard(s) as tasks of {gpus} GPU / 1 CPU each on {nodes} node(s) with "
        f"{resources.get('GPU', 0):g} GPU(s) and {resources.get('CPU', 0):g} CPU(s)"
        + (f"; tasks compute on {load_kw['device']} ({TASK_DEVICE_ENV})" if load_kw["device"] != device else ""))
    task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=retries, retry_exceptions=False)(_task)
    refs = {task.options(name=task_name(job_name, m, s)).remote(job_name, m, s, options, load_kw): (m, s)
            for m, s in todo}
    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            model, shard = refs[ready[0]]
            try:
                result, seconds, worker = ray.get(ready[0])
            except ray.exceptions.RayError as e:
                raise ValueError(f"{model} {shard}: {_failure(ray, e, retries)}") from None
            on_done(model, shard, result, seconds, worker)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise


def task_processes(root: int | None = None) -> list[tuple[int, str]]:
    """(pid, title) of this machine's processes running an interp Ray task now: Ray titles a worker process
    `ray::<task name>` while it runs a task, e.g. `ray::interp:classify:toy-induction:patterns`. With `root`, only
    that process's descendants. Linux only (reads /proc); used to kill a worker in tests and examples/ray_multi_gpu.sh.
    """
    procs: dict[int, tuple[int, str]] = {}  # pid -> (parent pid, title)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended meanwhile
        procs[int(entry.name)] = (ppid, title)

    def under_root(pid: int) -> bool:
        seen = set()
        while pid in procs and pid not in seen:
            seen.add(pid)
            pid = procs[pid][0]
            if pid == root:
                return True
        return False

    return sorted((pid, title) for pid, (_, title) in procs.items()
                  if title.startswith(f"ray::{TASK_PREFIX}:") and (root is None or under_root(pid)))
