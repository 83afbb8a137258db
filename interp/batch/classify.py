"""The `classify` job: every head of one or many models scored and labelled.

Shards per model: `patterns` (previous-token, duplicate, induction on repeated random tokens), `long_context`
(sink, local, entropy, diffuseness from the kernels' statistics on natural text, plus the local score at the
model's own sliding window), `retrieval` (needle-in-a-haystack). Every probe fits the model's context whatever its
tokenizer. Assembled into DIR/heads.csv, heads.parquet and report.html.
"""

from __future__ import annotations

import numbers
import os
import time
from pathlib import Path

import pandas as pd
import torch

from ..analyses.table import COLUMNS as TABLE_COLUMNS
from ..analyses.table import INFO_COLUMNS, SCORE_COLUMNS
from .checks import check_activations, check_count, check_grid, check_keys, check_scores, check_seed
from .runner import Job, register, run_job

COLUMNS = list(TABLE_COLUMNS)
SHARDS = ("patterns", "long_context", "retrieval")
MAY_BE_NAN = ("retrieval_score", "local_score_arch", "window")  # no answered trial / no sliding window
RETRIEVAL_MAX = 512  # needle trials use at most this many tokens (they decode token by token)
ANSWER_ROOM = 16  # tokens kept free after a text needle prompt for the decoded answer
SHARD_SCORES = {  # the scores each shard returns (checked when a shard is read back on --resume)
    "patterns": ("previous_token_score", "duplicate_token_score", "induction_score"),
    "long_context": ("local_score", "entropy", "diffuseness", "sink_score", "window", "local_score_arch"),
    "retrieval": ("retrieval_score",),
}
# each score's documented range: attention masses and ratios in [0, 1], entropy in nats >= 0; window: see below
SCORE_RANGE = {name: (0.0, 1.0) for names in SHARD_SCORES.values() for name in names}
SCORE_RANGE["entropy"] = (0.0, None)


def plan_context(model, context: int | None) -> tuple[int, str | None]:
    """The context length to use, clamped to the model's maximum (with a note when clamped)."""
    n_ctx = model.cfg.n_ctx
    want = context or min(1024, n_ctx)
    if want > n_ctx:
        return n_ctx, f"{model.name}: --context {want} exceeds the model's maximum context {n_ctx}; using {n_ctx}"
    return want, None


def _long_context_probe(model, ctx: int, prompts: int, seed: int) -> torch.Tensor:
    """The long-context input: the bundled prose repeated to ctx tokens (one ~470-token paragraph on SmolLM2, so
    past it the text is a copy: `text_tokens`), or random tokens for tokenizer-less models."""
    from .. import analyses as A

    if model.tokenizer is not None:
        return A.text_tokens(model, "prose", n_tokens=ctx)
    return A.random_tokens(model, n_tokens=ctx, n_prompts=prompts, seed=seed)  # toy vocabularies


def _arch_window(model) -> int | None:
    windows = [w for w in model.cfg.layer_windows if w]
    return max(windows) if windows else None


