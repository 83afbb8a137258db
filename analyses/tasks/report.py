"""task_report: each task's clean metric, corrupt metric and accuracy for one model."""

from __future__ import annotations

import math

import torch

from interp.validate import int_arg

from .base import Task, TaskBatch

LOGIT_BYTES = 2**28  # run chunks whose float32 logits stay under 256 MiB


def task_metrics(model, task: Task, batch: TaskBatch, batch_size: int = 16) -> dict:
    """Mean metric and accuracy on the clean (and corrupt) prompts, forwarding in chunks (no gradients)."""
    int_arg("batch_size", batch_size, minimum=1, where="task_metrics")
    pos = batch.clean.input_ids.shape[1]
    step = max(1, min(batch_size, LOGIT_BYTES // (4 * pos * model.cfg.d_vocab)))
    out = {}
    for which in ("clean", "corrupt"):
        if getattr(batch, which) is None:
            out[which], out[f"{which}_accuracy"] = math.nan, math.nan
            continue
        metric, acc = [], []
        for a in range(0, len(batch), step):
            part = batch[a:a + step]
            with torch.no_grad():
                logits = model(getattr(part, which))  # [chunk, pos, d_vocab]
            metric.append(task.metric(logits, part, per_example=True).cpu())
            acc.append(task.accuracy(logits, part).cpu())
        out[which] = float(torch.cat(metric).mean())
        out[f"{which}_accuracy"] = float(torch.cat(acc).mean())
    return out


def task_report(model, tasks=None, n: int = 32, seed: int = 0, batch_size: int = 16):
    """A DataFrame, one row per task: metric name, higher_is_better, n, clean / corrupt metric, accuracy on the
    clean and corrupt prompts, notes. `tasks`: names or Task objects (default: every registered task but
    "file"). A task the model cannot do gets NaNs and the reason in `notes`."""
    import pandas as pd

    from . import DEFAULT_REPORT_TASKS, get_task

    # checked here: a bad n or seed would otherwise skip every task (each make's ValueError lands in `notes`)
    n = int_arg("n", n, minimum=1, where="task_report")
    seed = int_arg("seed", seed, where="task_report")
    int_arg("batch_size", batch_size, minimum=1, where="task_report")
    if tasks is not None and not isinstance(tasks, (str, Task, list, tuple)):
        raise TypeError(f"task_report: tasks must be a task name, a Task, a list of them or None (every task but "
                        f"'file'), got {type(tasks).__name__} {tasks!r:.60}")
    rows = []
    for t in DEFAULT_REPORT_TASKS if tasks is None else ([tasks] if isinstance(tasks, (str, Task)) else tasks):
        task = t if isinstance(t, Task) else get_task(t)
        row = dict(task=task.name, metric=task.metric_name, higher_is_better=task.higher_is_better, n=0,
                   clean=math.nan, corrupt=math.nan, accuracy=math.nan, corrupt_accuracy=math.nan, notes="")
        try:
            batch = task.make(model, n=n, seed=seed)
        except ValueError as e:
            row["notes"] = f"skipped: {e}"
            rows.append(row)
            continue
        m = task_metrics(model, task, batch, batch_size=batch_size)
        row.update(n=len(batch), clean=m["clean"], corrupt=m["corrupt"], accuracy=m["clean_accuracy"],
                   corrupt_accuracy=m["corrupt_accuracy"], notes=batch.notes)
        rows.append(row)
    return pd.DataFrame(rows)
