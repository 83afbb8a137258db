"""Batch head classification: every head of one or many models scored and labelled, in resumable shards.

The work for each model is split into shards (one per analysis); each shard is written atomically to
`DIR/shards/<model>/<shard>.json` as soon as it is done, so a run killed at any point and restarted with
`resume=True` recomputes nothing that finished and produces the same table as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

COLUMNS = ["model", "layer", "head", "label", "sink_score", "previous_token_score", "induction_score",
           "duplicate_token_score", "retrieval_score", "local_score", "entropy", "diffuseness"]
SHARDS = ("patterns", "long_context", "retrieval")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("_")[-80:] or "model"


def atomic_write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def plan_context(model, context: int | None) -> tuple[int, str | None]:
    """The context length to use, clamped to the model's maximum (with a note when clamped)."""
    n_ctx = model.cfg.n_ctx
    want = context or min(1024, n_ctx)
    if want > n_ctx:
        return n_ctx, f"{model.name}: --context {want} exceeds the model's maximum context {n_ctx}; using {n_ctx}"
    return want, None


def run_shard(model, shard: str, context: int, prompts: int, seed: int) -> dict:
    """One analysis -> {score name: [[layer][head]] floats}."""
    from . import analyses as A

    if shard == "patterns":
        half = max(4, min(48, (model.cfg.n_ctx - 1) // 2))
        scores = A.head_pattern_scores(model, half=half, n_prompts=prompts, seed=seed)
    elif shard == "long_context":
        if model.tokenizer is not None:
            toks = A.text_tokens(model, "prose", n_tokens=context)
        else:  # toy vocabularies: random tokens from the model's own vocabulary
            toks = A.random_tokens(model, n_tokens=context, n_prompts=prompts, seed=seed)
        local_window = min(64, max(1, context // 4))
        scores = A.long_context_scores(model, toks, sink_tokens=1, local_window=local_window)
    elif shard == "retrieval":
        from .analyses import retrieval as R

        trials = R.make_trials(model, contexts=(min(context, 512),), depths=(0.25, 0.5, 0.75), seed=seed)
        scores = {"retrieval_score": R.retrieval_scores(model, trials)[0]}
    else:
        raise ValueError(f"unknown shard {shard!r}; shards are {SHARDS}")
    return {k: v.tolist() for k, v in scores.items()}


def model_table(name: str, shards: dict[str, dict], n_layers: int, n_heads: int) -> pd.DataFrame:
    from .analyses import head_table

    scores = {}
    for part in shards.values():
        scores.update({k: torch.tensor(v, dtype=torch.float32) for k, v in part.items()})
    scores.setdefault("retrieval_score", torch.full((n_layers, n_heads), float("nan")))
    table = head_table(scores, model_name=name)
    extra = [c for c in table.columns if c not in COLUMNS]
    return table[COLUMNS + extra]


def classify(models, out, *, context: int | None = None, prompts: int = 4, device=None, dtype=None,
             resume: bool = False, seed: int = 0, progress: bool = True, log=print, ray_address: str | None = None):
    """Score and label every head of every model; returns the combined table and writes DIR/heads.csv."""
    from tqdm.auto import tqdm

    from .zoo import load

    out = Path(out)
    t0 = time.time()
    tables = []
    if isinstance(models, (str, Path)):
        models = [models]
    models = list(models)
    if not models:
        raise ValueError("classify needs at least one model (a bundled or toy name, a folder or a .gguf file)")
    jobs = [(str(m), s) for m in models for s in SHARDS]
    done = {}
    if resume:
        for m, s in jobs:
            p = out / "shards" / slug(m) / f"{s}.json"
            if p.exists():
                done[(m, s)] = json.loads(p.read_text())
    todo = [j for j in jobs if j not in done]
    if ray_address is not None:
        from .distributed import run_on_ray

        results = run_on_ray(todo, out, context=context, prompts=prompts, device=device, dtype=dtype, seed=seed,
                             address=ray_address)
        done.update(results)
        todo = []
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="shards", disable=not progress)
    loaded = {}
    for m, s in todo:
        if m not in loaded:
            loaded.clear()
            loaded[m] = load(m, device=device, dtype=dtype)
        model = loaded[m]
        ctx, note = plan_context(model, context)
        if note and s == SHARDS[0]:
            log(note)
        shard = {"shape": [model.cfg.n_layers, model.cfg.n_heads], "name": model.name, "context": ctx,
                 "scores": run_shard(model, s, ctx, prompts, seed)}
        atomic_write_json(out / "shards" / slug(m) / f"{s}.json", shard)
        done[(m, s)] = shard
        bar.update(1)
    bar.close()
    for m in models:
        parts = {s: done[(str(m), s)] for s in SHARDS}
        L, H = parts[SHARDS[0]]["shape"]
        tables.append(model_table(parts[SHARDS[0]]["name"], {s: p["scores"] for s, p in parts.items()}, L, H))
    table = pd.concat(tables, ignore_index=True)
    write_outputs(table, out)
    elapsed = time.time() - t0
    counts = table.groupby(["model", "label"]).size().unstack(fill_value=0)
    log(f"classified {len(table)} heads of {len(models)} model(s) in {elapsed:.1f}s\n{counts.to_string()}")
    return table


def write_outputs(table: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".heads.csv.tmp"
    table.to_csv(tmp, index=False)
    os.replace(tmp, out / "heads.csv")
    try:
        tmp = out / ".heads.parquet.tmp"
        table.to_parquet(tmp, index=False)
        os.replace(tmp, out / "heads.parquet")
    except ImportError:
        pass
    from .report import write_classification_report

    write_classification_report(table, out / "report.html")