def _long_context(model, ctx: int, prompts: int, seed: int, notes: list) -> dict:
    from .. import analyses as A

    L, H = model.cfg.n_layers, model.cfg.n_heads
    toks = _long_context_probe(model, ctx, prompts, seed)
    scores = A.long_context_scores(model, toks, sink_tokens=1, local_window=min(64, max(1, ctx // 4)))
    # [layer, head]: each head's architectural window (NaN = full attention), and the local score at that window
    scores["window"] = torch.tensor([float(w or "nan") for w in model.cfg.layer_windows])[:, None].expand(L, H)
    W = _arch_window(model)
    scores["local_score_arch"] = torch.full((L, H), float("nan"))
    if W is not None and ctx > W + 1:
        scores["local_score_arch"] = A.long_context_scores(model, toks, sink_tokens=1, local_window=W)["local_score"]
    elif W is not None:
        notes.append(f"{model.name}: context {ctx} is too short to measure the local score at the model's window "
                     f"{W} (local_score_arch left empty)")
    chunked = [layer for layer, c in enumerate(model.cfg.layer_chunks) if c and ctx > c]
    if chunked:
        notes.append(f"{model.name}: layers {chunked} attend in chunks of {model.cfg.layer_chunks[chunked[0]]} "
                     f"tokens (chunked attention): at context {ctx} their queries past the first chunk see no earlier "
                     "chunk, so their long-context scores describe the chunk, not the whole context")
    return scores


def _retrieval(model, ctx: int, seed: int, notes: list) -> dict:
    """Needle trials of min(ctx, 512) tokens, lengthened to the shortest trial the model's tokenizer allows and
    kept inside its context (with room for the decoded answer)."""
    from ..analyses import retrieval as R

    L, H = model.cfg.n_layers, model.cfg.n_heads
    text = model.tokenizer is not None
    room = model.cfg.n_ctx - (ANSWER_ROOM if text else 0)  # toy trials include their answer in `context`
    c = min(max(ctx, 16), RETRIEVAL_MAX, room)
    while True:
        try:
            trials = R.make_trials(model, contexts=(c,), depths=(0.25, 0.5, 0.75), seed=seed)
            break
        except ValueError as e:
            if "too short" not in str(e) or c >= min(RETRIEVAL_MAX, room):
                notes.append(f"{model.name}: no needle trial fits its context ({e}); retrieval_score left empty")
                return {"retrieval_score": torch.full((L, H), float("nan"))}
            c = min(2 * c, RETRIEVAL_MAX, room)
    if c != min(ctx, RETRIEVAL_MAX):
        notes.append(f"{model.name}: needle trials use {c} tokens")
    return {"retrieval_score": R.retrieval_scores(model, trials)[0]}


def compute(model, shard: str, options: dict) -> dict:
    """One shard -> {"shape", "name", "context", "scores": {name: [[layer][head]]}, "notes"}."""
    from .. import analyses as A

    ctx, note = plan_context(model, options.get("context"))
    notes = [note] if note and shard == SHARDS[0] else []
    prompts, seed = options.get("prompts", 4), options.get("seed", 0)
    check_activations(model, A.random_tokens(model, n_tokens=min(32, model.cfg.n_ctx), n_prompts=1, seed=seed))
    if shard == "patterns":
        half = max(4, min(48, (model.cfg.n_ctx - 1) // 2))
        scores = A.head_pattern_scores(model, half=half, n_prompts=prompts, seed=seed)
    elif shard == "long_context":
        scores = _long_context(model, ctx, prompts, seed, notes)
    elif shard == "retrieval":
        scores = _retrieval(model, ctx, seed, notes)
    else:
        raise ValueError(f"unknown classify shard {shard!r}; shards are {SHARDS}")
    check_scores(model, scores, allowed_nan=MAY_BE_NAN)
    return {"shape": [model.cfg.n_layers, model.cfg.n_heads], "name": model.name, "context": ctx,
            "scores": {k: v.tolist() for k, v in scores.items()}, "notes": notes}


def check_result(shard: str, result: dict, options: dict) -> tuple[int, int]:
    """A shard's result read back from disk (--resume): every score of the shard, each a [layer, head] list of the
    shard's recorded shape, finite (NaN only where MAY_BE_NAN) and in its documented range -> (layers, heads);
    else a ValueError saying what is wrong."""
    if shard not in SHARD_SCORES:
        raise ValueError(f"unknown classify shard {shard!r}")
    check_keys(result, "result", required=("shape", "name", "context", "scores"), optional=("notes",))
    shape = result["shape"]
    if not isinstance(shape, list) or len(shape) != 2:
        raise ValueError(f"result.shape must be [layers, heads], got {shape!r:.60}")
    L, H = (check_count(v, f"result.shape[{i}]", low=1) for i, v in enumerate(shape))
    if not isinstance(result["name"], str):
        raise ValueError(f"result.name must be the model's name, got {result['name']!r:.60}")
    check_count(result["context"], "result.context", low=1)
    scores = check_keys(result["scores"], "result.scores", required=SHARD_SCORES[shard])
    for name, value in scores.items():
        what = f"result.scores.{name}"
        if name == "window":  # each head's sliding window in tokens; NaN for full attention
            check_grid(value, what, (L, H), low=1, whole=True, nan_ok=True)
        else:
            check_grid(value, what, (L, H), unit=SCORE_RANGE[name], nan_ok=name in MAY_BE_NAN)
    return L, H


def model_table(name: str, parts: dict[str, dict], n_layers: int, n_heads: int) -> pd.DataFrame:
    from ..analyses import head_table

    scores = {}
    for part in parts.values():
        scores.update({k: torch.tensor(v, dtype=torch.float32) for k, v in part.items()})
    for col in (*SCORE_COLUMNS, *INFO_COLUMNS):  # a score no shard produced is an empty column
        scores.setdefault(col, torch.full((n_layers, n_heads), float("nan")))
    table = head_table(scores, model_name=name)
    table["window"] = table["window"].round().astype("Int64")  # empty for full attention
    extra = [c for c in table.columns if c not in COLUMNS]
    return table[COLUMNS + extra]


def assemble(results: dict, out: Path, options: dict, log=print) -> pd.DataFrame:
    tables = []
    for m, parts in results.items():
        first = parts[SHARDS[0]]
        L, H = first["shape"]
        tables.append(model_table(first["name"], {s: p["scores"] for s, p in parts.items()}, L, H))
    table = pd.concat(tables, ignore_index=True)
    write_outputs(table, out, log)
    counts = table.groupby(["model", "label"]).size().unstack(fill_value=0)
    log(f"classified {len(table)} heads of {len(results)} model(s)\n{counts.to_string()}")
    return table


def write_outputs(table: pd.DataFrame, out: Path, log=print) -> None:
    """heads.csv, heads.parquet (when pyarrow is installed; else a one-line note) and report.html, each written to
    a temporary name first and renamed together at the end, so a kill leaves the old files or the new ones."""
    from ..report import write_classification_report

    out.mkdir(parents=True, exist_ok=True)
    staged = {}
    try:
        staged[out / "heads.csv"] = out / ".heads.csv.tmp"
        table.to_csv(staged[out / "heads.csv"], index=False)
        try:  # pandas raises ImportError when no parquet engine (pyarrow) is installed
            table.to_parquet(out / ".heads.parquet.tmp", index=False)
            staged[out / "heads.parquet"] = out / ".heads.parquet.tmp"
        except ImportError:
            log("note: heads.parquet not written: pyarrow is not installed (pip install 'interp-heads[parquet]')")
        staged[out / "report.html"] = out / ".report.html.tmp"
        write_classification_report(table, staged[out / "report.html"])
        for final, tmp in staged.items():
            os.replace(tmp, final)
    finally:
        for tmp in staged.values():
            Path(tmp).unlink(missing_ok=True)


def _add_arguments(p) -> None:
    p.add_argument("--context", type=int, default=None, help="tokens of natural text (default min(1024, max))")
    p.add_argument("--prompts", type=int, default=4, help="random prompts per probe (default 4)")
    p.add_argument("--seed", type=int, default=0)


def options(context: int | None = None, prompts: int = 4, seed: int = 0, flag_names: bool = False) -> dict:
    """Validated job options (clear errors before any model is loaded); messages name the command line's flags
    (--context, ...) when `flag_names`, else the keyword arguments."""
    def name(n):
        return f"--{n}" if flag_names else n

    if context is not None and (isinstance(context, bool) or not isinstance(context, numbers.Integral)
                                or context < 8):
        raise ValueError(f"{name('context')} must be an integer of at least 8, got {context!r}")
    if isinstance(prompts, bool) or not isinstance(prompts, numbers.Integral) or prompts < 1:
        raise ValueError(f"{name('prompts')} must be a positive integer, got {prompts!r}")
    seed = check_seed(seed, name("seed"))
    return dict(context=None if context is None else int(context), prompts=int(prompts), seed=seed)


def _options_from_args(args) -> dict:
    return options(context=args.context, prompts=args.prompts, seed=args.seed, flag_names=True)


JOB = register(Job(
    name="classify", version=2, shards=lambda model, options: SHARDS, compute=compute, assemble=assemble,
    check=check_result,
    outputs=("heads.csv", "heads.parquet", "report.html"), add_arguments=_add_arguments,
    options_from_args=_options_from_args, help="score and label every head of one or more models"))


def classify(models, out, *, context: int | None = None, prompts: int = 4, device=None, dtype=None,
             resume: bool = False, recompute_mismatched: bool = False, seed: int = 0, progress: bool = True,
             log=print, ray_address: str | None = None, ray_timeout: float = 20.0) -> pd.DataFrame:
    """Score and label every head of every model; writes DIR/heads.csv (+ parquet, report) and returns the table."""
    opts = options(context=context, prompts=prompts, seed=seed)
    t0 = time.time()
    table = run_job(JOB, models, out, opts, device=device, dtype=dtype,
                    resume=resume, recompute_mismatched=recompute_mismatched, ray_address=ray_address,
                    ray_timeout=ray_timeout, progress=progress, log=log)
    log(f"done in {time.time() - t0:.1f}s")
    return table
