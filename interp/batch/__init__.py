"""Batch jobs over many models: shards planned per model, computed locally or as Ray tasks, written atomically with
the options and model fingerprint that produced them, resumable after a kill, and assembled into final files.

    runner.py      Job (shards, compute one, assemble), run_job, the shard files and --resume checks
    arguments.py   the run's own arguments (out folder made and tried writable, model sources, flags, Ray options)
    ray_backend.py the same shards as Ray tasks (bounded connection time, one-line task errors)
    checks.py      non-finite results (the first layer whose activations go NaN/Inf); shard-result validators
    classify.py    the `classify` job (head scores and labels -> heads.csv, heads.parquet, report.html)
    importance.py  the `importance` job (head importance by many methods -> importance.csv, report.html)
    circuit.py     the `circuit` job (edge scores, circuit, faithfulness -> per model edges.csv, graph.json, ...)
    cli.py         the `interp` console script

A new job is one module `interp/batch/<name>.py` that calls `register(Job(...))`; nothing outside this package
imports it (the console script and the `interp.classify` compatibility shim excepted).
"""

from .runner import JOBS, Job, get_job, register, run_job

__all__ = ["JOBS", "Job", "get_job", "register", "run_job"]
