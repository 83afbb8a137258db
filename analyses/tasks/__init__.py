"""A small task registry for circuits and head importance: prompts built offline from the model's own tokenizer.

    from interp.analyses import tasks as T
    task = T.get_task("ioi")
    batch = task.make(model, n=32, seed=0)          # TaskBatch: clean / corrupt Tokens, answer, wrong, position
    logits = model(batch.clean)                      # Tokens pass through model(...) / run_with_hooks(...)
    task.metric(logits, batch)                       # scalar, differentiable; per_example=True -> [batch]
    T.task_report(model)                             # per task: clean / corrupt metric and accuracy

Tasks: "lm" (next-token loss on the bundled prose / code), "induction" (repeated random tokens; works on
tokenizer-less toys), "ioi" (indirect-object identification), "greater-than" (tens digit of a year), "file"
(user rows from JSONL / CSV, see `from_file`), "needle" (retrieve a value hidden in a haystack; works on toys).
"""

from __future__ import annotations

from .base import Task, TaskBatch, adds_bos, batch_arg, check_batch_fits, pass_bytes, task_arg
from .file import FileTask, from_file, read_rows
from .greater_than import GreaterThanTask
from .ioi import CANDIDATE_NAMES, TEMPLATES, IOITask, single_token_names
from .needle import NeedleTask
from .report import task_metrics, task_report
from .sequence import InductionTask, LMTask

_REGISTRY = {t.name: t for t in (LMTask(), InductionTask(), IOITask(), GreaterThanTask(), NeedleTask(),
                                 FileTask())}
TASKS = tuple(_REGISTRY)
DEFAULT_REPORT_TASKS = tuple(t for t in TASKS if t != "file")


def get_task(name: str, **options) -> Task:
    """The task `name` (one of TASKS), with options (its dataclass fields, e.g. source="code") replaced in."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(TASKS)}")
    return _REGISTRY[name].with_options(**options)


__all__ = ["CANDIDATE_NAMES", "DEFAULT_REPORT_TASKS", "FileTask", "GreaterThanTask", "IOITask", "InductionTask",
           "LMTask", "NeedleTask", "TASKS", "TEMPLATES", "Task", "TaskBatch", "adds_bos", "batch_arg",
           "check_batch_fits", "from_file", "get_task", "pass_bytes", "read_rows", "single_token_names", "task_arg",
           "task_metrics", "task_report"]
