"""Where each shard ran: a record per shard (host, process, Ray node and GPU, device), kept in the shard file and
gathered into DIR/workers.csv, so a run over several GPUs or nodes can be checked after the fact.

A record (all JSON-able; empty where it does not apply):

    host, pid            the machine and the process that computed the shard
    node_id              the Ray node's id (empty for a run without Ray)
    ray_gpu_ids          the GPU ids Ray assigned to the task, e.g. "1" (empty without Ray or on CPU tasks)
    cuda_visible_devices CUDA_VISIBLE_DEVICES in that process (Ray sets it to the assigned GPU)
    device               the torch device the shard was computed on ("cpu", "cuda", ...)
    gpu_name, gpu_uuid   the CUDA device's name and UUID, when the shard ran on CUDA (the UUID tells physical GPUs
                         apart whatever the numbering inside CUDA_VISIBLE_DEVICES)
    load_s               seconds spent loading the model for this shard (0 when the worker had it loaded)
    started, finished    wall-clock times (Unix seconds) around loading and computing
"""

from __future__ import annotations

import csv
import io
import os
import socket
import time
from pathlib import Path

COLUMNS = ("model", "shard", "seconds", "run", "host", "pid", "node_id", "ray_gpu_ids", "cuda_visible_devices",
           "device", "gpu_name", "gpu_uuid", "load_s", "started", "finished")
FILE = "workers.csv"


def worker_info(device, *, node_id: str = "", gpu_ids=(), load_s: float = 0.0, started: float | None = None) -> dict:
    """This process's record for a shard computed on `device` (call it right after computing)."""
    info = dict(host=socket.gethostname(), pid=os.getpid(), node_id=node_id or "",
                ray_gpu_ids=",".join(str(g) for g in gpu_ids), cuda_visible_devices=os.environ.get(
                    "CUDA_VISIBLE_DEVICES", ""), device=str(device or "cpu"), gpu_name="", gpu_uuid="",
                load_s=round(float(load_s), 3), started=round(started if started is not None else time.time(), 3),
                finished=round(time.time(), 3))
    if str(device or "").startswith("cuda"):
        import torch

        if torch.cuda.is_initialized():  # the model is on the GPU, so this touches nothing new
            props = torch.cuda.get_device_properties(torch.device(device))
            info["gpu_name"] = props.name
            info["gpu_uuid"] = str(getattr(props, "uuid", ""))
    return info


def workers_table_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def write_workers_csv(out: Path, rows: list[dict]) -> Path:
    """DIR/workers.csv, one row per shard (written atomically)."""
    from .runner import atomic_write_text

    path = Path(out) / FILE
    atomic_write_text(path, workers_table_text(rows))
    return path
